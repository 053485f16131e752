//! `LearningPipelineState`: what an agent has applied, and how an update changes it.
//!
//! The effective overrides and config are always `fold(base, history)`: the base document
//! with every applied, state-changing update that has not been rolled back, in the order
//! they were applied. Keeping the updates (not just their result) is what makes a rollback
//! exact: undoing update X replays everything else, so later updates are kept.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::document::{Document, LearningOverrides};
use crate::core::shared::tier::Tier;
use crate::core::telemetry::now_unix;
use crate::core::updates::protocol::AckStatus;
use crate::core::updates::{Audience, UpdateEnvelope, UpdateType, validate_payload};

/// Version of the state file layout.
pub const STATE_FORMAT: u32 = 1;
/// Applied updates kept (and so still reversible); older ones are folded into `base`.
pub const HISTORY_LIMIT: usize = 256;
/// Serialised payload bytes kept in the history before the oldest are folded into `base`.
pub const HISTORY_BYTES_LIMIT: usize = 8 * 1024 * 1024;
/// Ids of folded updates remembered, so a replay of one is still recognised.
pub const FOLDED_IDS_LIMIT: usize = 4096;
/// Rollbacks of not-yet-seen updates remembered (see [`LearningPipelineState::tombstones`]).
pub const TOMBSTONE_LIMIT: usize = 256;

/// One applied update, kept so it can be replayed when an earlier one is rolled back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The update.
    pub update_id: String,
    /// Its seq in the distributor's log.
    pub seq: u64,
    /// When it was published (Unix seconds).
    pub ts_unix: i64,
    /// When this subscriber applied it (Unix seconds).
    pub applied_at: i64,
    /// Its type.
    pub update_type: UpdateType,
    /// Its payload, verbatim.
    pub payload: Value,
}

impl HistoryEntry {
    fn rollback_target(&self) -> Option<&str> {
        match self.update_type {
            UpdateType::Rollback => self.payload.get("update_id").and_then(Value::as_str),
            _ => None,
        }
    }

    fn changes_state(&self) -> bool {
        !matches!(self.update_type, UpdateType::Notice | UpdateType::Rollback)
    }

    /// A one-line description of what the update does.
    pub fn summary(&self) -> String {
        let text = |key: &str| {
            self.payload
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        match self.update_type {
            UpdateType::PromptTweak => format!("prompt: {}", text("default_prompt")),
            UpdateType::ModelTweak => format!("model: {}", text("default_model")),
            UpdateType::Notice => text("message"),
            UpdateType::Rollback => format!("undo {}", text("update_id")),
            UpdateType::YamlGraft => {
                let keys = crate::core::updates::parse_yaml_mapping(&text("yaml"))
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                format!("graft: {keys}")
            }
            UpdateType::JsonPatch => {
                let ops = self.payload.get("patch").and_then(Value::as_array);
                let described: Vec<String> = ops
                    .into_iter()
                    .flatten()
                    .map(|op| {
                        let s =
                            |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                        format!("{} {}", s("op"), s("path"))
                    })
                    .collect();
                described.join(", ")
            }
        }
    }
}

/// Where an entry of the history stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EntryStatus {
    /// Part of the effective state (or, for notices and rollbacks, simply recorded).
    InEffect,
    /// Undone by the rollback `by`.
    RolledBack {
        /// The rollback's update id.
        by: String,
    },
    /// No longer applies once an earlier update was rolled back (e.g. a patch whose `test`
    /// depended on it), exactly as it would have been rejected without that update.
    Inactive {
        /// Why it no longer applies.
        error: String,
    },
}

/// A rollback of an update this subscriber had not seen yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The update that was rolled back.
    pub update_id: String,
    /// The rollback.
    pub by: String,
}

/// What [`LearningPipelineState::apply`] did with an update: the ack to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `applied`, `rejected` or `skipped`.
    pub status: AckStatus,
    /// Why, when rejected or skipped.
    pub error: Option<String>,
}

impl Outcome {
    fn applied() -> Outcome {
        Outcome {
            status: AckStatus::Applied,
            error: None,
        }
    }

    fn skipped(why: impl Into<String>) -> Outcome {
        Outcome {
            status: AckStatus::Skipped,
            error: Some(why.into()),
        }
    }
}

