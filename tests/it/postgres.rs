//! The PostgreSQL backend against a real server (`PHOENIX_TEST_DATABASE_URL`): schema
//! migrations from several processes at once, time partitions, the group-commit writer and
//! the newest-first reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use phoenix::core::store::postgres::writer::{self, Job, WriterState};
use phoenix::core::store::postgres::{self, PgOptions, query};
use phoenix::core::store::{StoreMetrics, TelemetryFilter};
use phoenix::core::telemetry::NewRecord;
use phoenix::core::telemetry::conversation::NewConversation;
use tokio::sync::{mpsc, oneshot};

use crate::support::services::TestDatabase;

#[tokio::test]
async fn two_processes_migrating_at_once_both_end_on_the_current_schema() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    let b = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    let (ra, rb) = tokio::join!(postgres::migrate(&a), postgres::migrate(&b));
    ra.unwrap();
    rb.unwrap();
    postgres::migrate(&a).await.unwrap();
    let client = a.get().await.unwrap();
    let versions: Vec<i64> = client
        .query("SELECT version FROM phoenix_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=postgres::SCHEMA_VERSION).collect::<Vec<_>>());
    // A newer schema is refused, not downgraded.
    client
        .execute(
            "INSERT INTO phoenix_schema VALUES ($1, 0)",
            &[&(postgres::SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    assert!(matches!(
        postgres::migrate(&a).await,
        Err(postgres::Error::SchemaTooNew { .. })
    ));
}

#[tokio::test]
async fn partitions_are_made_ahead_and_dropped_whole() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let now = 1_796_169_600 + 7200;
    assert_eq!(postgres::ensure_around(&pool, now).await.unwrap(), 4);
    assert_eq!(postgres::ensure_around(&pool, now).await.unwrap(), 0);
    let client = pool.get().await.unwrap();
    let yesterday = now - 86_400;
    client
        .execute(
            "INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, payload) \
             VALUES (nextval('telemetry_seq'), gen_random_uuid(), $1, $1, 'k', '{}'), \
                    (nextval('telemetry_seq'), gen_random_uuid(), $2, $2, 'k', '{}')",
            &[&yesterday, &now],
        )
        .await
        .unwrap();
    // Only partitions wholly before the cutoff go: yesterday's, not today's.
    let dropped = postgres::drop_before(&pool, now).await.unwrap();
    assert_eq!(dropped, 1);
    let left: i64 = client
        .query_one("SELECT count(*) FROM telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    // A row for a day with no partition fails until the partition exists.
    let far = now + 30 * 86_400;
    assert!(
        client
            .execute(
                "INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, payload) \
                 VALUES (1, gen_random_uuid(), $1, $1, 'k', '{}')",
                &[&far],
            )
            .await
            .is_err()
    );
    assert_eq!(postgres::ensure(&pool, &[far]).await.unwrap(), 1);
}

fn record(i: i64, kind: &str, agent_path: &str, ts: i64) -> NewRecord {
    NewRecord {
        id: uuid::Uuid::now_v7().to_string(),
        ts_unix: ts + i,
        received_unix: ts + i,
        kind: kind.into(),
        level: Some("info".into()),
        orch_hash: Some("orch_0123456789abcdef".into()),
        agent_path: Some(agent_path.into()),
        tags_json: None,
        payload_json: format!("{{\"i\":{i}}}"),
    }
}

fn conversation(id: &str, ts: i64) -> NewConversation {
    NewConversation {
        conversation_id: id.into(),
        ts_unix: ts,
        received_unix: ts,
        orch_hash: None,
        agent_path: Some("support".into()),
        feedback: None,
        score: None,
        messages_json: "[]".into(),
        prompt_key: None,
    }
}

#[tokio::test]
async fn the_writer_group_commits_and_newest_first_reads_filter_segment_wise() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let queued = Arc::new(AtomicUsize::new(0));
    let state = WriterState {
        queued: queued.clone(),
        commit_seconds: StoreMetrics::default().commit_seconds,
        group_records: StoreMetrics::default().group_records,
    };
    let writer = tokio::spawn(writer::run(pool.clone(), rx, state));

    // Two days apart: the writer makes the partitions it needs on demand.
    let now = 1_796_169_600;
    let mut rows: Vec<_> = (0..5)
        .map(|i| record(i, "llm_call", "support/billing", now))
        .collect();
    rows.push(record(5, "llm_call", "supporter", now + 86_400));
    rows.push(record(6, "skill_execution", "support", now + 86_400));
    queued.fetch_add(rows.len(), Ordering::AcqRel);
    let (reply, committed) = oneshot::channel();
    tx.send(Job::Telemetry(
        phoenix::core::store::rollup::Batch::new(rows),
        reply,
    ))
    .await
    .unwrap();
    committed.await.unwrap().unwrap();

    // A conversation id is stored once; conversations share the queue's count.
    queued.fetch_add(3, Ordering::AcqRel);
    let (reply, stored) = oneshot::channel();
    tx.send(Job::Conversations(
        vec![
            conversation("c-1", now),
            conversation("c-1", now),
            conversation("c-2", now),
        ],
        reply,
    ))
    .await
    .unwrap();
    assert_eq!(stored.await.unwrap().unwrap(), vec![true, false, true]);

    let client = pool.get().await.unwrap();
    let filter = TelemetryFilter {
        kind: Some("llm_call".into()),
        agent_prefix: Some("support".into()),
        ..TelemetryFilter::default()
    };
    let paths: Vec<String> = {
        let st = query::agent_paths_under("support");
        client
            .query(&st.sql, &st.refs())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["support".to_string(), "support/billing".to_string()]
    );
    let st = query::newest(&filter, 3, None, Some(&paths));
    let got: Vec<String> = client
        .query(&st.sql, &st.refs())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>("payload"))
        .collect();
    // Newest first, `supporter` and the other kind left out.
    assert_eq!(got, vec![r#"{"i":4}"#, r#"{"i":3}"#, r#"{"i":2}"#]);

    let (reply, stopped) = oneshot::channel();
    tx.send(Job::Shutdown(reply)).await.unwrap();
    stopped.await.unwrap();
    writer.await.unwrap();
    assert_eq!(queued.load(Ordering::Acquire), 0);
}

fn dated(i: usize, ts: i64) -> NewRecord {
    NewRecord {
        id: format!("r{i}"),
        ts_unix: ts,
        received_unix: ts + 10,
        kind: "k".into(),
        level: None,
        orch_hash: None,
        agent_path: None,
        tags_json: None,
        payload_json: "{}".into(),
    }
}

#[tokio::test]
async fn pg_store_refuses_past_its_queue_and_retention_drops_whole_days() {
    use phoenix::core::store::{Error, TelemetryStore};
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let store = postgres::PgStore::start(pool.clone(), 5, StoreMetrics::default());
    let (d0, d1, d2) = (1_796_169_600, 1_796_256_000, 1_796_342_400);
    // The writer task cannot run between two synchronous submits on this runtime.
    let first = store
        .submit((0..3).map(|i| dated(i, d0)).chain([dated(3, d1)]).collect())
        .unwrap();
    let err = store.submit(vec![dated(4, d1), dated(5, d2)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueFull {
                queued: 4,
                capacity: 5
            }
        ),
        "{err}"
    );
    first.wait().await.unwrap();
    store
        .submit(vec![dated(4, d1), dated(5, d2), dated(6, d2)])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 7);
    let partitions = |pool: deadpool_postgres::Pool| async move {
        let c = pool.get().await.unwrap();
        let rows = c
            .query(
                "SELECT relname::text FROM pg_class WHERE relname LIKE 'telemetry_p%' \
                 AND relkind = 'r' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        partitions(pool.clone()).await,
        [
            "telemetry_p20261202",
            "telemetry_p20261203",
            "telemetry_p20261204"
        ]
    );
    // Days 0 and 1 are wholly older than the cutoff and fit the limit: dropped.
    assert_eq!(
        store.purge_before(d2, 100).unwrap().wait().await.unwrap(),
        5
    );
    assert_eq!(partitions(pool.clone()).await, ["telemetry_p20261204"]);
    assert_eq!(store.count().await.unwrap(), 2);
    // A day larger than the limit is deleted from row by row, within the limit.
    assert_eq!(
        store
            .purge_before(i64::MAX, 1)
            .unwrap()
            .wait()
            .await
            .unwrap(),
        1
    );
    assert_eq!(partitions(pool.clone()).await, ["telemetry_p20261204"]);
    assert_eq!(store.count().await.unwrap(), 1);
    store.shutdown().await;
    assert!(matches!(
        store.submit(vec![dated(9, d2)]),
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn an_unreachable_database_is_a_transient_backend_error() {
    use phoenix::core::store::{Error, TelemetryStore};
    // Nothing listens on port 1: every call fails at once, as retryable, never hangs.
    let pool = postgres::pool(&PgOptions::new("postgres://postgres@127.0.0.1:1/none")).unwrap();
    let store = postgres::PgStore::start(pool, 100, StoreMetrics::default());
    let transient = |e: Error| match e {
        Error::Backend {
            backend: "postgres",
            transient: true,
            ..
        } => {}
        other => panic!("not a transient postgres error: {other:?}"),
    };
    transient(store.count().await.unwrap_err());
    transient(
        store
            .submit(vec![dated(0, 1_796_169_600)])
            .unwrap()
            .wait()
            .await
            .unwrap_err(),
    );
    assert_eq!(
        store.queue_depth(),
        0,
        "a failed commit leaves nothing queued"
    );
    store.shutdown().await;
}

/// Shared buffers (hit + read) a plan touched, summed over its nodes, and whether any node
/// scanned a table sequentially.
fn plan_cost(node: &serde_json::Value) -> (u64, bool) {
    let own = ["Shared Hit Blocks", "Shared Read Blocks"]
        .iter()
        .filter_map(|k| node[*k].as_u64())
        .sum::<u64>();
    let mut seq_scan = node["Node Type"] == "Seq Scan";
    let mut blocks = own;
    for child in node["Plans"].as_array().into_iter().flatten() {
        // A parent's counts include its children's: keep the largest, not the sum.
        let (b, s) = plan_cost(child);
        blocks = blocks.max(b);
        seq_scan |= s;
    }
    (blocks, seq_scan)
}

#[tokio::test]
async fn filtered_reads_of_a_hundred_rows_walk_an_index_not_the_table() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let day0 = 1_796_169_600;
    for d in 0..3 {
        postgres::ensure_around(&pool, day0 + d * 86_400)
            .await
            .unwrap();
    }
    let client = pool.get().await.unwrap();
    // 300,000 rows over three days: five kinds, 1% errors, paths under support/ and
    // code-gen/, a hundred orchs.
    client
        .batch_execute(&format!(
            "INSERT INTO telemetry (id, ts_unix, received_unix, kind, level, orch_hash, agent_path, payload)
             SELECT gen_random_uuid()::text, {day0} + g, {day0} + g,
                    (ARRAY['llm_call','tool_call','skill_execution','orch_heartbeat','error'])[1 + g % 5],
                    CASE WHEN g % 100 = 0 THEN 'error' ELSE 'info' END,
                    'orch_' || lpad(to_hex(g % 100), 16, '0'),
                    (ARRAY['support/billing','support/triage','code-gen/rust','code-gen/py'])[1 + g % 4],
                    '{{}}'
             FROM generate_series(0, 299999) g;
             INSERT INTO agent_paths VALUES ('support/billing'), ('support/triage'),
                    ('code-gen/rust'), ('code-gen/py');
             ANALYZE telemetry;"
        ))
        .await
        .unwrap();
    let table_blocks: i64 = client
        .query_one(
            "SELECT sum(relpages)::bigint FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
             WHERE i.inhparent = 'telemetry'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        table_blocks > 1000,
        "{table_blocks} pages: too small to tell"
    );

    let f = |kind: Option<&str>, level: Option<&str>, prefix: Option<&str>, orch: Option<&str>| {
        TelemetryFilter {
            kind: kind.map(str::to_owned),
            level: level.map(str::to_owned),
            agent_prefix: prefix.map(str::to_owned),
            orch_hash: orch.map(str::to_owned),
            ..TelemetryFilter::default()
        }
    };
    let orch = format!("orch_{:016x}", 7);
    // With how many rows each answers: a filter nothing matches must not read everything
    // either (no error is a tool call in this data).
    let cases = [
        (f(Some("llm_call"), None, None, None), 100),
        (f(None, Some("error"), Some("support"), None), 100),
        (f(None, None, None, Some(&orch)), 100),
        (f(None, Some("error"), None, None), 100),
        (f(Some("tool_call"), None, Some("code-gen"), None), 100),
        (f(Some("tool_call"), Some("error"), None, None), 0),
        (f(None, None, None, None), 100),
    ];
    for (filter, expected) in cases {
        let paths: Option<Vec<String>> = match &filter.agent_prefix {
            Some(p) => {
                let s = query::agent_paths_under(p);
                Some(
                    client
                        .query(&s.sql, &s.refs())
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect(),
                )
            }
            None => None,
        };
        let s = query::newest(&filter, 100, None, paths.as_deref());
        let explained = client
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", s.sql),
                &s.refs(),
            )
            .await
            .unwrap();
        let plan: serde_json::Value = explained.get(0);
        let (blocks, seq_scan) = plan_cost(&plan[0]["Plan"]);
        assert!(!seq_scan, "{filter:?} scans a table: {plan}");
        assert!(
            (blocks as i64) * 10 < table_blocks,
            "{filter:?} touched {blocks} of {table_blocks} pages: {plan}"
        );
        let rows = client.query(&s.sql, &s.refs()).await.unwrap();
        assert_eq!(rows.len(), expected, "{filter:?}");
    }
}

#[tokio::test]
async fn records_written_again_are_stored_once_in_small_and_copied_groups() {
    use phoenix::core::store::TelemetryStore;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let store = postgres::PgStore::start(pool.clone(), 100_000, StoreMetrics::default());
    let day = 1_796_169_600;
    // A small group (one statement) and a large one (COPY): the ingest buffer delivers a
    // batch again after a node died between the commit and the ack.
    for (from, to) in [(0, 10), (10, 1_010)] {
        let records: Vec<NewRecord> = (from..to).map(|i| dated(i, day)).collect();
        store.submit(records.clone()).unwrap().wait().await.unwrap();
        // Again, mixed with records not stored yet.
        let mut again = records;
        again.extend((to..to + 5).map(|i| dated(i, day)));
        store.submit(again).unwrap().wait().await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 1_015);
    let client = pool.get().await.unwrap();
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT id) FROM telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 1_015);
    store.shutdown().await;
}

/// A record with a model, a latency and an error level every third.
fn timed(i: usize, ts: i64, model: &str, ms: u64) -> NewRecord {
    NewRecord {
        id: format!("t{i}"),
        ts_unix: ts,
        received_unix: ts,
        kind: "llm_call".into(),
        level: Some(if i.is_multiple_of(3) { "error" } else { "info" }.into()),
        orch_hash: Some(format!("orch_{:016x}", i % 4)),
        agent_path: Some("support/triage".into()),
        tags_json: None,
        payload_json: format!(
            r#"{{"model":"{model}","response_time":{ms},"tokens":{{"input":10,"output":2}}}}"#
        ),
    }
}

#[tokio::test]
async fn the_dashboards_cells_are_exact_across_writers_redeliveries_and_folds() {
    use phoenix::core::store::TelemetryStore;
    use phoenix::core::store::rollup::CellRange;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    // Two stores on one database, as two collector processes.
    let a = postgres::PgStore::start(pool.clone(), 100_000, StoreMetrics::default());
    let b = postgres::PgStore::start(pool.clone(), 100_000, StoreMetrics::default());
    let minute = 1_796_169_600;
    let batch = |from: usize, to: usize, model: &str| -> Vec<NewRecord> {
        (from..to)
            .map(|i| timed(i, minute + (i % 60) as i64, model, 10 * (i as u64 % 50 + 1)))
            .collect()
    };
    let (ra, rb) = tokio::join!(
        async { a.submit(batch(0, 300, "m1")).unwrap().wait().await },
        async { b.submit(batch(300, 310, "m1")).unwrap().wait().await },
    );
    ra.unwrap();
    rb.unwrap();
    // A redelivered batch, partly stored already: only the new records count.
    b.submit(batch(305, 320, "m1"))
        .unwrap()
        .wait()
        .await
        .unwrap();
    a.submit(batch(320, 330, "m2"))
        .unwrap()
        .wait()
        .await
        .unwrap();

    // A delta row in the form an older process wrote (one wide row per cell) counts too.
    let client = pool.get().await.unwrap();
    let mut legacy_latency = vec![0i64; phoenix::core::store::rollup::LATENCY_BUCKETS];
    legacy_latency[3] = 4;
    client
        .execute(
            "INSERT INTO rollup_delta VALUES ($1, 'support/triage', 'llm_call', 'm3', 4, 1, $2, \
             12.0, 40, 8, 0.5)",
            &[&minute, &legacy_latency],
        )
        .await
        .unwrap();

    let range = CellRange {
        since: minute,
        until: minute + 60,
    };
    let check = |cells: Vec<phoenix::core::store::rollup::CellRow>| {
        let m3: Vec<_> = cells.iter().filter(|c| c.key.model == "m3").collect();
        assert_eq!(m3.len(), 1, "{cells:?}");
        assert_eq!(
            (
                m3[0].cell.records,
                m3[0].cell.errors,
                m3[0].cell.latency.0[3]
            ),
            (4, 1, 4)
        );
        let m1: Vec<_> = cells.iter().filter(|c| c.key.model == "m1").collect();
        assert_eq!(m1.len(), 1, "{cells:?}");
        let c = &m1[0].cell;
        assert_eq!(c.records, 320);
        assert_eq!(
            c.errors,
            (0..320).filter(|i: &usize| i.is_multiple_of(3)).count() as u64
        );
        assert_eq!(c.latency.count(), 320);
        assert_eq!((c.tokens_in, c.tokens_out), (3200, 640));
        let m2: u64 = cells
            .iter()
            .filter(|c| c.key.model == "m2")
            .map(|c| c.cell.records)
            .sum();
        assert_eq!(m2, 10);
    };
    // Before the folder ran, the deltas are read as they are ...
    check(a.cells(range).await.unwrap());
    // ... and after it folded them into one row per cell, the same.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM rollup_pending) + (SELECT count(*) FROM rollup_delta)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deltas are folded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check(b.cells(range).await.unwrap());
    let folded: i64 = client
        .query_one("SELECT count(*) FROM rollup", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(folded, 3);
    assert!(
        a.cells(CellRange {
            since: 0,
            until: minute
        })
        .await
        .unwrap()
        .is_empty()
    );
    // Heartbeat-less records name no ORCH as seen.
    assert!(a.orchs_seen(10).await.unwrap().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_agent_prefix_reads_only_the_paths_under_it_whatever_the_databases_collation() {
    use phoenix::core::store::TelemetryStore;
    // ICU's English order puts symbols between `/` and `0`: a range read of `support/…`
    // compared by it would also take `support+x`, `support$x`, `support=x`.
    let Some(db) = TestDatabase::create_with(
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
    )
    .await
    else {
        return;
    };
    let pool = postgres::pool(&PgOptions::new(&db.url)).unwrap();
    postgres::migrate(&pool).await.unwrap();
    let store = postgres::PgStore::start(pool.clone(), 1_000, StoreMetrics::default());
    let now = 1_796_169_600;
    let paths = [
        "support",
        "support/a",
        "support/b/c",
        "support+x",
        "support$x",
        "support=x",
        "support€",
        "supportx",
        "support0",
    ];
    let rows: Vec<NewRecord> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| record(i as i64, "llm_call", p, now))
        .collect();
    store.submit(rows).unwrap().wait().await.unwrap();
    for kind in [None, Some("llm_call")] {
        let filter = TelemetryFilter {
            kind: kind.map(str::to_owned),
            agent_prefix: Some("support".into()),
            ..TelemetryFilter::default()
        };
        let page = store.query(&filter, 100, None).await.unwrap();
        let mut got: Vec<String> = page
            .records
            .iter()
            .filter_map(|r| r.agent_path.clone())
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["support", "support/a", "support/b/c"],
            "kind {kind:?}"
        );
    }
    store.shutdown().await;
}
