//! The patchable document `{"overrides": {...}, "config": {...}}` and the effect of one
//! update on it: pure functions, so applying live and replaying history give the same result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::updates::{UpdateType, parse_patch, parse_yaml_mapping};

/// The overrides an agent applies on top of its own defaults (seed: `LearningOverrides`).
///
/// Unset values are `null` in the document, so both `add` and `replace` work on
/// `/overrides/default_prompt` for an agent that has never received one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningOverrides {
    /// System prompt the agent should use instead of its built-in one.
    #[serde(default)]
    pub default_prompt: Option<String>,
    /// Model the agent should use instead of its built-in one.
    #[serde(default)]
    pub default_model: Option<String>,
}

/// What updates change: the document a `json_patch` is applied to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Prompt and model overrides.
    #[serde(default)]
    pub overrides: LearningOverrides,
    /// Free-form configuration (yaml_graft merges into it).
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl Document {
    /// The document with the effect of one update, or why the update cannot apply.
    ///
    /// Never modifies `self`: a failure leaves the caller's document as it was.
    pub fn with_update(
        &self,
        update_type: UpdateType,
        payload: &Value,
    ) -> Result<Document, String> {
        let mut next = self.clone();
        match update_type {
            UpdateType::PromptTweak => {
                next.overrides.default_prompt = Some(payload_str(payload, "default_prompt")?);
            }
            UpdateType::ModelTweak => {
                next.overrides.default_model = Some(payload_str(payload, "default_model")?);
            }
            UpdateType::JsonPatch => next = self.patched(payload)?,
            UpdateType::YamlGraft => {
                let text = payload_str(payload, "yaml")?;
                let graft = parse_yaml_mapping(&text).map_err(|m| format!("payload.yaml {m}"))?;
                deep_merge(&mut next.config, graft);
            }
            UpdateType::Notice | UpdateType::Rollback => {}
        }
        Ok(next)
    }

    fn patched(&self, payload: &Value) -> Result<Document, String> {
        let ops = payload.get("patch").ok_or("payload.patch is missing")?;
        let patch = parse_patch(ops).map_err(|m| format!("payload.patch: {m}"))?;
        let mut doc = serde_json::to_value(self).map_err(|e| e.to_string())?;
        json_patch::patch(&mut doc, &patch).map_err(|e| format!("json_patch {e}"))?;
        serde_json::from_value(doc).map_err(|e| {
            format!(
                "the patched document no longer has the shape \
                 {{\"overrides\": {{\"default_prompt\": string|null, \"default_model\": string|null}}, \
                 \"config\": {{...}}}}: {e}"
            )
        })
    }
}

fn payload_str(payload: &Value, key: &str) -> Result<String, String> {
    match payload.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("payload.{key} must be a string")),
        None => Err(format!("payload.{key} is missing")),
    }
}

