//! What the servers do to slow, numerous or greedy clients (issue 13, items 4–7): shutdown
//! with half-sent requests, header and body timeouts, the connection cap, ping floods and
//! gzip bombs. Behaviour is asserted, with generous guards; the figures are `bench abuse`'s.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use phoenix::core::collector::{CollectorConfig, Limits};
use phoenix::core::distributor::DistributorConfig;
use phoenix::core::server::ServerLimits;
use phoenix::core::server::inflate::DecodeBudget;
use phoenix::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error as StoreError,
    FilterCounts, InsightRecord, Page, ReadOrder, StoreOptions, TelemetryFilter, TelemetryStore,
};
use phoenix::core::telemetry::NewRecord;
use phoenix::core::telemetry::conversation::NewConversation;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::bin::phoenix_async;
use crate::support::collector::{TestCollector, expect_error, metric_value, status_and_json};
use crate::support::distributor::{GUARD, TestDistributor, eventually};

/// Reads until the server closes the connection; what it sent. Panics past the guard.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

/// A connection that sent `bytes` and nothing more.
async fn half_sent(addr: &str, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes.as_bytes()).await.expect("write");
    s
}

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn serve_all_exits_0_before_the_deadline_despite_half_sent_requests() {
    let home = tempfile::tempdir().unwrap();
    let mut child = phoenix_async(home.path())
        .args([
            "--json",
            "serve",
            "all",
            "--bind",
            "127.0.0.1:0",
            "--distributor-bind",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "2s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("phoenix serve all");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(GUARD, lines.next_line())
            .await
            .expect("listening in time")
            .unwrap()
            .expect("a listening line");
        let event: Value = serde_json::from_str(&line).unwrap();
        let url = event.get("http_url").unwrap_or(&event["url"]);
        urls.push(url.as_str().unwrap().to_owned());
    }
    let (collector, distributor) = (host(&urls[0]).to_owned(), host(&urls[1]).to_owned());
    // Headers without the blank line; a chunked body without its last chunk; an idle one.
    let _clients = [
        half_sent(&collector, "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: appl").await,
        half_sent(
            &distributor,
            "POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"upd\r\n",
        )
        .await,
        half_sent(&collector, "").await,
    ];
    let health = reqwest::get(format!("http://{collector}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let stopped = Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("phoenix exits while the half-sent clients are still connected")
        .unwrap();
    assert!(status.success(), "{status}");
    // The deadline is 2 s; half-sent requests are not waited for at all. A guard, not a figure.
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "{:?}",
        stopped.elapsed()
    );
}

/// A store whose `submit` waits (blocking its worker) until the test opens the gate.
struct GatedStore {
    inner: Arc<dyn TelemetryStore>,
    entered: AtomicBool,
    open: AtomicBool,
}

#[async_trait::async_trait]
impl TelemetryStore for GatedStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, StoreError> {
        self.entered.store(true, Ordering::SeqCst);
        // Blocking here must not hold this worker's queued tasks hostage (the test's own task
        // may sit in its LIFO slot): hand them to another thread while waiting.
        tokio::task::block_in_place(|| {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        self.inner.submit(records)
    }
    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, StoreError> {
        self.inner.save_insight(insight)
    }
    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, StoreError> {
        self.inner.purge_before(cutoff, limit)
    }
    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, StoreError> {
        self.inner.query(filter, limit, cursor).await
    }
    async fn last_heartbeats(
        &self,
        orch_hashes: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.inner.last_heartbeats(orch_hashes).await
    }
    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, StoreError> {
        self.inner.insights(limit).await
    }
    async fn cells(
        &self,
        range: phoenix::core::store::rollup::CellRange,
    ) -> Result<Vec<phoenix::core::store::rollup::CellRow>, StoreError> {
        self.inner.cells(range).await
    }
    async fn orchs_seen(
        &self,
        limit: usize,
    ) -> Result<Vec<phoenix::core::store::rollup::OrchSeen>, StoreError> {
        self.inner.orchs_seen(limit).await
    }
    async fn orch_health(
        &self,
        healthy_since: i64,
    ) -> Result<Vec<phoenix::core::store::rollup::OrchHealth>, StoreError> {
        self.inner.orch_health(healthy_since).await
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.inner.count().await
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[async_trait::async_trait]
impl ConversationStore for GatedStore {
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, StoreError> {
        self.inner.submit_conversations(conversations)
    }
    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, StoreError> {
        self.inner.purge_conversations_before(cutoff, limit)
    }
    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, StoreError> {
        self.inner.filter_counts(filter).await
    }
    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, StoreError> {
        self.inner.count_conversations(filter, order).await
    }
    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, StoreError> {
        self.inner.read_conversations(filter, order).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_request_in_flight_at_shutdown_gets_its_200_and_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path().join(crate::support::collector::DB_FILE));
    let slot = Arc::new(std::sync::OnceLock::<Arc<GatedStore>>::new());
    let keep = slot.clone();
    let c = TestCollector::start_with(dir, CollectorConfig::default(), options, move |inner| {
        let store = Arc::new(GatedStore {
            inner,
            entered: AtomicBool::new(false),
            open: AtomicBool::new(false),
        });
        let _ = keep.set(store.clone());
        store
    })
    .await;
    let gate = slot.get().unwrap().clone();
    let (client, url) = (c.client(), c.endpoint("/ingest"));
    let request = tokio::spawn(async move {
        let body = json!({"kind": "in_flight_at_shutdown", "payload": {"n": 1}});
        status_and_json(client.post(url).json(&body).send().await.unwrap()).await
    });
    eventually("the request reaches the store", || {
        let gate = gate.clone();
        async move { gate.entered.load(Ordering::SeqCst) }
    })
    .await;
    let _partial = half_sent(host(&c.url), "GET /health HTTP/1.1\r\nHo").await;
    let url = c.url.clone();
    let stopping = tokio::spawn(c.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the complete request"
    );
    gate.open.store(true, Ordering::SeqCst);
    let (status, answer) = tokio::time::timeout(GUARD, request).await.unwrap().unwrap();
    assert_eq!(status, 200, "{answer}");
    let dir = tokio::time::timeout(GUARD, stopping)
        .await
        .expect("the collector stops once the request is answered")
        .unwrap();
    assert!(
        reqwest::get(format!("{url}/health")).await.is_err(),
        "no longer listening"
    );

    let again = TestCollector::start_in(dir, CollectorConfig::default()).await;
    let stored = again.telemetry("kind=in_flight_at_shutdown").await;
    assert_eq!(stored.len(), 1, "the acknowledged record was committed");
    again.stop().await;
}

fn collector_limits(f: impl FnOnce(&mut ServerLimits)) -> CollectorConfig {
    let mut server = ServerLimits::default();
    f(&mut server);
    CollectorConfig {
        server,
        ..CollectorConfig::default()
    }
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_by_the_header_timeout() {
    let c = TestCollector::start(collector_limits(|l| {
        l.header_timeout = Duration::from_millis(300)
    }))
    .await;
    let addr = host(&c.url).to_owned();
    let mut lorises = Vec::new();
    for i in 0..20 {
        let s = half_sent(
            &addr,
            &format!("GET /health HTTP/1.1\r\nHost: x\r\nX-{i}: a"),
        )
        .await;
        lorises.push(s);
    }
    // Trickling more header bytes does not buy time.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for s in &mut lorises {
            let _ = s.write_all(b"a").await;
        }
        let health = c.client().get(c.endpoint("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "others are served meanwhile");
    }
    for mut s in lorises {
        read_until_closed(&mut s).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_the_connection_is_closed() {
    let c = TestCollector::start(collector_limits(|l| {
        l.body_timeout = Duration::from_millis(300);
        l.body_min_rate = 1000;
    }))
    .await;
    let mut s = half_sent(
        host(&c.url),
        "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"kind\":",
    )
    .await;
    let answer = read_until_closed(&mut s).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let json: Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(json["error"], "body_timeout", "{json}");
    c.stop().await;
}

#[tokio::test]
async fn beyond_the_connection_cap_the_newest_gets_503_and_accept_goes_on() {
    let c = TestCollector::start(collector_limits(|l| l.max_connections = 3)).await;
    let addr = host(&c.url).to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_sent(&addr, "").await);
    }
    eventually("the three connections are counted", || async {
        c.state.config.server.open_connections() == 3
    })
    .await;
    let refused = c.client().get(c.endpoint("/health")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let got = status_and_json(refused).await;
    expect_error(&got, 503, "too_many_connections");

    drop(held.pop());
    eventually("a freed slot is used again", || async {
        let fresh = reqwest::Client::new();
        matches!(fresh.get(c.endpoint("/health")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    drop(held);
    c.stop().await;
}

#[tokio::test]
async fn a_ping_flood_closes_the_peer_with_1008_and_is_counted() {
    let d = TestDistributor::start(DistributorConfig {
        max_control_frames: 20,
        ..DistributorConfig::default()
    })
    .await;
    let (mut sub, _) = d.subscribe("orch-flood", "root", 0).await;
    let mut sent = 0;
    for _ in 0..2000 {
        if sub
            .send_message(Message::Ping(vec![7u8; 125].into()))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(sent > 20, "the flood got going ({sent} pings)");
    // The peer is closed: a close frame saying why if it arrives before the reset, else the end.
    if let Some(frame) = sub.expect_close().await {
        assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
    }
    eventually("the flood is counted", || async {
        let text = d.metrics_text().await;
        metric_value(&text, "phoenix_distributor_control_floods_total", "") == Some(1.0)
    })
    .await;
    eventually("the subscriber is gone", || async {
        d.state.connected() == 0
    })
    .await;
    d.stop().await;
}

fn gzip_prefix(decoded: usize) -> (Vec<u8>, flate2::write::GzEncoder<Vec<u8>>) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&vec![b'x'; decoded]).unwrap();
    e.flush().unwrap();
    let prefix = std::mem::take(e.get_mut());
    (prefix, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_beyond_the_decode_budget_get_503_and_the_budget_comes_back() {
    const MIB: usize = 1024 * 1024;
    let mut config = collector_limits(|l| l.decode_budget = DecodeBudget::new(2 * MIB));
    config.limits = Limits {
        max_decoded_bytes: MIB,
        ..Limits::default()
    };
    let c = TestCollector::start(config).await;
    let budget = c.state.config.server.decode_budget.clone();

    // Two bombs inflate to near the limit, then stall: they hold the whole budget.
    let mut bombs = Vec::new();
    for _ in 0..2 {
        let (prefix, encoder) = gzip_prefix(MIB - 1000);
        let mut s = half_sent(
            host(&c.url),
            "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
        write_chunk(&mut s, &prefix).await;
        bombs.push((s, encoder));
    }
    eventually("the stalled bombs hold the budget", || async {
        budget.in_use() >= 2 * MIB - 64 * 1024
    })
    .await;

    let mut small = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    small
        .write_all(
            json!({"kind": "k", "payload": "p".repeat(100_000)})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let resp = c
        .client()
        .post(c.endpoint("/ingest"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(small.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    expect_error(&status_and_json(resp).await, 503, "busy");

    // The bombs go on past the limit: 413, and their share of the budget is given back.
    for (mut s, mut encoder) in bombs {
        encoder.write_all(&vec![b'x'; 2 * MIB]).unwrap();
        write_chunk(&mut s, &encoder.finish().unwrap()).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        let answer = read_head(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    eventually("the budget is free again", || async {
        budget.in_use() == 0
    })
    .await;
    c.stop().await;
}

async fn write_chunk(s: &mut TcpStream, data: &[u8]) {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    let _ = s.write_all(&chunk).await;
}

/// Reads an answer's head (status line and headers).
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer in time");
    String::from_utf8_lossy(&got).into_owned()
}
