//! The edge side of the privacy pipeline (seed 000's Telemetrist): completed conversations
//! are de-identified on this machine, kept in a durable spool, and sent to the collector's
//! `POST /ingest/conversations` until it has them, each exactly once.
//!
//! Depends on `privacy::pii`, `telemetry::conversation`, `shared` (client, config, LLM) and
//! the SQLite helpers of `store::sqlite` for its local spool.
//!
//! The order is what makes it safe: pseudonyms are committed to the vault before the
//! redacted conversation is committed to the spool (so whatever leaves can be revealed
//! here), and a conversation leaves the spool for the ledger only after the collector's
//! 200 (so nothing is lost while it is unreachable or this process dies).
//!
//! `source` finds conversations in a directory, `spool` stores them, `sender` delivers
//! them, and `service` runs the periodic cycle of `phoenix telemetrist`. `otlp` is the
//! same pipeline for OpenTelemetry: a local OTLP/HTTP endpoint whose export requests are
//! redacted, spooled and forwarded to the collector's `/v1/traces` and `/v1/logs`.

pub mod otlp;
pub mod sender;
pub mod service;
pub mod source;
pub mod spool;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::core::privacy::pii::EntityType;
use crate::core::privacy::pii::vault::{self, Vault};
use crate::core::telemetry::conversation::Conversation;
pub use sender::{Delivery, Refusal, SendOptions, Sender};
use spool::{Known, Spool, Spooled};

/// Why the pipeline could not go on (local failures; the collector's are `sender::Error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vault failed: nothing was spooled, since nothing may leave unrevealable.
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] spool::Error),
    /// The source directory could not be read.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// A redacted conversation could not be written as JSON (not expected to happen).
    #[error("encoding redacted conversation {conversation_id}: {source}")]
    Encode {
        /// Conversation.
        conversation_id: String,
        /// Cause.
        source: serde_json::Error,
    },
}

/// Which pseudonym session a conversation is redacted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionPolicy {
    /// Its own: the session id is the conversation id, so one conversation's pseudonyms
    /// say nothing about another's (`USER_A` here is not `USER_A` there).
    PerConversation,
    /// One session for all, so a person keeps one pseudonym across conversations.
    Shared(String),
}

impl SessionPolicy {
    /// The session of `conversation`.
    pub fn session_for(&self, conversation: &Conversation) -> String {
        match self {
            SessionPolicy::PerConversation => conversation.conversation_id.clone(),
            SessionPolicy::Shared(s) => s.clone(),
        }
    }
}

/// What a run did, in the order a conversation goes through it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Conversations read (valid ones).
    pub read: usize,
    /// Lines or conversations that could not be used, and were skipped.
    pub invalid: usize,
    /// Conversations skipped because the ledger says they were sent before.
    pub already_sent: usize,
    /// Conversations skipped because they are in the quarantine.
    pub already_quarantined: usize,
    /// Conversations skipped because they are already waiting in the spool.
    pub already_spooled: usize,
    /// Personal data replaced, by type.
    pub redacted: BTreeMap<EntityType, usize>,
    /// Conversations newly redacted and spooled.
    pub spooled: usize,
    /// What the delivery did: sent, duplicates, requests, quarantined.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Conversations still in the spool at the end.
    pub pending: usize,
    /// Conversations in the quarantine at the end (this run's and earlier ones).
    pub quarantine_total: usize,
    /// The spool file.
    pub spool: String,
    /// Why the collector did not get everything, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<String>,
    /// The first problems, each with where it was (`line 4: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// How many problems a report lists before only counting them.
pub const MAX_LISTED_ERRORS: usize = 20;

impl Report {
    /// Counts an unusable input and remembers the first ones.
    pub fn invalid(&mut self, why: String) {
        self.invalid += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(why);
        }
    }

    /// Counts a conversation skipped because the spool already knows it.
    pub fn skip_known(&mut self, known: Known) {
        match known {
            Known::Sent => self.already_sent += 1,
            Known::Pending => self.already_spooled += 1,
            Known::Quarantined => self.already_quarantined += 1,
        }
    }

    /// Occurrences of personal data replaced, all types.
    pub fn redacted_total(&self) -> usize {
        self.redacted.values().sum()
    }
}

/// The vault and the spool of one edge, and the session policy redaction follows.
#[derive(Debug)]
pub struct Edge {
    vault: Vault,
    spool: Spool,
    session: SessionPolicy,
}

