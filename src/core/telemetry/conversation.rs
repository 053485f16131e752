//! Conversations as the edge sends them to `POST /ingest/conversations`, already
//! de-identified: the wire shape, its validation and the feedback a dataset ranks by.
//!
//! The same shape is what `phoenix ingest --conversations` reads (one per JSONL line) before
//! redaction, so an operator's file and the wire agree field for field.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::core::telemetry::{
    BodyFormat, MAX_CLOCK_SKEW_SECS, MAX_SHORT_FIELD, ParseError, RecordError,
    field_from_serde_message, now_unix, parse_records, strip_position, validate_agent_path,
    without_values,
};

/// Longest accepted `conversation_id`.
pub const MAX_CONVERSATION_ID: usize = 256;
/// Most messages in one conversation.
pub const MAX_MESSAGES: usize = 2_000;
/// Roles a message may have (OpenAI chat format, TRL's as well).
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

const FIELDS: &[&str] = &[
    "conversation_id",
    "messages",
    "feedback",
    "score",
    "orch_id",
    "agent_path",
    "ts_unix",
];

/// One conversation (seed 000's completed conversation, as the Telemetrist sends it).
///
/// Unknown fields are ignored so that newer edges can talk to older collectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The edge's id for the conversation; sending the same id again stores nothing new.
    pub conversation_id: String,
    /// Chat messages in OpenAI/TRL form: `{"role", "content", "tool_calls"?, ...}`.
    pub messages: Vec<Value>,
    /// The user's verdict on the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// A numeric rating (any scale, higher is better); ranks before `feedback` when both
    /// conversations of a preference pair have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Raw ORCH id; the collector keeps only its keyed hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orch_id: Option<String>,
    /// Agent path of the agent that held the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    /// When the conversation completed, Unix seconds; the collector's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_unix: Option<i64>,
}

/// A user's verdict. On the wire: `"positive"`, `"negative"` or `"neutral"`; the usual
/// spellings (`up`/`down`, `thumbs_up`, `good`/`bad`, `like`/`dislike`, `+1`/`-1`, `true`/
/// `false`) are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// Thumbs down.
    Negative,
    /// Neither.
    Neutral,
    /// Thumbs up.
    Positive,
}

impl Feedback {
    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Negative => "negative",
            Feedback::Neutral => "neutral",
            Feedback::Positive => "positive",
        }
    }

    /// Reads a canonical name or one of its aliases, case-insensitively.
    pub fn parse(s: &str) -> Option<Feedback> {
        match s.trim().to_ascii_lowercase().as_str() {
            "positive" | "up" | "thumbs_up" | "thumbsup" | "good" | "like" | "liked" | "+1"
            | "true" | "👍" => Some(Feedback::Positive),
            "negative" | "down" | "thumbs_down" | "thumbsdown" | "bad" | "dislike" | "disliked"
            | "-1" | "false" | "👎" => Some(Feedback::Negative),
            "neutral" | "none" | "0" => Some(Feedback::Neutral),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Feedback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Feedback::Positive),
            Value::Bool(false) => Ok(Feedback::Negative),
            // The messages never repeat the value: an answer must not echo what was sent.
            Value::String(s) => Feedback::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(
                    "invalid value: unknown feedback; expected positive, negative or neutral",
                )
            }),
            Value::Number(n) => match n.as_f64() {
                Some(x) if x > 0.0 => Ok(Feedback::Positive),
                Some(x) if x < 0.0 => Ok(Feedback::Negative),
                _ => Ok(Feedback::Neutral),
            },
            other => Err(serde::de::Error::custom(format!(
                "invalid type: feedback must be a string, got {}",
                json_type(&other)
            ))),
        }
    }
}

