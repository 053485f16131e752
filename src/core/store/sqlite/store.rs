//! The SQLite backend: WAL, one writer thread, a small pool of read connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::migrations::migrate;
use super::migrations::{INDEXED_LEVELS, INDEXED_LEVELS_CONDITION};
use super::tail::TABLE as TAIL;
use super::writer::{self, InsightRow, Job, Table};
use crate::core::collector::insight::Insight;
use crate::core::shared::config::SyncMode;
use crate::core::store::sqlite::db::{self as db, ReaderPool, WriterThread};
use crate::core::store::{Commit, Error, Page, StoreMetrics, TelemetryFilter, TelemetryStore};
use crate::core::telemetry::conversation::NewConversation;
use crate::core::telemetry::{HEARTBEAT_KIND, NewRecord, StoredTelemetry};

/// The writer thread's name; thread names show in `top -H` and `/proc` cut to 15 bytes.
pub const WRITER_THREAD: &str = "phx-store-write";
/// The WAL checkpoint thread's name.
pub const CHECKPOINT_THREAD: &str = "phx-store-ckpt";

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Database file; its directory is created if missing.
    pub path: PathBuf,
    /// Durability of commits.
    pub sync: SyncMode,
    /// Records that may wait for the writer before `submit` refuses.
    pub queue_records: usize,
    /// Read connections kept open.
    pub readers: usize,
}

impl StoreOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions {
            path: path.into(),
            sync: SyncMode::Normal,
            queue_records: 200_000,
            readers: 4,
        }
    }
}

/// The insert every telemetry write uses (also used by the storage benchmark).
pub fn insert_statement() -> &'static str {
    "INSERT INTO telemetry (id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
}

/// SQLite-backed [`TelemetryStore`].
pub struct SqliteStore {
    path: PathBuf,
    writer: WriterThread<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    readers: ReaderPool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Page cache of each connection, KiB.
const CACHE_KIB: i64 = 16_000;

/// Opens a connection to the telemetry database.
pub(super) fn open_connection(
    path: &Path,
    sync: SyncMode,
    read_only: bool,
) -> Result<Connection, Error> {
    Ok(db::open(path, sync, read_only, CACHE_KIB)?)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database and starts the writer.
    pub fn open(opts: &StoreOptions, metrics: StoreMetrics) -> Result<SqliteStore, Error> {
        let mut conn = open_connection(&opts.path, opts.sync, false)?;
        migrate(&mut conn)?;
        let checkpointer = Checkpointer::start(&conn, &opts.path)?;
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let writer = WriterThread::spawn(WRITER_THREAD, &opts.path, move |rx| {
            writer::run(conn, rx, writer_queued, metrics, checkpointer)
        })?;
        Ok(SqliteStore {
            path: opts.path.clone(),
            writer,
            queued,
            capacity: opts.queue_records.max(1),
            readers: ReaderPool::new(&opts.path, opts.readers, CACHE_KIB),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits everything already queued, stops the writer and refuses later writes.
    pub async fn close(&self) {
        self.writer.close(Job::Shutdown).await;
    }

    fn send(&self, job: Job) -> Result<(), Error> {
        self.writer.send(job).map_err(|_| Error::Closed)
    }

    /// Queues a job of `n` records unless the queue is full. An empty queue always takes one
    /// job, however large, so big batches cannot starve.
    fn enqueue(&self, n: usize, job: Job) -> Result<(), Error> {
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::QueueFull {
                queued: before,
                capacity: self.capacity,
            });
        }
        self.send(job)
            .inspect_err(|_| _ = self.queued.fetch_sub(n, Ordering::AcqRel))
    }

    fn purge(&self, table: Table, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Purge {
            table,
            cutoff,
            limit,
            reply,
        })?;
        Ok(Commit(rx))
    }

    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        self.readers.with(f)
    }
}

const COLUMNS: &str =
    "seq, id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload";

fn row_to_record(row: &rusqlite::Row<'_>) -> Result<(i64, StoredTelemetry), Error> {
    let tags: Option<String> = row.get(8)?;
    let payload: String = row.get(9)?;
    let record = StoredTelemetry {
        id: row.get(1)?,
        ts_unix: row.get(2)?,
        received_unix: row.get(3)?,
        kind: row.get(4)?,
        level: row.get(5)?,
        orch_hash: row.get(6)?,
        agent_path: row.get(7)?,
        tags: match tags {
            Some(t) => {
                serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("tags: {e}")))?
            }
            None => Vec::new(),
        },
        payload: serde_json::from_str(&payload)
            .map_err(|e| Error::Corrupt(format!("payload: {e}")))?,
    };
    Ok((row.get(0)?, record))
}

/// The WHERE clauses of a filter for `telemetry` and for the recent tail, over one list of
/// numbered parameters that both share. The agent prefix is an index range, not LIKE.
struct WhereClause {
    /// For `telemetry` (may lean on its indexes and on `orchs`).
    main: String,
    /// For the tail, which `orchs` does not cover yet.
    tail: String,
    /// Values of `?1`, `?2`, ...
    args: Vec<Value>,
}

