//! Storage of telemetry and insights, behind a trait so another backend can follow.
//!
//! Writes are queued to a single writer that group-commits; `submit` returns at once with a
//! [`Commit`] to await, and refuses with [`Error::QueueFull`] instead of queueing without
//! bound. Reads are blocking calls meant for `spawn_blocking`.

pub mod memory;
pub mod sqlite;
pub mod update_log;

use std::collections::HashMap;

use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::core::collector::insight::Insight;
use crate::core::telemetry::conversation::NewConversation;
use crate::core::telemetry::{NewRecord, StoredTelemetry};

pub use sqlite::conversations::{ConversationFilter, ConversationReader, FilterCounts, ReadOrder};
pub use sqlite::migrations::{SCHEMA_VERSION, migrate};
pub use sqlite::store::{
    CHECKPOINT_THREAD, SqliteStore, StoreOptions, WRITER_THREAD, insert_statement,
};

/// Storage failures a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too many records are waiting for the writer; try again later.
    #[error("write queue is full ({queued} records waiting, capacity {capacity})")]
    QueueFull {
        /// Records waiting.
        queued: usize,
        /// Capacity.
        capacity: usize,
    },
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening the database failed.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// Database file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer Phoenix.
    #[error(
        "database schema version {found} is newer than this phoenix understands ({supported}); upgrade phoenix"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<crate::core::store::sqlite::db::SetupError> for Error {
    fn from(e: crate::core::store::sqlite::db::SetupError) -> Error {
        use crate::core::store::sqlite::db::SetupError;
        match e {
            SetupError::Open { path, message } => Error::Open { path, message },
            SetupError::Sqlite(e) => Error::Sqlite(e),
            SetupError::SchemaTooNew { found, supported } => {
                Error::SchemaTooNew { found, supported }
            }
        }
    }
}

/// Which records a query or an analysis looks at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetryFilter {
    /// Exact kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Exact (normalised) level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Agent path prefix, matched segment-wise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_prefix: Option<String>,
    /// Anonymised orch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orch_hash: Option<String>,
    /// Only records with `ts_unix >= since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only records with `ts_unix < until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// One page of a newest-first query.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Records, newest first.
    pub records: Vec<StoredTelemetry>,
    /// Pass as `cursor` to get the next (older) page; `None` at the end.
    pub next_cursor: Option<i64>,
}

/// Commit latency and group sizes, observed by the writer.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds per group commit.
    pub commit_seconds: Histogram,
    /// Records per group commit.
    pub group_records: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            group_records: Histogram::new([1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0]),
        }
    }
}

/// A queued write; await it to learn that it is on disk.
#[derive(Debug)]
pub struct Commit<T>(oneshot::Receiver<Result<T, Error>>);

impl<T> Commit<T> {
    /// Waits until the writer has committed (or failed) this write.
    pub async fn wait(self) -> Result<T, Error> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }
}

/// What the collector needs from storage.
pub trait TelemetryStore: Send + Sync + 'static {
    /// Queues records for the writer. Fails at once with `QueueFull` under back-pressure.
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error>;
    /// Queues conversations for the writer; the commit says, per conversation, whether it was
    /// stored (false: its `conversation_id` was already stored). Shares the write queue's
    /// back-pressure with telemetry.
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error>;
    /// Queues an insight for the writer.
    fn save_insight(&self, insight: &Insight) -> Result<Commit<()>, Error>;
    /// Deletes at most `limit` records older than `cutoff`; returns how many were deleted.
    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error>;
    /// Deletes at most `limit` conversations older than `cutoff`; returns how many.
    fn purge_conversations_before(&self, cutoff: i64, limit: usize)
    -> Result<Commit<usize>, Error>;
    /// The newest records matching `filter`, at most `limit`, older than `cursor` if given.
    fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error>;
    /// Most recent `orch_heartbeat` time of each given orch hash, over all stored records.
    fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error>;
    /// The newest insights, newest first.
    fn insights(&self, limit: usize) -> Result<Vec<Insight>, Error>;
    /// Records waiting for the writer.
    fn queue_depth(&self) -> usize;
    /// Total stored records.
    fn count(&self) -> Result<u64, Error>;
    /// Commits everything queued and stops taking writes.
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}
