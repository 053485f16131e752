//! The telemetry and insights seam: what the collector needs from any backend, with the
//! filter and page types its reads take and give.

use std::collections::HashMap;

use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::conversations::ConversationStore;
use super::error::Error;
use super::rollup::{CellRange, CellRow, OrchHealth, OrchSeen};
use crate::core::telemetry::{NewRecord, StoredTelemetry};

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

impl TelemetryFilter {
    /// Whether `agent_path` lies under the filter's agent prefix, segment-wise (`support`
    /// matches `support` and `support/x`, not `supporter`); true without a prefix.
    pub fn agent_matches(&self, agent_path: Option<&str>) -> bool {
        let Some(prefix) = &self.agent_prefix else {
            return true;
        };
        let prefix = prefix.trim_end_matches('/');
        agent_path.is_some_and(|p| {
            p.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Whether a record passes every condition of the filter.
    pub fn matches(&self, r: &StoredTelemetry) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == r.kind)
            && self
                .level
                .as_ref()
                .is_none_or(|l| r.level.as_ref() == Some(l))
            && self.agent_matches(r.agent_path.as_deref())
            && self
                .orch_hash
                .as_ref()
                .is_none_or(|o| r.orch_hash.as_ref() == Some(o))
            && self.since.is_none_or(|s| r.ts_unix >= s)
            && self.until.is_none_or(|u| r.ts_unix < u)
    }
}

/// One page of a newest-first query.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Records, newest first.
    pub records: Vec<StoredTelemetry>,
    /// Pass as `cursor` to get the next (older) page; `None` at the end.
    pub next_cursor: Option<i64>,
}

/// An insight as stored: the columns a backend may index, and the whole insight as JSON
/// (the store never looks inside it; the collector encodes and decodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightRecord {
    /// Identifier.
    pub id: String,
    /// When it was produced, Unix seconds.
    pub ts_unix: i64,
    /// `free` or `premium`.
    pub tier: String,
    /// Analysis focus.
    pub focus: String,
    /// `llm` or `heuristic`.
    pub source: String,
    /// The insight, JSON.
    pub body: String,
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

/// A queued write; await it to learn that it is durable.
#[derive(Debug)]
pub struct Commit<T>(pub(in crate::core::store) oneshot::Receiver<Result<T, Error>>);

impl<T> Commit<T> {
    /// A pending commit and the sender its writer answers on.
    pub fn channel() -> (oneshot::Sender<Result<T, Error>>, Commit<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Commit(rx))
    }

    /// A commit that is already decided (a backend that writes synchronously).
    pub fn done(result: Result<T, Error>) -> Commit<T> {
        let (tx, commit) = Commit::channel();
        let _ = tx.send(result);
        commit
    }

    /// Waits until the writer has committed (or failed) this write.
    pub async fn wait(self) -> Result<T, Error> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }
}

/// What the collector needs from storage: telemetry, insights and (through the supertrait)
/// conversations. Writes are queued and answer with a [`Commit`] to await (group commit;
/// `QueueFull` under back-pressure, at once); reads are async.
#[async_trait::async_trait]
pub trait TelemetryStore: ConversationStore {
    /// Queues records for the writer. Fails at once with `QueueFull` under back-pressure.
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error>;
    /// Queues an insight for the writer.
    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, Error>;
    /// Deletes at most `limit` records older than `cutoff`; returns how many were deleted.
    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error>;
    /// The newest records matching `filter`, at most `limit`, older than `cursor` if given.
    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error>;
    /// Most recent `orch_heartbeat` time of each given orch hash, over all stored records.
    async fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error>;
    /// The newest insights, newest first.
    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, Error>;
    /// The per-minute cells ([`super::rollup`]) whose minute lies in `range`, oldest first.
    async fn cells(&self, range: CellRange) -> Result<Vec<CellRow>, Error>;
    /// At most `limit` ORCHs, most recently seen first.
    async fn orchs_seen(&self, limit: usize) -> Result<Vec<OrchSeen>, Error>;
    /// Per agent path (of each ORCH's newest heartbeat; `""` for none), the ORCHs that sent a
    /// heartbeat and those whose newest one is at `healthy_since` or later; counted by the
    /// backend, so a fleet of any size is one small answer.
    async fn orch_health(&self, healthy_since: i64) -> Result<Vec<OrchHealth>, Error>;
    /// Records waiting for the writer.
    fn queue_depth(&self) -> usize;
    /// Total stored records.
    async fn count(&self) -> Result<u64, Error>;
    /// The ingest buffer's state, when writes go through one ([`super::BufferedStore`]).
    fn buffer_status(&self) -> Option<super::BufferStatus> {
        None
    }
    /// Commits everything queued and stops taking writes.
    async fn shutdown(&self);
}
