//! A scripted OpenAI-compatible endpoint on 127.0.0.1 for tests that talk to an LLM.
//!
//! Replies come from a FIFO script, then from an optional responder computed from the
//! request body, then from a default; every request body and header map is recorded, and
//! so is the largest number of requests in flight at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phoenix::core::shared::llm::LlmSettings;
use serde_json::{Value, json};
use tokio::sync::watch;

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a normal completion whose content is this text.
    Text(String),
    /// This status and raw body, with an optional `Retry-After` in seconds.
    Status {
        /// HTTP status code.
        status: u16,
        /// Raw response body (sent as JSON content type).
        body: String,
        /// `Retry-After` header value in seconds.
        retry_after: Option<u64>,
    },
    /// Never answers (until the fake is dropped): exercises client timeouts.
    Hang,
    /// 200 with this raw body.
    Garbage(String),
    /// 200 with `{"error": {"code", "message"}}`, as OpenRouter reports upstream failures.
    ErrorInBody {
        /// Number or string, as providers vary.
        code: Value,
        /// The provider's message.
        message: String,
    },
    /// Waits, then answers with the inner reply.
    Delay(Duration, Box<Reply>),
    /// 200 with a completion whose content is "".
    Empty,
}

impl Reply {
    /// Shorthand for [`Reply::Text`].
    pub fn text(content: impl Into<String>) -> Self {
        Reply::Text(content.into())
    }

    /// Shorthand for an error status with an OpenAI-style `{"error":{"message","code"}}` body.
    pub fn error(status: u16, message: &str) -> Self {
        let body = json!({"error": {"message": message, "code": status}}).to_string();
        Reply::Status {
            status,
            body,
            retry_after: None,
        }
    }
}

type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
    responder: Option<Responder>,
    requests: Vec<Value>,
    headers: Vec<HeaderMap>,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    shutdown: watch::Receiver<bool>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// Counts a request as in flight until its answer is built (or the client went away).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Script> {
        // A panicking test thread must not turn every later assertion into a poison panic.
        self.script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running fake endpoint; the server stops when this is dropped.
pub struct FakeLlm {
    /// `http://127.0.0.1:PORT/v1`, ready for [`LlmSettings::base_url`].
    pub base_url: String,
    shared: Shared,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Binds 127.0.0.1:0 and serves `POST /v1/chat/completions`; the default reply is
    /// `Text("- default bullet")`.
    pub async fn start() -> FakeLlm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LLM");
        let addr = listener.local_addr().expect("fake LLM address");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Shared {
            script: Arc::new(Mutex::new(Script {
                queue: VecDeque::new(),
                default: Reply::text("- default bullet"),
                responder: None,
                requests: Vec::new(),
                headers: Vec::new(),
            })),
            shutdown: shutdown_rx.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(shared.clone());
        let mut stop = shutdown_rx;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        FakeLlm {
            base_url: format!("http://{addr}/v1"),
            shared,
            shutdown,
            server,
        }
    }

    /// Queues a reply for the next unanswered request.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Reply used when the script is empty and no responder is set.
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Computes the reply from the request body whenever the script is empty.
    pub fn set_responder(&self, f: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.shared.lock().responder = Some(Arc::new(f));
    }

    /// Request bodies received, in order (`Null` for a body that was not JSON).
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().requests.clone()
    }

    /// Request headers received, in order.
    pub fn request_headers(&self) -> Vec<HeaderMap> {
        self.shared.lock().headers.clone()
    }

    /// Number of requests received.
    pub fn hits(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Client settings for this fake: model `fake/model`, key `test-key`, 2 s timeout,
    /// 2 retries, backoff 10 ms capped at 200 ms.
    pub fn settings(&self) -> LlmSettings {
        let mut settings = LlmSettings::new(self.base_url.clone(), "fake/model");
        settings.api_key = Some("test-key".into());
        settings.timeout = Duration::from_secs(2);
        settings.max_retries = 2;
        settings.backoff_base = Duration::from_millis(10);
        settings.max_backoff = Duration::from_millis(200);
        settings
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        // Wakes hanging and delayed handlers so their connections close, then stops accepting.
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}

async fn chat_completions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = InFlight(shared.in_flight.clone());
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut reply = {
        let mut script = shared.lock();
        script.requests.push(request.clone());
        script.headers.push(headers);
        match script.queue.pop_front() {
            Some(reply) => reply,
            None => match script.responder.clone() {
                Some(responder) => {
                    // Called without the lock so a responder may inspect the fake.
                    drop(script);
                    responder(&request)
                }
                None => script.default.clone(),
            },
        }
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake/model")
        .to_owned();
    let mut shutdown = shared.shutdown.clone();
    loop {
        reply = match reply {
            Reply::Delay(delay, inner) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => *inner,
                    _ = shutdown.wait_for(|stopped| *stopped) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
            Reply::Hang => {
                let _ = shutdown.wait_for(|stopped| *stopped).await;
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            other => return render(other, &model),
        };
    }
}

fn render(reply: Reply, model: &str) -> Response {
    match reply {
        Reply::Text(content) => completion(model, &content).into_response(),
        Reply::Empty => completion(model, "").into_response(),
        Reply::Status {
            status,
            body,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).expect("valid status code in Reply::Status");
            let mut response = (status, json_body(body)).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Reply::Garbage(body) => (StatusCode::OK, json_body(body)).into_response(),
        Reply::ErrorInBody { code, message } => {
            let body = json!({"error": {"code": code, "message": message}});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Reply::Delay(..) | Reply::Hang => unreachable!("resolved by the handler"),
    }
}

fn json_body(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

fn completion(model: &str, content: &str) -> axum::Json<Value> {
    axum::Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }))
}
