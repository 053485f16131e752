//! A conversation's prompt and final assistant turn, with canonical pseudonyms, and the key
//! that groups conversations sharing a prompt.
//!
//! The final assistant turn is the run of `assistant` messages at the end of the
//! conversation (usually one reply); the prompt is everything before it, system message and
//! any earlier tool calls and results included. Two conversations share a prompt when their
//! prompts are identical after [`canonical_messages`] — the same text once each conversation's
//! pseudonyms are renumbered in order of first appearance — so `USER_B` in one edge's session
//! and `USER_A` in another's group together.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::privacy::pii::Renumbering;

/// The role of a message (empty when it has none).
pub fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// `(prompt, final assistant turn)`, or `None` when the conversation does not end with an
/// assistant turn after at least one other message.
pub fn split_final_turn(messages: &[Value]) -> Option<(&[Value], &[Value])> {
    let turn = messages
        .iter()
        .rev()
        .take_while(|m| role(m) == "assistant")
        .count();
    if turn == 0 || turn == messages.len() {
        return None;
    }
    Some(messages.split_at(messages.len() - turn))
}

/// The messages with pseudonyms renumbered per type in order of first appearance, in every
/// string (content, content parts, tool-call arguments, tool results, names). A prompt's
/// numbering depends on the prompt alone, since it comes first.
pub fn canonical_messages(messages: &[Value]) -> Vec<Value> {
    let mut renumbering = Renumbering::new();
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            renumbering.json(&mut m);
            m
        })
        .collect()
}

/// The grouping key of a conversation's prompt: SHA-256 (hex) of the canonical prompt's JSON
/// (object keys sorted), or `None` when there is no final assistant turn to pair.
pub fn prompt_key(messages: &[Value]) -> Option<String> {
    let (prompt, _) = split_final_turn(messages)?;
    let canonical = Value::Array(canonical_messages(prompt));
    Some(hex::encode(Sha256::digest(
        canonical.to_string().as_bytes(),
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msgs(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn the_final_turn_is_the_trailing_assistant_messages() {
        let m = msgs(json!([
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "r"},
            {"role": "assistant", "content": "a1"},
            {"role": "assistant", "content": "a2"},
        ]));
        let (prompt, turn) = split_final_turn(&m).unwrap();
        assert_eq!(prompt.len(), 4);
        assert_eq!(turn, &m[4..]);
        assert!(
            split_final_turn(&m[..4]).is_none(),
            "ends with a tool result"
        );
        assert!(split_final_turn(&m[4..]).is_none(), "no prompt at all");
    }

    #[test]
    fn prompts_group_across_pseudonym_numberings_and_differ_otherwise() {
        let a = msgs(json!([
            {"role": "user", "content": "I'm USER_C; write to USER_C_EMAIL"},
            {"role": "assistant", "content": "Done, USER_C."},
        ]));
        let b = msgs(json!([
            {"role": "user", "content": "I'm USER_A; write to USER_A_EMAIL"},
            {"role": "assistant", "content": "No."},
        ]));
        let other = msgs(json!([
            {"role": "user", "content": "I'm USER_A; write to EMAIL_1"},
            {"role": "assistant", "content": "Done, USER_A."},
        ]));
        let key = prompt_key(&a).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(prompt_key(&b).unwrap(), key);
        assert_ne!(prompt_key(&other).unwrap(), key);
        assert_eq!(
            canonical_messages(&a)[1]["content"],
            "Done, USER_A.",
            "the reply keeps the prompt's numbering"
        );
        assert!(prompt_key(&a[..1]).is_none());
    }
}
