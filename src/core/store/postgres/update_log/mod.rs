//! [`PgUpdateLog`]: the distributor's update log on PostgreSQL, shared by every distributor
//! process of a fleet.
//!
//! Publishes and widenings each run in a transaction of their own that first takes one
//! advisory lock ([`LOG_LOCK`]) and only then reads the highest seq: the lock is held until
//! COMMIT, so every process's appends commit in seq order and a reader anywhere never sees seq
//! N+1 without N, and a refused append rolls back without leaving a gap. Deliveries, acks and
//! subscriber sightings are queued (bounded) and group-committed by a writer task
//! ([`writer`]). Reads always ask the database, so another process's writes show.

mod read;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::Error as PgError;
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{
    AckError, BoxFuture, Counts, Error, Keep, KnownSubscriber, Position, StoredUpdate, UpdateLog,
    WidenedFrom, Widening, WideningRecord,
};
use crate::core::updates::UpdateEnvelope;
use crate::core::updates::protocol::AckStatus;

use crate::core::store::update_log::AckRow;
use writer::Job;

/// Key of the advisory lock every publish and widening takes (distinct from the schema lock).
const LOG_LOCK: i64 = 0x7068_6f65_6e69_7802;

/// A PostgreSQL failure as an update-log error.
fn backend(e: PgError) -> Error {
    Error::Backend {
        backend: "postgres",
        message: e.to_string(),
    }
}

/// A driver error as an update-log error.
fn pg(e: tokio_postgres::Error) -> Error {
    backend(PgError::from_pg(&e))
}

/// A pool error (unreachable database, timeout) as an update-log error.
fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    backend(PgError::from(e))
}

/// `NULL` (everyone) or an integer 1–100 as stored.
fn percent_from_sql(v: Option<i32>) -> Option<u8> {
    v.map(|p| p.clamp(0, 100) as u8)
}

/// The distributor's durable update log on PostgreSQL. Clones share one writer.
#[derive(Clone)]
pub struct PgUpdateLog(Arc<Shared>);

/// What the handles and the writer share.
struct Shared {
    pool: Pool,
    tx: mpsc::UnboundedSender<Job>,
    /// Bulk rows sent to the writer and not yet committed (or given up).
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgUpdateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUpdateLog").finish_non_exhaustive()
    }
}

impl PgUpdateLog {
    /// Starts the log over `pool` (already migrated with `postgres::migrate`); at most
    /// `queue_jobs` best-effort rows (deliveries/acks/sightings) wait before being dropped and
    /// counted.
    pub fn start(pool: Pool, queue_jobs: usize) -> PgUpdateLog {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(writer::run(pool.clone(), rx, queued.clone()));
        PgUpdateLog(Arc::new(Shared {
            pool,
            tx,
            queued,
            capacity: queue_jobs.max(1),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
        }))
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.0.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// A pooled connection; fails within the pool's timeouts when the database is away.
    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.0.pool.get().await.map_err(pool_err)
    }

