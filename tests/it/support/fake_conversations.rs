//! A fake collector on 127.0.0.1 implementing `POST /ingest/conversations` as the contract
//! says: one conversation, a JSON array or NDJSON, gzip allowed; 200 `{"accepted", "duplicates",
//! "ids"}` (idempotent by conversation_id); 400 naming the record and field; 422
//! `pii_detected` when personal data is still detectable; 415 for other content types or
//! encodings; 401 without the expected bearer token.
//!
//! It can go down (nothing listening on its port) and come up again on the same port,
//! answer scripted statuses (503, 429 with `Retry-After`) first, and refuse conversations
//! containing a marker as if its PII guard were stricter than the edge's. It records every
//! request body and every conversation it received, refused or not: what left the machine.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phoenix::core::privacy::pii::contains_pii;
use phoenix::core::telemetry::conversation::{Conversation, parse_conversations};
use phoenix::core::telemetry::{BodyFormat, ParseError};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Status answered.
    pub status: u16,
    /// Whether the body came gzip-encoded.
    pub gzip: bool,
    /// Conversation ids in the body, in order.
    pub ids: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// Stored conversations by id.
    stored: BTreeMap<String, Value>,
    /// Every conversation in every body, refused ones too.
    received: Vec<Value>,
    /// Every body, decoded.
    bodies: Vec<String>,
    requests: Vec<Request>,
    /// Answered first, in order: (status, Retry-After seconds).
    script: VecDeque<(u16, Option<u64>)>,
    refuse_containing: Vec<String>,
    token: Option<String>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

/// The fake collector; its state survives `down`/`up` like a real collector's database.
pub struct FakeConversations {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl FakeConversations {
    /// A fake that is up.
    pub async fn start() -> FakeConversations {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut fake = FakeConversations {
            addr: listener.local_addr().unwrap(),
            shared: Arc::default(),
            server: None,
        };
        fake.serve(listener);
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening (connections refused from now on).
    pub async fn down(&mut self) {
        if let Some((stop, handle)) = self.server.take() {
            let _ = stop.send(());
            let _ = handle.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        if self.server.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
            self.serve(listener);
        }
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/ingest/conversations", post(ingest))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, handle));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Answers these statuses (with `Retry-After` seconds) before behaving normally.
    pub fn script(&self, replies: impl IntoIterator<Item = (u16, Option<u64>)>) {
        self.lock().script.extend(replies);
    }

    /// Refuses (422 `pii_detected`) any conversation whose messages contain `marker`.
    pub fn refuse_containing(&self, marker: &str) {
        self.lock().refuse_containing.push(marker.to_owned());
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.to_owned());
    }

    /// Stored conversations by id.
    pub fn stored(&self) -> BTreeMap<String, Value> {
        self.lock().stored.clone()
    }

    /// Every conversation received, in order, refused ones and resends included.
    pub fn received(&self) -> Vec<Value> {
        self.lock().received.clone()
    }

    /// Every request body, decoded.
    pub fn bodies(&self) -> Vec<String> {
        self.lock().bodies.clone()
    }

    /// Every request.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Waits until at least `n` conversations are stored; panics after `timeout`.
    pub async fn wait_stored(&self, n: usize, timeout: Duration) {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                if self.lock().stored.len() >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} conversations stored after {timeout:?}"));
    }
}

fn error(status: StatusCode, code: &str, detail: String, extra: Value) -> Response {
    let mut body = json!({"error": code, "detail": detail});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    (status, axum::Json(body)).into_response()
}

/// Every string inside `v`.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

/// What the fake's guard finds in one conversation's messages.
fn pii_in(c: &Conversation, markers: &[String]) -> Vec<String> {
    let mut texts = Vec::new();
    c.messages.iter().for_each(|m| strings(m, &mut texts));
    let mut kinds: Vec<String> = Vec::new();
    for t in &texts {
        kinds.extend(contains_pii(t).iter().map(|k| k.as_str().to_owned()));
        if markers.iter().any(|m| t.contains(m)) {
            kinds.push("marker".to_owned());
        }
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

async fn ingest(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = handle(&shared, &headers, &body);
    shared.changed.notify_waiters();
    response
}

fn handle(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let gzip = encoding == Some("gzip");
    let decoded = match encoding {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .is_err()
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_gzip",
                    "not gzip".into(),
                    json!({}),
                );
            }
            out
        }
        Some(other) => {
            let detail = format!("unsupported encoding {other}");
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                detail,
                json!({}),
            );
        }
    };
    let text = String::from_utf8_lossy(&decoded).into_owned();
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .flat_map(|v| match v {
            Value::Array(items) => items,
            one => vec![one],
        })
        .collect();
    let ids: Vec<String> = docs
        .iter()
        .map(|d| d["conversation_id"].as_str().unwrap_or("").to_owned())
        .collect();
    inner.bodies.push(text);
    inner.received.extend(docs);
    let answer = |inner: &mut Inner, status: u16, response: Response| {
        inner.requests.push(Request {
            status,
            gzip,
            ids: ids.clone(),
        });
        response
    };

    if let Some((status, retry_after)) = inner.script.pop_front() {
        let code = StatusCode::from_u16(status).unwrap();
        let mut response = error(code, "scripted", format!("scripted {status}"), json!({}));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        }
        return answer(&mut inner, status, response);
    }
    if let Some(token) = &inner.token {
        let expected = format!("Bearer {token}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            let r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "bearer token required".into(),
                json!({}),
            );
            return answer(&mut inner, 401, r);
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-ndjson" => BodyFormat::Ndjson,
        "application/json" | "" => BodyFormat::Auto,
        other => {
            let r = error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type {other}"),
                json!({}),
            );
            return answer(&mut inner, 415, r);
        }
    };
    let conversations = match parse_conversations(&decoded, format) {
        Ok(c) => c,
        Err(ParseError::Records { errors, total }) => {
            let detail = format!(
                "{} of {total} record(s) invalid: {}",
                errors.len(),
                errors[0]
            );
            let r = error(
                StatusCode::BAD_REQUEST,
                "invalid_record",
                detail,
                json!({"records": errors}),
            );
            return answer(&mut inner, 400, r);
        }
        Err(e) => {
            let r = error(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("{e:?}"),
                json!({}),
            );
            return answer(&mut inner, 400, r);
        }
    };
    let flagged: Vec<Value> = conversations
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let kinds = pii_in(c, &inner.refuse_containing);
            (!kinds.is_empty())
                .then(|| json!({"index": i, "conversation_id": c.conversation_id, "kinds": kinds}))
        })
        .collect();
    if !flagged.is_empty() {
        let detail = format!(
            "personal data still detectable in {} record(s)",
            flagged.len()
        );
        let r = error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "pii_detected",
            detail,
            json!({"records": flagged}),
        );
        return answer(&mut inner, 422, r);
    }
    let (mut new, mut duplicates) = (Vec::new(), 0);
    for c in conversations {
        let stored = serde_json::to_value(&c).unwrap();
        match inner.stored.entry(c.conversation_id) {
            std::collections::btree_map::Entry::Occupied(_) => duplicates += 1,
            std::collections::btree_map::Entry::Vacant(slot) => {
                new.push(slot.key().clone());
                slot.insert(stored);
            }
        }
    }
    let ok = axum::Json(json!({"accepted": new.len(), "duplicates": duplicates, "ids": new}));
    answer(&mut inner, 200, ok.into_response())
}
