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
