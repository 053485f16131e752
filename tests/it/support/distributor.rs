//! An in-process distributor on 127.0.0.1:0 over a temporary data directory, and a raw
//! WebSocket subscriber that speaks the protocol frame by frame.
//!
//! The data directory holds the update log and the orch hash key, so a test can stop a
//! distributor and start another on the same directory to see what survived.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use phoenix::core::distributor::{
    self, AppState, DistributorConfig, LogOptions, SqliteUpdateLog, UpdateLog,
};
use phoenix::core::store::update_log::DEFAULT_QUEUE_JOBS;
use phoenix::core::store::{self, postgres::PgUpdateLog};

use super::backend::DataDir;
use phoenix::core::shared::anonymize::Anonymizer;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

pub use crate::support::collector::{expect_error, metric_value, status_and_json};

/// Update-log file name inside the data directory.
pub const DB_FILE: &str = "distributor.db";
/// Orch hash key file name inside the data directory.
pub const KEY_FILE: &str = "orch_hash.key";
/// Longest any single wait may take before the test fails: a guard, not a measurement.
pub const GUARD: Duration = Duration::from_secs(15);

/// A running distributor; [`TestDistributor::stop`] shuts it down gracefully.
pub struct TestDistributor {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `ws://127.0.0.1:PORT/subscribe`.
    pub ws_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The data directory (key file, and the SQLite update log or the PostgreSQL one's URL).
    pub dir: DataDir,
    /// The state the server runs on.
    pub state: AppState,
    client: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestDistributor {
    /// A distributor over a fresh temporary data directory.
    pub async fn start(config: DistributorConfig) -> TestDistributor {
        let dir = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(dir, config).await
    }

    /// A distributor over an existing data directory (e.g. one a stopped distributor used).
    pub async fn start_in(dir: impl Into<DataDir>, config: DistributorConfig) -> TestDistributor {
        let mut dir = dir.into();
        dir.ensure_database().await;
        let anonymizer =
            Anonymizer::load_or_create(&dir.path().join(KEY_FILE)).expect("orch hash key");
        let log: Arc<dyn UpdateLog> = match dir.database_url() {
            Some(url) => {
                let pool = store::open::connect_postgres(url, 8)
                    .await
                    .expect("open the PostgreSQL update log");
                Arc::new(PgUpdateLog::start(pool, DEFAULT_QUEUE_JOBS))
            }
            None => Arc::new(
                SqliteUpdateLog::open(&LogOptions::new(dir.path().join(DB_FILE)))
                    .expect("open log"),
            ),
        };
        let metrics = Arc::new(distributor::Metrics::default());
        let state = AppState::over(log, anonymizer, config, metrics)
            .await
            .expect("distributor state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(distributor::serve(listener, state.clone(), async move {
            let _ = stop.await;
        }));
        TestDistributor {
            url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/subscribe"),
            addr,
            dir,
            state,
            client: reqwest::Client::new(),
            shutdown,
            server,
        }
    }

    /// Signals shutdown and waits for the server to return (subscribers closed, writes
    /// committed). Gives the data directory back for a restart.
    pub async fn stop(self) -> DataDir {
        let _ = self.shutdown.send(());
        tokio::time::timeout(GUARD, self.server)
            .await
            .expect("distributor stops in time")
            .expect("distributor task panicked")
            .expect("distributor serve failed");
        self.dir
    }

    /// `self.url` + `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A client sharing one connection pool.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The orch hash the distributor gives `orch_id`.
    pub fn orch_hash(&self, orch_id: &str) -> String {
        self.state.anonymizer.orch_hash(orch_id)
    }

