//! The live web dashboard: Fleet, Insights, Updates and Privacy pages, server-rendered
//! (maud), charts as SVG built here, kept live by Server-Sent Events that carry the
//! changed fragments. Mounted on the collector's listener by `serve collector|all`.
//!
//! Depends on `collector` (its state: the store and its per-minute cells, analysis,
//! metrics), `distributor` (the update log, directly in `serve all` or over its HTTP API)
//! and `server`; nothing depends on it but `cmd`.
//!
//! Read-only but for "Analyze now" (a form with a CSRF token). When the collector needs a
//! token, so does every page (a login form sets a signed session cookie). It shows ORCHs
//! by hash only and personal data never (PII counts by type only).

pub mod auth;
pub mod fleet;
mod live;
pub mod pages;
pub mod svg;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use tokio::sync::watch;

use self::auth::{Access, LOGIN_COOKIE, SESSION_COOKIE, Session};
use self::fleet::Fleet;
use self::pages::{Fragment, Frame, Tab};
use crate::core::collector::insight::Insight;
use crate::core::collector::{self, AnalyzeRequest};
use crate::core::distributor::client::DistributorClient;
use crate::core::distributor::{self, UpdateList, UpdateStatus};
use crate::core::privacy::pii::EntityType;
use crate::core::server::access::Viewer;
use crate::core::shared::anonymize::is_orch_hash;
use crate::core::shared::tier::Tier;
use crate::core::store::rollup::CellRange;
use crate::core::store::{ConversationFilter, ReadOrder, TelemetryFilter};
use crate::core::telemetry::now_unix;
use crate::core::updates::UpdateType;

/// How often a live page is brought up to date.
pub const LIVE_EVERY: Duration = Duration::from_secs(2);
/// Events in the Fleet page's "Last events".
const LAST_EVENTS: usize = 20;
/// Updates on the Updates page.
const LIST_UPDATES: usize = 50;

/// Where the Updates pages read the update log.
#[derive(Clone)]
pub enum Updates {
    /// The distributor runs in this process (`serve all`).
    Local(distributor::AppState),
    /// A distributor's HTTP API (`serve collector --distributor-url`), read with the admin
    /// token; premium payloads are withheld here for viewers without it.
    Remote(DistributorClient),
}

/// The dashboard's state.
#[derive(Clone)]
pub struct Dashboard(Arc<Inner>);

/// What [`Dashboard`] holds.
pub struct Inner {
    /// The collector it shows.
    pub collector: collector::AppState,
    /// The update log it shows.
    pub updates: Updates,
    /// Who may look.
    pub access: Access,
    /// How often live pages are refreshed.
    pub live_every: Duration,
    stopping: watch::Sender<bool>,
    renders: live::Renders,
}

impl std::ops::Deref for Dashboard {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Dashboard {
    /// A dashboard over a collector and an update log. Access follows the collector's
    /// tokens; `tls` marks cookies `Secure`.
    pub fn new(collector: collector::AppState, updates: Updates, tls: bool) -> Dashboard {
        Dashboard::refreshing_every(collector, updates, tls, LIVE_EVERY)
    }

    /// The same, refreshing live pages every `live_every` instead of [`LIVE_EVERY`] (tests).
    pub fn refreshing_every(
        collector: collector::AppState,
        updates: Updates,
        tls: bool,
        live_every: Duration,
    ) -> Dashboard {
        let access = Access::new(
            &collector.config.ingest_tokens,
            collector.config.admin_token.as_deref(),
            tls,
        );
        Dashboard(Arc::new(Inner {
            collector,
            updates,
            access,
            live_every,
            stopping: watch::channel(false).0,
            renders: live::Renders::default(),
        }))
    }

    /// Ends every live stream (the server is shutting down: open pages reconnect to the
    /// next one instead of holding this one open).
    pub fn stop_streams(&self) {
        let _ = self.stopping.send(true);
    }

