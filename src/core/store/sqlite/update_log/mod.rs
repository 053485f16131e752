//! The SQLite update log: the [`UpdateLog`] trait on its own SQLite file. Depends on
//! `core::store::update_log` (the trait and its types), `core::store::sqlite::db` and the
//! update types; nothing of the distributor's transport.
//!
//! Writes go through one writer thread ([`writer`]) that group-commits; publishes and
//! widenings are awaited until committed, while deliveries, acks and subscriber sightings are
//! queued (bounded) and committed in batches. Reads run on the blocking pool.

mod read;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::core::shared::config::SyncMode;
use crate::core::shared::tier::Tier;
use crate::core::store::sqlite::db::{self as db, ReaderPool, SetupError, WriterThread};
use crate::core::store::update_log::{
    AckError, BoxFuture, Counts, Error, Keep, KnownSubscriber, Position, StoredUpdate, UpdateLog,
    WidenedFrom, Widening, WideningRecord,
};
use crate::core::updates::UpdateEnvelope;
use crate::core::updates::protocol::AckStatus;

use crate::core::store::update_log::AckRow;
pub use schema::SCHEMA_VERSION;
use writer::Job;

/// How to open the update log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Database file; its directory is created if missing.
    pub path: PathBuf,
    /// Durability of commits. Publishes are rare and must survive power loss: `Full`.
    pub sync: SyncMode,
    /// Read connections kept open.
    pub readers: usize,
    /// Deliveries, acks and sightings that may wait for the writer; beyond this they are
    /// dropped (and counted) rather than queued without bound.
    pub queue_jobs: usize,
}

impl LogOptions {
    /// Defaults for a log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogOptions {
            path: path.into(),
            sync: SyncMode::Full,
            readers: 4,
            queue_jobs: crate::core::store::update_log::DEFAULT_QUEUE_JOBS,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Backend {
            backend: "sqlite",
            message: e.to_string(),
        }
    }
}

impl From<SetupError> for Error {
    fn from(e: SetupError) -> Error {
        match e {
            SetupError::Open { path, message } => Error::Open { path, message },
            SetupError::Sqlite(e) => e.into(),
            SetupError::SchemaTooNew { found, supported } => {
                Error::SchemaTooNew { found, supported }
            }
        }
    }
}

/// The distributor's durable update log on SQLite.
#[derive(Clone)]
pub struct SqliteUpdateLog(Arc<Shared>);

/// What the log's handle and its blocking reads share.
struct Shared {
    path: PathBuf,
    writer: WriterThread<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: AtomicU64,
    readers: ReaderPool,
}

impl std::fmt::Debug for SqliteUpdateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUpdateLog")
            .field("path", &self.0.path)
            .finish_non_exhaustive()
    }
}

/// Page cache of each connection, KiB: the log is small and read mostly by seq.
const CACHE_KIB: i64 = 4_000;

/// `NULL` (everyone) or an integer 1–100 as stored.
pub(super) fn percent_from_sql(v: Option<i64>) -> Option<u8> {
    v.map(|p| p.clamp(0, 100) as u8)
}

impl SqliteUpdateLog {
    /// Opens (creating and migrating if needed) the log and starts its writer.
    pub fn open(opts: &LogOptions) -> Result<SqliteUpdateLog, Error> {
        let mut conn = db::open(&opts.path, opts.sync, false, CACHE_KIB)?;
        schema::migrate(&mut conn)?;
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let writer = WriterThread::spawn("phx-updates-wr", &opts.path, move |rx| {
            writer::run(conn, rx, writer_queued)
        })?;
        Ok(SqliteUpdateLog(Arc::new(Shared {
            path: opts.path.clone(),
            writer,
            queued,
            capacity: opts.queue_jobs.max(1),
            dropped: AtomicU64::new(0),
            readers: ReaderPool::new(&opts.path, opts.readers, CACHE_KIB),
        })))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Runs a blocking read on the blocking pool.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, Error> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, Error>> {
        let shared = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&shared))
                .await
                .map_err(|e| Error::Corrupt(format!("log read task failed: {e}")))?
        })
    }
}

impl Shared {
    fn send(&self, job: Job) -> Result<(), Error> {
        self.writer.send(job).map_err(|_| Error::Closed)
    }