/// Merges `graft` into `into`: mappings merge key by key, recursively; any other value
/// (scalars, sequences, null) replaces what was there.
pub fn deep_merge(into: &mut Map<String, Value>, graft: Map<String, Value>) {
    for (key, value) in graft {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => {
                deep_merge(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Document {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn unset_overrides_are_null_so_replace_works_on_a_fresh_agent() {
        let fresh = Document::default();
        assert_eq!(
            serde_json::to_value(&fresh).unwrap(),
            json!({"overrides": {"default_prompt": null, "default_model": null}, "config": {}})
        );
        let seed_example = json!({"patch": [{"op": "replace", "path": "/overrides/default_prompt", "value": "New prompt"}]});
        let next = fresh
            .with_update(UpdateType::JsonPatch, &seed_example)
            .unwrap();
        assert_eq!(next.overrides.default_prompt.as_deref(), Some("New prompt"));
    }

    #[test]
    fn prompt_and_model_tweaks_set_overrides() {
        let d = Document::default()
            .with_update(
                UpdateType::PromptTweak,
                &json!({"default_prompt": "Be brief."}),
            )
            .unwrap()
            .with_update(
                UpdateType::ModelTweak,
                &json!({"default_model": "anthropic/claude-3-haiku"}),
            )
            .unwrap();
        assert_eq!(d.overrides.default_prompt.as_deref(), Some("Be brief."));
        assert_eq!(
            d.overrides.default_model.as_deref(),
            Some("anthropic/claude-3-haiku")
        );
        assert!(
            d.with_update(UpdateType::PromptTweak, &json!({"default_prompt": 3}))
                .is_err()
        );
    }

    #[test]
    fn yaml_graft_merges_mappings_and_replaces_everything_else() {
        let d = doc(json!({"config": {
            "llm": {"temperature": 0.7, "max_tokens": 500, "stop": ["a"]},
            "retries": 1,
            "name": "x"
        }}));
        let yaml = "llm:\n  temperature: 0.2\n  stop: [b, c]\n  extra: {deep: true}\nretries: 3\nname: null\nnew: yes\n";
        let next = d
            .with_update(UpdateType::YamlGraft, &json!({"yaml": yaml}))
            .unwrap();
        assert_eq!(
            Value::Object(next.config),
            json!({
                "llm": {"temperature": 0.2, "max_tokens": 500, "stop": ["b", "c"], "extra": {"deep": true}},
                "retries": 3,
                "name": null,
                "new": "yes"
            })
        );
        // A mapping replaces a scalar, and a scalar replaces a mapping.
        let mut into = json!({"a": 1, "b": {"c": 1}}).as_object().unwrap().clone();
        deep_merge(
            &mut into,
            json!({"a": {"x": 1}, "b": 2}).as_object().unwrap().clone(),
        );
        assert_eq!(Value::Object(into), json!({"a": {"x": 1}, "b": 2}));
        assert!(
            d.with_update(
                UpdateType::YamlGraft,
                &json!({"yaml": "- not\n- a mapping\n"})
            )
            .is_err()
        );
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let d = doc(json!({"overrides": {"default_prompt": "p"}, "config": {"a": 1}}));
        let failing = [
            // The second op fails after the first succeeded.
            json!([{"op": "add", "path": "/config/b", "value": 2}, {"op": "test", "path": "/config/a", "value": 99}]),
            json!([{"op": "replace", "path": "/config/missing/deeper", "value": 1}]),
            json!([{"op": "remove", "path": "/config/missing"}]),
            // Results that no longer fit the shape.
            json!([{"op": "replace", "path": "/config", "value": [1, 2]}]),
            json!([{"op": "replace", "path": "/overrides/default_prompt", "value": {"nested": true}}]),
            // Paths outside the patchable document.
            json!([{"op": "add", "path": "/overrides/other", "value": "x"}]),
            json!([{"op": "add", "path": "/elsewhere", "value": "x"}]),
            json!("not a patch"),
        ];
        for ops in failing {
            let before = d.clone();
            let err = d
                .with_update(UpdateType::JsonPatch, &json!({"patch": ops}))
                .unwrap_err();
            assert!(!err.is_empty());
            assert_eq!(d, before, "{ops}");
        }
        let ok = json!({"patch": [
            {"op": "test", "path": "/config/a", "value": 1},
            {"op": "add", "path": "/config/b", "value": {"c": [1]}},
            {"op": "remove", "path": "/overrides/default_prompt"},
            {"op": "add", "path": "/overrides/default_model", "value": "m"}
        ]});
        let next = d.with_update(UpdateType::JsonPatch, &ok).unwrap();
        assert_eq!(
            next,
            doc(json!({"overrides": {"default_model": "m"}, "config": {"a": 1, "b": {"c": [1]}}}))
        );
    }

    #[test]
    fn notice_and_rollback_change_nothing() {
        let d = doc(json!({"config": {"a": 1}}));
        assert_eq!(
            d.with_update(UpdateType::Notice, &json!({"message": "hi"}))
                .unwrap(),
            d
        );
        assert_eq!(
            d.with_update(UpdateType::Rollback, &json!({"update_id": "x"}))
                .unwrap(),
            d
        );
    }
}
