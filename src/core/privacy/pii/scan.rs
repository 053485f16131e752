//! Finding personal data left in chat messages: the collector's last line of defence against
//! a conversation that was not (or not fully) redacted at the edge.
//!
//! The scan looks at every string of a message and every key, the way
//! [`Redactor::redact_messages`](super::Redactor) rewrites them — message content and
//! content-part texts and URLs, tool-call names, ids and arguments, tool-call ids, tool
//! results (JSON inside a string: each key and string value on its own), names and any
//! other field — so a redacted conversation comes out clean by construction. Each string is
//! read through its scan view (`normalize`), so an encoded value is found too. It reports
//! where and what kind, never the value itself: a key that holds personal data is named
//! `(key)`, not by what it says.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{EntityType, contains_pii};

/// Personal data found in one field of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where: `messages[1].content`, `messages[2].tool_calls[0].function.arguments`, ...
    pub field: String,
    /// What kinds, each once, in report order.
    pub types: Vec<EntityType>,
}

/// Scans one text field (`conversation_id`, `agent_path`): a finding when it holds
/// personal data.
pub fn scan_text(field: &str, text: &str) -> Option<Finding> {
    let types = contains_pii(text);
    (!types.is_empty()).then(|| Finding {
        field: field.to_owned(),
        types,
    })
}

/// Scans chat messages in order; one finding per field that holds personal data.
pub fn scan_messages(messages: &[Value]) -> Vec<Finding> {
    let mut scan = Scan::default();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match message {
            Value::Object(map) => scan.message(&at, map),
            other => scan.field(&at, other, Strings::Text),
        }
    }
    scan.findings
}

/// How the strings of a field are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// As text.
    Text,
    /// As JSON when they parse as an object or an array (tool arguments and results), else
    /// as text.
    Embedded,
}

#[derive(Debug, Default)]
struct Scan {
    findings: Vec<Finding>,
}

