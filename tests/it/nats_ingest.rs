//! Collectors with NATS JetStream as their ingest buffer, on the real servers
//! (`PHOENIX_TEST_DATABASE_URL`, `PHOENIX_TEST_NATS_URL`): a node killed with SIGKILL
//! mid-ingest loses nothing either node acknowledged and stores nothing twice; while the
//! database is cut off ingest keeps answering 200 (until the stream is full: 429 with
//! Retry-After), the lag shows it, and once the database is back every acknowledged record is
//! stored exactly once; conversations take the same path.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use phoenix::core::collector::{self, AppState, CollectorConfig, Metrics};
use phoenix::core::shared::anonymize::Anonymizer;
use phoenix::core::store::{self, BufferOptions, BufferedStore, Location};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::scale_out::{Relay, acked_ids, batch, ingest_batch, serve_with, stored_ids};
use crate::support::backend::pg_column;
use crate::support::bin::phoenix_async;
use crate::support::distributor::{GUARD, eventually};
use crate::support::services::{TestDatabase, TestNats};

/// How long draining may take once the load stops (the killed node's unacked messages come
/// back after the ack wait the tests set, 2 s).
const DRAIN: Duration = Duration::from_secs(60);

/// Ids stored more than once.
async fn stored_twice(url: &str) -> Vec<Option<String>> {
    pg_column(
        url,
        "SELECT id FROM telemetry GROUP BY id HAVING count(*) > 1",
    )
    .await
}

/// Polls `base`'s `/health` until the ingest buffer's lag is 0 and `cond` holds.
async fn drained(base: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    loop {
        let health: Value = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["ingest_buffer"]["lag_messages"] == 0 && cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained in time: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_collectors_on_nats_lose_nothing_when_one_is_killed_and_store_nothing_twice() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let Some(nats) = TestNats::create() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let envs = [
        ("PHOENIX_NATS_PREFIX", nats.prefix.as_str()),
        ("PHOENIX_NATS_ACK_WAIT_MS", "2000"),
    ];
    let args = ["--nats-url", nats.url.as_str()];
    let (mut a, base_a) = serve_with(home.path(), "collector", &db.url, &args, &envs).await;
    let (_b, base_b) = serve_with(home.path(), "collector", &db.url, &args, &envs).await;

    const CLIENTS: usize = 8;
    const REQUESTS: usize = 12;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let nodes = [base_a.clone(), base_b.clone()];
            let acked_tx = acked_tx.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked: Vec<String> = Vec::new();
                let mut n = 0;
                let mut tries = 0;
                while n < REQUESTS && tries < REQUESTS * 20 {
                    tries += 1;
                    // Each client alternates between the nodes; a refused or dead node's
                    // request is sent again (new ids) to the next.
                    let node = &nodes[(c + tries) % 2];
                    let sent = http
                        .post(format!("{node}/ingest"))
                        .header("content-type", "application/x-ndjson")
                        .body(batch(c, n, 50))
                        .timeout(GUARD)
                        .send()
                        .await;
                    let Ok(resp) = sent else { continue };
                    if resp.status() != 200 {
                        continue;
                    }
                    let Ok(body) = resp.json::<Value>().await else {
                        continue;
                    };
                    acked.extend(acked_ids(&body));
                    let _ = acked_tx.send(());
                    n += 1;
                }
                acked
            })
        })
        .collect();
    drop(acked_tx);
    for _ in 0..CLIENTS * 3 {
        acked_rx.recv().await.expect("requests are acknowledged");
    }
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let mut acknowledged = HashSet::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert_eq!(acknowledged.len(), CLIENTS * REQUESTS * 50);

    // Node B drains what either node accepted, the killed node's unacked batches included.
    drained(&base_b, async || {
        let stored = stored_ids(&db.url).await;
        acknowledged.iter().all(|id| stored.contains(id))
    })
    .await;
    assert_eq!(stored_twice(&db.url).await, Vec::<Option<String>>::new());
}

