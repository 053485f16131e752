use super::*;
use crate::core::telemetry::{HEARTBEAT_KIND, now_unix};

fn rec(i: usize, kind: &str, path: Option<&str>, ts: i64) -> NewRecord {
    NewRecord {
        id: format!("id-{i}"),
        ts_unix: ts,
        received_unix: ts,
        kind: kind.to_owned(),
        level: Some("info".to_owned()),
        orch_hash: Some(format!("orch_{:016x}", i % 3)),
        agent_path: path.map(str::to_owned),
        tags_json: Some("[\"t\"]".to_owned()),
        payload_json: format!("{{\"n\":{i}}}"),
    }
}

#[tokio::test]
async fn write_query_purge_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &StoreOptions::new(dir.path().join("t.db")),
        StoreMetrics::default(),
    )
    .unwrap();
    let now = now_unix();
    let batch: Vec<_> = (0..10)
        .map(|i| {
            let path = ["code-gen", "code-gen/rust", "code-generator"][i % 3];
            rec(
                i,
                if i % 2 == 0 {
                    "orch_heartbeat"
                } else {
                    "skill"
                },
                Some(path),
                now - 100 + i as i64,
            )
        })
        .collect();
    store.submit(batch).unwrap().wait().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 10);

    let page = store
        .query(&TelemetryFilter::default(), 4, None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 4);
    assert_eq!(page.records[0].id, "id-9");
    let next = store
        .query(&TelemetryFilter::default(), 4, page.next_cursor)
        .await
        .unwrap();
    assert_eq!(next.records[0].id, "id-5");

    let f = TelemetryFilter {
        agent_prefix: Some("code-gen".into()),
        ..Default::default()
    };
    let page = store.query(&f, 100, None).await.unwrap();
    assert!(
        page.records
            .iter()
            .all(|r| r.agent_path.as_deref() != Some("code-generator"))
    );
    assert_eq!(page.records.len(), 7);
    assert_eq!(page.next_cursor, None);

    let hb = store
        .last_heartbeats(&[
            "orch_0000000000000000".to_owned(),
            "orch_missing".to_owned(),
        ])
        .await
        .unwrap();
    assert_eq!(hb.len(), 1);
    assert_eq!(hb["orch_0000000000000000"], now - 100 + 6);

    let deleted = store
        .purge_before(now - 95, 3)
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let deleted = store
        .purge_before(now - 95, 3)
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(store.count().await.unwrap(), 5);

    let pending = store.submit(vec![rec(99, "late", None, now)]).unwrap();
    store.close().await;
    pending.wait().await.unwrap();
    assert!(matches!(
        store.submit(vec![rec(100, "x", None, now)]),
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn queue_full_is_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::new(dir.path().join("t.db"));
    opts.queue_records = 5;
    let store = SqliteStore::open(&opts, StoreMetrics::default()).unwrap();
    store.queued.store(4, Ordering::Release); // pretend 4 records are waiting
    let err = store
        .submit((0..2).map(|i| rec(i, "k", None, 1)).collect())
        .unwrap_err();
    assert!(matches!(
        err,
        Error::QueueFull {
            queued: 4,
            capacity: 5
        }
    ));
    assert_eq!(store.queue_depth(), 4);
    store.queued.store(0, Ordering::Release);
    store
        .submit((0..50).map(|i| rec(i, "k", None, 1)).collect())
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 50);
}

/// Rows in (tail, telemetry), read with a fresh connection.
fn rows_where(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).unwrap();
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM telemetry_recent), (SELECT COUNT(*) FROM telemetry)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[tokio::test]
async fn small_commits_go_through_the_tail_and_stay_in_order() {
    use super::super::tail::{DIRECT_RECORDS, FLUSH_ROWS};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&StoreOptions::new(&path), StoreMetrics::default()).unwrap();
    let mut next = 0;
    let mut batch = |n: usize| {
        let rows: Vec<_> = (next..next + n).map(|i| rec(i, "k", None, 1)).collect();
        next += n;
        rows
    };
    // Small commits land in the tail and are readable at once.
    for _ in 0..3 {
        store.submit(batch(2)).unwrap().wait().await.unwrap();
    }
    assert_eq!(rows_where(&path), (6, 0));
    let page = store
        .query(&TelemetryFilter::default(), 4, None)
        .await
        .unwrap();
    let ids: Vec<_> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["id-5", "id-4", "id-3", "id-2"]);
    // A large group moves the tail first, then goes straight into `telemetry`.
    store
        .submit(batch(DIRECT_RECORDS))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(rows_where(&path), (0, 6 + DIRECT_RECORDS as i64));
    // Filling the tail flushes it.
    let per = DIRECT_RECORDS - 1;
    for _ in 0..FLUSH_ROWS.div_ceil(per) {
        store.submit(batch(per)).unwrap().wait().await.unwrap();
    }
    // The flush follows the commit that filled the tail, before the writer's next job.
    store.submit(batch(1)).unwrap().wait().await.unwrap();
    assert_eq!(rows_where(&path).0, 1, "the full tail was not flushed");
    // Whatever table a record sits in, newest-first paging sees each once, in order.
    let total = store.count().await.unwrap() as usize;
    assert_eq!(total, next);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(&TelemetryFilter::default(), 300, cursor)
            .await
            .unwrap();
        seen.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..next).rev().map(|i| format!("id-{i}")).collect();
    assert_eq!(seen, expected);
    store.close().await;
    assert_eq!(
        rows_where(&path),
        (0, next as i64),
        "shutdown leaves the tail empty"
    );
}

