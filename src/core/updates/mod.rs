//! Hot updates: the `UpdateEnvelope`, validation of publish requests by type, targeting,
//! tiers and gradual rollout. Shared by the distributor (server side) and the learning
//! pipeline (client side), so both filter with exactly the same rules.
//!
//! Wire types: depends only on `telemetry` and `shared::tier`.

pub mod protocol;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::shared::tier::Tier;
use crate::core::telemetry::{path_has_prefix, validate_agent_path};

/// Largest accepted payload, serialised.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// What an update changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    /// `{"default_prompt": s}`.
    PromptTweak,
    /// `{"default_model": s}`.
    ModelTweak,
    /// `{"patch": [RFC 6902 ops]}` over `{"overrides": {...}, "config": {...}}`.
    JsonPatch,
    /// `{"yaml": "<text>"}` deep-merged into `config`.
    YamlGraft,
    /// `{"message": s}`, logged only.
    Notice,
    /// `{"update_id": id}`: undo an earlier update, keeping later ones.
    Rollback,
}

impl UpdateType {
    /// Every type, in documentation order.
    pub const ALL: [UpdateType; 6] = [
        UpdateType::PromptTweak,
        UpdateType::ModelTweak,
        UpdateType::JsonPatch,
        UpdateType::YamlGraft,
        UpdateType::Notice,
        UpdateType::Rollback,
    ];

    /// The wire name (`prompt_tweak`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateType::PromptTweak => "prompt_tweak",
            UpdateType::ModelTweak => "model_tweak",
            UpdateType::JsonPatch => "json_patch",
            UpdateType::YamlGraft => "yaml_graft",
            UpdateType::Notice => "notice",
            UpdateType::Rollback => "rollback",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<UpdateType> {
        UpdateType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

fn yes() -> bool {
    true
}

/// A hot update as stored in the log and sent to subscribers (seed + DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateEnvelope {
    /// Identifier (UUID v7).
    pub update_id: String,
    /// Position in the distributor's log; strictly increasing.
    pub seq: u64,
    /// Publication time, Unix seconds.
    pub ts_unix: i64,
    /// Only this ORCH (raw id or `orch_` hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_orch: Option<String>,
    /// Only agents at (and, with `cascade`, below) this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_agent_prefix: Option<String>,
    /// Whether the prefix includes child paths.
    #[serde(default = "yes")]
    pub cascade: bool,
    /// What the update changes.
    pub update_type: UpdateType,
    /// Tier a subscriber needs to receive it.
    #[serde(default)]
    pub tier_required: Tier,
    /// Type-specific payload.
    pub payload: Value,
    /// Share of ORCHs admitted (1–100); absent means everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
}

/// A validation failure naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    /// Dotted field name (`payload.patch`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// The body of `POST /publish`: an envelope without id, seq and timestamp.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// See [`UpdateEnvelope::target_orch`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_orch: Option<String>,
    /// See [`UpdateEnvelope::target_agent_prefix`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_agent_prefix: Option<String>,
    /// Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    /// Required: one of [`UpdateType::ALL`].
    #[serde(default)]
    pub update_type: Option<String>,
    /// `free` (default) or `premium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_required: Option<String>,
    /// Required, shape depends on the type.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Integer 1–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<Value>,
}

/// A validated publish request, waiting for its id and seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUpdate {
    /// Target orch.
    pub target_orch: Option<String>,
    /// Target prefix (without a trailing `/`).
    pub target_agent_prefix: Option<String>,
    /// Cascade.
    pub cascade: bool,
    /// Type.
    pub update_type: UpdateType,
    /// Tier.
    pub tier_required: Tier,
    /// Payload.
    pub payload: Value,
    /// Rollout.
    pub rollout_percent: Option<u8>,
}

impl NewUpdate {
    /// The envelope once the log has assigned an id, a seq and a time.
    pub fn into_envelope(self, update_id: String, seq: u64, ts_unix: i64) -> UpdateEnvelope {
        UpdateEnvelope {
            update_id,
            seq,
            ts_unix,
            target_orch: self.target_orch,
            target_agent_prefix: self.target_agent_prefix,
            cascade: self.cascade,
            update_type: self.update_type,
            tier_required: self.tier_required,
            payload: self.payload,
            rollout_percent: self.rollout_percent,
        }
    }
}