/// The agent-side state of the learning pipeline (seed's fields plus resumption and history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningPipelineState {
    /// Layout version ([`STATE_FORMAT`]).
    pub format: u32,
    /// Raw orch id this state belongs to.
    pub orch_id: String,
    /// Agent path this state belongs to.
    pub agent_path: String,
    /// Collector the heartbeats go to.
    #[serde(default)]
    pub telemetrist_url: Option<String>,
    /// Distributor the updates come from.
    #[serde(default)]
    pub distributor_url: Option<String>,
    /// The orch's keyed hash, as the distributor reported it in `hello_ack`.
    #[serde(default)]
    pub orch_hash: Option<String>,
    /// Tier the distributor granted in `hello_ack`.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Effective overrides.
    pub overrides: LearningOverrides,
    /// Effective config.
    pub config_json: Map<String, Value>,
    /// Last applied update.
    #[serde(default)]
    pub last_update_id: Option<String>,
    /// Publication time of the last applied update.
    #[serde(default)]
    pub last_update_ts: Option<i64>,
    /// Type of the last applied update.
    #[serde(default)]
    pub last_update_type: Option<UpdateType>,
    /// Why the last update was rejected; cleared by the next applied one.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Highest seq seen (applied, rejected or skipped): sent in `hello` to resume.
    #[serde(default)]
    pub last_seq: u64,
    /// The document before the oldest update of `history`.
    #[serde(default)]
    pub base: Document,
    /// Ids of updates folded into `base` (newest last): replays of them are skipped.
    #[serde(default)]
    pub folded_ids: VecDeque<String>,
    /// Applied updates in the order they were applied, oldest first.
    #[serde(default)]
    pub history: VecDeque<HistoryEntry>,
    /// Rollbacks that arrived before the update they undo (possible when a rollout is
    /// widened after a rollback): that update is skipped if it arrives later.
    #[serde(default)]
    pub tombstones: VecDeque<Tombstone>,
}

impl LearningPipelineState {
    /// A fresh state: no overrides, empty config, nothing seen.
    pub fn new(orch_id: impl Into<String>, agent_path: impl Into<String>) -> Self {
        LearningPipelineState {
            format: STATE_FORMAT,
            orch_id: orch_id.into(),
            agent_path: agent_path.into(),
            telemetrist_url: None,
            distributor_url: None,
            orch_hash: None,
            tier: None,
            overrides: LearningOverrides::default(),
            config_json: Map::new(),
            last_update_id: None,
            last_update_ts: None,
            last_update_type: None,
            last_error: None,
            last_seq: 0,
            base: Document::default(),
            folded_ids: VecDeque::new(),
            history: VecDeque::new(),
            tombstones: VecDeque::new(),
        }
    }

    /// The effective document `{"overrides", "config"}`.
    pub fn document(&self) -> Document {
        Document {
            overrides: self.overrides.clone(),
            config: self.config_json.clone(),
        }
    }

    /// Where each history entry stands, in history order.
    pub fn entry_statuses(&self) -> Vec<EntryStatus> {
        fold(&self.base, &self.history).1
    }

    /// Applies one update as received from the distributor and says what to ack.
    ///
    /// Never fails: a bad update is `rejected` with the state unchanged (but for
    /// `last_seq` and `last_error`); one not meant for this subscriber, or already applied,
    /// is `skipped`.
    pub fn apply(&mut self, update: &UpdateEnvelope, who: &Audience<'_>) -> Outcome {
        self.last_seq = self.last_seq.max(update.seq);
        if let Some(why) = not_for(update, who) {
            return Outcome::skipped(why);
        }
        let id = update.update_id.as_str();
        if self.history.iter().any(|e| e.update_id == id) || self.folded_ids.iter().any(|f| f == id)
        {
            return Outcome::skipped(format!("update {id} was already applied"));
        }
        if let Some(t) = self.tombstones.iter().find(|t| t.update_id == id) {
            return Outcome::skipped(format!(
                "update {id} was rolled back by {} before it arrived",
                t.by
            ));
        }
        if let Err(e) = validate_payload(update.update_type, &update.payload) {
            return self.reject(update, e.to_string());
        }
        let entry = HistoryEntry {
            update_id: update.update_id.clone(),
            seq: update.seq,
            ts_unix: update.ts_unix,
            applied_at: now_unix(),
            update_type: update.update_type,
            payload: update.payload.clone(),
        };
        let next = match update.update_type {
            UpdateType::Rollback => match self.check_rollback(&entry) {
                Ok(RollbackCheck::Apply) => {
                    self.history.push_back(entry);
                    let (doc, statuses) = fold(&self.base, &self.history);
                    for (e, s) in self.history.iter().zip(&statuses) {
                        if let EntryStatus::Inactive { error } = s {
                            tracing::warn!(update_id = %e.update_id, %error, "an update no longer applies after the rollback");
                        }
                    }
                    self.finish_applied(update, doc);
                    return Outcome::applied();
                }
                Ok(RollbackCheck::Skip(why)) => {
                    return Outcome::skipped(why);
                }
                Err(why) => return self.reject(update, why),
            },
            UpdateType::Notice => {
                let message = update
                    .payload
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                tracing::info!(update_id = %update.update_id, seq = update.seq, message, "notice from the distributor");
                self.document()
            }
            t => match self.document().with_update(t, &update.payload) {
                Ok(doc) => doc,
                Err(why) => return self.reject(update, why),
            },
        };
        self.history.push_back(entry);
        self.finish_applied(update, next);
        Outcome::applied()
    }

    fn reject(&mut self, update: &UpdateEnvelope, why: String) -> Outcome {
        tracing::warn!(update_id = %update.update_id, seq = update.seq, update_type = update.update_type.as_str(), error = %why, "update rejected");
        self.last_error = Some(format!(
            "{} {}: {why}",
            update.update_type.as_str(),
            update.update_id
        ));
        Outcome {
            status: AckStatus::Rejected,
            error: Some(why),
        }
    }

