//! The durable update log in its own SQLite file: every published update with its seq, its
//! rollout history, and what each subscriber was sent and answered.
//!
//! Writes go through one writer thread ([`writer`]) that group-commits; publishes and
//! widenings are awaited until committed, while deliveries, acks and subscriber sightings are
//! queued (bounded) and committed in batches. Reads are blocking calls for `spawn_blocking`.

mod read;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Error;
use crate::core::shared::config::SyncMode;
use crate::core::shared::tier::Tier;
use crate::core::store::sqlite::db::{self as db, ReaderPool, WriterThread};
use crate::core::updates::protocol::AckStatus;
use crate::core::updates::{Audience, UpdateEnvelope};

pub use schema::SCHEMA_VERSION;
use writer::{AckRow, Job};

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
            queue_jobs: 200_000,
        }
    }
}

/// A logged update as of a given moment of its rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUpdate {
    /// The envelope, `rollout_percent` set to the percentage as of the read.
    pub envelope: UpdateEnvelope,
    /// The percentage it was published with (`None`: everyone).
    pub initial_percent: Option<u8>,
    /// Keyed hash of `target_orch` (or `target_orch` itself when it already was a hash).
    pub target_orch_hash: Option<String>,
}

impl StoredUpdate {
    /// The audience targeting compares against for a subscriber known by its hash. The
    /// server matches `target_orch` only through the stored hash: a hello's `orch_id` is
    /// always hashed, so an id that merely looks like someone's hash is not that hash.
    pub fn audience<'a>(
        &'a self,
        orch_hash: &'a str,
        agent_path: &'a str,
        tier: Tier,
    ) -> Audience<'a> {
        let orch_id = match (&self.envelope.target_orch, &self.target_orch_hash) {
            (Some(raw), Some(hash)) if hash == orch_hash => Some(raw.as_str()),
            _ => None,
        };
        Audience {
            orch_id,
            orch_hash,
            agent_path,
            tier,
        }
    }
}

/// The result of raising an update's rollout.
#[derive(Debug, Clone)]
pub struct Widening {
    /// The update at its new percentage.
    pub update: StoredUpdate,
    /// The percentage before.
    pub from_percent: Option<u8>,
    /// Position of this widening among all widenings (strictly increasing).
    pub widen_seq: u64,
}

/// One raise of a rollout, as listed in an update's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WideningRecord {
    /// Percentage before.
    pub from_percent: Option<u8>,
    /// Percentage after.
    pub to_percent: u8,
    /// When, Unix seconds.
    pub ts_unix: i64,
}

/// Delivery and ack counts of one update.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Orchs the update was sent to.
    pub delivered: u64,
    /// Orchs that applied it.
    pub applied: u64,
    /// Orchs that could not apply it.
    pub rejected: u64,
    /// Orchs that skipped it (not for them, or already applied).
    pub skipped: u64,
}

/// An ack that carries an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AckError {
    /// Which orch.
    pub orch_hash: String,
    /// `rejected` or `skipped`.
    pub status: String,
    /// What it said.
    pub error: String,
    /// When, Unix seconds.
    pub ts_unix: i64,
}

/// A subscriber seen in a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSubscriber {
    /// Keyed hash of its orch id.
    pub orch_hash: String,
    /// Its agent path.
    pub agent_path: String,
    /// Its tier at the last hello.
    pub tier: Tier,
    /// Last hello, Unix seconds.
    pub last_seen: i64,
}

/// Where the log stands: the last seq and the last widening.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Highest seq.
    pub seq: u64,
    /// Highest widening `widen_seq` (0: none yet).
    pub widen_seq: u64,
}

/// The distributor's durable update log.
pub struct UpdateLog {
    path: PathBuf,
    writer: WriterThread<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: AtomicU64,
    readers: ReaderPool,
}

impl std::fmt::Debug for UpdateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Page cache of each connection, KiB: the log is small and read mostly by seq.
const CACHE_KIB: i64 = 4_000;

/// `NULL` (everyone) or an integer 1–100 as stored.
pub(super) fn percent_from_sql(v: Option<i64>) -> Option<u8> {
    v.map(|p| p.clamp(0, 100) as u8)
}

impl UpdateLog {
    /// Opens (creating and migrating if needed) the log and starts its writer.
    pub fn open(opts: &LogOptions) -> Result<UpdateLog, Error> {
        let mut conn = db::open(&opts.path, opts.sync, false, CACHE_KIB)?;
        schema::migrate(&mut conn)?;
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let writer = WriterThread::spawn("phx-updates-wr", &opts.path, move |rx| {
            writer::run(conn, rx, writer_queued)
        })?;
        Ok(UpdateLog {
            path: opts.path.clone(),
            writer,
            queued,
            capacity: opts.queue_jobs.max(1),
            dropped: AtomicU64::new(0),
            readers: ReaderPool::new(&opts.path, opts.readers, CACHE_KIB),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

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

    /// Appends an update (its `seq` is assigned here) and returns it once committed.
    pub async fn append(
        &self,
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
    ) -> Result<UpdateEnvelope, Error> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Append {
            envelope,
            target_orch_hash,
            rolls_back,
            reply,
        })?;
        done.await.unwrap_or(Err(Error::Closed))
    }

    /// Raises an update's rollout to `percent` (which must exceed the current one); returns
    /// once committed.
    pub async fn widen(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> Result<Widening, Error> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Widen {
            update_id: update_id.to_owned(),
            percent,
            ts_unix,
            reply,
        })?;
        done.await.unwrap_or(Err(Error::Closed))
    }