impl PublishRequest {
    /// Checks every field and the payload against its type.
    pub fn validate(self) -> Result<NewUpdate, FieldError> {
        let type_name = self
            .update_type
            .ok_or_else(|| field("update_type", "is required"))?;
        let update_type = UpdateType::parse(type_name.trim()).ok_or_else(|| {
            let known: Vec<_> = UpdateType::ALL.iter().map(|t| t.as_str()).collect();
            field(
                "update_type",
                format!(
                    "unknown type {type_name:?}; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        let tier_required = match self.tier_required.as_deref() {
            None => Tier::Free,
            Some(t) => Tier::parse(t).ok_or_else(|| {
                field(
                    "tier_required",
                    format!("{t:?} is neither free nor premium"),
                )
            })?,
        };
        let rollout_percent = match self.rollout_percent {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|p| (1..=100).contains(p))
                    .map(|p| p as u8)
                    .ok_or_else(|| {
                        field(
                            "rollout_percent",
                            format!("{v} is not an integer from 1 to 100"),
                        )
                    })?,
            ),
        };
        let target_orch = match self.target_orch {
            Some(o) if o.trim().is_empty() => {
                return Err(field("target_orch", "must not be empty when present"));
            }
            other => other.map(|o| o.trim().to_owned()),
        };
        let target_agent_prefix = match self.target_agent_prefix {
            Some(p) => {
                let p = p.trim().trim_end_matches('/').to_owned();
                validate_agent_path(&p).map_err(|m| field("target_agent_prefix", m))?;
                Some(p)
            }
            None => None,
        };
        let payload = self
            .payload
            .ok_or_else(|| field("payload", "is required"))?;
        let size = serde_json::to_vec(&payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PAYLOAD_BYTES {
            return Err(field(
                "payload",
                format!("is {size} bytes; at most {MAX_PAYLOAD_BYTES} allowed"),
            ));
        }
        validate_payload(update_type, &payload)?;
        Ok(NewUpdate {
            target_orch,
            target_agent_prefix,
            cascade: self.cascade.unwrap_or(true),
            update_type,
            tier_required,
            payload,
            rollout_percent,
        })
    }
}

fn required_string<'a>(
    payload: &'a Value,
    key: &str,
    name: &'static str,
) -> Result<&'a str, FieldError> {
    match payload.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(field(name, "must not be empty")),
        Some(_) => Err(field(name, "must be a string")),
        None => Err(field(name, "is required")),
    }
}

/// Checks a payload against its type.
pub fn validate_payload(update_type: UpdateType, payload: &Value) -> Result<(), FieldError> {
    if !payload.is_object() {
        return Err(field("payload", "must be a JSON object"));
    }
    match update_type {
        UpdateType::PromptTweak => {
            required_string(payload, "default_prompt", "payload.default_prompt").map(|_| ())
        }
        UpdateType::ModelTweak => {
            let m = required_string(payload, "default_model", "payload.default_model")?;
            if m.chars().any(char::is_whitespace) {
                return Err(field(
                    "payload.default_model",
                    "must not contain whitespace",
                ));
            }
            Ok(())
        }
        UpdateType::Notice => required_string(payload, "message", "payload.message").map(|_| ()),
        UpdateType::Rollback => {
            required_string(payload, "update_id", "payload.update_id").map(|_| ())
        }
        UpdateType::YamlGraft => {
            let text = required_string(payload, "yaml", "payload.yaml")?;
            parse_yaml_mapping(text)
                .map(|_| ())
                .map_err(|m| field("payload.yaml", m))
        }
        UpdateType::JsonPatch => {
            let ops = payload
                .get("patch")
                .ok_or_else(|| field("payload.patch", "is required"))?;
            let patch = parse_patch(ops).map_err(|m| field("payload.patch", m))?;
            if patch.0.is_empty() {
                return Err(field("payload.patch", "must hold at least one operation"));
            }
            Ok(())
        }
    }
}

/// Parses an RFC 6902 patch and checks every path stays inside the patchable document.
pub fn parse_patch(ops: &Value) -> Result<json_patch::Patch, String> {
    let patch: json_patch::Patch = serde_json::from_value(ops.clone())
        .map_err(|e| format!("not a well-formed RFC 6902 patch: {e}"))?;
    for (i, op) in patch.0.iter().enumerate() {
        let mut paths = vec![op_path(op)];
        if let Some(from) = op_from(op) {
            paths.push(from);
        }
        for path in paths {
            let ok = path == "/config"
                || path.starts_with("/config/")
                || path == "/overrides/default_prompt"
                || path == "/overrides/default_model";
            if !ok {
                return Err(format!(
                    "operation {i}: path {path:?} is outside the patchable document \
                     (/overrides/default_prompt, /overrides/default_model, /config/...)"
                ));
            }
        }
    }
    Ok(patch)
}