    fn viewer(&self, session: &Session) -> Viewer {
        Viewer {
            admin: session.admin,
            premium: session.admin,
        }
    }

    /// A target ORCH id as the page shows it: its hash.
    fn hash_orch(&self, id: &str) -> String {
        if is_orch_hash(id) {
            id.to_owned()
        } else {
            self.collector.anonymizer.orch_hash(id)
        }
    }
}

/// The dashboard's routes: `/` and `/ui/…`.
pub fn router(dashboard: Dashboard) -> Router {
    let pages = Router::new()
        .route("/", get(fleet_page))
        .route("/ui/insights", get(insights_page))
        .route("/ui/analyze", post(analyze))
        .route("/ui/updates", get(updates_page))
        .route("/ui/updates/{id}", get(update_page))
        .route("/ui/privacy", get(privacy_page))
        .route("/ui/stream", get(live::stream))
        .route("/ui/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_session,
        ));
    Router::new()
        .merge(pages)
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

/// Headers every dashboard response carries: nothing cached, no framing, scripts and
/// styles from this origin only.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Pages need a session when tokens are configured: a browser is sent to the login form,
/// the stream and form posts get 401.
async fn require_session(State(d): State<Dashboard>, mut req: Request, next: Next) -> Response {
    match d.access.session(req.headers(), now_unix()) {
        Some(session) => {
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        None if req.method() == axum::http::Method::GET && req.uri().path() != "/ui/stream" => {
            let next_url = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = format!("/ui/login?next={}", percent_encode(next_url));
            (StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "log in at /ui/login first",
        )
            .into_response(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn frame<'a>(d: &Dashboard, session: &Session, title: &'a str, tab: Tab) -> Frame<'a> {
    Frame {
        title,
        tab,
        stream: None,
        logout_csrf: d.access.required.then(|| d.access.csrf(session)),
    }
}

/// Query string of the Fleet page: the filters of `GET /telemetry` for its last events.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FleetParams {
    kind: Option<String>,
    level: Option<String>,
    agent_prefix: Option<String>,
    /// An `orch_` hash (a raw id is hashed, never echoed).
    orch: Option<String>,
}

impl FleetParams {
    fn filter(&self, d: &Dashboard) -> Result<TelemetryFilter, String> {
        let blank = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        collector::query::build_filter(
            &d.collector,
            blank(&self.kind),
            blank(&self.level),
            blank(&self.agent_prefix),
            blank(&self.orch),
            None,
            None,
        )
        .map_err(|e| e.detail)
    }

    /// The query string that gives these filters again (for the stream URL).
    fn query(&self, filter: &TelemetryFilter) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("kind", &filter.kind),
            ("level", &filter.level),
            ("agent_prefix", &filter.agent_prefix),
            ("orch", &filter.orch_hash),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", percent_encode(v)));
            }
        }
        parts.join("&")
    }
}

/// The Fleet page's fragments now.
async fn fleet_fragments(d: &Dashboard, filter: &TelemetryFilter) -> Result<Vec<Fragment>, String> {
    let now = now_unix();
    let (since, until) = Fleet::range(now);
    let store = &d.collector.store;
    let cells = store
        .cells(CellRange { since, until })
        .await
        .map_err(|e| e.to_string())?;
    let stale = d.collector.config.stale_after.as_secs() as i64;
    let orchs = store
        .orch_health(now - stale)
        .await
        .map_err(|e| e.to_string())?;
    let events = store
        .query(filter, LAST_EVENTS, None)
        .await
        .map_err(|e| e.to_string())?;
    let fleet = Fleet::compute(now, &cells, &orchs);
    Ok(pages::fleet(&fleet, &events.records, filter))
}

