//! An in-process collector on 127.0.0.1:0 over a temporary data directory.
//!
//! The data directory holds the SQLite database and the orch hash key, so a test can stop a
//! collector and start another on the same directory to see what survived.

use std::path::PathBuf;
use std::sync::Arc;

use phoenix::core::collector::{self, AppState, CollectorConfig, Metrics};
use phoenix::core::shared::anonymize::Anonymizer;
use phoenix::core::store::{self, Location, SqliteStore, StoreOptions, TelemetryStore};
use serde_json::Value;

use super::backend::DataDir;
use tokio::sync::oneshot;

/// Database file name inside the data directory.
pub const DB_FILE: &str = "telemetrist.db";
/// Orch hash key file name inside the data directory.
pub const KEY_FILE: &str = "orch_hash.key";

/// A running collector; [`TestCollector::stop`] shuts it down gracefully.
pub struct TestCollector {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The data directory (key file, and the SQLite database or the PostgreSQL one's URL).
    pub dir: DataDir,
    /// The state the server runs on (its store, anonymiser and metrics).
    pub state: AppState,
    client: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestCollector {
    /// A collector over a fresh temporary data directory.
    pub async fn start(config: CollectorConfig) -> TestCollector {
        let dir = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(dir, config).await
    }

    /// A collector over an existing data directory (e.g. one a stopped collector used).
    pub async fn start_in(dir: impl Into<DataDir>, config: CollectorConfig) -> TestCollector {
        let dir = dir.into();
        let store_options = StoreOptions::new(dir.path().join(DB_FILE));
        Self::start_with(dir, config, store_options, |store| store).await
    }

    /// Like [`TestCollector::start_in`], with explicit store options (on PostgreSQL only the
    /// queue size applies) and a chance to wrap the store (e.g. in a test double that
    /// refuses some writes).
    pub async fn start_with(
        dir: impl Into<DataDir>,
        config: CollectorConfig,
        store_options: StoreOptions,
        wrap: impl FnOnce(Arc<dyn TelemetryStore>) -> Arc<dyn TelemetryStore>,
    ) -> TestCollector {
        Self::start_with_extra(dir, config, store_options, wrap, |_| None).await
    }

    /// Like [`TestCollector::start_with`], with routes served beside the collector's (the
    /// dashboard), made from its state.
    pub async fn start_with_extra(
        dir: impl Into<DataDir>,
        config: CollectorConfig,
        store_options: StoreOptions,
        wrap: impl FnOnce(Arc<dyn TelemetryStore>) -> Arc<dyn TelemetryStore>,
        extra: impl FnOnce(&AppState) -> Option<collector::Extra>,
    ) -> TestCollector {
        Self::start_on(None, dir, config, store_options, wrap, extra).await
    }

    /// Like [`TestCollector::start_with_extra`], on `listener` when given (a restart on the
    /// same address) instead of a fresh 127.0.0.1:0.
    pub async fn start_on(
        listener: Option<tokio::net::TcpListener>,
        dir: impl Into<DataDir>,
        config: CollectorConfig,
        store_options: StoreOptions,
        wrap: impl FnOnce(Arc<dyn TelemetryStore>) -> Arc<dyn TelemetryStore>,
        extra: impl FnOnce(&AppState) -> Option<collector::Extra>,
    ) -> TestCollector {
        let mut dir = dir.into();
        dir.ensure_database().await;
        let anonymizer =
            Anonymizer::load_or_create(&dir.path().join(KEY_FILE)).expect("orch hash key");
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn TelemetryStore> = match dir.database_url() {
            Some(url) => {
                let options = store::OpenOptions {
                    queue_records: store_options.queue_records,
                    pool_size: 8,
                    ..store::OpenOptions::default()
                };
                store::open(
                    &Location::Postgres(url.to_owned()),
                    &options,
                    metrics.store.clone(),
                )
                .await
                .expect("open the PostgreSQL store")
            }
            None => Arc::new(
                SqliteStore::open(&store_options, metrics.store.clone()).expect("open store"),
            ),
        };
        let store = wrap(store);
        let state = AppState::new(store, anonymizer, config, metrics).expect("collector state");
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0"),
        };
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let extra = extra(&state);
        let server = tokio::spawn(collector::serve_app(
            listener,
            None,
            state.clone(),
            extra,
            async move {
                let _ = stop.await;
            },
        ));
        TestCollector {
            url,
            dir,
            state,
            client: reqwest::Client::new(),
            shutdown,
            server,
        }
    }

    /// The SQLite database file (SQLite runs only).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(DB_FILE)
    }