impl Edge {
    /// An edge over an open vault and spool.
    pub fn new(vault: Vault, spool: Spool, session: SessionPolicy) -> Edge {
        Edge {
            vault,
            spool,
            session,
        }
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Redacts the conversations the spool does not know yet and spools them, counting into
    /// `report`: their pseudonyms are committed to the vault first (one transaction), then
    /// the redacted conversations to the spool (another).
    pub fn admit(
        &mut self,
        conversations: Vec<Conversation>,
        report: &mut Report,
    ) -> Result<(), Error> {
        let mut fresh = Vec::with_capacity(conversations.len());
        let mut seen = HashSet::new();
        for c in conversations {
            match self.spool.known(&c.conversation_id)? {
                Some(known) => report.skip_known(known),
                None if !seen.insert(c.conversation_id.clone()) => report.already_spooled += 1,
                None => fresh.push(c),
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let sessions: Vec<String> = fresh.iter().map(|c| self.session.session_for(c)).collect();
        let reports = self.vault.with_sessions(&sessions, |i, redactor| {
            let c = &mut fresh[i];
            let mut report = redactor.redact_messages(&mut c.messages);
            // The agent path is stored too. The conversation id stays as it is: it is this
            // edge's key for the conversation (spool, ledger, session), and one that holds
            // personal data is refused by the collector and quarantined here.
            if let Some(path) = &mut c.agent_path {
                *path = redactor.redact_into(path, &mut report);
            }
            report
        })?;
        for r in reports {
            for (entity, n) in r.replaced {
                *report.redacted.entry(entity).or_default() += n;
            }
        }
        let items = fresh
            .iter()
            .zip(sessions)
            .map(|(c, session)| {
                Ok(Spooled {
                    conversation_id: c.conversation_id.clone(),
                    session,
                    body: serde_json::to_string(c).map_err(|source| Error::Encode {
                        conversation_id: c.conversation_id.clone(),
                        source,
                    })?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        report.spooled += self.spool.enqueue(&items)?;
        Ok(())
    }

    /// Sends everything pending through `sender`, counting into `report`.
    pub async fn deliver(
        &mut self,
        sender: &Sender,
        report: &mut Report,
    ) -> Result<(), sender::Error> {
        sender.deliver(&mut self.spool, &mut report.delivery).await
    }

    /// Fills in the spool's end-of-run figures.
    pub fn finish(&self, report: &mut Report) -> Result<(), Error> {
        let counts = self.spool.counts()?;
        report.pending = counts.pending;
        report.quarantine_total = counts.quarantined;
        report.spool = self.spool.path().display().to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::privacy::pii::vault::VaultKey;

    fn conversation(id: &str, text: &str) -> Conversation {
        serde_json::from_value(serde_json::json!({
            "conversation_id": id, "orch_id": "orch-7", "agent_path": "support/billing",
            "messages": [{"role": "user", "content": text}]
        }))
        .unwrap()
    }

    #[test]
    fn admitted_conversations_are_redacted_per_conversation_and_revealable() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(&dir.path().join("v.db"), &VaultKey::from_bytes([9; 32])).unwrap();
        let spool = Spool::open(&dir.path().join("s.db")).unwrap();
        let mut edge = Edge::new(vault, spool, SessionPolicy::PerConversation);
        let mut report = Report::default();
        edge.admit(
            vec![
                conversation("c1", "I'm Dan Johnson, dan@example.com"),
                conversation("c2", "I'm Priya Patel"),
                conversation("c1", "again"),
            ],
            &mut report,
        )
        .unwrap();
        assert_eq!((report.spooled, report.already_spooled), (2, 1));
        assert_eq!(report.redacted[&EntityType::Person], 2);
        let batch = edge.spool.next_batch(10, usize::MAX).unwrap();
        let c1: Conversation = serde_json::from_str(&batch[0].body).unwrap();
        let c2: Conversation = serde_json::from_str(&batch[1].body).unwrap();
        assert_eq!(c1.messages[0]["content"], "I'm USER_A, USER_A_EMAIL");
        assert_eq!(c2.messages[0]["content"], "I'm USER_A", "own session each");
        assert_eq!(c1.orch_id.as_deref(), Some("orch-7"), "passed through");
        let mappings = edge.vault.load_session("c1").unwrap();
        let back = crate::core::privacy::pii::reveal(
            c1.messages[0]["content"].as_str().unwrap(),
            &mappings,
        )
        .0;
        assert_eq!(back, "I'm Dan Johnson, dan@example.com");

        let mut again = Report::default();
        edge.admit(vec![conversation("c2", "I'm Priya Patel")], &mut again)
            .unwrap();
        assert_eq!((again.spooled, again.already_spooled), (0, 1));
    }
}
