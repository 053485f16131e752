//! [`PgStore`]: the collector's stores on PostgreSQL. Writes go through one group-commit
//! writer task (writer.rs) behind a queue with the same back-pressure as SQLite; reads use
//! the pool directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::writer::{self, InsightRow, Job, WriterState};
use super::{Error as PgError, query};
use crate::core::store::rollup::{Batch, CellRange, CellRow, OrchHealth, OrchSeen};
use crate::core::store::{
    Commit, Error, InsightRecord, Page, StoreMetrics, TelemetryFilter, TelemetryStore,
};
use crate::core::telemetry::{NewRecord, StoredTelemetry};

/// Jobs the writer's channel holds at most; records are bounded by `queue_records`.
const CHANNEL_JOBS: usize = 4096;

/// PostgreSQL-backed [`TelemetryStore`] and conversation store.
pub struct PgStore {
    pub(super) pool: Pool,
    tx: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    closed: AtomicBool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Makes the coming days' partitions every hour, so a long-running server's first
    /// record of a day never waits for DDL (aborted at shutdown).
    upkeep: tokio::task::AbortHandle,
    /// Folds the rollup deltas ([`super::rollup`]).
    fold: tokio::task::AbortHandle,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Error {
        match e {
            PgError::SchemaTooNew { found, supported } => Error::SchemaTooNew { found, supported },
            PgError::Unavailable(m) => backend(m, true),
            PgError::Config(m) | PgError::Query(m) => backend(m, false),
        }
    }
}

fn backend(message: String, transient: bool) -> Error {
    Error::Backend {
        backend: "postgres",
        message,
        transient,
    }
}

/// A driver error as a store error.
pub(super) fn pg(e: tokio_postgres::Error) -> Error {
    PgError::from_pg(&e).into()
}

/// A pool error as a store error.
pub(super) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    PgError::from(e).into()
}

/// How often the partitions around today are checked.
const PARTITION_UPKEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every [`PARTITION_UPKEEP`], makes the partitions from yesterday to two days ahead that are
/// missing (a failure, the database away, is tried again next time; a record that finds no
/// partition makes its own meanwhile).
async fn make_partitions_ahead(pool: Pool) {
    // The first check is one period in: opening the store made them (store::open).
    let start = tokio::time::Instant::now() + PARTITION_UPKEEP;
    let mut tick = tokio::time::interval_at(start, PARTITION_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::core::telemetry::now_unix();
        if let Err(e) = super::partitions::ensure_around(&pool, now).await {
            tracing::warn!(error = %e, "could not make the coming days' telemetry partitions");
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.upkeep.abort();
        self.fold.abort();
    }
}

impl PgStore {
    /// Starts the writer over `pool` (already migrated); at most `queue_records` records may
    /// wait for it before writes are refused with `QueueFull`.
    pub fn start(pool: Pool, queue_records: usize, metrics: StoreMetrics) -> PgStore {
        let (tx, rx) = mpsc::channel(CHANNEL_JOBS);
        let queued = Arc::new(AtomicUsize::new(0));
        let state = WriterState {
            queued: queued.clone(),
            commit_seconds: metrics.commit_seconds,
            group_records: metrics.group_records,
        };
        let writer = tokio::spawn(writer::run(pool.clone(), rx, state));
        let upkeep = tokio::spawn(make_partitions_ahead(pool.clone())).abort_handle();
        let fold = tokio::spawn(super::rollup::fold_forever(pool.clone())).abort_handle();
        PgStore {
            pool,
            tx,
            queued,
            capacity: queue_records.max(1),
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            upkeep,
            fold,
        }
    }

    /// The pool the store reads from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Queues a job of `n` records unless the queue is full. An empty queue always takes one
    /// job, however large, so big batches cannot starve.
    pub(super) fn enqueue(&self, n: usize, job: Job) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::QueueFull {
                queued: before,
                capacity: self.capacity,
            });
        }
        self.tx.try_send(job).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull {
                    queued: before,
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            }
        })
    }

    pub(super) fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `work` (a purge) on a task of its own; answers with the rows deleted.
    pub(super) fn purge<F>(&self, work: impl FnOnce(Pool) -> F) -> Result<Commit<usize>, Error>
    where
        F: std::future::Future<Output = Result<usize, Error>> + Send + 'static,
    {
        self.check_open()?;
        let job = work(self.pool.clone());
        let (tx, commit) = Commit::channel();
        tokio::spawn(async move {
            let _ = tx.send(job.await);
        });
        Ok(commit)
    }

    /// A pooled connection for a read.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(pool_err)
    }
}

