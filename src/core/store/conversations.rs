//! The conversations seam: idempotent writes, the filters and counts an export reports, and
//! a stream of stored conversations in export order. [`ConversationReader`] gives the same
//! reads to synchronous code (the dataset writer) running on the blocking pool.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::error::Error;
use super::telemetry::Commit;
use crate::core::telemetry::conversation::{NewConversation, StoredConversation};

/// Which stored conversations an export reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConversationFilter {
    /// Only conversations with `ts_unix >= since`.
    pub since: Option<i64>,
    /// Only scored conversations with `score >= min_score`.
    pub min_score: Option<f64>,
}

impl ConversationFilter {
    /// Whether `c` passes the filter and, in `order`, is read at all.
    pub fn matches(&self, c: &StoredConversation, order: ReadOrder) -> bool {
        self.since.is_none_or(|s| c.ts_unix >= s)
            && self
                .min_score
                .is_none_or(|m| c.score.is_some_and(|s| s >= m))
            && (order == ReadOrder::Stored || c.prompt_key.is_some())
    }
}

/// How many stored conversations a filter leaves out, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounts {
    /// Stored conversations.
    pub stored: u64,
    /// Older than `since`.
    pub before_since: u64,
    /// Without a score while `min_score` is set.
    pub unscored: u64,
    /// Scored below `min_score`.
    pub below_min_score: u64,
}

/// The order an export reads in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOrder {
    /// As stored.
    Stored,
    /// Grouped by prompt key (conversations without one are skipped), stored order within.
    ByPrompt,
}

/// Stored conversations, one at a time, in the order asked for; the backend produces them
/// as the consumer takes them (bounded), so an export never holds the table in memory.
#[derive(Debug)]
pub struct ConversationStream(mpsc::Receiver<Result<StoredConversation, Error>>);

impl ConversationStream {
    /// A stream and the sender a backend feeds it through, holding at most `capacity` rows.
    pub fn channel(
        capacity: usize,
    ) -> (
        mpsc::Sender<Result<StoredConversation, Error>>,
        ConversationStream,
    ) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, ConversationStream(rx))
    }

    /// The next conversation; `None` at the end. A failure ends the stream.
    pub async fn next(&mut self) -> Option<Result<StoredConversation, Error>> {
        self.0.recv().await
    }

    /// [`ConversationStream::next`] for synchronous code (not on an async worker).
    pub fn blocking_next(&mut self) -> Option<Result<StoredConversation, Error>> {
        self.0.blocking_recv()
    }
}

/// What the collector and `phoenix export` need of stored conversations.
#[async_trait::async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Queues conversations for the writer; the commit says, per conversation, whether it was
    /// stored (false: its `conversation_id` was already stored, or came earlier in the same
    /// batch). Shares the write queue's back-pressure with telemetry.
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error>;
    /// Deletes at most `limit` conversations older than `cutoff`; returns how many.
    fn purge_conversations_before(&self, cutoff: i64, limit: usize)
    -> Result<Commit<usize>, Error>;
    /// How many conversations are stored and how many `filter` leaves out, by reason.
    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error>;
    /// How many conversations [`ConversationStore::read_conversations`] would give.
    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error>;
    /// Every conversation `filter` keeps, in `order`, as one consistent read.
    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error>;
}

/// Blocking reads over a [`ConversationStore`], for code on the blocking pool (the dataset
/// export); every call waits on the runtime of `handle`.
pub struct ConversationReader {
    store: Arc<dyn ConversationStore>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for ConversationReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationReader").finish_non_exhaustive()
    }
}

impl ConversationReader {
    /// Reads `store` on the runtime of `handle`. Must not be used from an async worker.
    pub fn new(store: Arc<dyn ConversationStore>, handle: tokio::runtime::Handle) -> Self {
        ConversationReader { store, handle }
    }

    /// How many conversations are stored and how many `filter` leaves out, by reason.
    pub fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        self.handle.block_on(self.store.filter_counts(filter))
    }

    /// How many conversations `for_each` would visit.
    pub fn count(&self, filter: &ConversationFilter, order: ReadOrder) -> Result<u64, Error> {
        self.handle
            .block_on(self.store.count_conversations(filter, order))
    }

    /// Calls `f` with every conversation `filter` keeps, in `order`, one row at a time.
    pub fn for_each<E: From<Error>>(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
        mut f: impl FnMut(StoredConversation) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rows = self
            .handle
            .block_on(self.store.read_conversations(filter, order))?;
        while let Some(row) = rows.blocking_next() {
            f(row?)?;
        }
        Ok(())
    }
}