    /// Records that an update was sent to an orch (best effort, batched).
    pub fn record_delivery(&self, update_id: Arc<str>, orch_hash: Arc<str>, ts_unix: i64) {
        self.send_bulk(Job::Delivery {
            update_id,
            orch_hash,
            ts_unix,
        });
    }

    /// Records an orch's ack of an update (best effort, batched; unknown updates are ignored).
    pub fn record_ack(
        &self,
        update_id: String,
        orch_hash: Arc<str>,
        status: AckStatus,
        error: Option<String>,
        ts_unix: i64,
    ) {
        self.send_bulk(Job::Ack(AckRow {
            update_id,
            orch_hash,
            status,
            error,
            ts_unix,
        }));
    }

    /// Records a subscriber's hello (best effort, batched).
    pub fn record_subscriber(
        &self,
        orch_hash: Arc<str>,
        agent_path: Arc<str>,
        tier: Tier,
        ts_unix: i64,
    ) {
        self.send_bulk(Job::Subscriber {
            orch_hash,
            agent_path,
            tier,
            ts_unix,
        });
    }

    /// Bulk rows waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Bulk rows dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Commits everything queued, stops the writer and refuses later writes.
    pub async fn close(&self) {
        self.writer.close(Job::Shutdown).await;
    }

    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        self.readers.with(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::updates::{NewUpdate, UpdateType};
    use serde_json::json;

    fn notice(percent: Option<u8>) -> UpdateEnvelope {
        NewUpdate {
            target_orch: None,
            target_agent_prefix: None,
            cascade: true,
            update_type: UpdateType::Notice,
            tier_required: Tier::Free,
            payload: json!({"message": "m"}),
            rollout_percent: percent,
        }
        .into_envelope(uuid::Uuid::now_v7().to_string(), 0, 1)
    }

    #[tokio::test]
    async fn appends_widens_and_reads_percentages_as_of_a_widening() {
        let dir = tempfile::tempdir().unwrap();
        let log = UpdateLog::open(&LogOptions::new(dir.path().join("d.db"))).unwrap();
        let a = log.append(notice(None), None, None).await.unwrap();
        let b = log.append(notice(Some(10)), None, None).await.unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(matches!(
            log.widen(&a.update_id, 50, 2).await,
            Err(Error::NotWider { current: None, .. })
        ));
        assert!(matches!(
            log.widen(&b.update_id, 10, 2).await,
            Err(Error::NotWider {
                current: Some(10),
                ..
            })
        ));
        assert!(matches!(
            log.widen("nope", 50, 2).await,
            Err(Error::NotFound(_))
        ));
        let w = log.widen(&b.update_id, 40, 3).await.unwrap();
        assert_eq!((w.from_percent, w.widen_seq), (Some(10), 1));
        let w2 = log.widen(&b.update_id, 90, 4).await.unwrap();
        assert_eq!(w2.widen_seq, 2);
        assert_eq!(
            log.position().unwrap(),
            Position {
                seq: 2,
                widen_seq: 2
            }
        );
        assert_eq!(log.min_widened_seq().unwrap(), Some(2));

        let pct = |widen_seq| {
            log.updates_between(0, 2, widen_seq, |_| true).unwrap()[1]
                .envelope
                .rollout_percent
        };
        assert_eq!((pct(0), pct(1), pct(2)), (Some(10), Some(40), Some(90)));
        let between = log.widened_between(2, 1, 2).unwrap();
        assert_eq!(between.len(), 1);
        assert_eq!(between[0].0.envelope.rollout_percent, Some(90));
        assert_eq!(between[0].1, Some(40));
        assert_eq!(
            log.find("2").unwrap().unwrap().envelope.rollout_percent,
            Some(90)
        );
        assert_eq!(
            log.find(&b.update_id).unwrap().unwrap().initial_percent,
            Some(10)
        );

        let orch: Arc<str> = Arc::from("orch_00000000000000aa");
        assert_eq!(log.widened_unacked(2, 2, &orch).unwrap().len(), 1);
        log.record_ack(
            b.update_id.clone(),
            orch.clone(),
            AckStatus::Applied,
            None,
            5,
        );
        // A later `skipped` (a duplicate) does not hide the outcome.
        log.record_ack(
            b.update_id.clone(),
            orch.clone(),
            AckStatus::Skipped,
            Some("dup".into()),
            6,
        );
        log.record_ack("unknown".into(), orch.clone(), AckStatus::Applied, None, 6);
        log.record_delivery(Arc::from(b.update_id.as_str()), orch.clone(), 5);
        log.record_delivery(Arc::from(b.update_id.as_str()), orch.clone(), 6);
        log.flush().await;
        assert!(log.widened_unacked(2, 2, &orch).unwrap().is_empty());
        assert_eq!(
            log.counts(&b.update_id).unwrap(),
            Counts {
                delivered: 1,
                applied: 1,
                rejected: 0,
                skipped: 0
            }
        );
        log.close().await;
    }
}