    /// Queues a bulk row; drops it (counted) when the queue is full or the log closed.
    fn send_bulk(&self, job: Job) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        self.readers.with(f)
    }
}

impl UpdateLog for SqliteUpdateLog {
    fn append(
        &self,
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
    ) -> BoxFuture<'_, Result<UpdateEnvelope, Error>> {
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            self.0.send(Job::Append {
                envelope,
                target_orch_hash,
                rolls_back,
                reply,
            })?;
            done.await.unwrap_or(Err(Error::Closed))
        })
    }

    fn widen(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> BoxFuture<'_, Result<Widening, Error>> {
        let update_id = update_id.to_owned();
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            self.0.send(Job::Widen {
                update_id,
                percent,
                ts_unix,
                reply,
            })?;
            done.await.unwrap_or(Err(Error::Closed))
        })
    }

    fn record_delivery(&self, update_id: Arc<str>, orch_hash: Arc<str>, ts_unix: i64) {
        self.0.send_bulk(Job::Delivery {
            update_id,
            orch_hash,
            ts_unix,
        });
    }

    fn record_ack(
        &self,
        update_id: String,
        orch_hash: Arc<str>,
        status: AckStatus,
        error: Option<String>,
        ts_unix: i64,
    ) {
        self.0.send_bulk(Job::Ack(AckRow {
            update_id,
            orch_hash,
            status,
            error,
            ts_unix,
        }));
    }

    fn record_subscriber(
        &self,
        orch_hash: Arc<str>,
        agent_path: Arc<str>,
        tier: Tier,
        ts_unix: i64,
    ) {
        self.0.send_bulk(Job::Subscriber {
            orch_hash,
            agent_path,
            tier,
            ts_unix,
        });
    }

    fn position(&self) -> BoxFuture<'_, Result<Position, Error>> {
        self.read(|s| s.position())
    }

    fn min_widened_seq(&self) -> BoxFuture<'_, Result<Option<u64>, Error>> {
        self.read(|s| s.min_widened_seq())
    }

    fn find(&self, key: &str) -> BoxFuture<'_, Result<Option<StoredUpdate>, Error>> {
        let key = key.to_owned();
        self.read(move |s| s.find(&key))
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        self.read(move |s| s.list(limit))
    }

    fn counts(&self, update_id: &str) -> BoxFuture<'_, Result<Counts, Error>> {
        let id = update_id.to_owned();
        self.read(move |s| s.counts(&id))
    }

    fn counts_of(&self, update_ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Counts>, Error>> {
        self.read(move |s| update_ids.iter().map(|id| s.counts(id)).collect())
    }

    fn errors(&self, update_id: &str, limit: usize) -> BoxFuture<'_, Result<Vec<AckError>, Error>> {
        let id = update_id.to_owned();
        self.read(move |s| s.errors(&id, limit))
    }

    fn widenings(&self, update_id: &str) -> BoxFuture<'_, Result<Vec<WideningRecord>, Error>> {
        let id = update_id.to_owned();
        self.read(move |s| s.widenings(&id))
    }

    fn subscribers(&self) -> BoxFuture<'_, Result<Vec<KnownSubscriber>, Error>> {
        self.read(|s| s.subscribers())
    }

    fn updates_between(
        &self,
        after: u64,
        upto: u64,
        at_gen: u64,
        keep: Keep,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        if upto <= after {
            return Box::pin(async { Ok(Vec::new()) });
        }
        self.read(move |s| s.updates_between(after, upto, at_gen, keep))
    }

    fn widened_unacked(
        &self,
        upto: u64,
        at_gen: u64,
        orch_hash: &str,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        let orch_hash = orch_hash.to_owned();
        self.read(move |s| s.widened_unacked(upto, at_gen, &orch_hash))
    }

    fn widened_between(
        &self,
        upto: u64,
        from_gen: u64,
        to_gen: u64,
    ) -> BoxFuture<'_, Result<Vec<WidenedFrom>, Error>> {
        if to_gen <= from_gen {
            return Box::pin(async { Ok(Vec::new()) });
        }
        self.read(move |s| s.widened_between(upto, from_gen, to_gen))
    }

    fn queue_depth(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
    }

    fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.0.send(Job::Flush(tx)).is_ok() {
                let _ = rx.await;
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.0.writer.close(Job::Shutdown).await })
    }
}

#[cfg(test)]
mod tests;