#[tokio::test]
async fn an_idle_writer_flushes_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&StoreOptions::new(&path), StoreMetrics::default()).unwrap();
    store
        .submit(vec![rec(1, "k", None, 1)])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(rows_where(&path), (1, 0));
    // The writer flushes after IDLE_FLUSH of quiet; allow a slow machine plenty more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rows_where(&path) != (0, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle tail was never flushed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.close().await;
}

#[tokio::test]
async fn tail_rows_left_by_a_crash_are_served_and_numbered_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        // A previous run that died with rows in the tail.
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, payload) VALUES (1, 'old', 1, 1, 'k', '{}');
             INSERT INTO telemetry_recent (seq, id, ts_unix, received_unix, kind, payload) VALUES (2, 'tail', 1, 1, 'k', '{}');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&StoreOptions::new(&path), StoreMetrics::default()).unwrap();
    store
        .submit(vec![rec(3, "k", None, 1)])
        .unwrap()
        .wait()
        .await
        .unwrap();
    let page = store
        .query(&TelemetryFilter::default(), 10, None)
        .await
        .unwrap();
    let ids: Vec<_> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["id-3", "tail", "old"]);
    store.close().await;
    let conn = Connection::open(&path).unwrap();
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM telemetry ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn heartbeats_keep_the_latest_even_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &StoreOptions::new(dir.path().join("t.db")),
        StoreMetrics::default(),
    )
    .unwrap();
    let orch = "orch_0000000000000000".to_owned();
    // i % 3 == 0 keeps every record on the same orch hash.
    for ts in [100, 300, 200] {
        let r = rec(0, HEARTBEAT_KIND, None, ts);
        store.submit(vec![r]).unwrap().wait().await.unwrap();
    }
    // Not a heartbeat: does not count.
    store
        .submit(vec![rec(3, "skill", None, 900)])
        .unwrap()
        .wait()
        .await
        .unwrap();
    let hb = store
        .last_heartbeats(std::slice::from_ref(&orch))
        .await
        .unwrap();
    assert_eq!(hb[&orch], 300);
    store.close().await;
}

#[tokio::test]
async fn orchs_see_records_in_the_tail_and_after_a_flush() {
    use super::super::tail::DIRECT_RECORDS;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&StoreOptions::new(&path), StoreMetrics::default()).unwrap();
    let orch = "orch_0000000000000000".to_owned();
    let by_orch = TelemetryFilter {
        orch_hash: Some(orch.clone()),
        ..Default::default()
    };
    // A heartbeat at 300 in the tail, then a direct batch (no heartbeats) that flushes it.
    store
        .submit(vec![rec(0, HEARTBEAT_KIND, None, 300)])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        store
            .last_heartbeats(std::slice::from_ref(&orch))
            .await
            .unwrap()[&orch],
        300
    );
    let direct: Vec<_> = (1..=DIRECT_RECORDS)
        .map(|i| rec(i, "skill", None, 1))
        .collect();
    store.submit(direct).unwrap().wait().await.unwrap();
    assert_eq!(rows_where(&path).0, 0);
    // An older heartbeat in the tail does not hide the flushed one; a newer one wins.
    for (i, ts) in [(DIRECT_RECORDS + 2, 200), (DIRECT_RECORDS + 5, 400)] {
        let hb = store
            .last_heartbeats(std::slice::from_ref(&orch))
            .await
            .unwrap();
        assert_eq!(hb[&orch], 300);
        store
            .submit(vec![rec(i, HEARTBEAT_KIND, None, ts)])
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .last_heartbeats(std::slice::from_ref(&orch))
            .await
            .unwrap()[&orch],
        400
    );
    // The ORCH filter finds its records on both sides of the flush, newest first.
    let page = store.query(&by_orch, 1000, None).await.unwrap();
    let expected = 2 + 1 + DIRECT_RECORDS / 3;
    assert_eq!(page.records.len(), expected);
    assert_eq!(page.records[0].id, format!("id-{}", DIRECT_RECORDS + 5));
    assert_eq!(page.records.last().unwrap().id, "id-0");
    store.close().await;
}

