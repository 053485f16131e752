//! The live stream: `GET /ui/stream?page=…` answers Server-Sent Events. Every
//! [`super::Inner::live_every`] the page's fragments are rendered again and those whose
//! HTML changed are sent as one `fragments` event (`{"element id": "inner html"}`); nothing
//! is sent while nothing changes (a comment every 15 s keeps proxies from closing it). The
//! stream ends when the server shuts down; the page's script reconnects to the next one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::watch;

use super::auth::Session;
use super::pages::Fragment;
use super::{Dashboard, FleetParams};
use crate::core::server::access::Viewer;
use crate::core::store::TelemetryFilter;

/// How long a browser waits before reconnecting a dropped stream (never sooner than the
/// 5 s the page may poll at).
const RETRY: Duration = Duration::from_secs(5);

/// Query string of the stream.
#[derive(Debug, Deserialize)]
pub(super) struct StreamParams {
    page: String,
    id: Option<String>,
    kind: Option<String>,
    level: Option<String>,
    agent_prefix: Option<String>,
    orch: Option<String>,
}

/// What a stream keeps up to date.
#[derive(Debug)]
enum Page {
    Fleet(TelemetryFilter),
    /// With the insight to highlight.
    Insights(Option<String>),
    Updates,
    Update(String),
}

struct Live {
    d: Dashboard,
    page: Page,
    viewer: Viewer,
    /// Hash of each fragment's HTML as last sent.
    sent: HashMap<&'static str, u64>,
    /// The last problem sent, so a lasting one is said once.
    problem: Option<String>,
    first: bool,
    stopping: watch::Receiver<bool>,
}

impl Live {
    /// The page's fragments, rendered at most once per half refresh period for every stream
    /// of the same page, filters and viewer: N open pages cost about one render per tick.
    async fn fragments(&self) -> Result<Rendered, String> {
        let key = format!("{:?}|{}", self.page, self.viewer.premium);
        let fresh_for = self.d.live_every / 2;
        if let Some(hit) = self.d.renders.get(&key, fresh_for) {
            return Ok(hit);
        }
        // One render at a time: streams whose ticks coincide (pages opened together) wait
        // for the first one's render instead of each making its own.
        let _turn = self.d.renders.turn.lock().await;
        if let Some(hit) = self.d.renders.get(&key, fresh_for) {
            return Ok(hit);
        }
        let rendered = Arc::new(self.render().await?);
        self.d
            .renders
            .put(key, rendered.clone(), self.d.live_every * 10);
        Ok(rendered)
    }

    async fn render(&self) -> Result<Vec<Fragment>, String> {
        match &self.page {
            Page::Fleet(filter) => super::fleet_fragments(&self.d, filter).await,
            Page::Insights(highlight) => {
                let (list, withheld) = super::insight_list(&self.d, self.viewer).await?;
                Ok(super::pages::insights(
                    &list,
                    withheld,
                    highlight.as_deref(),
                ))
            }
            Page::Updates => super::updates_fragments(&self.d, self.viewer).await,
            Page::Update(id) => Ok(super::update_fragments(&self.d, self.viewer, id)
                .await?
                .unwrap_or_default()),
        }
    }

    /// The next event, or `None` when the server is stopping.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if !self.first {
                tokio::select! {
                    _ = tokio::time::sleep(self.d.live_every) => {}
                    _ = self.stopping.changed() => return None,
                }
            }
            if *self.stopping.borrow() {
                return None;
            }
            let first = std::mem::replace(&mut self.first, false);
            match self.fragments().await {
                Ok(fragments) => {
                    self.problem = None;
                    let mut changed = serde_json::Map::new();
                    for (id, html) in fragments.iter() {
                        let h = hash(html);
                        if self.sent.insert(id, h) != Some(h) {
                            changed.insert((*id).to_owned(), html.as_str().into());
                        }
                    }
                    if changed.is_empty() && !first {
                        continue;
                    }
                    let data = serde_json::Value::Object(changed).to_string();
                    return Some(Event::default().event("fragments").retry(RETRY).data(data));
                }
                Err(e) => {
                    if self.problem.as_deref() == Some(e.as_str()) {
                        continue;
                    }
                    self.problem = Some(e.clone());
                    return Some(Event::default().event("problem").retry(RETRY).data(e));
                }
            }
        }
    }
}

fn hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub(super) async fn stream(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return (StatusCode::BAD_REQUEST, "`page` is required").into_response();
    };
    let page = match p.page.as_str() {
        "fleet" => {
            let params = FleetParams {
                kind: p.kind,
                level: p.level,
                agent_prefix: p.agent_prefix,
                orch: p.orch,
            };
            match params.filter(&d) {
                Ok(f) => Page::Fleet(f),
                Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
            }
        }
        "insights" => Page::Insights(p.id),
        "updates" => Page::Updates,
        "update" => match p.id {
            Some(id) => Page::Update(id),
            None => return (StatusCode::BAD_REQUEST, "`id` is required").into_response(),
        },
        other => {
            return (StatusCode::BAD_REQUEST, format!("no live page {other:?}")).into_response();
        }
    };
    let live = Live {
        viewer: d.viewer(&session),
        stopping: d.stopping.subscribe(),
        d,
        page,
        sent: HashMap::new(),
        problem: None,
        first: true,
    };
    let events = futures_util::stream::unfold(live, |mut live| async move {
        let event = live.next().await?;
        Some((Ok::<_, Infallible>(event), live))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A page's fragments as rendered, shared by every stream of it.
type Rendered = Arc<Vec<Fragment>>;

/// Recent renders of live pages by page, filters and viewer, with when they were made.
#[derive(Default)]
pub(super) struct Renders {
    done: Mutex<HashMap<String, (Instant, Rendered)>>,
    turn: tokio::sync::Mutex<()>,
}

impl Renders {
    fn get(&self, key: &str, fresh_for: Duration) -> Option<Rendered> {
        let map = self.done.lock().expect("renders lock");
        map.get(key)
            .filter(|(at, _)| at.elapsed() < fresh_for)
            .map(|(_, f)| f.clone())
    }

    /// Keeps `fragments` under `key`, dropping renders older than `forget_after`.
    fn put(&self, key: String, fragments: Rendered, forget_after: Duration) {
        let mut map = self.done.lock().expect("renders lock");
        map.retain(|_, (at, _)| at.elapsed() < forget_after);
        map.insert(key, (Instant::now(), fragments));
    }
}