fn op_path(op: &json_patch::PatchOperation) -> String {
    use json_patch::PatchOperation as P;
    match op {
        P::Add(o) => o.path.to_string(),
        P::Remove(o) => o.path.to_string(),
        P::Replace(o) => o.path.to_string(),
        P::Move(o) => o.path.to_string(),
        P::Copy(o) => o.path.to_string(),
        P::Test(o) => o.path.to_string(),
    }
}

fn op_from(op: &json_patch::PatchOperation) -> Option<String> {
    use json_patch::PatchOperation as P;
    match op {
        P::Move(o) => Some(o.from.to_string()),
        P::Copy(o) => Some(o.from.to_string()),
        _ => None,
    }
}

/// Parses YAML that must be a mapping, as JSON.
pub fn parse_yaml_mapping(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("must be a YAML mapping, got {}", json_kind(&other))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Who is asking: what targeting compares an update against.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    /// Raw orch id, when known (the client knows it; the server sees it in hello).
    pub orch_id: Option<&'a str>,
    /// Keyed hash of the orch id.
    pub orch_hash: &'a str,
    /// Agent path of the subscriber.
    pub agent_path: &'a str,
    /// The subscriber's tier.
    pub tier: Tier,
}

impl UpdateEnvelope {
    /// Whether the orch and agent path are targeted (ignoring tier and rollout).
    pub fn targets(&self, who: &Audience<'_>) -> bool {
        if let Some(t) = &self.target_orch
            && Some(t.as_str()) != who.orch_id
            && t != who.orch_hash
        {
            return false;
        }
        match &self.target_agent_prefix {
            None => true,
            Some(prefix) if self.cascade => path_has_prefix(who.agent_path, prefix),
            Some(prefix) => who.agent_path == prefix,
        }
    }

    /// Whether the subscriber's tier may receive this update.
    pub fn tier_allows(&self, tier: Tier) -> bool {
        self.tier_required == Tier::Free || tier == Tier::Premium
    }

    /// Whether the gradual rollout admits this orch at `percent` (the update's current one).
    pub fn admits(&self, orch_hash: &str, percent: Option<u8>) -> bool {
        match percent {
            None | Some(100..) => true,
            Some(p) => rollout_bucket(&self.update_id, orch_hash) < p,
        }
    }

    /// Targeted, allowed by tier and admitted by the rollout at `percent`.
    pub fn delivers_to(&self, who: &Audience<'_>, percent: Option<u8>) -> bool {
        self.targets(who) && self.tier_allows(who.tier) && self.admits(who.orch_hash, percent)
    }
}

