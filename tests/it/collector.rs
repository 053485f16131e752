//! Collector-wide behaviour: anonymisation, authentication, tiers, metrics, retention and
//! graceful shutdown.

use std::collections::HashSet;
use std::time::Duration;

use phoenix::core::collector::{CollectorConfig, Limits, purge_expired};
use phoenix::core::telemetry::now_unix;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::support::backend::column;
use crate::support::collector::{
    DB_FILE, KEY_FILE, TestCollector, expect_error, metric_value, status_and_json,
};

const DAY: i64 = 86_400;

fn is_orch_hash_shape(s: &str) -> bool {
    s.len() == 21
        && s.starts_with("orch_")
        && s[5..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file of the data directory except the key file, concatenated.
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != KEY_FILE && path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

#[tokio::test]
async fn raw_orch_id_never_reaches_disk_and_its_hash_is_keyed_and_stable() {
    const RAW: &str = "orch-secret-42";
    let c = TestCollector::start(CollectorConfig::default()).await;
    c.ingest_ok(&json!([
        {"orch_id": RAW, "kind": "orch_heartbeat"},
        {"orch_id": RAW, "agent_path": "root", "kind": "skill_execution"},
    ]))
    .await;
    let stored = c.telemetry("").await;
    let hash = stored[0]["orch_hash"].as_str().unwrap().to_owned();
    assert!(is_orch_hash_shape(&hash), "{hash}");
    assert_eq!(stored[1]["orch_hash"], hash.as_str());
    // Operators can still filter by the raw id (hashed on the way in) or by the hash.
    assert_eq!(c.telemetry(&format!("orch={RAW}")).await.len(), 2);
    assert_eq!(c.telemetry(&format!("orch={hash}")).await.len(), 2);
    // An analysis filtered by orch stores the filter with its insight: hashed too.
    let (status, insight) = c.analyze(&json!({"orch": RAW}), None).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["filters"]["orch_hash"], hash.as_str());
    assert_eq!(insight["records_analyzed"], 2);

    let dir = c.stop().await;
    let bytes = if dir.database_url().is_some() {
        // On PostgreSQL, every stored text of every table the collector writes.
        let mut all = Vec::new();
        for sql in [
            "SELECT concat_ws(' ', id, kind, orch_hash, agent_path, tags, payload) FROM telemetry",
            "SELECT concat_ws(' ', id, focus, source, body) FROM insights",
            "SELECT orch_hash FROM orchs",
        ] {
            for text in column(&dir, DB_FILE, sql).await.into_iter().flatten() {
                all.extend_from_slice(text.as_bytes());
            }
        }
        all
    } else {
        database_bytes(dir.path())
    };
    assert!(
        contains(&bytes, hash.as_bytes()),
        "the hash should be on disk (are we reading the right files?)"
    );
    assert!(
        !contains(&bytes, RAW.as_bytes()),
        "the raw orch id was written to the database"
    );

    // Same data directory, same key: the same id hashes the same after a restart.
    let c = TestCollector::start_in(dir, CollectorConfig::default()).await;
    c.ingest_ok(&json!({"orch_id": RAW, "kind": "after_restart"}))
        .await;
    let again = &c.telemetry("kind=after_restart").await[0];
    assert_eq!(again["orch_hash"], hash.as_str());
    assert_eq!(c.telemetry(&format!("orch={RAW}")).await.len(), 3);
    c.stop().await;

    // Another installation (another key file) hashes the same id differently.
    let other = TestCollector::start(CollectorConfig::default()).await;
    other
        .ingest_ok(&json!({"orch_id": RAW, "kind": "elsewhere"}))
        .await;
    let elsewhere = other.telemetry("").await[0]["orch_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(is_orch_hash_shape(&elsewhere), "{elsewhere}");
    assert_ne!(elsewhere, hash, "the hash does not depend on the key");
    other.stop().await;
}

#[tokio::test]
async fn bearer_tokens_guard_everything_but_health() {
    let c = TestCollector::start(CollectorConfig {
        ingest_tokens: vec!["tok-one".into(), "tok-two".into()],
        ..CollectorConfig::default()
    })
    .await;
    let client = c.client();
    let record = json!({"kind": "guarded"});
    let ingest = |auth: Option<&str>| {
        let mut req = client.post(c.endpoint("/ingest")).json(&record);
        if let Some(value) = auth {
            req = req.header(AUTHORIZATION, value);
        }
        req.send()
    };

    let resp = ingest(None).await.unwrap();
    assert_eq!(
        resp.headers().get(WWW_AUTHENTICATE).unwrap(),
        "Bearer",
        "401 must say which scheme to use"
    );
    let detail = expect_error(&status_and_json(resp).await, 401, "unauthorized");
    assert!(detail.contains("Bearer"), "{detail}");
    expect_error(
        &status_and_json(ingest(Some("Basic dG9rLW9uZQ==")).await.unwrap()).await,
        401,
        "unauthorized",
    );
    expect_error(
        &status_and_json(ingest(Some("Bearer tok-three")).await.unwrap()).await,
        403,
        "forbidden",
    );
    expect_error(
        &status_and_json(ingest(Some("Bearer tok-on")).await.unwrap()).await,
        403,
        "forbidden",
    );
    let (status, body) = status_and_json(ingest(Some("Bearer tok-one")).await.unwrap()).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    let (status, body) = status_and_json(ingest(Some("Bearer tok-two")).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");

    // Every other endpoint is guarded too...
    for (method, path) in [
        ("GET", "/telemetry"),
        ("GET", "/insights"),
        ("GET", "/metrics"),
        ("POST", "/analyze"),
    ] {
        let req = match method {
            "GET" => client.get(c.endpoint(path)),
            _ => client.post(c.endpoint(path)).json(&json!({})),
        };
        let got = status_and_json(req.send().await.unwrap()).await;
        expect_error(&got, 401, "unauthorized");
    }
    let page = client
        .get(c.endpoint("/telemetry"))
        .header(AUTHORIZATION, "Bearer tok-two")
        .send()
        .await
        .unwrap();
    let (status, page) = status_and_json(page).await;
    assert_eq!(status, 200);
    assert_eq!(page["count"], 2, "only the authorised ingests are stored");

    // ...but health is open for load balancers.
    let health = client.get(c.endpoint("/health")).send().await.unwrap();
    let (status, health) = status_and_json(health).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    c.stop().await;
}

#[tokio::test]
async fn tiers_clamp_last_n_and_the_answer_says_so() {
    const KEY: &str = "premium-key-123";
    let c = TestCollector::start(CollectorConfig {
        premium_key: Some(KEY.into()),
        ..CollectorConfig::default()
    })
    .await;
    let batch: Vec<Value> = (0..250)
        .map(|i| json!({"kind": "tiered", "payload": {"i": i}}))
        .collect();
    c.ingest_ok(&Value::Array(batch)).await;

    let seed_body = json!({"last_n": 500, "focus": "performance"});
    // (body, X402, tier, requested, last_n after clamping, clamped, tier limit)
    let cases = [
        (&seed_body, None, "free", 500, 200, true, 200),
        (&seed_body, Some("wrong-key"), "free", 500, 200, true, 200),
        (&seed_body, Some(""), "free", 500, 200, true, 200),
        (
            &json!({"last_n": 5000, "focus": "optimization"}),
            Some(KEY),
            "premium",
            5000,
            5000,
            false,
            5000,
        ),
        (
            &json!({"last_n": 9000}),
            Some(KEY),
            "premium",
            9000,
            5000,
            true,
            5000,
        ),
        (&json!({"last_n": 200}), None, "free", 200, 200, false, 200),
    ];
    for (body, x402, tier, requested, last_n, clamped, limit) in cases {
        let (status, insight) = c.analyze(body, x402).await;
        let case = format!("{body} with X402 {x402:?}");
        assert_eq!(status, 200, "{case}: {insight}");
        assert_eq!(insight["tier"], tier, "{case}");
        assert_eq!(insight["requested_last_n"], requested, "{case}");
        assert_eq!(insight["last_n"], last_n, "{case}");
        assert_eq!(insight["clamped"], clamped, "{case}");
        assert_eq!(insight["tier_limit"], limit, "{case}");
        // 250 records are stored: the window is the smaller of the two.
        let analysed = last_n.min(250);
        assert_eq!(insight["records_analyzed"], analysed, "{case}");
        assert_eq!(insight["stats"]["records"], analysed, "{case}");
    }
    // The newest records are the ones analysed: the free window is the last 200 sent.
    let (_, free) = c.analyze(&json!({"last_n": 200}), None).await;
    let i_field = free["stats"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "i")
        .unwrap()
        .clone();
    assert_eq!(i_field["overall"]["min"], 50.0);
    assert_eq!(i_field["overall"]["max"], 249.0);
    c.stop().await;
}

#[tokio::test]
async fn metrics_count_ingested_and_rejected_records() {
    let c = TestCollector::start(CollectorConfig {
        limits: Limits {
            max_body_bytes: 2048,
            ..Limits::default()
        },
        ..CollectorConfig::default()
    })
    .await;
    c.ingest_ok(&json!({"kind": "counted"})).await;
    c.ingest_ok(&json!([{"kind": "counted"}, {"kind": "counted"}]))
        .await;
    // Two invalid records (both refused), then one oversized request.
    let bad = c
        .ingest_json(&json!([{"kind": ""}, {"kind": "x", "level": "loud"}]))
        .await;
    expect_error(&bad, 400, "invalid_record");
    let big = c
        .ingest_json(&json!({"kind": "big", "payload": "z".repeat(4096)}))
        .await;
    expect_error(&big, 413, "too_large");
    let (status, _) = c.analyze(&json!({}), None).await;
    assert_eq!(status, 200);

    let text = c.metrics_text().await;
    for name in [
        "phoenix_ingest_records",
        "phoenix_ingest_rejected_records",
        "phoenix_ingest_batch_size_records",
        "phoenix_store_queue_depth_records",
        "phoenix_store_commit_seconds",
        "phoenix_store_group_records",
        "phoenix_analyze_calls",
        "phoenix_retention_deleted_records",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    let value = |name: &str, labels: &str| metric_value(&text, name, labels);
    assert_eq!(
        value("phoenix_ingest_records_total", ""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            "phoenix_ingest_rejected_records_total",
            "reason=\"invalid_record\""
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            "phoenix_ingest_rejected_records_total",
            "reason=\"too_large\""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("phoenix_ingest_batch_size_records_count", ""),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("phoenix_ingest_batch_size_records_sum", ""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            "phoenix_analyze_calls_total",
            "tier=\"free\",source=\"heuristic\""
        ),
        Some(1.0),
        "{text}"
    );
    c.stop().await;
}

/// Ingests `old` records from ten days ago, one from exactly 7 days minus an hour ago and
/// `recent` ones from an hour ago; returns the ids that must survive 7-day retention.
async fn ingest_ages(c: &TestCollector, old: usize, recent: usize) -> HashSet<String> {
    let now = now_unix();
    let old_batch: Vec<Value> = (0..old)
        .map(|i| json!({"kind": "aged", "ts_unix": now - 10 * DAY - i as i64}))
        .collect();
    c.ingest_ok(&Value::Array(old_batch)).await;
    c.ingest_ok(&json!({"kind": "aged", "ts_unix": 0})).await;
    let mut keep = HashSet::new();
    let edge = json!({"kind": "aged", "ts_unix": now - 7 * DAY + 3600});
    keep.extend(c.ingest_ok(&edge).await);
    let recent_batch: Vec<Value> = (0..recent)
        .map(|_| json!({"kind": "aged", "ts_unix": now - 3600}))
        .collect();
    keep.extend(c.ingest_ok(&Value::Array(recent_batch)).await);
    keep
}

async fn stored_ids(c: &TestCollector) -> HashSet<String> {
    c.telemetry("kind=aged")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn purge_expired_removes_only_old_records_in_batches() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    // More than one purge batch (2000 rows) of old records.
    let keep = ingest_ages(&c, 2500, 3).await;
    let deleted = purge_expired(c.state.store.as_ref(), 7, now_unix())
        .await
        .unwrap();
    assert_eq!(deleted, 2501, "2500 from ten days ago and one from 1970");
    assert_eq!(stored_ids(&c).await, keep);
    // Nothing left to do the second time.
    let deleted = purge_expired(c.state.store.as_ref(), 7, now_unix())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(stored_ids(&c).await, keep);
    c.stop().await;
}

#[tokio::test]
async fn background_retention_deletes_old_records_while_serving() {
    let c = TestCollector::start(CollectorConfig {
        retention_days: Some(7),
        retention_interval: Duration::from_millis(20),
        ..CollectorConfig::default()
    })
    .await;
    let keep = ingest_ages(&c, 5, 2).await;
    // The task runs every 20 ms; poll until it has reported its work (bounded).
    let mut deleted = None;
    for _ in 0..500 {
        let text = c.metrics_text().await;
        deleted = metric_value(&text, "phoenix_retention_deleted_records_total", "");
        if deleted == Some(6.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        deleted,
        Some(6.0),
        "retention did not delete the 6 old records"
    );
    assert_eq!(stored_ids(&c).await, keep);
    c.stop().await;
}

/// The outcome of one ingest request of the load below.
struct Outcome {
    status: u16,
    ids: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_keeps_every_acknowledged_record() {
    const CLIENTS: usize = 8;
    const MAX_REQUESTS: usize = 500;
    const BATCH: usize = 50;
    let c = TestCollector::start(CollectorConfig::default()).await;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            // One client each: separate connections, truly concurrent requests.
            let client = reqwest::Client::new();
            let url = c.endpoint("/ingest");
            let acked = acked_tx.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..MAX_REQUESTS {
                    let batch: Vec<Value> = (0..BATCH)
                        .map(|j| json!({"kind": "load", "payload": {"t": t, "i": i, "j": j}}))
                        .collect();
                    let Ok(resp) = client.post(&url).json(&batch).send().await else {
                        break; // the server stopped accepting
                    };
                    let status = resp.status().as_u16();
                    let Ok(body) = resp.json::<Value>().await else {
                        break; // cut off mid-answer: not acknowledged
                    };
                    let ids = body["ids"]
                        .as_array()
                        .map(|ids| {
                            ids.iter()
                                .map(|id| id.as_str().unwrap().to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    if status == 200 {
                        let _ = acked.send(());
                    }
                    outcomes.push(Outcome { status, ids });
                }
                outcomes
            })
        })
        .collect();
    drop(acked_tx);
    // Shut down once the load is well under way.
    for _ in 0..CLIENTS * 2 {
        acked_rx.recv().await.expect("no request was acknowledged");
    }
    let dir = c.stop().await;

    let mut acknowledged = Vec::new();
    for task in tasks {
        let outcomes = task.await.unwrap();
        assert!(
            outcomes.len() < MAX_REQUESTS,
            "a client was never stopped by the shutdown"
        );
        for o in outcomes {
            assert!(
                o.status == 200 || o.status == 503,
                "HTTP {} during shutdown",
                o.status
            );
            if o.status == 200 {
                assert_eq!(o.ids.len(), BATCH);
                acknowledged.extend(o.ids);
            }
        }
    }
    assert!(acknowledged.len() >= CLIENTS * 2 * BATCH);

    // Read the database afresh, as a restarted collector would.
    let stored: HashSet<String> = column(&dir, DB_FILE, "SELECT id FROM telemetry")
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are missing after shutdown",
        lost.len(),
        acknowledged.len()
    );

    // And a collector restarted on the directory serves them.
    let c = TestCollector::start_in(dir, CollectorConfig::default()).await;
    assert_eq!(
        c.state.store.count().await.unwrap() as usize,
        stored.len(),
        "restart changed the record count"
    );
    c.stop().await;
}

/// The contract says every error is `{"error", "detail"}`: also for a wrong method.
#[tokio::test]
async fn wrong_methods_and_unknown_paths_get_json_errors() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let detail = expect_error(
        &status_and_json(c.client().get(c.endpoint("/nope")).send().await.unwrap()).await,
        404,
        "not_found",
    );
    assert!(detail.contains("/ingest"), "{detail}");
    for (method, path) in [
        ("GET", "/ingest"),
        ("POST", "/health"),
        ("DELETE", "/telemetry"),
    ] {
        let resp = c
            .client()
            .request(method.parse().unwrap(), c.endpoint(path))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 405, "{method} {path}");
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{method} {path}: 405 body is not JSON: {body:?}"));
        assert!(
            json["error"].is_string() && json["detail"].is_string(),
            "{method} {path}: {json}"
        );
    }
    c.stop().await;
}