impl Scan {
    fn message(&mut self, at: &str, map: &Map<String, Value>) {
        let is_tool = map.get("role").and_then(Value::as_str) == Some("tool");
        self.object(at, map, |scan, field, key, value| match (key, value) {
            ("content", Value::String(_)) if is_tool => scan.field(field, value, Strings::Embedded),
            ("content", Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let at = format!("{field}[{j}]");
                    match part {
                        Value::Object(p) => scan.object(&at, p, |scan, field, _, v| {
                            scan.field(field, v, Strings::Text)
                        }),
                        other => scan.field(&at, other, Strings::Text),
                    }
                }
            }
            ("tool_calls", Value::Array(calls)) => {
                for (j, call) in calls.iter().enumerate() {
                    let at = format!("{field}[{j}]");
                    match call {
                        Value::Object(c) => {
                            scan.object(&at, c, |scan, field, key, v| match (key, v) {
                                ("function", Value::Object(f)) => scan.function(field, f),
                                _ => scan.field(field, v, Strings::Text),
                            })
                        }
                        other => scan.field(&at, other, Strings::Text),
                    }
                }
            }
            ("function_call", Value::Object(f)) => scan.function(field, f),
            _ => scan.field(field, value, Strings::Text),
        });
    }

    fn function(&mut self, at: &str, function: &Map<String, Value>) {
        self.object(at, function, |scan, field, key, value| {
            let strings = match key {
                "arguments" => Strings::Embedded,
                _ => Strings::Text,
            };
            scan.field(field, value, strings)
        });
    }

    /// Scans the keys of `map` and hands each value to `each` with its field's name. A key
    /// that holds personal data is a finding of its own, and is named `(key)`.
    fn object(
        &mut self,
        at: &str,
        map: &Map<String, Value>,
        mut each: impl FnMut(&mut Self, &str, &str, &Value),
    ) {
        for (key, value) in map {
            let types = contains_pii(key);
            let field = if types.is_empty() {
                format!("{at}.{key}")
            } else {
                let field = format!("{at}.(key)");
                self.push(&field, types);
                field
            };
            each(self, &field, key, value);
        }
    }

    /// Scans one field's value, keys and strings at any depth, as one finding.
    fn field(&mut self, field: &str, value: &Value, strings: Strings) {
        let mut types = Vec::new();
        match value {
            Value::String(s) if strings == Strings::Embedded => scan_embedded(s, &mut types),
            other => scan_json(other, &mut types),
        }
        self.push(field, types);
    }

    /// Adds `types` to the finding for `field`, the last one when it is the same field.
    fn push(&mut self, field: &str, mut types: Vec<EntityType>) {
        if types.is_empty() {
            return;
        }
        match self.findings.last_mut() {
            Some(last) if last.field == field => last.types.append(&mut types),
            _ => self.findings.push(Finding {
                field: field.to_owned(),
                types,
            }),
        }
        let last = self.findings.last_mut().expect("just pushed");
        last.types.sort();
        last.types.dedup();
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

/// Every key and every string inside a JSON value.
fn scan_json(value: &Value, types: &mut Vec<EntityType>) {
    match value {
        Value::String(s) => types.extend(contains_pii(s)),
        Value::Array(items) => items.iter().for_each(|v| scan_json(v, types)),
        Value::Object(map) => {
            for (k, v) in map {
                types.extend(contains_pii(k));
                scan_json(v, types);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::pii_eval::{EvalOptions, generate};
    use crate::core::privacy::pii::Redactor;

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
    fn pseudonyms_are_not_personal_data() {
        let messages = vec![
            json!({"role": "user", "name": "USER_A", "content": "I'm USER_A from ORG_ID_B; mail USER_A_EMAIL or EMAIL_3, call PHONE_2, card CARD_1, IBAN_1, IP_4, SECRET_1"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_Ab3dEf6hIj9kLm2nOp5qRs8t", "type": "function",
                "function": {"name": "send", "arguments": "{\"to\":\"USER_B_EMAIL_2\",\"EMAIL_1\":\"PHONE_1\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "call_Ab3dEf6hIj9kLm2nOp5qRs8t", "content": "ok"}),
        ];
        assert_eq!(scan_messages(&messages), []);
    }

    #[test]
    fn ids_names_urls_and_keys_are_scanned_and_a_key_is_not_named() {
        let at = "dana.whitfield@example.org";
        let messages = vec![
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": at, "type": "function",
                "function": {"name": at, "arguments": json!({at: 1}).to_string()}}]}),
            json!({"role": "tool", "tool_call_id": at, "content": "ok"}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": format!("https://x.example/{at}")}}]}),
            json!({"role": "user", "content": "hi", at: "x", "meta": {"by": {at: true}}}),
        ];
        let fields: Vec<String> = scan_messages(&messages)
            .into_iter()
            .map(|f| {
                assert_eq!(f.types, [EntityType::Email], "{}", f.field);
                f.field
            })
            .collect();
        assert_eq!(
            fields,
            [
                "messages[0].tool_calls[0].function.arguments",
                "messages[0].tool_calls[0].function.name",
                "messages[0].tool_calls[0].id",
                "messages[1].tool_call_id",
                "messages[2].content[0].image_url",
                "messages[3].(key)",
                "messages[3].meta",
            ]
        );
        assert_eq!(
            scan_text("conversation_id", at).map(|f| f.types),
            Some(vec![EntityType::Email])
        );
        assert_eq!(scan_text("agent_path", "support/billing"), None);
    }

    #[test]
    fn encoded_values_are_found() {
        for text in [
            "mail dana.whitfield\u{FF20}example.org",
            "mail dana.whitfield%40example.org",
            "mail dana.whitfield&#64;example.org",
            "mail dana.whitfield [at] example [dot] org",
            "mail ZGFuYS53aGl0ZmllbGRAZXhhbXBsZS5vcmc=",
            "mail d\u{200B}ana.whitfield\u{200D}@example.org",
        ] {
            let found = scan_messages(&[json!({"role": "user", "content": text})]);
            assert_eq!(found.len(), 1, "{text}");
            assert_eq!(found[0].types, [EntityType::Email], "{text}");
        }
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