/// A stable bucket 0..100 for (update, orch): raising the percentage only ever adds orchs.
pub fn rollout_bucket(update_id: &str, orch_hash: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(update_id.as_bytes())
        .chain_update(b":")
        .chain_update(orch_hash.as_bytes())
        .finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<NewUpdate, FieldError> {
        serde_json::from_value::<PublishRequest>(v)
            .unwrap()
            .validate()
    }

    #[test]
    fn seed_examples_validate() {
        let u = req(json!({"update_type":"prompt_tweak","tier_required":"free","payload":{"default_prompt":"Updated prompt text..."}})).unwrap();
        assert_eq!(u.update_type, UpdateType::PromptTweak);
        assert!(u.cascade);
        req(json!({"update_type":"model_tweak","payload":{"default_model":"anthropic/claude-3-haiku"}})).unwrap();
        req(json!({"update_type":"json_patch","tier_required":"free","payload":{"patch":[{"op":"replace","path":"/overrides/default_prompt","value":"New prompt"}]}})).unwrap();
        let t = req(json!({"update_type":"prompt_tweak","target_agent_prefix":"code-gen","payload":{"default_prompt":"x"}})).unwrap();
        assert_eq!(t.target_agent_prefix.as_deref(), Some("code-gen"));
        req(json!({"update_type":"yaml_graft","payload":{"yaml":"retries: 3\nllm:\n  temperature: 0.2\n"}})).unwrap();
        req(json!({"update_type":"notice","payload":{"message":"hello"}})).unwrap();
        req(json!({"update_type":"rollback","payload":{"update_id":"abc"}})).unwrap();
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({"payload":{}}), "update_type"),
            (
                json!({"update_type":"teleport","payload":{}}),
                "update_type",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"m"},"tier_required":"gold"}),
                "tier_required",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"m"},"rollout_percent":0}),
                "rollout_percent",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"m"},"rollout_percent":101}),
                "rollout_percent",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"m"},"rollout_percent":"ten"}),
                "rollout_percent",
            ),
            (json!({"update_type":"notice"}), "payload"),
            (json!({"update_type":"notice","payload":"m"}), "payload"),
            (
                json!({"update_type":"prompt_tweak","payload":{"default_prompt":"  "}}),
                "payload.default_prompt",
            ),
            (
                json!({"update_type":"model_tweak","payload":{"default_model":7}}),
                "payload.default_model",
            ),
            (
                json!({"update_type":"json_patch","payload":{"patch":[{"op":"jump","path":"/config/a"}]}}),
                "payload.patch",
            ),
            (
                json!({"update_type":"json_patch","payload":{"patch":[{"op":"replace","path":"/etc/passwd","value":1}]}}),
                "payload.patch",
            ),
            (
                json!({"update_type":"json_patch","payload":{"patch":[]}}),
                "payload.patch",
            ),
            (
                json!({"update_type":"yaml_graft","payload":{"yaml":"- a\n- b\n"}}),
                "payload.yaml",
            ),
            (
                json!({"update_type":"yaml_graft","payload":{"yaml":"a: [unclosed"}}),
                "payload.yaml",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"m"},"target_agent_prefix":"a//b"}),
                "target_agent_prefix",
            ),
            (
                json!({"update_type":"notice","payload":{"message":"x".repeat(MAX_PAYLOAD_BYTES)}}),
                "payload",
            ),
        ];
        for (body, name) in cases {
            let err = req(body.clone()).unwrap_err();
            assert_eq!(err.field, name, "{body}: {err}");
        }
        assert!(
            serde_json::from_value::<PublishRequest>(json!({"update_type":"notice","paylod":{}}))
                .is_err()
        );
    }

    fn env(prefix: Option<&str>, cascade: bool, orch: Option<&str>) -> UpdateEnvelope {
        NewUpdate {
            target_orch: orch.map(str::to_owned),
            target_agent_prefix: prefix.map(str::to_owned),
            cascade,
            update_type: UpdateType::Notice,
            tier_required: Tier::Free,
            payload: json!({"message":"m"}),
            rollout_percent: None,
        }
        .into_envelope("u1".into(), 1, 0)
    }

    fn who(path: &str) -> Audience<'_> {
        Audience {
            orch_id: Some("orch-1"),
            orch_hash: "orch_00000000000000aa",
            agent_path: path,
            tier: Tier::Free,
        }
    }

    #[test]
    fn use_case_5_targeting() {
        let u = env(Some("code-gen"), true, None);
        assert!(u.targets(&who("code-gen/rust")));
        assert!(u.targets(&who("code-gen/python")));
        assert!(u.targets(&who("code-gen")));
        assert!(!u.targets(&who("emotional-support")));
        assert!(!u.targets(&who("code-generator")));
        let exact = env(Some("code-gen"), false, None);
        assert!(exact.targets(&who("code-gen")));
        assert!(!exact.targets(&who("code-gen/rust")));
        assert!(env(None, true, Some("orch-1")).targets(&who("x")));
        assert!(env(None, true, Some("orch_00000000000000aa")).targets(&who("x")));
        assert!(!env(None, true, Some("orch-2")).targets(&who("x")));
    }

    #[test]
    fn tiers_and_rollout() {
        let mut u = env(None, true, None);
        u.tier_required = Tier::Premium;
        assert!(!u.tier_allows(Tier::Free));
        assert!(u.tier_allows(Tier::Premium));
        let orchs: Vec<String> = (0..1000).map(|i| format!("orch_{i:016x}")).collect();
        let admitted = |p| orchs.iter().filter(|o| u.admits(o, Some(p))).count();
        let (ten, fifty) = (admitted(10), admitted(50));
        assert!((60..=140).contains(&ten), "{ten}");
        assert!((420..=580).contains(&fifty), "{fifty}");
        // Widening never drops anyone admitted before.
        assert!(
            orchs
                .iter()
                .all(|o| !u.admits(o, Some(10)) || u.admits(o, Some(50)))
        );
        assert_eq!(admitted(100), 1000);
        assert!(u.admits("anything", None));
    }
}