    /// The store as `phoenix export --db` takes it: the SQLite file or the database URL.
    pub fn store_location(&self) -> PathBuf {
        self.dir.store_location(DB_FILE)
    }

    /// A client for this collector (shares one connection pool).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// `self.url` + `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Signals shutdown and waits for the server to return: everything it acknowledged is
    /// committed by then. Gives the data directory back for a restart.
    pub async fn stop(self) -> DataDir {
        let _ = self.shutdown.send(());
        self.server
            .await
            .expect("collector task panicked")
            .expect("collector serve failed");
        self.dir
    }

    /// POSTs `body` to `/ingest` as JSON and returns status and JSON body.
    pub async fn ingest_json(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.endpoint("/ingest"))
            .json(body)
            .send()
            .await
            .expect("POST /ingest");
        status_and_json(resp).await
    }

    /// POSTs `body` (one conversation or an array) to `/ingest/conversations` as JSON and
    /// returns status and JSON body.
    pub async fn ingest_conversations(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.endpoint("/ingest/conversations"))
            .json(body)
            .send()
            .await
            .expect("POST /ingest/conversations");
        status_and_json(resp).await
    }

    /// POSTs `body` to `/ingest` and panics unless it is accepted; returns the record ids.
    pub async fn ingest_ok(&self, body: &Value) -> Vec<String> {
        let (status, answer) = self.ingest_json(body).await;
        assert_eq!(status, 200, "ingest refused: {answer}");
        answer["ids"]
            .as_array()
            .expect("ids array")
            .iter()
            .map(|id| id.as_str().expect("id string").to_owned())
            .collect()
    }

    /// GET `path_and_query` and its JSON body; panics unless 200.
    pub async fn get_json(&self, path_and_query: &str) -> Value {
        let resp = self
            .client
            .get(self.endpoint(path_and_query))
            .send()
            .await
            .expect("GET");
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        body
    }

    /// Stored records matching `query` (e.g. `kind=x`), newest first, at most 5000.
    pub async fn telemetry(&self, query: &str) -> Vec<Value> {
        let sep = if query.is_empty() { "" } else { "&" };
        let page = self
            .get_json(&format!("/telemetry?limit=5000{sep}{query}"))
            .await;
        let records = page["records"].as_array().expect("records array").clone();
        assert_eq!(page["count"], records.len(), "count disagrees: {page}");
        records
    }

    /// POSTs `body` to `/analyze`; returns status and JSON body.
    pub async fn analyze(&self, body: &Value, x402: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(self.endpoint("/analyze")).json(body);
        if let Some(key) = x402 {
            req = req.header("X402", key);
        }
        status_and_json(req.send().await.expect("POST /analyze")).await
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
}

/// Status and JSON body of a response; panics when the body is not JSON.
pub async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Checks an error answer is `{"error": code, "detail": sentence}` with `status`; returns the
/// detail.
#[track_caller]
pub fn expect_error(got: &(u16, Value), status: u16, code: &str) -> String {
    let (got_status, body) = got;
    assert_eq!(
        *got_status, status,
        "expected HTTP {status} {code}, got {body}"
    );
    assert_eq!(body["error"], code, "{body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail string in {body}"));
    assert!(!detail.trim().is_empty(), "empty detail in {body}");
    detail.to_owned()
}

/// The value of an unlabelled sample, or of the sample with exactly `labels` (such as
/// `reason="too_large"`), in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == wanted).then(|| value.parse().ok()).flatten()
        })
}
