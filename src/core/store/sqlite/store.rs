//! The SQLite backend: WAL, one writer thread, a small pool of read connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::conversations::{self as conv, blocking};
use super::migrations::migrate;
use super::migrations::{INDEXED_LEVELS, INDEXED_LEVELS_CONDITION};
use super::tail::TABLE as TAIL;
use super::writer::{self, Job, Table};
use crate::core::shared::config::SyncMode;
use crate::core::store::rollup::{Batch, CellRange, CellRow, OrchHealth, OrchSeen};
use crate::core::store::sqlite::db::{self as db, ReaderPool, WriterThread};
use crate::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error, FilterCounts,
    InsightRecord, Page, ReadOrder, StoreMetrics, TelemetryFilter, TelemetryStore,
};
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
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Page cache of each connection, KiB.
pub(super) const CACHE_KIB: i64 = 16_000;

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
            readers: Arc::new(ReaderPool::new(&opts.path, opts.readers, CACHE_KIB)),
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

    #[cfg(test)]
    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        self.readers.with(f)
    }

    /// Runs `f` on a pooled read connection, on the blocking pool.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let readers = self.readers.clone();
        blocking(move || readers.with(f)).await
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
    /// For `telemetry` (may lean on its indexes and on `orchs`): one clause per walk, the
    /// agent prefix as one walk per path when the paths are given (none: nothing matches).
    main: Vec<String>,
    /// For the tail, which `orchs` does not cover yet.
    tail: String,
    /// Values of `?1`, `?2`, ...
    args: Vec<Value>,
}

/// Past this many matching agent paths one walk per path costs more than it saves: the
/// read uses the range condition instead.
const MAX_PATH_WALKS: usize = 64;

/// The agent paths under `prefix` (segment-wise), from `agent_paths`.
fn paths_under(conn: &Connection, prefix: &str) -> Result<Vec<String>, Error> {
    let p = prefix.trim_end_matches('/');
    let mut stmt = conn.prepare_cached(
        "SELECT agent_path FROM agent_paths \
         WHERE agent_path = ?1 OR (agent_path >= ?2 AND agent_path < ?3) ORDER BY agent_path",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![p, format!("{p}/"), format!("{p}0")],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest rows of the recent tail and of each walk of the indexed table, merged by seq in
/// one statement: one snapshot, so a tail flush between two reads can neither hide nor repeat
/// a record. Every arm uses the same numbered parameters; `?{limit}` is the row limit.
fn select_sql(main: &[String], tail: &str, limit: usize) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM {TAIL} {tail}");
    if let [walk] = main {
        // One walk: SQLite merges the two arms in seq order as they come (each arm's index
        // ends in the rowid); a subquery would make it sort the walk's rows again.
        sql.push_str(&format!(
            " UNION ALL SELECT {COLUMNS} FROM telemetry {walk} ORDER BY seq DESC LIMIT ?{limit}"
        ));
        return sql;
    }
    for walk in main {
        sql.push_str(&format!(
            " UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM telemetry {walk} \
             ORDER BY seq DESC LIMIT ?{limit})"
        ));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{limit}"));
    sql
}

fn where_clause(
    filter: &TelemetryFilter,
    cursor: Option<i64>,
    paths: Option<&[String]>,
) -> WhereClause {
    let walks = paths.filter(|p| filter.agent_prefix.is_some() && p.len() <= MAX_PATH_WALKS);
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
        // Children of `p` sort between "p/" and "p0" ('0' follows '/'). With walks, only the
        // tail keeps the range: each walk names its path.
        let range = "(agent_path = ?1 OR (agent_path >= ?2 AND agent_path < ?3))";
        push(
            if walks.is_some() { "1" } else { range },
            Some(range),
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
    let clause = |conds: &[String]| {
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        }
    };
    let main = match walks {
        None => vec![clause(&main)],
        Some(paths) => paths
            .iter()
            .map(|path| {
                args.push(path.clone().into());
                let mut own = main.clone();
                own.push(format!("agent_path = ?{}", args.len()));
                clause(&own)
            })
            .collect(),
    };
    WhereClause {
        main,
        tail: clause(&tail),
        args,
    }
}

#[async_trait::async_trait]
impl TelemetryStore for SqliteStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(records.len(), Job::Telemetry(Batch::new(records), reply))?;
        Ok(Commit(rx))
    }

    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Insight(insight, reply))?;
        Ok(Commit(rx))
    }

    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        self.purge(Table::Telemetry, cutoff, limit)
    }

    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error> {
        let filter = filter.clone();
        self.read(move |conn| {
            // An agent prefix reads its paths, then the rows: one snapshot (a read transaction),
            // so a path a commit adds comes with its rows. Other reads are one statement.
            let snapshot = match &filter.agent_prefix {
                Some(_) => Some(conn.unchecked_transaction()?),
                None => None,
            };
            let conn: &Connection = snapshot.as_deref().unwrap_or(conn);
            let paths = match &filter.agent_prefix {
                Some(prefix) => Some(paths_under(conn, prefix)?),
                None => None,
            };
            let WhereClause {
                main,
                tail,
                mut args,
            } = where_clause(&filter, cursor, paths.as_deref());
            args.push((limit as i64 + 1).into());
            let sql = select_sql(&main, &tail, args.len());
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
        .await
    }

    async fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error> {
        let orch_hashes = orch_hashes.to_vec();
        self.read(move |conn| {
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
            for h in &orch_hashes {
                let ts: Option<i64> = stmt.query_row([h], |r| r.get(0)).optional()?;
                if let Some(ts) = ts {
                    let latest = out.entry(h.clone()).or_insert(ts);
                    *latest = (*latest).max(ts);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, Error> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, ts_unix, tier, focus, source, body FROM insights ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(InsightRecord {
                    id: r.get(0)?,
                    ts_unix: r.get(1)?,
                    tier: r.get(2)?,
                    focus: r.get(3)?,
                    source: r.get(4)?,
                    body: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn cells(&self, range: CellRange) -> Result<Vec<CellRow>, Error> {
        self.read(move |conn| super::rollup::cells(conn, range))
            .await
    }

    async fn orchs_seen(&self, limit: usize) -> Result<Vec<OrchSeen>, Error> {
        self.read(move |conn| super::rollup::orchs(conn, limit))
            .await
    }

    async fn orch_health(&self, healthy_since: i64) -> Result<Vec<OrchHealth>, Error> {
        self.read(move |conn| super::rollup::orch_health(conn, healthy_since))
            .await
    }

    fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    async fn count(&self) -> Result<u64, Error> {
        self.read(|conn| {
            Ok(conn.query_row(
                &format!("SELECT (SELECT COUNT(*) FROM telemetry) + (SELECT COUNT(*) FROM {TAIL})"),
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn shutdown(&self) {
        self.close().await
    }
}

#[async_trait::async_trait]
impl ConversationStore for SqliteStore {
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

    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, Error> {
        self.purge(Table::Conversations, cutoff, limit)
    }

    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        let filter = *filter;
        self.read(move |conn| conv::filter_counts(conn, &filter))
            .await
    }

    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error> {
        let filter = *filter;
        self.read(move |conn| conv::count(conn, &filter, order))
            .await
    }

    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error> {
        Ok(conv::spawn_stream(self.readers.clone(), *filter, order))
    }
}

#[cfg(test)]
mod tests;