    /// Queues a bulk row; drops it (counted) when the queue is full or the log closed.
    fn send_bulk(&self, job: Job) {
        let s = &*self.0;
        if s.closed.load(Ordering::Acquire) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if s.queued.fetch_add(1, Ordering::AcqRel) >= s.capacity {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if s.tx.send(job).is_err() {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn append_now(
        &self,
        mut envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
    ) -> Result<UpdateEnvelope, Error> {
        self.check_open()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
            .await
            .map_err(pg)?;
        // Read after the lock is granted: every earlier append has committed by then.
        let last: i64 = tx
            .query_one("SELECT coalesce(max(seq), 0)::bigint FROM updates", &[])
            .await
            .map_err(pg)?
            .get(0);
        envelope.seq = last as u64 + 1;
        let json = serde_json::to_string(&envelope)
            .map_err(|e| Error::Corrupt(format!("cannot encode envelope: {e}")))?;
        let percent = envelope.rollout_percent.map(i32::from);
        // A duplicate update_id fails here; dropping `tx` rolls back, so no seq is spent.
        tx.execute(
            "INSERT INTO updates (seq, update_id, ts_unix, update_type, target_orch_hash, \
             rolls_back, initial_percent, rollout_percent, envelope) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            &[
                &(envelope.seq as i64),
                &envelope.update_id,
                &envelope.ts_unix,
                &envelope.update_type.as_str(),
                &target_orch_hash,
                &rolls_back,
                &percent,
                &json,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(envelope)
    }

    async fn widen_now(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> Result<Widening, Error> {
        self.check_open()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT envelope, initial_percent, rollout_percent, target_orch_hash \
                 FROM updates WHERE update_id = $1",
                &[&update_id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Err(Error::NotFound(update_id.to_owned()));
        };
        let json: String = row.get(0);
        let initial = percent_from_sql(row.get(1));
        let current = percent_from_sql(row.get(2));
        let target_orch_hash: Option<String> = row.get(3);
        match current {
            Some(c) if percent > c => {}
            _ => {
                return Err(Error::NotWider {
                    current,
                    requested: percent,
                });
            }
        }
        tx.execute(
            "UPDATE updates SET rollout_percent = $2 WHERE update_id = $1",
            &[&update_id, &i32::from(percent)],
        )
        .await
        .map_err(pg)?;
        let widen_seq: i64 = tx
            .query_one(
                "INSERT INTO widenings (widen_seq, update_id, from_percent, to_percent, ts_unix) \
                 SELECT coalesce(max(widen_seq), 0) + 1, $1, $2, $3, $4 FROM widenings \
                 RETURNING widen_seq",
                &[
                    &update_id,
                    &current.map(i32::from),
                    &i32::from(percent),
                    &ts_unix,
                ],
            )
            .await
            .map_err(pg)?
            .get(0);
        let mut envelope: UpdateEnvelope = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("update {update_id}: {e}")))?;
        tx.commit().await.map_err(pg)?;
        envelope.rollout_percent = Some(percent);
        Ok(Widening {
            update: StoredUpdate {
                envelope,
                initial_percent: initial,
                target_orch_hash,
            },
            from_percent: current,
            widen_seq: widen_seq as u64,
        })
    }
}

impl UpdateLog for PgUpdateLog {
    fn append(
        &self,
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
    ) -> BoxFuture<'_, Result<UpdateEnvelope, Error>> {
        Box::pin(self.append_now(envelope, target_orch_hash, rolls_back))
    }

    fn widen(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> BoxFuture<'_, Result<Widening, Error>> {
        let update_id = update_id.to_owned();
        Box::pin(async move { self.widen_now(&update_id, percent, ts_unix).await })
    }

    fn record_delivery(&self, update_id: Arc<str>, orch_hash: Arc<str>, ts_unix: i64) {
        self.send_bulk(Job::Delivery {
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
        self.send_bulk(Job::Ack(AckRow {
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
        self.send_bulk(Job::Subscriber {
            orch_hash,
            agent_path,
            tier,
            ts_unix,
        });
    }

    fn position(&self) -> BoxFuture<'_, Result<Position, Error>> {
        Box::pin(async move { read::position(&*self.client().await?).await })
    }

    fn min_widened_seq(&self) -> BoxFuture<'_, Result<Option<u64>, Error>> {
        Box::pin(async move { read::min_widened_seq(&*self.client().await?).await })
    }

    fn find(&self, key: &str) -> BoxFuture<'_, Result<Option<StoredUpdate>, Error>> {
        let key = key.to_owned();
        Box::pin(async move { read::find(&*self.client().await?, &key).await })
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        Box::pin(async move { read::list(&*self.client().await?, limit).await })
    }

    fn counts(&self, update_id: &str) -> BoxFuture<'_, Result<Counts, Error>> {
        let ids = vec![update_id.to_owned()];
        Box::pin(async move {
            let counts = read::counts_of(&*self.client().await?, &ids).await?;
            Ok(counts.into_iter().next().unwrap_or_default())
        })
    }

    fn counts_of(&self, update_ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Counts>, Error>> {
        Box::pin(async move { read::counts_of(&*self.client().await?, &update_ids).await })
    }

    fn errors(&self, update_id: &str, limit: usize) -> BoxFuture<'_, Result<Vec<AckError>, Error>> {
        let id = update_id.to_owned();
        Box::pin(async move { read::errors(&*self.client().await?, &id, limit).await })
    }

    fn widenings(&self, update_id: &str) -> BoxFuture<'_, Result<Vec<WideningRecord>, Error>> {
        let id = update_id.to_owned();
        Box::pin(async move { read::widenings(&*self.client().await?, &id).await })
    }

    fn subscribers(&self) -> BoxFuture<'_, Result<Vec<KnownSubscriber>, Error>> {
        Box::pin(async move { read::subscribers(&*self.client().await?).await })
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
        Box::pin(async move {
            read::updates_between(&*self.client().await?, after, upto, at_gen, keep).await
        })
    }

    fn widened_unacked(
        &self,
        upto: u64,
        at_gen: u64,
        orch_hash: &str,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        let orch_hash = orch_hash.to_owned();
        Box::pin(async move {
            read::widened_unacked(&*self.client().await?, upto, at_gen, &orch_hash).await
        })
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
        Box::pin(async move {
            read::widened_between(&*self.client().await?, upto, from_gen, to_gen).await
        })
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
            if self.0.tx.send(Job::Flush(tx)).is_ok() {
                let _ = rx.await;
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.0.closed.store(true, Ordering::Release);
            let mut writer = self.0.writer.lock().await;
            let Some(handle) = writer.take() else {
                return;
            };
            let (reply, done) = oneshot::channel();
            if self.0.tx.send(Job::Shutdown(reply)).is_ok() {
                let _ = done.await;
            }
            let _ = handle.await;
        })
    }
}