    fn finish_applied(&mut self, update: &UpdateEnvelope, doc: Document) {
        self.overrides = doc.overrides;
        self.config_json = doc.config;
        self.last_update_id = Some(update.update_id.clone());
        self.last_update_ts = Some(update.ts_unix);
        self.last_update_type = Some(update.update_type);
        self.last_error = None;
        self.trim_history();
    }

    fn check_rollback(&mut self, rollback: &HistoryEntry) -> Result<RollbackCheck, String> {
        let target = rollback.rollback_target().unwrap_or_default().to_owned();
        if target == rollback.update_id {
            return Err("a rollback cannot undo itself".to_owned());
        }
        let Some(index) = self.history.iter().position(|e| e.update_id == target) else {
            if self.folded_ids.contains(&target) {
                return Err(format!(
                    "update {target} is older than the {HISTORY_LIMIT} updates this subscriber keeps: \
                     it was folded into the base state and can no longer be rolled back"
                ));
            }
            self.tombstones.push_back(Tombstone {
                update_id: target.clone(),
                by: rollback.update_id.clone(),
            });
            while self.tombstones.len() > TOMBSTONE_LIMIT {
                self.tombstones.pop_front();
            }
            return Ok(RollbackCheck::Skip(format!(
                "update {target} was never applied here"
            )));
        };
        if let EntryStatus::RolledBack { by } = &self.entry_statuses()[index] {
            return Ok(RollbackCheck::Skip(format!(
                "update {target} was already rolled back by {by}"
            )));
        }
        // Undoing a rollback restores what it undid, which must still be in the history.
        if let Some(undone) = self.history[index].rollback_target()
            && !self.history.iter().any(|e| e.update_id == undone)
        {
            return Err(format!(
                "rollback {target} undid update {undone}, which was folded into the base state: \
                     it can no longer be restored"
            ));
        }
        Ok(RollbackCheck::Apply)
    }

    /// Folds the oldest entries into `base` while the history is over its bounds.
    fn trim_history(&mut self) {
        loop {
            let bytes: usize = self
                .history
                .iter()
                .map(|e| e.payload.to_string().len())
                .sum();
            if self.history.len() <= HISTORY_LIMIT
                && (bytes <= HISTORY_BYTES_LIMIT || self.history.len() <= 1)
            {
                return;
            }
            let statuses = self.entry_statuses();
            let Some(oldest) = self.history.pop_front() else {
                return;
            };
            if statuses[0] == EntryStatus::InEffect
                && oldest.changes_state()
                && let Ok(doc) = self.base.with_update(oldest.update_type, &oldest.payload)
            {
                self.base = doc;
            }
            self.folded_ids.push_back(oldest.update_id);
            while self.folded_ids.len() > FOLDED_IDS_LIMIT {
                self.folded_ids.pop_front();
            }
        }
    }
}

enum RollbackCheck {
    Apply,
    Skip(String),
}

/// Why `update` is not for `who`, if it is not.
fn not_for(update: &UpdateEnvelope, who: &Audience<'_>) -> Option<String> {
    if !update.targets(who) {
        let orch = update.target_orch.as_deref().unwrap_or("any orch");
        let prefix = update.target_agent_prefix.as_deref().unwrap_or("any path");
        return Some(format!(
            "not targeted at this subscriber (update targets {orch} / {prefix}; this is {})",
            who.agent_path
        ));
    }
    if !update.tier_allows(who.tier) {
        return Some(format!(
            "requires the {} tier; this subscriber is {}",
            update.tier_required.as_str(),
            who.tier.as_str()
        ));
    }
    if !update.admits(who.orch_hash, update.rollout_percent) {
        return Some(format!(
            "not admitted by the {}% rollout",
            update.rollout_percent.unwrap_or(100)
        ));
    }
    None
}

/// The effective document and the status of each entry.
///
/// Rollbacks are resolved newest first, so undoing a rollback brings back what it undid;
/// then the entries in effect are applied oldest first. An entry that fails to apply is
/// inactive: without the update that was rolled back, it would have been rejected too.
fn fold(base: &Document, history: &VecDeque<HistoryEntry>) -> (Document, Vec<EntryStatus>) {
    let mut undone_by: HashMap<&str, &str> = HashMap::new();
    let mut statuses = vec![EntryStatus::InEffect; history.len()];
    for (i, e) in history.iter().enumerate().rev() {
        if let Some(by) = undone_by.get(e.update_id.as_str()) {
            statuses[i] = EntryStatus::RolledBack {
                by: (*by).to_owned(),
            };
        } else if let Some(target) = e.rollback_target() {
            undone_by.entry(target).or_insert(&e.update_id);
        }
    }
    let mut doc = base.clone();
    for (e, status) in history.iter().zip(statuses.iter_mut()) {
        if *status != EntryStatus::InEffect || !e.changes_state() {
            continue;
        }
        match doc.with_update(e.update_type, &e.payload) {
            Ok(next) => doc = next,
            Err(error) => *status = EntryStatus::Inactive { error },
        }
    }
    (doc, statuses)
}

#[cfg(test)]
mod tests;