fn where_clause(filter: &TelemetryFilter, cursor: Option<i64>) -> WhereClause {
    let mut main = Vec::new();
    let mut tail = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    // Each `?N` in a condition is the N-th of its values, which get the next free numbers;
    // `tail_cond` is the condition for the tail (None: the same as for `telemetry`).
    let mut push = |cond: &str, tail_cond: Option<&str>, vals: Vec<Value>| {
        let base = args.len();
        let number = |c: &str| {
            let mut out = c.to_owned();
            // From the highest so `?1` does not clobber `?10`.
            for k in (1..=vals.len()).rev() {
                out = out.replace(&format!("?{k}"), &format!("?#{}", base + k));
            }
            out.replace("?#", "?")
        };
        main.push(number(cond));
        tail.push(number(tail_cond.unwrap_or(cond)));
        args.extend(vals);
    };
    if let Some(k) = &filter.kind {
        push("kind = ?1", None, vec![k.clone().into()]);
    }
    if let Some(l) = &filter.level {
        if INDEXED_LEVELS.contains(&l.as_str()) {
            // Repeats the partial index's condition so the planner may use the index.
            push(
                &format!("level = ?1 AND {INDEXED_LEVELS_CONDITION}"),
                Some("level = ?1"),
                vec![l.clone().into()],
            );
        } else {
            push("level = ?1", None, vec![l.clone().into()]);
        }
    }
    if let Some(p) = &filter.agent_prefix {
        let p = p.trim_end_matches('/').to_owned();
        // Children of `p` sort between "p/" and "p0" ('0' follows '/').
        push(
            "(agent_path = ?1 OR (agent_path >= ?2 AND agent_path < ?3))",
            None,
            vec![
                p.clone().into(),
                format!("{p}/").into(),
                format!("{p}0").into(),
            ],
        );
    }
    if let Some(o) = &filter.orch_hash {
        // `orchs` knows the seq range an ORCH's records lie in within `telemetry`; an unknown
        // ORCH has none (NULL bounds match nothing). The range keeps the scan to the ORCH's
        // lifetime. The tail is small and not in `orchs` yet: a plain comparison.
        push(
            "orch_hash = ?1 AND seq BETWEEN (SELECT first_seq FROM orchs WHERE orch_hash = ?1) \
             AND (SELECT last_seq FROM orchs WHERE orch_hash = ?1)",
            Some("orch_hash = ?1"),
            vec![o.clone().into()],
        );
    }
    if let Some(s) = filter.since {
        push("ts_unix >= ?1", None, vec![s.into()]);
    }
    if let Some(u) = filter.until {
        push("ts_unix < ?1", None, vec![u.into()]);
    }
    if let Some(c) = cursor {
        push("seq < ?1", None, vec![c.into()]);
    }
    let clause = |conds: Vec<String>| {
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        }
    };
    WhereClause {
        main: clause(main),
        tail: clause(tail),
        args,
    }
}

