//! The in-memory backend: the same semantics as SQLite (newest-first pages with cursors,
//! segment-wise agent prefixes, purges, duplicate conversation ids refused, back-pressure)
//! with nothing on disk. For tests, `memory:` stores and the conformance suites (telemetry, conversations, the update log); depends only
//! on the store seams and `core::telemetry`.
//!
//! Writes apply at once unless the store is [held](MemoryStore::hold): then they queue (and
//! refuse with `QueueFull` past the capacity, as the SQLite writer does) until
//! [`MemoryStore::release`] or shutdown commits them.

mod conversations;
mod telemetry;
pub mod update_log;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::error::Error;
use super::rollup::{Batch, Rollup};
use super::telemetry::{Commit, InsightRecord};
use crate::core::telemetry::StoredTelemetry;
use crate::core::telemetry::conversation::{NewConversation, StoredConversation};

/// Records that may wait by default, as for SQLite.
const DEFAULT_CAPACITY: usize = 200_000;

/// An in-memory [`TelemetryStore`](super::TelemetryStore) and
/// [`ConversationStore`](super::ConversationStore).
pub struct MemoryStore {
    state: Mutex<State>,
    capacity: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_capacity(DEFAULT_CAPACITY)
    }
}

#[derive(Default)]
struct State {
    /// Telemetry by ascending seq.
    records: Vec<(i64, StoredTelemetry)>,
    /// Insights, oldest first.
    insights: Vec<InsightRecord>,
    /// Conversations by ascending seq.
    conversations: Vec<StoredConversation>,
    conversation_ids: HashSet<String>,
    last_seq: i64,
    last_conversation_seq: i64,
    /// Per-minute cells and ORCHs seen of the stored records.
    rollup: Rollup,
    /// Writes wait in `queue` instead of applying.
    held: bool,
    queue: Vec<Job>,
    /// Records (and conversations) in `queue`.
    queued: usize,
    closed: bool,
}

enum Job {
    Telemetry(Batch, oneshot::Sender<Result<(), Error>>),
    Conversations(
        Vec<NewConversation>,
        oneshot::Sender<Result<Vec<bool>, Error>>,
    ),
    Insight(InsightRecord, oneshot::Sender<Result<(), Error>>),
    Purge {
        conversations: bool,
        cutoff: i64,
        limit: usize,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
}

impl Job {
    fn records(&self) -> usize {
        match self {
            Job::Telemetry(r, _) => r.len(),
            Job::Conversations(c, _) => c.len(),
            Job::Insight(..) | Job::Purge { .. } => 0,
        }
    }
}

impl MemoryStore {
    /// An empty store whose queue (while held) refuses past `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    /// Queues writes instead of applying them, as a busy writer would.
    pub fn hold(&self) {
        self.lock().held = true;
    }

    /// Applies every queued write, in order, and applies later writes at once.
    pub fn release(&self) {
        let mut state = self.lock();
        state.held = false;
        state.drain();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }

    /// Applies or queues `job`; `QueueFull` when the queue holds records and `job` would take
    /// it past the capacity (an empty queue takes any job, so big batches cannot starve).
    fn enqueue(&self, job: Job) -> Result<(), Error> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::Closed);
        }
        let n = job.records();
        if state.queued > 0 && state.queued + n > self.capacity {
            return Err(Error::QueueFull {
                queued: state.queued,
                capacity: self.capacity,
            });
        }
        if state.held {
            state.queued += n;
            state.queue.push(job);
        } else {
            state.apply(job);
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        self.lock().queued
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.drain();
    }
}

impl State {
    fn drain(&mut self) {
        for job in std::mem::take(&mut self.queue) {
            self.apply(job);
        }
        self.queued = 0;
    }

    fn apply(&mut self, job: Job) {
        match job {
            Job::Telemetry(records, reply) => {
                let _ = reply.send(self.insert_records(records));
            }
            Job::Conversations(rows, reply) => {
                let _ = reply.send(Ok(self.insert_conversations(rows)));
            }
            Job::Insight(insight, reply) => {
                self.insights.push(insight);
                let _ = reply.send(Ok(()));
            }
            Job::Purge {
                conversations,
                cutoff,
                limit,
                reply,
            } => {
                let n = if conversations {
                    purge(&mut self.conversations, limit, |c| c.ts_unix < cutoff)
                } else {
                    self.rollup
                        .cells
                        .retain(|k, _| k.minute + super::rollup::MINUTE > cutoff);
                    purge(&mut self.records, limit, |(_, r)| r.ts_unix < cutoff)
                };
                if conversations {
                    self.conversation_ids = self
                        .conversations
                        .iter()
                        .map(|c| c.conversation_id.clone())
                        .collect();
                }
                let _ = reply.send(Ok(n));
            }
        }
    }
}

/// Removes at most `limit` items for which `old` holds, oldest first; returns how many.
fn purge<T>(items: &mut Vec<T>, limit: usize, old: impl Fn(&T) -> bool) -> usize {
    let mut removed = 0;
    items.retain(|item| {
        if removed < limit && old(item) {
            removed += 1;
            false
        } else {
            true
        }
    });
    removed
}

/// A reply channel and the commit it answers.
fn commit<T>() -> (oneshot::Sender<Result<T, Error>>, Commit<T>) {
    Commit::channel()
}
