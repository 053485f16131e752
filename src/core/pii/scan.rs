//! Finding personal data left in chat messages: the collector's last line of defence against
//! a conversation that was not (or not fully) redacted at the edge.
//!
//! The scan looks at every text [`Redactor::redact_messages`](super::Redactor) rewrites —
//! message content and content-part texts, tool-call arguments and tool results (JSON inside
//! a string: each string value on its own), names and any other non-structural field — so a
//! redacted conversation comes out clean by construction. It reports where and what kind,
//! never the value itself.

use serde::Serialize;
use serde_json::Value;

use super::messages::STRUCTURAL;
use super::{EntityType, contains_pii};

/// Personal data found in one field of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where: `messages[1].content`, `messages[2].tool_calls[0].function.arguments`, ...
    pub field: String,
    /// What kinds, each once, in report order.
    pub types: Vec<EntityType>,
}

/// Scans chat messages in order; one finding per field that holds personal data.
pub fn scan_messages(messages: &[Value]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(map) = message else {
            scan_field(&at, message, false, &mut findings);
            continue;
        };
        let is_tool = map.get("role").and_then(Value::as_str) == Some("tool");
        for (key, value) in map {
            let field = format!("{at}.{key}");
            match key.as_str() {
                k if STRUCTURAL.contains(&k) => {}
                "content" => match value {
                    Value::String(_) => scan_field(&field, value, is_tool, &mut findings),
                    Value::Array(parts) => {
                        for (j, part) in parts.iter().enumerate() {
                            match part {
                                Value::Object(p) => {
                                    if let Some(text @ Value::String(_)) = p.get("text") {
                                        let f = format!("{field}[{j}].text");
                                        scan_field(&f, text, false, &mut findings);
                                    }
                                }
                                Value::String(_) => {
                                    scan_field(&format!("{field}[{j}]"), part, false, &mut findings)
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                },
                "tool_calls" => {
                    for (j, call) in value.as_array().into_iter().flatten().enumerate() {
                        if let Some(args) = call.get("function").and_then(|f| f.get("arguments")) {
                            let f = format!("{field}[{j}].function.arguments");
                            scan_field(&f, args, true, &mut findings);
                        }
                    }
                }
                "function_call" => {
                    if let Some(args) = value.get("arguments") {
                        scan_field(&format!("{field}.arguments"), args, true, &mut findings);
                    }
                }
                _ => scan_field(&field, value, false, &mut findings),
            }
        }
    }
    findings
}

/// Scans one field's value; `embedded` strings may hold JSON (tool arguments and results),
/// whose string values are scanned one by one as the redactor redacts them.
fn scan_field(field: &str, value: &Value, embedded: bool, findings: &mut Vec<Finding>) {
    let mut types = Vec::new();
    match value {
        Value::String(s) if embedded => scan_embedded(s, &mut types),
        other => scan_json(other, &mut types),
    }
    if !types.is_empty() {
        types.sort();
        types.dedup();
        findings.push(Finding {
            field: field.to_owned(),
            types,
        });
    }
}

fn scan_embedded(s: &str, types: &mut Vec<EntityType>) {
    let t = s.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(v) = serde_json::from_str::<Value>(s)
    {
        scan_json(&v, types);
        return;
    }
    types.extend(contains_pii(s));
}

/// Every string inside a JSON value (keys are structure and stay as written).
fn scan_json(value: &Value, types: &mut Vec<EntityType>) {
    match value {
        Value::String(s) => types.extend(contains_pii(s)),
        Value::Array(items) => items.iter().for_each(|v| scan_json(v, types)),
        Value::Object(map) => map.values().for_each(|v| scan_json(v, types)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::pii::Redactor;
    use crate::core::pii::eval::{EvalOptions, generate};

    #[test]
    fn names_the_field_and_the_types_but_not_the_value() {
        let messages = vec![
            json!({"role": "system", "content": "You are helpful."}),
            json!({"role": "user", "content": "I'm Dan Johnson, mail dan@example.com or call +1 415 555 0132"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"iban\":\"DE89 3704 0044 0532 0130 00\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "{\"owner\":{\"ip\":\"203.0.113.9\"}}"}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "Card 4111 1111 1111 1111?"}]}),
            json!({"role": "user", "name": "priya.patel@acme.example", "content": "ok"}),
        ];
        let findings = scan_messages(&messages);
        let got: Vec<(&str, Vec<&str>)> = findings
            .iter()
            .map(|f| {
                (
                    f.field.as_str(),
                    f.types.iter().map(|t| t.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("messages[1].content", vec!["person", "email", "phone"]),
                ("messages[2].tool_calls[0].function.arguments", vec!["iban"]),
                ("messages[3].content", vec!["ip_address"]),
                ("messages[4].content[0].text", vec!["credit_card"]),
                ("messages[5].name", vec!["email"]),
            ]
        );
        let shown = serde_json::to_string(&findings).unwrap();
        assert!(!shown.contains("dan@example.com") && !shown.contains("4111"));
    }

    #[test]
    fn pseudonyms_and_structure_are_not_personal_data() {
        let messages = vec![
            json!({"role": "user", "name": "USER_A", "content": "I'm USER_A from ORG_ID_B; mail USER_A_EMAIL or EMAIL_3, call PHONE_2, card CARD_1, IBAN_1, IP_4, SECRET_1"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_dan@example.com", "type": "function",
                "function": {"name": "send", "arguments": "{\"to\":\"USER_B_EMAIL_2\",\"phone\":\"PHONE_1\"}"}}]}),
        ];
        assert_eq!(scan_messages(&messages), []);
    }

    /// What the edge sends is what `Redactor` makes of a conversation: it must pass the guard,
    /// or the collector would refuse every upload. The evaluation corpus (fixed seed, hard
    /// negatives, held-out names, many formats) is laid out as chats with tool calls and
    /// results so every path the guard scans carries redacted text.
    #[test]
    fn the_redacted_evaluation_corpus_passes_the_guard() {
        let opts = EvalOptions::default();
        let corpus = generate(opts.seed, opts.conversations);
        let mut leaks = Vec::new();
        for conversation in &corpus {
            let mut messages: Vec<Value> = Vec::new();
            for (i, m) in conversation.messages.iter().enumerate() {
                messages.push(match i % 4 {
                    0 => json!({"role": "user", "content": m.text}),
                    1 => json!({"role": "assistant", "content": [{"type": "text", "text": m.text}]}),
                    2 => json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": format!("call_{i}"), "type": "function",
                        "function": {"name": "note", "arguments": json!({"text": m.text}).to_string()}}]}),
                    _ => json!({"role": "tool", "tool_call_id": format!("call_{}", i - 1),
                        "content": json!({"result": m.text}).to_string()}),
                });
            }
            Redactor::new().redact_messages(&mut messages);
            for f in scan_messages(&messages) {
                leaks.push(format!("{}: {:?} in {}", f.field, f.types, messages.len()));
                let at: usize = f.field[9..f.field.find(']').unwrap()].parse().unwrap();
                leaks.push(messages[at].to_string());
            }
        }
        assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    }
}