async fn fleet_page(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    Query(params): Query<FleetParams>,
) -> Response {
    let filter = match params.filter(&d) {
        Ok(f) => f,
        Err(e) => return html_response(StatusCode::BAD_REQUEST, pages::problem("Fleet", &e)),
    };
    match fleet_fragments(&d, &filter).await {
        Ok(fragments) => {
            let mut frame = frame(&d, &session, "Fleet", Tab::Fleet);
            let q = params.query(&filter);
            frame.stream = Some(if q.is_empty() {
                "/ui/stream?page=fleet".to_owned()
            } else {
                format!("/ui/stream?page=fleet&{q}")
            });
            html_response(
                StatusCode::OK,
                pages::page(&frame, pages::sections(&fragments)),
            )
        }
        Err(e) => unavailable("Fleet", &e),
    }
}

fn unavailable(title: &str, e: &str) -> Response {
    html_response(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::problem(title, &format!("The store could not be read: {e}")),
    )
}

/// The insights `viewer` may see, newest first, and how many were withheld.
async fn insight_list(d: &Dashboard, viewer: Viewer) -> Result<(Vec<Insight>, usize), String> {
    let records = d
        .collector
        .store
        .insights(50)
        .await
        .map_err(|e| e.to_string())?;
    let mut shown = Vec::new();
    let mut withheld = 0;
    for r in &records {
        match Insight::from_record(r) {
            Ok(i) if i.tier == Tier::Premium && !viewer.premium => withheld += 1,
            Ok(i) => shown.push(i),
            Err(e) => tracing::warn!(error = %e, id = %r.id, "an insight could not be read"),
        }
    }
    Ok((shown, withheld))
}

#[derive(Debug, Default, Deserialize)]
struct InsightParams {
    id: Option<String>,
}

async fn insights_page(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    Query(params): Query<InsightParams>,
) -> Response {
    insights_response(&d, &session, params.id.as_deref(), None, StatusCode::OK).await
}

async fn insights_response(
    d: &Dashboard,
    session: &Session,
    highlight: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    match insight_list(d, d.viewer(session)).await {
        Ok((list, withheld)) => {
            let mut frame = frame(d, session, "Insights", Tab::Insights);
            frame.stream = Some(match highlight {
                Some(id) => format!("/ui/stream?page=insights&id={}", percent_encode(id)),
                None => "/ui/stream?page=insights".to_owned(),
            });
            let premium_possible = d.collector.config.premium_key.is_some();
            let body = html! {
                h2 { "Analyze now" }
                (pages::analyze_form(&d.access.csrf(session), premium_possible, error))
                (pages::sections(&pages::insights(&list, withheld, highlight)))
            };
            html_response(status, pages::page(&frame, body))
        }
        Err(e) => unavailable("Insights", &e),
    }
}

/// The "Analyze now" form.
#[derive(Debug, Deserialize)]
struct AnalyzeForm {
    csrf: String,
    last_n: Option<String>,
    focus: Option<String>,
    tier: Option<String>,
    x402: Option<String>,
}

async fn analyze(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    form: Result<Form<AnalyzeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return html_response(
            StatusCode::BAD_REQUEST,
            pages::problem("Insights", "The form could not be read; reload the page."),
        );
    };
    if !auth::same_origin(&headers) || !d.access.check_csrf(&session, &form.csrf) {
        return html_response(
            StatusCode::FORBIDDEN,
            pages::problem(
                "Insights",
                "The form's CSRF token is not this session's (it may have expired): reload the page and try again.",
            ),
        );
    }
    let last_n = match form
        .last_n
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(n) => match n.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return insights_response(
                    &d,
                    &session,
                    None,
                    Some("“last N” must be a whole number."),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        },
    };
    let premium = form.tier.as_deref() == Some("premium");
    let key = form
        .x402
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if premium && Tier::from_key(d.collector.config.premium_key.as_deref(), key) != Tier::Premium {
        return insights_response(
            &d,
            &session,
            None,
            Some("The premium tier needs the X402 key: the one given is missing or wrong."),
            StatusCode::PAYMENT_REQUIRED,
        )
        .await;
    }
    let req = AnalyzeRequest {
        last_n,
        focus: form.focus,
        ..AnalyzeRequest::default()
    };
    match collector::run_analysis(&d.collector, req, if premium { key } else { None }).await {
        Ok(insight) => (
            StatusCode::SEE_OTHER,
            [(
                LOCATION,
                format!("/ui/insights?id={}", percent_encode(&insight.id)),
            )],
        )
            .into_response(),
        Err(e) => insights_response(&d, &session, None, Some(&e.detail), e.status).await,
    }
}