/// What kind of JSON value `v` is, for a message that must not show the value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl std::fmt::Display for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A conversation as the writer stores it: anonymised, messages as JSON text, and the key
/// its prompt is grouped by for preference pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    /// The edge's id; unique in the store.
    pub conversation_id: String,
    /// When it completed (the collector's clock when the edge did not say).
    pub ts_unix: i64,
    /// When the collector received it.
    pub received_unix: i64,
    /// Keyed hash of the ORCH id; the raw id is never stored.
    pub orch_hash: Option<String>,
    /// Agent path.
    pub agent_path: Option<String>,
    /// The user's verdict.
    pub feedback: Option<Feedback>,
    /// Numeric rating.
    pub score: Option<f64>,
    /// `messages` as a JSON array text, as received.
    pub messages_json: String,
    /// Hash of the canonical prompt (see `dataset::prompt_key`); `None` when the conversation
    /// does not end with an assistant turn after a prompt.
    pub prompt_key: Option<String>,
}

/// A stored conversation, as dataset exports read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredConversation {
    /// Insertion order.
    pub seq: i64,
    /// The edge's id.
    pub conversation_id: String,
    /// When it completed.
    pub ts_unix: i64,
    /// When the collector received it.
    pub received_unix: i64,
    /// Keyed hash of the ORCH id.
    pub orch_hash: Option<String>,
    /// Agent path.
    pub agent_path: Option<String>,
    /// The user's verdict.
    pub feedback: Option<Feedback>,
    /// Numeric rating.
    pub score: Option<f64>,
    /// The messages.
    pub messages: Vec<Value>,
    /// Grouping key of the prompt.
    pub prompt_key: Option<String>,
}

/// Splits a request body (one object, a JSON array or NDJSON) into validated conversations,
/// naming every bad record; any bad record refuses the whole batch.
pub fn parse_conversations(
    body: &[u8],
    format: BodyFormat,
) -> Result<Vec<Conversation>, ParseError> {
    parse_records(body, format, decode_conversation)
}

/// Decodes and validates one conversation's JSON text.
pub fn decode_conversation(
    text: &str,
    index: usize,
    line: Option<usize>,
) -> Result<Conversation, RecordError> {
    let err = |field: &str, message: String| RecordError {
        index,
        line,
        field: field.to_owned(),
        message,
    };
    let conversation: Conversation = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let field =
            field_from_serde_message(&msg, text, FIELDS).unwrap_or_else(|| "(record)".to_owned());
        err(&field, without_values(&strip_position(&msg)))
    })?;
    conversation
        .validate()
        .map_err(|(field, message)| err(&field, message))?;
    Ok(conversation)
}

impl Conversation {
    /// Checks every field; the error names the field (`messages[3].role` for a message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        let id = &self.conversation_id;
        if id.trim().is_empty() || id.len() > MAX_CONVERSATION_ID {
            return field(
                "conversation_id",
                format!("must be 1..={MAX_CONVERSATION_ID} bytes and not blank"),
            );
        }
        if id.chars().any(char::is_control) {
            return field(
                "conversation_id",
                "must not contain control characters".to_owned(),
            );
        }
        if self.messages.is_empty() {
            return field("messages", "must hold at least one message".to_owned());
        }
        if self.messages.len() > MAX_MESSAGES {
            return field(
                "messages",
                format!(
                    "has {} messages, at most {MAX_MESSAGES} allowed",
                    self.messages.len()
                ),
            );
        }
        for (i, message) in self.messages.iter().enumerate() {
            validate_message(message).map_err(|(sub, m)| (format!("messages[{i}]{sub}"), m))?;
        }
        if let Some(score) = self.score
            && !score.is_finite()
        {
            return field("score", "must be a finite number".to_owned());
        }
        if let Some(orch) = &self.orch_id
            && (orch.is_empty() || orch.len() > MAX_SHORT_FIELD)
        {
            return field(
                "orch_id",
                format!("must be 1..={MAX_SHORT_FIELD} bytes when present"),
            );
        }
        if let Some(path) = &self.agent_path {
            validate_agent_path(path).or_else(|m| field("agent_path", m))?;
        }
        if let Some(ts) = self.ts_unix {
            if ts < 0 {
                return field("ts_unix", "is before 1970".to_owned());
            }
            // Not the number itself: a "timestamp" far in the future can be a card number.
            if ts > now_unix() + MAX_CLOCK_SKEW_SECS {
                return field("ts_unix", "is more than a day in the future".to_owned());
            }
        }
        Ok(())
    }

    /// The messages' roles in order, for grouping and for error messages.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.messages
            .iter()
            .map(|m| m.get("role").and_then(Value::as_str).unwrap_or(""))
    }
}