    /// POSTs `body` as JSON to `/publish`; status and JSON answer.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.endpoint("/publish"))
            .json(body)
            .send()
            .await
            .expect("POST /publish");
        status_and_json(resp).await
    }

    /// POSTs `body` to `/publish` and panics unless accepted; returns the envelope.
    pub async fn publish_ok(&self, body: &Value) -> Value {
        let (status, answer) = self.publish(body).await;
        assert_eq!(status, 200, "publish refused: {answer}");
        answer
    }

    /// Publishes a broadcast notice and returns its envelope.
    pub async fn notice(&self, message: &str) -> Value {
        self.publish_ok(&json!({"update_type": "notice", "payload": {"message": message}}))
            .await
    }

    /// POSTs `{"rollout_percent": percent}` to `/updates/{id}/widen`.
    pub async fn widen(&self, id: &str, percent: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.endpoint(&format!("/updates/{id}/widen")))
            .json(&json!({ "rollout_percent": percent }))
            .send()
            .await
            .expect("POST widen");
        status_and_json(resp).await
    }

    /// GET `path` as JSON; panics unless 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(self.endpoint(path))
            .send()
            .await
            .expect("GET");
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET /updates/{id}` after every queued delivery, ack and sighting is committed.
    pub async fn status(&self, id: &str) -> Value {
        self.state.log.flush().await;
        self.get_json(&format!("/updates/{id}")).await
    }

    /// The `/metrics` exposition text.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.endpoint("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics body")
    }

    /// A WebSocket connection that has not said hello yet.
    pub async fn connect(&self) -> Subscriber {
        Subscriber::connect(&self.ws_url, None, None).await
    }

    /// A connection that said hello; returns it with the hello_ack.
    pub async fn subscribe(
        &self,
        orch_id: &str,
        agent_path: &str,
        last_seq: u64,
    ) -> (Subscriber, Value) {
        let mut sub = self.connect().await;
        let ack = sub.hello(orch_id, agent_path, last_seq, None).await;
        (sub, ack)
    }
}

/// Waits until `cond` holds, checking every few milliseconds, for at most [`GUARD`]. For
/// server-side effects that send nothing back (acks, reaping), where no frame can signal.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One raw WebSocket subscriber.
pub struct Subscriber {
    ws: WebSocketStream<TcpStream>,
}

impl Subscriber {
    /// Connects to `ws_url`, optionally with an `X402` header and a small receive buffer
    /// (so a subscriber that stops reading backs up quickly).
    pub async fn connect(ws_url: &str, x402: Option<&str>, recv_buffer: Option<u32>) -> Subscriber {
        let mut req = ws_url.into_client_request().expect("ws request");
        if let Some(key) = x402 {
            req.headers_mut()
                .insert("x402", key.parse().expect("header value"));
        }
        let host = req
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .to_owned();
        let addr: SocketAddr = host.parse().expect("ip:port");
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket.connect(addr).await.expect("TCP connect");
        let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::client_async(req, stream))
            .await
            .expect("handshake in time")
            .expect("WebSocket handshake");
        Subscriber { ws }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send frame");
    }

    /// Sends any message (binary frames, oversized frames).
    pub async fn send_message(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// Sends a JSON text frame.
    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    /// Sends a hello and returns the hello_ack.
    pub async fn hello(
        &mut self,
        orch_id: &str,
        agent_path: &str,
        last_seq: u64,
        x402: Option<&str>,
    ) -> Value {
        let mut hello = json!({"type": "hello", "orch_id": orch_id, "agent_path": agent_path, "last_seq": last_seq});
        if let Some(k) = x402 {
            hello["x402"] = k.into();
        }
        self.send_json(&hello).await;
        let ack = self.next_frame().await;
        assert_eq!(ack["type"], "hello_ack", "{ack}");
        ack
    }

    /// The next message (control frames included); `None` when the stream ended.
    pub async fn next_message(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        tokio::time::timeout(GUARD, self.ws.next())
            .await
            .expect("a frame within the guard time")
    }

    /// The next JSON text frame, skipping pings and pongs.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            match self.next_message().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("JSON frame");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The envelope of the next frame, which must be an update.
    pub async fn next_update(&mut self) -> Value {
        let frame = self.next_frame().await;
        assert_eq!(frame["type"], "update", "{frame}");
        frame["update"].clone()
    }

    /// The envelopes of the next `n` frames, which must all be updates.
    pub async fn updates(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_update().await);
        }
        out
    }

    /// Acks an update.
    pub async fn ack(&mut self, update: &Value, status: &str, error: Option<&str>) {
        self.send_json(&json!({
            "type": "ack",
            "update_id": update["update_id"],
            "seq": update["seq"],
            "status": status,
            "error": error,
        }))
        .await;
    }

    /// Expects an error frame with `code`, then the server's close; returns the detail.
    pub async fn expect_error_and_close(&mut self, code: &str) -> String {
        let frame = self.next_frame().await;
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["error"], code, "{frame}");
        let detail = frame["detail"].as_str().expect("detail").to_owned();
        assert!(!detail.is_empty());
        let close = self.expect_close().await;
        assert!(close.is_some(), "the server sends a close frame");
        detail
    }

    /// Reads until the server closes; returns its close frame, if it sent one. Keeps reading
    /// after it, so the automatic close reply goes out and the server can let go at once.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next_message().await {
                Some(Ok(Message::Close(frame))) => {
                    while let Some(Ok(_)) = self.next_message().await {}
                    return frame;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected a close, got {other:?}"),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Closes from the client side and returns the server's close reply.
    pub async fn close_and_expect_reply(mut self) -> Option<CloseFrame> {
        let bye = CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        };
        self.ws.close(Some(bye)).await.expect("send close");
        self.expect_close().await
    }
}