/// The update list as `viewer` may see it.
async fn update_list(d: &Dashboard, viewer: Viewer, limit: usize) -> Result<UpdateList, String> {
    let mut list = match &d.updates {
        Updates::Local(state) => distributor::update_list(state, viewer, limit)
            .await
            .map_err(|e| e.detail)?,
        Updates::Remote(client) => client
            .list(limit as u32)
            .await
            .map_err(|e| format!("the distributor could not be read: {e}"))?,
    };
    for u in &mut list.updates {
        if u.update.tier_required == Tier::Premium && !viewer.premium && !u.payload_withheld {
            u.update.payload = serde_json::Value::Null;
            u.payload_withheld = true;
        }
    }
    Ok(list)
}

async fn update_status(
    d: &Dashboard,
    viewer: Viewer,
    id: &str,
) -> Result<Option<UpdateStatus>, String> {
    let mut status = match &d.updates {
        Updates::Local(state) => distributor::update_status(state, viewer, id)
            .await
            .map_err(|e| e.detail)?,
        Updates::Remote(client) => match client.status(id).await {
            Ok(s) => Some(s),
            Err(crate::core::shared::client::Error::Rejected { status: 404, .. }) => None,
            Err(e) => return Err(format!("the distributor could not be read: {e}")),
        },
    };
    if let Some(s) = &mut status
        && s.update.tier_required == Tier::Premium
        && !viewer.premium
        && !s.payload_withheld
    {
        s.update.payload = serde_json::Value::Null;
        s.payload_withheld = true;
    }
    Ok(status)
}

async fn updates_fragments(d: &Dashboard, viewer: Viewer) -> Result<Vec<Fragment>, String> {
    let list = update_list(d, viewer, LIST_UPDATES).await?;
    Ok(pages::updates(&list, &|id| d.hash_orch(id)))
}

async fn updates_page(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    match updates_fragments(&d, d.viewer(&session)).await {
        Ok(fragments) => {
            let mut frame = frame(&d, &session, "Updates", Tab::Updates);
            frame.stream = Some("/ui/stream?page=updates".to_owned());
            html_response(
                StatusCode::OK,
                pages::page(&frame, pages::sections(&fragments)),
            )
        }
        Err(e) => html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::problem("Updates", &e),
        ),
    }
}

/// An update's fragments; `None` when there is no such update.
async fn update_fragments(
    d: &Dashboard,
    viewer: Viewer,
    id: &str,
) -> Result<Option<Vec<Fragment>>, String> {
    let Some(status) = update_status(d, viewer, id).await? else {
        return Ok(None);
    };
    // Rollbacks of this update among the recent ones (those the Updates page lists).
    let list = update_list(d, viewer, LIST_UPDATES).await?;
    let rollbacks: Vec<_> = list
        .updates
        .iter()
        .filter(|u| {
            u.update.update_type == UpdateType::Rollback
                && u.update.payload.get("update_id").and_then(|v| v.as_str())
                    == Some(status.update.update_id.as_str())
        })
        .collect();
    Ok(Some(pages::update(&status, &rollbacks, &|o| {
        d.hash_orch(o)
    })))
}