/// A message is an object with a known `role`, and `content` that is a string, an array of
/// content parts, or null when the assistant calls tools instead.
fn validate_message(message: &Value) -> Result<(), (String, String)> {
    let Some(obj) = message.as_object() else {
        return Err((String::new(), "must be an object".to_owned()));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(_) => return Err((".role".to_owned(), "must be a string".to_owned())),
        None => return Err((".role".to_owned(), "is missing".to_owned())),
    };
    if !ROLES.contains(&role) {
        return Err((
            ".role".to_owned(),
            format!("unknown role; expected one of {}", ROLES.join(", ")),
        ));
    }
    match obj.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        None | Some(Value::Null) if obj.contains_key("tool_calls") => Ok(()),
        None | Some(Value::Null) => Err((
            ".content".to_owned(),
            "is missing (only a message with tool_calls may omit it)".to_owned(),
        )),
        Some(_) => Err((
            ".content".to_owned(),
            "must be a string or an array of content parts".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str) -> Vec<RecordError> {
        match parse_conversations(body.as_bytes(), BodyFormat::Auto) {
            Err(ParseError::Records { errors, .. }) => errors,
            other => panic!("expected record errors, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_chat_with_tool_calls_and_feedback_aliases() {
        let body = r#"{"conversation_id":"c1","feedback":"thumbs_up","score":4,"messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"t","content":"sunny"},
            {"role":"assistant","content":"Sunny."}]}"#;
        let c = parse_conversations(body.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].feedback, Some(Feedback::Positive));
        assert_eq!(c[0].score, Some(4.0));
        assert_eq!(
            c[0].roles().collect::<Vec<_>>(),
            ["user", "assistant", "tool", "assistant"]
        );
    }

    #[test]
    fn every_bad_record_is_named_by_field() {
        let body = concat!(
            r#"{"conversation_id":"ok","messages":[{"role":"user","content":"hi"}]}"#,
            "\n",
            r#"{"conversation_id":"","messages":[{"role":"user","content":"hi"}]}"#,
            "\n",
            r#"{"conversation_id":"b","messages":[]}"#,
            "\n",
            r#"{"conversation_id":"c","messages":[{"role":"robot","content":"hi"}]}"#,
            "\n",
            r#"{"conversation_id":"d","messages":[{"role":"user"}]}"#,
            "\n",
            r#"{"conversation_id":"e","feedback":"meh","messages":[{"role":"user","content":"x"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        );
        let errs = errors(body);
        let fields: Vec<(usize, &str)> = errs
            .iter()
            .map(|e| (e.line.unwrap(), e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                (2, "conversation_id"),
                (3, "messages"),
                (4, "messages[0].role"),
                (5, "messages[0].content"),
                (6, "feedback"),
                (7, "conversation_id"),
            ]
        );
        assert!(
            errs[2]
                .message
                .starts_with("unknown role; expected one of system"),
            "{}",
            errs[2].message
        );
    }

    #[test]
    fn feedback_spellings() {
        for (s, f) in [
            ("up", Feedback::Positive),
            ("Thumbs_Down", Feedback::Negative),
            ("neutral", Feedback::Neutral),
        ] {
            assert_eq!(Feedback::parse(s), Some(f));
        }
        assert_eq!(Feedback::parse("maybe"), None);
        assert!(Feedback::Positive > Feedback::Neutral && Feedback::Neutral > Feedback::Negative);
    }
}