#[test]
fn level_filters_use_the_partial_level_index() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn).unwrap();
    let plan = |level: &str| {
        let f = TelemetryFilter {
            level: Some(level.to_owned()),
            ..Default::default()
        };
        let WhereClause {
            main: cond, args, ..
        } = where_clause(&f, None, None);
        let cond = &cond[0];
        let sql = format!("EXPLAIN QUERY PLAN SELECT seq FROM telemetry {cond}");
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    for level in INDEXED_LEVELS {
        assert!(
            plan(level).contains("telemetry_level"),
            "{level}: {}",
            plan(level)
        );
    }
    assert!(
        !plan("info").contains("telemetry_level"),
        "{}",
        plan("info")
    );
    // Every indexed level is one the wire accepts, so the condition can match rows.
    for level in INDEXED_LEVELS {
        assert_eq!(
            crate::core::telemetry::normalize_level(level).as_deref(),
            Some(*level)
        );
    }
}

#[tokio::test]
async fn orch_filters_read_only_the_orchs_seq_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &StoreOptions::new(dir.path().join("t.db")),
        StoreMetrics::default(),
    )
    .unwrap();
    // rec(i) belongs to orch i % 3; orch 2 only appears in the middle batch.
    let mut n = 0;
    for range in [0..30, 30..60, 60..90] {
        let batch: Vec<_> = range
            .filter(|i| i % 3 != 2 || (40..50).contains(i))
            .map(|i| rec(i, "skill", None, 1000 + i as i64))
            .collect();
        n += batch.len();
        store.submit(batch).unwrap().wait().await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), n as u64);
    let by = |orch: &str| TelemetryFilter {
        orch_hash: Some(orch.to_owned()),
        ..Default::default()
    };
    let page = store
        .query(&by("orch_0000000000000002"), 100, None)
        .await
        .unwrap();
    let ids: Vec<_> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["id-47", "id-44", "id-41"]);
    let page = store
        .query(&by("orch_0000000000000000"), 100, None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 30);
    assert!(
        store
            .query(&by("orch_unknown"), 100, None)
            .await
            .unwrap()
            .records
            .is_empty()
    );

    let WhereClause {
        main: cond, args, ..
    } = where_clause(&by("orch_0000000000000002"), None, None);
    let cond = &cond[0];
    let plan = store
        .with_reader(|conn| {
            let sql =
                format!("EXPLAIN QUERY PLAN SELECT seq FROM telemetry {cond} ORDER BY seq DESC");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(3))?;
            Ok(rows.map(Result::unwrap).collect::<Vec<_>>().join("; "))
        })
        .unwrap();
    assert!(
        plan.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        "{plan}"
    );
    store.close().await;
}

#[tokio::test]
async fn filtered_reads_walk_an_index_newest_first_without_sorting_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &StoreOptions::new(dir.path().join("t.db")),
        StoreMetrics::default(),
    )
    .unwrap();
    let paths = ["support/billing", "support/triage", "code-gen/rust"];
    let kinds = ["llm_call", "tool_call", "skill_execution"];
    let batch: Vec<_> = (0..3000)
        .map(|i| {
            let mut r = rec(i, kinds[i % 3], Some(paths[i % 3]), 1000 + i as i64);
            if i % 50 == 0 {
                r.level = Some("error".to_owned());
            }
            r
        })
        .collect();
    store.submit(batch).unwrap().wait().await.unwrap();
    let f = |kind: Option<&str>, level: Option<&str>, prefix: Option<&str>| TelemetryFilter {
        kind: kind.map(str::to_owned),
        level: level.map(str::to_owned),
        agent_prefix: prefix.map(str::to_owned),
        ..TelemetryFilter::default()
    };
    for filter in [
        f(Some("llm_call"), None, None),
        f(None, Some("error"), Some("support")),
        f(None, Some("error"), None),
        f(Some("tool_call"), Some("error"), None),
        f(Some("tool_call"), None, Some("support")),
        f(None, None, Some("code-gen")),
        f(None, None, None),
    ] {
        let plan = store
            .with_reader(|conn| {
                let paths = match &filter.agent_prefix {
                    Some(p) => Some(paths_under(conn, p)?),
                    None => None,
                };
                let w = where_clause(&filter, Some(2500), paths.as_deref());
                let mut args = w.args.clone();
                args.push(101.into());
                let sql = select_sql(&w.main, &w.tail, args.len());
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(3))?;
                Ok(rows.map(Result::unwrap).collect::<Vec<_>>())
            })
            .unwrap();
        // Each walk of `telemetry` is an index (or rowid) search in seq order: no scan of
        // the table and no sort of what matched. Only the tail, which is small, may be scanned.
        for line in &plan {
            if line.contains("telemetry_recent") {
                continue;
            }
            assert!(
                !line.starts_with("SCAN telemetry") || line.contains("USING"),
                "{filter:?} scans the table: {plan:#?}"
            );
        }
        // A sort inside a walk follows its search; the merge may sort each walk's output
        // (at most `limit` rows), which comes after the walk's `SCAN (subquery-N)`.
        for pair in plan.windows(2) {
            assert!(
                !(pair[0].contains(" telemetry ") && pair[1].contains("TEMP B-TREE")),
                "{filter:?} sorts what a walk matched: {plan:#?}"
            );
        }
        let page = store.query(&filter, 100, Some(2500)).await.unwrap();
        assert!(!page.records.is_empty(), "{filter:?}");
    }
    store.close().await;
}