fn decode(row: &tokio_postgres::Row) -> Result<(i64, StoredTelemetry), Error> {
    let tags: Option<String> = row.get(8);
    let payload: String = row.get(9);
    let record = StoredTelemetry {
        id: row.get(1),
        ts_unix: row.get(2),
        received_unix: row.get(3),
        kind: row.get(4),
        level: row.get(5),
        orch_hash: row.get(6),
        agent_path: row.get(7),
        tags: match tags {
            Some(t) => {
                serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("tags: {e}")))?
            }
            None => Vec::new(),
        },
        payload: serde_json::from_str(&payload)
            .map_err(|e| Error::Corrupt(format!("payload: {e}")))?,
    };
    Ok((row.get(0), record))
}

#[async_trait::async_trait]
impl TelemetryStore for PgStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error> {
        let (reply, commit) = Commit::channel();
        self.enqueue(records.len(), Job::Telemetry(Batch::new(records), reply))?;
        Ok(commit)
    }

    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, Error> {
        let (reply, commit) = Commit::channel();
        let row = InsightRow {
            id: insight.id,
            ts_unix: insight.ts_unix,
            tier: insight.tier,
            focus: insight.focus,
            source: insight.source,
            body: insight.body,
        };
        self.enqueue(0, Job::Insight(row, reply))?;
        Ok(commit)
    }

    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        self.purge(move |pool| async move {
            super::retention::purge_telemetry(&pool, cutoff, limit).await
        })
    }

    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error> {
        let client = self.client().await?;
        let paths = match &filter.agent_prefix {
            Some(prefix) => {
                let s = query::agent_paths_under(prefix);
                let rows = client.query(&s.sql, &s.refs()).await.map_err(pg)?;
                Some(
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>(),
                )
            }
            None => None,
        };
        if paths.as_ref().is_some_and(Vec::is_empty) {
            // No agent path under the prefix: nothing matches, nothing need be read.
            return Ok(Page {
                records: Vec::new(),
                next_cursor: None,
            });
        }
        let s = query::newest(filter, limit as i64 + 1, cursor, paths.as_deref());
        let rows = client.query(&s.sql, &s.refs()).await.map_err(pg)?;
        let mut records = Vec::with_capacity(rows.len().min(limit));
        let mut last_seq = None;
        let mut more = false;
        for row in &rows {
            if records.len() == limit {
                more = true;
                break;
            }
            let (seq, rec) = decode(row)?;
            last_seq = Some(seq);
            records.push(rec);
        }
        Ok(Page {
            records,
            next_cursor: if more { last_seq } else { None },
        })
    }

    async fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT orch_hash, last_heartbeat_ts FROM orchs \
                 WHERE orch_hash = ANY($1) AND last_heartbeat_ts IS NOT NULL",
                &[&orch_hashes],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect())
    }

    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, ts_unix, tier, focus, source, body FROM insights \
                 ORDER BY seq DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| InsightRecord {
                id: r.get(0),
                ts_unix: r.get(1),
                tier: r.get(2),
                focus: r.get(3),
                source: r.get(4),
                body: r.get(5),
            })
            .collect())
    }

    async fn cells(&self, range: CellRange) -> Result<Vec<CellRow>, Error> {
        super::rollup::cells(&self.pool, range).await
    }

    async fn orchs_seen(&self, limit: usize) -> Result<Vec<OrchSeen>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT orch_hash, agent_path, last_heartbeat_ts FROM orchs \
                 WHERE last_heartbeat_ts IS NOT NULL ORDER BY last_heartbeat_ts DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| OrchSeen {
                orch_hash: r.get(0),
                agent_path: r.get(1),
                last_heartbeat_ts: r.get(2),
            })
            .collect())
    }

    async fn orch_health(&self, healthy_since: i64) -> Result<Vec<OrchHealth>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT coalesce(agent_path, ''), count(*), \
                 count(*) FILTER (WHERE last_heartbeat_ts >= $1) \
                 FROM orchs WHERE last_heartbeat_ts IS NOT NULL GROUP BY 1 ORDER BY 1",
                &[&healthy_since],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| OrchHealth {
                agent_path: r.get(0),
                seen: r.get::<_, i64>(1) as u64,
                healthy: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    async fn count(&self) -> Result<u64, Error> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM telemetry", &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.upkeep.abort();
        self.fold.abort();
        let mut writer = self.writer.lock().await;
        let Some(handle) = writer.take() else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if self.tx.send(Job::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        let _ = handle.await;
    }
}
