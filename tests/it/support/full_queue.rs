//! A store whose write queue can be declared full (every submit refused with `QueueFull`);
//! everything else goes to the real SQLite store. For the 429 paths of both ingest endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use phoenix::core::collector::CollectorConfig;
use phoenix::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error as StoreError,
    FilterCounts, InsightRecord, Page, ReadOrder, StoreOptions, TelemetryFilter, TelemetryStore,
};
use phoenix::core::telemetry::NewRecord;
use phoenix::core::telemetry::conversation::NewConversation;
use tempfile::TempDir;

use super::collector::TestCollector;

/// The double; `full` starts true.
pub struct FullQueueStore {
    inner: Arc<dyn TelemetryStore>,
    full: AtomicBool,
}

impl FullQueueStore {
    /// A collector over `dir` whose store is this double (queue full), and the double.
    pub async fn start(
        dir: TempDir,
        options: StoreOptions,
    ) -> (TestCollector, Arc<FullQueueStore>) {
        let double = Arc::new(std::sync::OnceLock::<Arc<FullQueueStore>>::new());
        let slot = double.clone();
        let c = TestCollector::start_with(dir, CollectorConfig::default(), options, move |inner| {
            let store = Arc::new(FullQueueStore {
                inner,
                full: AtomicBool::new(true),
            });
            let _ = slot.set(store.clone());
            store
        })
        .await;
        let store = double.get().expect("the collector built its store").clone();
        (c, store)
    }

    /// Declares the queue full or drained.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    fn refuse(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::QueueFull {
                queued: 1000,
                capacity: 1000,
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TelemetryStore for FullQueueStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, StoreError> {
        self.refuse()?;
        self.inner.submit(records)
    }
    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, StoreError> {
        self.inner.save_insight(insight)
    }
    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, StoreError> {
        self.inner.purge_before(cutoff, limit)
    }
    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, StoreError> {
        self.inner.query(filter, limit, cursor).await
    }
    async fn last_heartbeats(
        &self,
        orch_hashes: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.inner.last_heartbeats(orch_hashes).await
    }
    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, StoreError> {
        self.inner.insights(limit).await
    }
    async fn cells(
        &self,
        range: phoenix::core::store::rollup::CellRange,
    ) -> Result<Vec<phoenix::core::store::rollup::CellRow>, StoreError> {
        self.inner.cells(range).await
    }
    async fn orchs_seen(
        &self,
        limit: usize,
    ) -> Result<Vec<phoenix::core::store::rollup::OrchSeen>, StoreError> {
        self.inner.orchs_seen(limit).await
    }
    async fn orch_health(
        &self,
        healthy_since: i64,
    ) -> Result<Vec<phoenix::core::store::rollup::OrchHealth>, StoreError> {
        self.inner.orch_health(healthy_since).await
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.inner.count().await
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[async_trait::async_trait]
impl ConversationStore for FullQueueStore {
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, StoreError> {
        self.refuse()?;
        self.inner.submit_conversations(conversations)
    }
    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, StoreError> {
        self.inner.purge_conversations_before(cutoff, limit)
    }
    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, StoreError> {
        self.inner.filter_counts(filter).await
    }
    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, StoreError> {
        self.inner.count_conversations(filter, order).await
    }
    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, StoreError> {
        self.inner.read_conversations(filter, order).await
    }
}