async fn update_page(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let viewer = d.viewer(&session);
    match update_fragments(&d, viewer, &id).await {
        Ok(Some(fragments)) => {
            let title = format!("Update {id}");
            let mut frame = frame(&d, &session, &title, Tab::Updates);
            frame.stream = Some(format!("/ui/stream?page=update&id={}", percent_encode(&id)));
            html_response(
                StatusCode::OK,
                pages::page(&frame, pages::sections(&fragments)),
            )
        }
        Ok(None) => html_response(
            StatusCode::NOT_FOUND,
            pages::problem("Update", &format!("There is no update {id:?}.")),
        ),
        Err(e) => html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::problem("Update", &e),
        ),
    }
}

async fn privacy_fragments(d: &Dashboard) -> Result<Vec<Fragment>, String> {
    let store = &d.collector.store;
    let all = ConversationFilter::default();
    let err = |e: crate::core::store::Error| e.to_string();
    let stored = store.filter_counts(&all).await.map_err(err)?.stored;
    let pairs = store
        .count_conversations(&all, ReadOrder::ByPrompt)
        .await
        .map_err(err)?;
    let m = &d.collector.metrics;
    let figures = pages::PrivacyFigures {
        stored,
        exportable_sft: stored,
        exportable_pairs: pairs,
        rejected_pii: m.conversations_rejected("pii_detected"),
        by_type: EntityType::ALL
            .iter()
            .map(|t| (t.as_str(), m.pii_findings(t.as_str())))
            .collect(),
        otlp_dropped: m.otlp_content_dropped.get(),
    };
    Ok(pages::privacy(&figures))
}

async fn privacy_page(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    match privacy_fragments(&d).await {
        Ok(fragments) => {
            let frame = frame(&d, &session, "Privacy", Tab::Privacy);
            html_response(
                StatusCode::OK,
                pages::page(&frame, pages::sections(&fragments)),
            )
        }
        Err(e) => unavailable("Privacy", &e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct LoginParams {
    next: Option<String>,
}

async fn login_page(State(d): State<Dashboard>, Query(p): Query<LoginParams>) -> Response {
    let next = auth::safe_next(p.next.as_deref());
    if !d.access.required {
        return (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    }
    login_form(&d, &next, None, StatusCode::OK)
}

/// The login form with a fresh login cookie (its CSRF token derives from it).
fn login_form(d: &Dashboard, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let cookie = d.access.set_cookie(LOGIN_COOKIE, &nonce, 3600);
    let mut resp = html_response(
        status,
        pages::login(&d.access.login_csrf(&nonce), next, error),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

async fn login(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_form(
            &d,
            "/",
            Some("The form could not be read."),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = auth::safe_next(form.next.as_deref());
    if !d.access.required {
        return (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    }
    let nonce = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let csrf_ok = !nonce.is_empty()
        && crate::core::shared::tier::secrets_equal(&form.csrf, &d.access.login_csrf(nonce));
    if !auth::same_origin(&headers) || !csrf_ok {
        return login_form(
            &d,
            &next,
            Some("The login form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let Some(admin) = d.access.check_token(form.token.trim()) else {
        d.collector.metrics.reject("unauthorized", 1);
        // 200, the form again: a browser shows the message (an error status would be a
        // console error in it); scripts use the bearer header, not this form.
        return login_form(
            &d,
            &next,
            Some("That token is not accepted by this collector."),
            StatusCode::OK,
        );
    };
    let session = d.access.new_session(admin, now_unix());
    let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    let h = resp.headers_mut();
    for cookie in [
        d.access
            .set_cookie(SESSION_COOKIE, &session, auth::SESSION_SECONDS),
        d.access.set_cookie(LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(SET_COOKIE, v);
        }
    }
    resp
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(d): State<Dashboard>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let ok = form.is_ok_and(|Form(f)| d.access.check_csrf(&session, &f.csrf));
    if !ok || !auth::same_origin(&headers) {
        return html_response(
            StatusCode::FORBIDDEN,
            pages::problem("Log out", "The form's CSRF token is not this session's."),
        );
    }
    let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, "/ui/login")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&d.access.set_cookie(SESSION_COOKIE, "", 0)) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

async fn script() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        APP_JS,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        APP_CSS,
    )
        .into_response()
}
