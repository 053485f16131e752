//! Conversations in memory.

use super::{Job, MemoryStore, State, commit};
use crate::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error, FilterCounts,
    ReadOrder,
};
use crate::core::telemetry::conversation::{NewConversation, StoredConversation};

impl State {
    /// Stores rows whose `conversation_id` is new; per row, whether it was stored.
    pub(super) fn insert_conversations(&mut self, rows: Vec<NewConversation>) -> Vec<bool> {
        rows.into_iter()
            .map(|r| {
                if self.conversation_ids.contains(&r.conversation_id) {
                    return false;
                }
                let Ok(messages) = serde_json::from_str(&r.messages_json) else {
                    return false;
                };
                self.last_conversation_seq += 1;
                self.conversation_ids.insert(r.conversation_id.clone());
                self.conversations.push(StoredConversation {
                    seq: self.last_conversation_seq,
                    conversation_id: r.conversation_id,
                    ts_unix: r.ts_unix,
                    received_unix: r.received_unix,
                    orch_hash: r.orch_hash,
                    agent_path: r.agent_path,
                    feedback: r.feedback,
                    score: r.score,
                    messages,
                    prompt_key: r.prompt_key,
                });
                true
            })
            .collect()
    }

    fn selected(&self, filter: &ConversationFilter, order: ReadOrder) -> Vec<StoredConversation> {
        let mut rows: Vec<StoredConversation> = self
            .conversations
            .iter()
            .filter(|c| filter.matches(c, order))
            .cloned()
            .collect();
        if order == ReadOrder::ByPrompt {
            // Stable: stored order within each prompt key.
            rows.sort_by(|a, b| a.prompt_key.cmp(&b.prompt_key));
        }
        rows
    }
}

#[async_trait::async_trait]
impl ConversationStore for MemoryStore {
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error> {
        let (reply, done) = commit();
        self.enqueue(Job::Conversations(conversations, reply))?;
        Ok(done)
    }

    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, Error> {
        let (reply, done) = commit();
        self.enqueue(Job::Purge {
            conversations: true,
            cutoff,
            limit,
            reply,
        })?;
        Ok(done)
    }

    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        let state = self.lock();
        let mut counts = FilterCounts {
            stored: state.conversations.len() as u64,
            ..FilterCounts::default()
        };
        for c in &state.conversations {
            if filter.since.is_some_and(|s| c.ts_unix < s) {
                counts.before_since += 1;
            } else if let Some(min) = filter.min_score {
                match c.score {
                    None => counts.unscored += 1,
                    Some(s) if s < min => counts.below_min_score += 1,
                    Some(_) => {}
                }
            }
        }
        Ok(counts)
    }

    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error> {
        let state = self.lock();
        Ok(state
            .conversations
            .iter()
            .filter(|c| filter.matches(c, order))
            .count() as u64)
    }

    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error> {
        // One snapshot, as SQLite reads in one statement.
        let rows = self.lock().selected(filter, order);
        let (tx, stream) = ConversationStream::channel(rows.len() + 1);
        for row in rows {
            let _ = tx.try_send(Ok(row));
        }
        Ok(stream)
    }
}
