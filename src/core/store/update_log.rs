//! The distributor's update log behind a backend-neutral trait: every published update with
//! its seq, its rollout history, and what each subscriber was sent and answered.
//!
//! The log assigns sequence numbers: [`UpdateLog::append`] gives each update the next seq, one
//! gap-free increasing sequence starting at 1, whatever the backend and however many writers.
//! Widenings get their own increasing `widen_seq`. Reads return updates at their rollout
//! percentage as of a given widening, so a replay sees the log as it stood at a [`Position`].
//!
//! Deliveries, acks and subscriber sightings are best effort: queued (bounded) and committed in
//! batches; beyond the bound they are dropped and counted ([`UpdateLog::dropped`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::shared::tier::Tier;
use crate::core::updates::protocol::AckStatus;
use crate::core::updates::{Audience, UpdateEnvelope};

/// A boxed future borrowing the log, as the trait's async methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An update at its new percentage, with its percentage before.
pub type WidenedFrom = (StoredUpdate, Option<u8>);

/// Which updates a replay keeps (called on each, in seq order).
pub type Keep = Box<dyn FnMut(&StoredUpdate) -> bool + Send>;

/// Failures of the update log and its operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log is shutting down and takes no more writes.
    #[error("the update log is closed")]
    Closed,
    /// The storage backend failed (`backend` names it: `sqlite`, …).
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Its message.
        message: String,
    },
    /// Opening the database failed.
    #[error("cannot open update log {path}: {message}")]
    Open {
        /// Database file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer Phoenix.
    #[error(
        "update log schema version {found} is newer than this phoenix understands ({supported}); upgrade phoenix"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// A stored row could not be decoded.
    #[error("corrupt update log: {0}")]
    Corrupt(String),
    /// No update has this id.
    #[error("no update {0:?} in the log")]
    NotFound(String),
    /// A widening must raise the rollout percentage.
    #[error("{}", not_wider(*current, *requested))]
    NotWider {
        /// Current percentage (`None`: already everyone).
        current: Option<u8>,
        /// Requested percentage.
        requested: u8,
    },
}

