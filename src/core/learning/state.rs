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
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "orch_00000000000000aa";

    fn who() -> Audience<'static> {
        Audience {
            orch_id: Some("orch-1"),
            orch_hash: HASH,
            agent_path: "code-gen/rust",
            tier: Tier::Free,
        }
    }

    struct Feed {
        state: LearningPipelineState,
        seq: u64,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                state: LearningPipelineState::new("orch-1", "code-gen/rust"),
                seq: 0,
            }
        }

        fn envelope(&mut self, t: UpdateType, payload: Value) -> UpdateEnvelope {
            self.seq += 1;
            UpdateEnvelope {
                update_id: format!("u{}", self.seq),
                seq: self.seq,
                ts_unix: 1_700_000_000 + self.seq as i64,
                target_orch: None,
                target_agent_prefix: None,
                cascade: true,
                update_type: t,
                tier_required: Tier::Free,
                payload,
                rollout_percent: None,
            }
        }

        /// Sends an update, asserts its status, returns its id.
        #[track_caller]
        fn send(&mut self, t: UpdateType, payload: Value, expect: AckStatus) -> String {
            let u = self.envelope(t, payload);
            let outcome = self.state.apply(&u, &who());
            assert_eq!(outcome.status, expect, "{u:?}: {outcome:?}");
            self.check_invariant();
            u.update_id
        }

        fn prompt(&mut self, p: &str) -> String {
            self.send(
                UpdateType::PromptTweak,
                json!({"default_prompt": p}),
                AckStatus::Applied,
            )
        }

        fn patch(&mut self, ops: Value) -> String {
            self.send(
                UpdateType::JsonPatch,
                json!({"patch": ops}),
                AckStatus::Applied,
            )
        }

        #[track_caller]
        fn rollback(&mut self, id: &str, expect: AckStatus) -> String {
            self.send(UpdateType::Rollback, json!({"update_id": id}), expect)
        }

        fn prompt_now(&self) -> Option<&str> {
            self.state.overrides.default_prompt.as_deref()
        }

        fn config(&self) -> Value {
            Value::Object(self.state.config_json.clone())
        }

        #[track_caller]
        fn check_invariant(&self) {
            let (doc, _) = fold(&self.state.base, &self.state.history);
            assert_eq!(
                doc,
                self.state.document(),
                "effective state differs from fold(base, history)"
            );
        }
    }

    #[test]
    fn every_payload_type_applies() {
        let mut f = Feed::new();
        f.prompt("Be brief.");
        f.send(
            UpdateType::ModelTweak,
            json!({"default_model": "anthropic/claude-3-haiku"}),
            AckStatus::Applied,
        );
        f.patch(json!([{"op": "add", "path": "/config/retries", "value": 2}]));
        f.send(
            UpdateType::YamlGraft,
            json!({"yaml": "llm:\n  temperature: 0.2\n"}),
            AckStatus::Applied,
        );
        let notice = f.send(
            UpdateType::Notice,
            json!({"message": "maintenance at 02:00"}),
            AckStatus::Applied,
        );
        assert_eq!(f.prompt_now(), Some("Be brief."));
        assert_eq!(
            f.state.overrides.default_model.as_deref(),
            Some("anthropic/claude-3-haiku")
        );
        assert_eq!(
            f.config(),
            json!({"retries": 2, "llm": {"temperature": 0.2}})
        );
        assert_eq!(f.state.last_update_id.as_deref(), Some(notice.as_str()));
        assert_eq!(f.state.last_update_type, Some(UpdateType::Notice));
        assert_eq!(f.state.last_update_ts, Some(1_700_000_005));
        assert_eq!(f.state.history.len(), 5);
        assert_eq!(f.state.history[4].summary(), "maintenance at 02:00");
        assert_eq!(f.state.last_seq, 5);
    }

    #[test]
    fn a_failing_patch_leaves_the_state_untouched() {
        let mut f = Feed::new();
        f.prompt("p");
        f.patch(json!([{"op": "add", "path": "/config/a", "value": 1}]));
        let failing = [
            json!([{"op": "add", "path": "/config/b", "value": 2}, {"op": "test", "path": "/config/a", "value": 9}]),
            json!([{"op": "replace", "path": "/config/missing", "value": 1}]),
            json!([{"op": "replace", "path": "/config", "value": "not a mapping"}]),
            json!([{"op": "add", "path": "/overrides/other", "value": 1}]),
        ];
        for ops in failing {
            let before = f.state.clone();
            f.send(
                UpdateType::JsonPatch,
                json!({"patch": ops}),
                AckStatus::Rejected,
            );
            let err = f.state.last_error.clone().expect("last_error set");
            assert!(err.starts_with("json_patch u"), "{err}");
            let mut expected = before;
            expected.last_seq = f.seq;
            expected.last_error = Some(err);
            assert_eq!(f.state, expected);
        }
        // The next applied update clears last_error.
        f.prompt("q");
        assert_eq!(f.state.last_error, None);
        // An invalid payload is rejected by the shared validation too.
        f.send(
            UpdateType::PromptTweak,
            json!({"default_prompt": ""}),
            AckStatus::Rejected,
        );
        assert_eq!(f.prompt_now(), Some("q"));
    }

    #[test]
    fn rollback_restores_the_state_without_the_update_and_keeps_later_ones() {
        // prompt A, prompt B, rollback A → B.
        let mut f = Feed::new();
        let a = f.prompt("A");
        f.prompt("B");
        f.rollback(&a, AckStatus::Applied);
        assert_eq!(f.prompt_now(), Some("B"));

        // prompt A, prompt B, rollback B → A.
        let mut f = Feed::new();
        f.prompt("A");
        let b = f.prompt("B");
        let r = f.rollback(&b, AckStatus::Applied);
        assert_eq!(f.prompt_now(), Some("A"));
        assert_eq!(
            f.state.entry_statuses()[1],
            EntryStatus::RolledBack { by: r.clone() }
        );
        assert_eq!(f.state.last_update_id.as_deref(), Some(r.as_str()));
        // Twice is a no-op.
        f.rollback(&b, AckStatus::Skipped);

        // Config patches interleaved with prompts.
        let mut f = Feed::new();
        let p1 = f.patch(json!([{"op": "add", "path": "/config/a", "value": 1}]));
        f.prompt("A");
        let p2 = f.patch(json!([{"op": "add", "path": "/config/b", "value": 2}, {"op": "replace", "path": "/config/a", "value": 10}]));
        f.prompt("B");
        f.send(
            UpdateType::YamlGraft,
            json!({"yaml": "c: 3\n"}),
            AckStatus::Applied,
        );
        f.rollback(&p2, AckStatus::Applied);
        assert_eq!(f.config(), json!({"a": 1, "c": 3}));
        assert_eq!(f.prompt_now(), Some("B"));
        f.rollback(&p1, AckStatus::Applied);
        assert_eq!(f.config(), json!({"c": 3}));
    }

    #[test]
    fn later_updates_that_depended_on_the_rolled_back_one_become_inactive() {
        let mut f = Feed::new();
        let add = f.patch(json!([{"op": "add", "path": "/config/a", "value": 1}]));
        let dep = f.patch(json!([{"op": "replace", "path": "/config/a", "value": 2}]));
        f.patch(json!([{"op": "add", "path": "/config/z", "value": 0}]));
        let r = f.rollback(&add, AckStatus::Applied);
        assert_eq!(f.config(), json!({"z": 0}));
        let statuses = f.state.entry_statuses();
        assert!(
            matches!(&statuses[1], EntryStatus::Inactive { .. }),
            "{statuses:?}"
        );
        assert_eq!(f.state.history[1].update_id, dep);
        // Rolling back the rollback (the server refuses to publish one; handled anyway)
        // brings back both.
        f.rollback(&r, AckStatus::Applied);
        assert_eq!(f.config(), json!({"a": 2, "z": 0}));
        assert_eq!(f.state.entry_statuses()[1], EntryStatus::InEffect);
    }

    #[test]
    fn rollback_of_something_never_applied_is_skipped_and_remembered() {
        let mut f = Feed::new();
        f.prompt("A");
        f.rollback("never-seen", AckStatus::Skipped);
        assert_eq!(f.prompt_now(), Some("A"));
        // A rollout widened after the rollback delivers the update late: it stays undone.
        let mut late = f.envelope(UpdateType::PromptTweak, json!({"default_prompt": "late"}));
        late.update_id = "never-seen".into();
        let outcome = f.state.apply(&late, &who());
        assert_eq!(outcome.status, AckStatus::Skipped);
        assert_eq!(f.prompt_now(), Some("A"));
        // A rollback of itself is nonsense.
        let mut own = f.envelope(UpdateType::Rollback, json!({}));
        own.payload = json!({"update_id": own.update_id});
        assert_eq!(f.state.apply(&own, &who()).status, AckStatus::Rejected);
    }

    #[test]
    fn replays_are_skipped_and_last_seq_counts_everything_seen() {
        let mut f = Feed::new();
        let u = f.envelope(UpdateType::PromptTweak, json!({"default_prompt": "A"}));
        assert_eq!(f.state.apply(&u, &who()).status, AckStatus::Applied);
        f.prompt("B");
        let again = f.state.apply(&u, &who());
        assert_eq!(again.status, AckStatus::Skipped);
        assert!(again.error.unwrap().contains("already applied"));
        assert_eq!(f.prompt_now(), Some("B"));
        assert_eq!(f.state.history.len(), 2);
        f.send(
            UpdateType::JsonPatch,
            json!({"patch": [{"op": "remove", "path": "/config/x"}]}),
            AckStatus::Rejected,
        );
        assert_eq!(f.state.last_seq, 3);
        let mut other = f.envelope(UpdateType::Notice, json!({"message": "m"}));
        other.target_orch = Some("orch-2".into());
        assert_eq!(f.state.apply(&other, &who()).status, AckStatus::Skipped);
        assert_eq!(f.state.last_seq, 4);
        // An older seq (a widened rollout) does not move last_seq back.
        let mut old = f.envelope(UpdateType::Notice, json!({"message": "m"}));
        old.seq = 1;
        f.state.apply(&old, &who());
        assert_eq!(f.state.last_seq, 4);
    }

    #[test]
    fn targeting_tier_and_rollout_are_checked_again() {
        let mut f = Feed::new();
        type Edit = fn(&mut UpdateEnvelope);
        let cases: Vec<(&str, Edit)> = vec![
            ("orch", |u| u.target_orch = Some("orch-2".into())),
            ("prefix", |u| u.target_agent_prefix = Some("code".into())),
            ("sibling", |u| {
                u.target_agent_prefix = Some("emotional-support".into())
            }),
            ("exact", |u| {
                u.target_agent_prefix = Some("code-gen".into());
                u.cascade = false;
            }),
            ("tier", |u| u.tier_required = Tier::Premium),
            ("rollout", |u| {
                u.rollout_percent = Some(1);
                u.update_id = (0..)
                    .map(|i| format!("r{i}"))
                    .find(|id| crate::core::updates::rollout_bucket(id, HASH) >= 1)
                    .unwrap();
            }),
        ];
        for (name, edit) in cases {
            let mut u = f.envelope(UpdateType::PromptTweak, json!({"default_prompt": name}));
            edit(&mut u);
            let outcome = f.state.apply(&u, &who());
            assert_eq!(outcome.status, AckStatus::Skipped, "{name}");
            assert!(outcome.error.is_some());
        }
        assert_eq!(f.prompt_now(), None);
        assert!(f.state.history.is_empty());
        // Matching ones apply: by hash, by cascading prefix, premium for a premium subscriber.
        let mut u = f.envelope(UpdateType::PromptTweak, json!({"default_prompt": "x"}));
        u.target_orch = Some(HASH.into());
        u.target_agent_prefix = Some("code-gen".into());
        u.tier_required = Tier::Premium;
        let premium = Audience {
            tier: Tier::Premium,
            ..who()
        };
        assert_eq!(f.state.apply(&u, &premium).status, AckStatus::Applied);
    }

    #[test]
    fn history_is_bounded_and_too_old_rollbacks_are_rejected() {
        let mut f = Feed::new();
        let first = f.patch(json!([{"op": "add", "path": "/config/first", "value": true}]));
        let mut ids = vec![];
        for i in 0..HISTORY_LIMIT + 9 {
            ids.push(f.prompt(&format!("p{i}")));
        }
        assert_eq!(f.state.history.len(), HISTORY_LIMIT);
        assert_eq!(f.state.folded_ids.len(), 10);
        assert_eq!(f.state.base.config.get("first"), Some(&json!(true)));
        f.rollback(&first, AckStatus::Rejected);
        assert!(
            f.state
                .last_error
                .as_deref()
                .unwrap()
                .contains("can no longer be rolled back")
        );
        assert_eq!(f.config(), json!({"first": true}));
        // A replay of a folded update is still recognised.
        let mut replay = f.envelope(UpdateType::PromptTweak, json!({"default_prompt": "old"}));
        replay.update_id = ids[0].clone();
        assert_eq!(f.state.apply(&replay, &who()).status, AckStatus::Skipped);
        // The newest kept one can still be rolled back.
        let last = ids.last().unwrap().clone();
        f.rollback(&last, AckStatus::Applied);
        assert_eq!(
            f.prompt_now(),
            Some(format!("p{}", HISTORY_LIMIT + 7).as_str())
        );
    }

    #[test]
    fn history_is_bounded_by_bytes_too() {
        let mut f = Feed::new();
        let big = "x".repeat(1024 * 1024);
        for _ in 0..10 {
            f.prompt(&big);
        }
        let bytes: usize = f
            .state
            .history
            .iter()
            .map(|e| e.payload.to_string().len())
            .sum();
        assert!(bytes <= HISTORY_BYTES_LIMIT, "{bytes}");
        assert!(f.state.history.len() < 10);
        assert_eq!(f.prompt_now(), Some(big.as_str()));
    }
}