impl TelemetryStore for SqliteStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(records.len(), Job::Telemetry(records, reply))?;
        Ok(Commit(rx))
    }

    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(
            conversations.len(),
            Job::Conversations(conversations, reply),
        )?;
        Ok(Commit(rx))
    }

    fn save_insight(&self, insight: &Insight) -> Result<Commit<()>, Error> {
        let body =
            serde_json::to_string(insight).map_err(|e| Error::Corrupt(format!("insight: {e}")))?;
        let row = InsightRow {
            id: insight.id.clone(),
            ts_unix: insight.ts_unix,
            tier: insight.tier.as_str().to_owned(),
            focus: insight.focus.clone(),
            source: insight.source.as_str().to_owned(),
            body,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Job::Insight(row, reply))?;
        Ok(Commit(rx))
    }

    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        self.purge(Table::Telemetry, cutoff, limit)
    }

    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, Error> {
        self.purge(Table::Conversations, cutoff, limit)
    }

    fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error> {
        let WhereClause {
            main,
            tail,
            mut args,
        } = where_clause(filter, cursor);
        args.push((limit as i64 + 1).into());
        // The recent tail and the indexed table, merged by seq in one statement: one
        // snapshot, so a tail flush between two reads can neither hide nor repeat a record.
        // Both arms use the same numbered parameters.
        let sql = format!(
            "SELECT {COLUMNS} FROM {TAIL} {tail} UNION ALL SELECT {COLUMNS} FROM telemetry {main} \
             ORDER BY seq DESC LIMIT ?{}",
            args.len()
        );
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            let mut records = Vec::with_capacity(limit.min(10_000));
            let mut last_seq = None;
            let mut more = false;
            while let Some(row) = rows.next()? {
                if records.len() == limit {
                    more = true;
                    break;
                }
                let (seq, rec) = row_to_record(row)?;
                last_seq = Some(seq);
                records.push(rec);
            }
            Ok(Page {
                records,
                next_cursor: if more { last_seq } else { None },
            })
        })
    }

    fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error> {
        self.with_reader(|conn| {
            // The tail first, `orchs` second: a flush between the two reads moves heartbeats
            // into `orchs`, where the second read still finds them.
            let wanted: std::collections::HashSet<&str> =
                orch_hashes.iter().map(String::as_str).collect();
            let mut out: HashMap<String, i64> = HashMap::with_capacity(orch_hashes.len());
            let mut recent = conn.prepare_cached(&format!(
                "SELECT orch_hash, max(ts_unix) FROM {TAIL} \
                 WHERE kind = '{HEARTBEAT_KIND}' AND orch_hash IS NOT NULL GROUP BY orch_hash"
            ))?;
            let mut rows = recent.query([])?;
            while let Some(row) = rows.next()? {
                let orch: String = row.get(0)?;
                if wanted.contains(orch.as_str()) {
                    out.insert(orch, row.get(1)?);
                }
            }
            let mut stmt =
                conn.prepare_cached(
                    "SELECT last_heartbeat_ts FROM orchs WHERE orch_hash = ?1 AND last_heartbeat_ts IS NOT NULL",
                )?;
            for h in orch_hashes {
                let ts: Option<i64> = stmt.query_row([h], |r| r.get(0)).optional()?;
                if let Some(ts) = ts {
                    let latest = out.entry(h.clone()).or_insert(ts);
                    *latest = (*latest).max(ts);
                }
            }
            Ok(out)
        })
    }

    fn insights(&self, limit: usize) -> Result<Vec<Insight>, Error> {
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT body FROM insights ORDER BY seq DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?;
            rows.map(|body| {
                let body = body?;
                serde_json::from_str(&body).map_err(|e| Error::Corrupt(format!("insight: {e}")))
            })
            .collect()
        })
    }

    fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn count(&self) -> Result<u64, Error> {
        self.with_reader(|conn| {
            Ok(conn.query_row(
                &format!("SELECT (SELECT COUNT(*) FROM telemetry) + (SELECT COUNT(*) FROM {TAIL})"),
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.close())
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(store.count().unwrap(), 10);

        let page = store.query(&TelemetryFilter::default(), 4, None).unwrap();
        assert_eq!(page.records.len(), 4);
        assert_eq!(page.records[0].id, "id-9");
        let next = store
            .query(&TelemetryFilter::default(), 4, page.next_cursor)
            .unwrap();
        assert_eq!(next.records[0].id, "id-5");

        let f = TelemetryFilter {
            agent_prefix: Some("code-gen".into()),
            ..Default::default()
        };
        let page = store.query(&f, 100, None).unwrap();
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
        assert_eq!(store.count().unwrap(), 5);

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
        assert_eq!(store.count().unwrap(), 50);
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
        let page = store.query(&TelemetryFilter::default(), 4, None).unwrap();
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
        let total = store.count().unwrap() as usize;
        assert_eq!(total, next);
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query(&TelemetryFilter::default(), 300, cursor)
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
        let page = store.query(&TelemetryFilter::default(), 10, None).unwrap();
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
        let hb = store.last_heartbeats(std::slice::from_ref(&orch)).unwrap();
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
            store.last_heartbeats(std::slice::from_ref(&orch)).unwrap()[&orch],
            300
        );
        let direct: Vec<_> = (1..=DIRECT_RECORDS)
            .map(|i| rec(i, "skill", None, 1))
            .collect();
        store.submit(direct).unwrap().wait().await.unwrap();
        assert_eq!(rows_where(&path).0, 0);
        // An older heartbeat in the tail does not hide the flushed one; a newer one wins.
        for (i, ts) in [(DIRECT_RECORDS + 2, 200), (DIRECT_RECORDS + 5, 400)] {
            let hb = store.last_heartbeats(std::slice::from_ref(&orch)).unwrap();
            assert_eq!(hb[&orch], 300);
            store
                .submit(vec![rec(i, HEARTBEAT_KIND, None, ts)])
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        assert_eq!(
            store.last_heartbeats(std::slice::from_ref(&orch)).unwrap()[&orch],
            400
        );
        // The ORCH filter finds its records on both sides of the flush, newest first.
        let page = store.query(&by_orch, 1000, None).unwrap();
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
            } = where_clause(&f, None);
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
        assert_eq!(store.count().unwrap(), n as u64);
        let by = |orch: &str| TelemetryFilter {
            orch_hash: Some(orch.to_owned()),
            ..Default::default()
        };
        let page = store
            .query(&by("orch_0000000000000002"), 100, None)
            .unwrap();
        let ids: Vec<_> = page.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["id-47", "id-44", "id-41"]);
        let page = store
            .query(&by("orch_0000000000000000"), 100, None)
            .unwrap();
        assert_eq!(page.records.len(), 30);
        assert!(
            store
                .query(&by("orch_unknown"), 100, None)
                .unwrap()
                .records
                .is_empty()
        );

        let WhereClause {
            main: cond, args, ..
        } = where_clause(&by("orch_0000000000000002"), None);
        let plan = store
            .with_reader(|conn| {
                let sql = format!(
                    "EXPLAIN QUERY PLAN SELECT seq FROM telemetry {cond} ORDER BY seq DESC"
                );
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
}