fn not_wider(current: Option<u8>, requested: u8) -> String {
    match current {
        None => "the update already goes to everyone (no rollout percentage)".to_owned(),
        Some(c) => format!("{requested}% is not above the current rollout of {c}%"),
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

/// An ack waiting in a backend's queue for its batched write.
#[derive(Debug)]
pub struct AckRow {
    /// Which update.
    pub update_id: String,
    /// Which orch.
    pub orch_hash: Arc<str>,
    /// What it did.
    pub status: AckStatus,
    /// What it said, if anything.
    pub error: Option<String>,
    /// When, Unix seconds.
    pub ts_unix: i64,
}

/// Bulk rows (deliveries, acks, sightings) a log queues at most by default before it drops
/// and counts them.
pub const DEFAULT_QUEUE_JOBS: usize = 200_000;

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

/// What the distributor needs from its durable update log.
///
/// Contract every backend keeps (`tests/it/conformance_log.rs` checks it):
/// - `append` assigns `seq` (the envelope's own is ignored): the previous highest plus one,
///   starting at 1, and returns once the update is durable;
/// - `widen` only raises: an update for everyone, or a percentage not above the current one,
///   is [`Error::NotWider`]; an unknown id [`Error::NotFound`]; each widening gets the next
///   `widen_seq`, starting at 1;
/// - reads "as of widening `g`" give each update the percentage of its last widening with
///   `widen_seq <= g`, or its initial percentage;
/// - acks of unknown updates are ignored; a later `skipped` never hides an earlier outcome;
///   a delivery is counted once per (update, orch);
/// - after `close`, `append` and `widen` fail with [`Error::Closed`].
pub trait UpdateLog: Send + Sync + 'static {
    /// Appends an update (its `seq` is assigned here) and returns it once committed.
    fn append(
        &self,
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
    ) -> BoxFuture<'_, Result<UpdateEnvelope, Error>>;

    /// Raises an update's rollout to `percent` (which must exceed the current one); returns
    /// once committed.
    fn widen(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> BoxFuture<'_, Result<Widening, Error>>;

    /// Records that an update was sent to an orch (best effort, batched).
    fn record_delivery(&self, update_id: Arc<str>, orch_hash: Arc<str>, ts_unix: i64);

    /// Records an orch's ack of an update (best effort, batched; unknown updates are ignored).
    fn record_ack(
        &self,
        update_id: String,
        orch_hash: Arc<str>,
        status: AckStatus,
        error: Option<String>,
        ts_unix: i64,
    );

    /// Records a subscriber's hello (best effort, batched).
    fn record_subscriber(
        &self,
        orch_hash: Arc<str>,
        agent_path: Arc<str>,
        tier: Tier,
        ts_unix: i64,
    );

    /// The last seq and the last widening.
    fn position(&self) -> BoxFuture<'_, Result<Position, Error>>;

    /// The lowest seq of an update whose rollout was ever widened.
    fn min_widened_seq(&self) -> BoxFuture<'_, Result<Option<u64>, Error>>;

    /// An update by id, or by seq when `key` is all digits, at its current percentage.
    fn find(&self, key: &str) -> BoxFuture<'_, Result<Option<StoredUpdate>, Error>>;

    /// The newest `limit` updates, newest first, at their current percentage.
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>>;

    /// Delivery and ack counts of an update.
    fn counts(&self, update_id: &str) -> BoxFuture<'_, Result<Counts, Error>>;

    /// Delivery and ack counts of several updates, in the order given. Backends override it
    /// to read them in one round trip (`GET /updates` lists up to a thousand).
    fn counts_of(&self, update_ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Counts>, Error>> {
        Box::pin(async move {
            let mut all = Vec::with_capacity(update_ids.len());
            for id in &update_ids {
                all.push(self.counts(id).await?);
            }
            Ok(all)
        })
    }

    /// Acks of an update that carry an error, rejections first, then newest first; at most
    /// `limit`.
    fn errors(&self, update_id: &str, limit: usize) -> BoxFuture<'_, Result<Vec<AckError>, Error>>;

    /// The widenings of an update, oldest first.
    fn widenings(&self, update_id: &str) -> BoxFuture<'_, Result<Vec<WideningRecord>, Error>>;

    /// Every subscriber ever seen in a hello, ordered by (orch hash, agent path).
    fn subscribers(&self) -> BoxFuture<'_, Result<Vec<KnownSubscriber>, Error>>;

    /// Updates with `after < seq <= upto`, in seq order, at their percentage as of widening
    /// `at_gen`, keeping those `keep` accepts.
    fn updates_between(
        &self,
        after: u64,
        upto: u64,
        at_gen: u64,
        keep: Keep,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>>;

    /// Updates with `seq <= upto` widened at or before widening `at_gen` that `orch_hash` has
    /// not acked, in seq order, at their percentage as of `at_gen`: what a reconnecting orch
    /// may have missed while it was away during a widening.
    fn widened_unacked(
        &self,
        upto: u64,
        at_gen: u64,
        orch_hash: &str,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>>;

    /// Updates with `seq <= upto` widened by a widening in `(from_gen, to_gen]`, in seq
    /// order: each at its percentage as of `to_gen`, with its percentage as of `from_gen`.
    fn widened_between(
        &self,
        upto: u64,
        from_gen: u64,
        to_gen: u64,
    ) -> BoxFuture<'_, Result<Vec<WidenedFrom>, Error>>;

    /// Bulk rows waiting for the writer.
    fn queue_depth(&self) -> usize;

    /// Bulk rows dropped because the queue was full (or the log closed).
    fn dropped(&self) -> u64;

    /// Waits until everything queued so far is committed.
    fn flush(&self) -> BoxFuture<'_, ()>;

    /// Commits everything queued, stops the writer and refuses later writes.
    fn close(&self) -> BoxFuture<'_, ()>;
}