/// A collector in this process whose store is behind `relay`, buffered by NATS with a
/// stream of at most `max_bytes`.
async fn buffered_collector(
    relayed: &str,
    nats: &TestNats,
    max_bytes: i64,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let metrics = Arc::new(Metrics::default());
    let inner = store::open(
        &Location::Postgres(relayed.to_owned()),
        &store::OpenOptions::default(),
        metrics.store.clone(),
    )
    .await
    .unwrap();
    let opts = BufferOptions {
        max_bytes,
        ack_wait: Duration::from_secs(2),
        ..BufferOptions::new(&nats.url, &nats.prefix)
    };
    let buffered = BufferedStore::start(inner, &opts).await.unwrap();
    let state = AppState::new(
        buffered,
        Anonymizer::from_key(&[3; 32]),
        CollectorConfig::default(),
        metrics,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        collector::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (base, stop, server)
}

#[tokio::test]
async fn with_the_database_cut_off_ingest_is_200_until_the_stream_is_full_and_all_is_stored_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let Some(nats) = TestNats::create() else {
        return;
    };
    let (relay, relayed) = Relay::to_database(&db.url).await;
    let (base, stop, server) = buffered_collector(&relayed, &nats, 256 * 1024).await;
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut ingest = async |n: usize| ingest_batch(&http, &base, n, &mut acknowledged).await;
    for n in 0..3 {
        assert_eq!(ingest(n).await.0, 200);
    }
    relay.outage();
    // The database is gone; the stream takes everything until it is full.
    let mut n = 3;
    let full = loop {
        let (status, retry_after, body) = ingest(n).await;
        n += 1;
        match status {
            200 => assert!(n < 10_000, "the stream never filled up"),
            429 => {
                assert!(retry_after.is_some(), "429 without Retry-After: {body}");
                assert_eq!(body["error"], "queue_full", "{body}");
                break body;
            }
            other => panic!("HTTP {other} while the database is down: {body}"),
        }
    };
    assert!(
        full["detail"].as_str().unwrap().contains("ingest buffer"),
        "{full}"
    );
    assert!(n > 13, "the stream filled after only {n} requests");
    // The lag is read from the stream twice a second.
    eventually("the lag shows in /health", async || {
        let health: Value = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let buffer = &health["ingest_buffer"];
        buffer["lag_messages"].as_u64().unwrap() > 0 && buffer["store_writable"] == false
    })
    .await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("phoenix_ingest_buffer_lag_messages ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // A conversation resent in the outage is stored once.
    let conversation = json!({"conversation_id": "conv-outage", "messages": [
        {"role": "user", "content": "How do I reset my password?"},
        {"role": "assistant", "content": "Open Settings, then Security."}]});
    for _ in 0..2 {
        let resp = http
            .post(format!("{base}/ingest/conversations"))
            .json(&conversation)
            .send()
            .await
            .unwrap();
        // The stream is full of telemetry: the conversation may have to wait for room.
        assert!(
            [200, 429].contains(&resp.status().as_u16()),
            "{}",
            resp.text().await.unwrap()
        );
    }

    relay.restore();
    drained(&base, async || {
        let stored = stored_ids(&db.url).await;
        acknowledged.iter().all(|id| stored.contains(id))
    })
    .await;
    assert_eq!(stored_twice(&db.url).await, Vec::<Option<String>>::new());
    // Room again: the conversation goes in, and its resend changes nothing.
    for _ in 0..2 {
        let resp = http
            .post(format!("{base}/ingest/conversations"))
            .json(&conversation)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    drained(&base, async || {
        pg_column(&db.url, "SELECT conversation_id FROM conversations")
            .await
            .len()
            == 1
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap();
    assert_eq!(
        pg_column(&db.url, "SELECT conversation_id FROM conversations").await,
        vec![Some("conv-outage".to_owned())]
    );
}

#[tokio::test]
async fn a_collector_with_nats_but_no_shared_database_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let out = phoenix_async(home.path())
        .args(["serve", "collector", "--bind", "127.0.0.1:0"])
        .args(["--nats-url", "nats://127.0.0.1:4222"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database-url"), "{err}");
}
