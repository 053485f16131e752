//! Several real `phoenix` processes on one PostgreSQL database (`PHOENIX_TEST_DATABASE_URL`):
//! a collector killed with SIGKILL mid-ingest keeps everything it acknowledged, a database
//! outage is 503 with Retry-After and nothing acknowledged is lost, two collectors serve each
//! other's records, two distributors publishing at once make one gap-free sequence.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use phoenix::core::collector::{self, AppState, CollectorConfig, Metrics};
use phoenix::core::shared::anonymize::Anonymizer;
use phoenix::core::store::{self, Location};
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

use crate::support::backend::pg_column;
use crate::support::bin::phoenix_async;
use crate::support::distributor::{GUARD, Subscriber};
use crate::support::services::TestDatabase;

/// `phoenix --json serve SERVICE --database-url URL` on port 0; the child and the URLs it
/// announced (for a distributor: its HTTP URL).
async fn serve(home: &std::path::Path, service: &str, url: &str) -> (Child, String) {
    serve_with(home, service, url, &[], &[]).await
}

/// [`serve`] with more arguments and environment.
pub(crate) async fn serve_with(
    home: &std::path::Path,
    service: &str,
    url: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Child, String) {
    let mut child = phoenix_async(home)
        .args(["--json", "serve", service, "--database-url", url])
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("phoenix serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("listening in time")
        .unwrap()
        .expect("a listening line");
    let event: Value = serde_json::from_str(&line).unwrap();
    let url = event.get("http_url").unwrap_or(&event["url"]);
    (child, url.as_str().unwrap().to_owned())
}

pub(crate) fn batch(client: usize, n: usize, size: usize) -> String {
    (0..size)
        .map(|i| {
            json!({"kind": "llm_call", "orch_id": format!("orch-{client}"),
                   "agent_path": "support/triage", "payload": {"n": n * size + i}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every telemetry id in the database, read directly.
pub(crate) async fn stored_ids(url: &str) -> HashSet<String> {
    pg_column(url, "SELECT id FROM telemetry")
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The ids an ingest answer acknowledged.
pub(crate) fn acked_ids(answer: &Value) -> impl Iterator<Item = String> + '_ {
    answer["ids"]
        .as_array()
        .expect("an ids array")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
}

/// Posts batch `n` (20 records) to the collector at `base`, within [`GUARD`] (an answer, not a
/// hang); its status, Retry-After and body. The ids of a 200 are added to `acknowledged`.
pub(crate) async fn ingest_batch(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    acknowledged: &mut Vec<String>,
) -> (u16, Option<reqwest::header::HeaderValue>, Value) {
    let resp = tokio::time::timeout(
        GUARD,
        http.post(format!("{base}/ingest"))
            .header("content-type", "application/x-ndjson")
            .body(batch(0, n, 20))
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get(RETRY_AFTER).cloned();
    let body: Value = resp.json().await.unwrap();
    if status == 200 {
        acknowledged.extend(acked_ids(&body));
    }
    (status, retry_after, body)
}

/// Publishes a notice through the distributor at `base`; its seq.
async fn publish_notice(http: &reqwest::Client, base: &str, message: &str) -> u64 {
    let resp = http
        .post(format!("{base}/publish"))
        .json(&json!({"update_type": "notice", "payload": {"message": message}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["seq"].as_u64().unwrap()
}

/// The WebSocket endpoint of the distributor at `base` (`http://…`).
fn subscribe_url(base: &str) -> String {
    format!("{}/subscribe", base.replacen("http://", "ws://", 1))
}

#[tokio::test]
async fn a_collector_killed_mid_ingest_keeps_every_id_it_acknowledged() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(home.path(), "collector", &db.url).await;
    const CLIENTS: usize = 4;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let base = base.clone();
            let acked_tx = acked_tx.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked: Vec<String> = Vec::new();
                for n in 0.. {
                    let sent = http
                        .post(format!("{base}/ingest"))
                        .header("content-type", "application/x-ndjson")
                        .body(batch(c, n, 50))
                        .send()
                        .await;
                    let Ok(resp) = sent else { break };
                    if resp.status() != 200 {
                        continue;
                    }
                    let Ok(body) = resp.json::<Value>().await else {
                        break;
                    };
                    acked.extend(acked_ids(&body));
                    let _ = acked_tx.send(());
                }
                acked
            })
        })
        .collect();
    drop(acked_tx);
    for _ in 0..CLIENTS * 5 {
        acked_rx.recv().await.expect("requests are acknowledged");
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert!(acknowledged.len() >= CLIENTS * 5 * 50);
    let stored = stored_ids(&db.url).await;
    let lost = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged ids lost",
        acknowledged.len()
    );

    // A collector started again on the database serves them.
    let (_child, base) = serve(home.path(), "collector", &db.url).await;
    let page: Value = reqwest::get(format!("{base}/telemetry?limit=1000&kind=llm_call"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["count"].as_u64().unwrap() >= acknowledged.len().min(1000) as u64);
}

#[tokio::test]
async fn two_collectors_on_one_database_serve_each_others_records() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (_a, a) = serve(home.path(), "collector", &db.url).await;
    let (_b, b) = serve(home.path(), "collector", &db.url).await;
    let http = reqwest::Client::new();
    for (base, kind) in [(&a, "from_a"), (&b, "from_b")] {
        let resp = http
            .post(format!("{base}/ingest"))
            .json(&json!({"kind": kind, "orch_id": "o-1", "agent_path": "support/x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    for (base, other) in [(&a, "from_b"), (&b, "from_a")] {
        let page: Value = http
            .get(format!("{base}/telemetry?kind={other}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["count"], 1, "{base} does not see {other}: {page}");
    }
    // One key file (one home): an orch hashes the same in both, so filters agree.
    let page: Value = http
        .get(format!("{a}/telemetry?orch=o-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["count"], 2, "{page}");
}

/// A TCP relay to PostgreSQL that can cut every connection and refuse new ones, as a
/// database that is down or restarting looks to its clients.
pub(crate) struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (is_down, cuts) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if is_down.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { port, down, cut }
    }

    pub(crate) fn outage(&self) {
        self.down.store(true, Ordering::Release);
        self.cut.send_modify(|n| *n += 1);
    }

    pub(crate) fn restore(&self) {
        self.down.store(false, Ordering::Release);
    }
}

impl Relay {
    /// A relay to the database at `url`, and the URL that reaches it through the relay.
    pub(crate) async fn to_database(url: &str) -> (Relay, String) {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let relay = Relay::start(([127, 0, 0, 1], port).into()).await;
        let dbname = config.get_dbname().unwrap().to_owned();
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let relayed = format!("postgres://{user}@127.0.0.1:{}/{dbname}", relay.port);
        (relay, relayed)
    }
}

#[tokio::test]
async fn a_database_outage_is_503_with_retry_after_and_ingest_resumes_after_it() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (relay, relayed) = Relay::to_database(&db.url).await;

    let metrics = Arc::new(Metrics::default());
    let store = store::open(
        &Location::Postgres(relayed),
        &store::OpenOptions::default(),
        metrics.store.clone(),
    )
    .await
    .unwrap();
    let state = AppState::new(
        store,
        Anonymizer::from_key(&[3; 32]),
        CollectorConfig::default(),
        metrics,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(collector::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut ingest = async |n: usize| ingest_batch(&http, &base, n, &mut acknowledged).await;

    for n in 0..3 {
        assert_eq!(ingest(n).await.0, 200);
    }
    relay.outage();
    let mut refused = 0;
    for n in 3..8 {
        let (status, retry_after, body) = ingest(n).await;
        assert!(
            status == 503 || status == 200,
            "HTTP {status} in an outage: {body}"
        );
        if status == 503 {
            refused += 1;
            assert!(retry_after.is_some(), "503 without Retry-After: {body}");
            assert_eq!(body["error"], "storage_unavailable", "{body}");
        }
    }
    assert!(
        refused >= 4,
        "only {refused} of 5 refused while the database was down"
    );
    relay.restore();
    // The pool reconnects by itself: ingest succeeds again within a few tries.
    let mut resumed = false;
    for n in 8..40 {
        if ingest(n).await.0 == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(resumed, "ingest did not resume after the outage");
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let stored = stored_ids(&db.url).await;
    let lost = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged ids lost",
        acknowledged.len()
    );
}

#[tokio::test]
async fn two_distributors_publishing_at_once_make_one_gap_free_sequence() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (_a, a) = serve(home.path(), "distributor", &db.url).await;
    let (_b, b) = serve(home.path(), "distributor", &db.url).await;
    // A subscriber on B, before anything is published.
    let mut sub = Subscriber::connect(&subscribe_url(&b), None, None).await;
    sub.hello("orch-watcher", "support/triage", 0, None).await;

    const EACH: usize = 25;
    let publish = |base: String, who: &'static str| async move {
        let http = reqwest::Client::new();
        let mut seqs = Vec::new();
        for i in 0..EACH {
            seqs.push(publish_notice(&http, &base, &format!("{who}-{i}")).await);
        }
        seqs
    };
    let (sa, sb) = tokio::join!(publish(a.clone(), "a"), publish(b.clone(), "b"));
    let mut all: Vec<u64> = sa.iter().chain(&sb).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=(2 * EACH) as u64).collect::<Vec<_>>());
    assert!(
        sa.windows(2).all(|w| w[0] < w[1]) && sb.windows(2).all(|w| w[0] < w[1]),
        "each distributor's own publishes increase"
    );

    // Both list every update.
    for base in [&a, &b] {
        let list: Value = reqwest::get(format!("{base}/updates?limit=1000"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = list["updates"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(n, 2 * EACH, "{base}: {list}");
    }
    // B's subscriber got all of them, A's too, in seq order, each once.
    let got: Vec<u64> = sub
        .updates(2 * EACH)
        .await
        .iter()
        .map(|u| u["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (1..=(2 * EACH) as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_nats_a_publish_on_one_distributor_is_pushed_by_the_other_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let Some(nats) = crate::support::services::nats_url() else {
        return;
    };
    let prefix = format!("phx{}", crate::support::services::unique_suffix());
    let home = tempfile::tempdir().unwrap();
    // The log is read only once a minute: within the guard, only a ring can bring it.
    let slow = [
        ("PHOENIX_FOLLOW_INTERVAL_MS", "60000"),
        ("PHOENIX_NATS_PREFIX", prefix.as_str()),
    ];
    let args = ["--nats-url", nats.as_str()];
    let (_a, a) = serve_with(home.path(), "distributor", &db.url, &args, &slow).await;
    let (_b, b) = serve_with(home.path(), "distributor", &db.url, &args, &slow).await;
    let mut sub = Subscriber::connect(&subscribe_url(&b), None, None).await;
    sub.hello("orch-watcher", "support/triage", 0, None).await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        publish_notice(&http, &a, &format!("m{i}")).await;
    }
    let got: Vec<u64> = sub
        .updates(3)
        .await
        .iter()
        .map(|u| u["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [1, 2, 3]);
}

#[tokio::test]
async fn while_nats_is_away_a_distributor_serves_replay_and_catches_up_when_it_returns() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let Some(nats) = crate::support::services::nats_url() else {
        return;
    };
    let upstream = nats
        .trim_start_matches("nats://")
        .parse::<std::net::SocketAddr>()
        .expect("PHOENIX_TEST_NATS_URL is nats://IP:PORT");
    // B reaches NATS through a relay the test can cut; A directly.
    let relay = Relay::start(upstream).await;
    let relayed = format!("nats://127.0.0.1:{}", relay.port);
    let prefix = format!("phx{}", crate::support::services::unique_suffix());
    let home = tempfile::tempdir().unwrap();
    // The log is polled once a minute, beyond the guard: only NATS can bring an update here.
    let env = [
        ("PHOENIX_FOLLOW_INTERVAL_MS", "60000"),
        ("PHOENIX_NATS_PREFIX", prefix.as_str()),
    ];
    let direct = ["--nats-url", nats.as_str()];
    let through_relay = ["--nats-url", relayed.as_str()];
    let (_a, a) = serve_with(home.path(), "distributor", &db.url, &direct, &env).await;
    let (_b, b) = serve_with(home.path(), "distributor", &db.url, &through_relay, &env).await;
    let http = reqwest::Client::new();
    let mut live = Subscriber::connect(&subscribe_url(&b), None, None).await;
    live.hello("orch-live", "support/triage", 0, None).await;
    publish_notice(&http, &a, "before").await;
    assert_eq!(live.next_update().await["seq"], 1);

    relay.outage();
    // Committed on A while B cannot hear its ring.
    publish_notice(&http, &a, "during").await;
    // B still serves replay from the log to an agent that connects now, up to what it has
    // followed of the log (the rest comes live, below).
    let mut late = Subscriber::connect(&subscribe_url(&b), None, None).await;
    late.hello("orch-late", "support/triage", 0, None).await;
    assert_eq!(late.next_update().await["seq"], 1);

    // NATS is back: B looks at the log as soon as it reconnects, so the update committed
    // during the outage reaches its subscribers without waiting for a poll, once.
    relay.restore();
    assert_eq!(live.next_update().await["seq"], 2);
    assert_eq!(late.next_update().await["seq"], 2);
    publish_notice(&http, &a, "after").await;
    assert_eq!(live.next_update().await["seq"], 3, "nothing twice");
    assert_eq!(late.next_update().await["seq"], 3, "nothing twice");
}

#[tokio::test]
async fn nats_without_a_shared_database_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let out = phoenix_async(home.path())
        .args(["serve", "distributor", "--bind", "127.0.0.1:0"])
        .args(["--nats-url", "nats://127.0.0.1:4222"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database-url"), "{err}");
}

#[tokio::test]
async fn a_subscriber_moved_to_another_distributor_after_a_kill_misses_nothing_and_gets_nothing_twice()
 {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (mut a, a_url) = serve(home.path(), "distributor", &db.url).await;
    let (_b, b_url) = serve(home.path(), "distributor", &db.url).await;
    let http = reqwest::Client::new();
    let mut sub = Subscriber::connect(&subscribe_url(&a_url), None, None).await;
    sub.hello("orch-mover", "support/triage", 0, None).await;
    for i in 0..3 {
        publish_notice(&http, &a_url, &format!("before {i}")).await;
    }
    let first: Vec<Value> = sub.updates(3).await;
    let last_seq = first.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(last_seq, 3);

    // A dies without a goodbye; while the agent is away, B takes two publishes.
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    drop(sub);
    for i in 0..2 {
        publish_notice(&http, &b_url, &format!("while away {i}")).await;
    }
    let mut sub = Subscriber::connect(&subscribe_url(&b_url), None, None).await;
    sub.hello("orch-mover", "support/triage", last_seq, None)
        .await;
    // And one more once it is back, live.
    publish_notice(&http, &b_url, "after").await;
    let seqs: Vec<u64> = sub
        .updates(3)
        .await
        .iter()
        .map(|u| u["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    // No duplicate of 1–6 is queued behind them: the next update is the next publish.
    publish_notice(&http, &b_url, "later").await;
    assert_eq!(sub.next_update().await["seq"], 7);
}
