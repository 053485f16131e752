//! Redaction of structured chat messages (OpenAI / TRL `messages`): message content and
//! content parts, tool-call arguments (JSON inside a string: parsed, redacted value by value,
//! re-serialised; redacted as text when they are not JSON), tool results, and every other
//! string: tool-call names and ids, `tool_call_id`, image URLs, fields of any name. What the
//! collector's guard (`scan`) looks at, this redacts.
//!
//! A key is redacted like text (one that holds an address is a leak like any other; a key
//! without personal data stays as it is). A value under a key that says what it is
//! (`"phone"`, `"password"`, `"name"`) is replaced whole, since a bare "Dan" has no context
//! of its own.

use serde_json::{Map, Value};

use super::names::{is_first_name, is_last_name};
use super::redactor::is_pseudonym;
use super::{EntityType, Redactor, Report, validate};

/// Why a document is not a conversation.
#[derive(Debug, thiserror::Error)]
#[error(
    "expected a JSON array of messages, an object with a \"messages\" array, or an array of such objects"
)]
pub struct ConversationShape;

impl Redactor {
    /// Redacts a list of chat messages in place.
    pub fn redact_messages(&mut self, messages: &mut [Value]) -> Report {
        let mut report = Report::default();
        for m in messages {
            self.redact_message(m, &mut report);
        }
        report
    }

    /// Redacts a conversation document in place: an array of messages, `{"messages": [...]}`
    /// (other fields kept and redacted as JSON), or an array of such objects.
    pub fn redact_conversation(&mut self, doc: &mut Value) -> Result<Report, ConversationShape> {
        let mut report = Report::default();
        match doc {
            Value::Array(items)
                if items.iter().all(|i| i.get("messages").is_some()) && !items.is_empty() =>
            {
                for item in items {
                    self.redact_conversation_object(item, &mut report)?;
                }
            }
            Value::Array(items) if items.iter().all(|i| i.get("role").is_some()) => {
                for m in items {
                    self.redact_message(m, &mut report);
                }
            }
            Value::Object(_) => self.redact_conversation_object(doc, &mut report)?,
            _ => return Err(ConversationShape),
        }
        Ok(report)
    }

    fn redact_conversation_object(
        &mut self,
        doc: &mut Value,
        report: &mut Report,
    ) -> Result<(), ConversationShape> {
        let Value::Object(map) = doc else {
            return Err(ConversationShape);
        };
        if !map.get("messages").is_some_and(Value::is_array) {
            return Err(ConversationShape);
        }
        for (k, v) in map.iter_mut() {
            if k == "messages" {
                if let Value::Array(ms) = v {
                    for m in ms {
                        self.redact_message(m, report);
                    }
                }
            } else {
                self.redact_json(v, Some(k), report);
            }
        }
        Ok(())
    }

    fn redact_message(&mut self, message: &mut Value, report: &mut Report) {
        let Value::Object(map) = message else {
            self.redact_json(message, None, report);
            return;
        };
        self.redact_keys(map, report);
        let is_tool = map.get("role").and_then(Value::as_str) == Some("tool");
        for (k, v) in map.iter_mut() {
            match (k.as_str(), v) {
                ("content", Value::String(s)) if is_tool => *s = self.redact_embedded(s, report),
                ("content", Value::Array(parts)) => {
                    for part in parts {
                        self.redact_json(part, None, report);
                    }
                }
                ("tool_calls", Value::Array(calls)) => {
                    for call in calls {
                        let Value::Object(call) = call else {
                            self.redact_json(call, None, report);
                            continue;
                        };
                        self.redact_keys(call, report);
                        for (ck, cv) in call.iter_mut() {
                            match ck.as_str() {
                                "function" => self.redact_function_call(cv, report),
                                _ => self.redact_json(cv, Some(ck), report),
                            }
                        }
                    }
                }
                ("function_call", v) => self.redact_function_call(v, report),
                ("name", Value::String(s)) => {
                    *s = self.redact_hinted(EntityType::Person, s, report);
                }
                (k, v) => self.redact_json(v, Some(k), report),
            }
        }
    }

    /// A function call: its arguments as embedded JSON, its name and any other field as text
    /// (a function's name is no person's, whatever the key says).
    fn redact_function_call(&mut self, function: &mut Value, report: &mut Report) {
        let Value::Object(map) = function else {
            self.redact_json(function, None, report);
            return;
        };
        self.redact_keys(map, report);
        for (k, v) in map.iter_mut() {
            match (k.as_str(), v) {
                ("arguments", Value::String(args)) => *args = self.redact_embedded(args, report),
                (_, v) => self.redact_json(v, None, report),
            }
        }
    }

    /// Redacts the keys of `map` that hold personal data; almost none do, and the others
    /// stay as they are. Should a redacted key meet one that exists, it takes a `_` suffix
    /// rather than replace it.
    fn redact_keys(&mut self, map: &mut Map<String, Value>, report: &mut Report) {
        let mut renamed = Vec::new();
        for key in map.keys() {
            let redacted = self.redact_into(key, report);
            if redacted != *key {
                renamed.push((key.clone(), redacted));
            }
        }
        for (old, mut new) in renamed {
            let value = map.remove(&old).expect("the key was just read");
            while map.contains_key(&new) {
                new.push('_');
            }
            map.insert(new, value);
        }
    }

    /// JSON inside a string (tool arguments, tool results): redact its values and write it
    /// back compactly; text that is not JSON is redacted as text.
    fn redact_embedded(&mut self, s: &str, report: &mut Report) -> String {
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && let Ok(mut v) = serde_json::from_str::<Value>(s)
        {
            self.redact_json(&mut v, None, report);
            return v.to_string();
        }
        self.redact_into(s, report)
    }

    /// Redacts every string in a JSON value; `key` is the field it sits under.
    pub fn redact_json(&mut self, value: &mut Value, key: Option<&str>, report: &mut Report) {
        let hint = key.and_then(hint_for_key);
        match value {
            Value::String(s) => {
                *s = match hint {
                    Some(entity) => self.redact_hinted(entity, s, report),
                    None => self.redact_into(s, report),
                }
            }
            Value::Number(n) => {
                if let Some(entity) = hint.filter(|e| {
                    matches!(
                        e,
                        EntityType::Phone | EntityType::Ssn | EntityType::CreditCard
                    )
                }) {
                    let text = n.to_string();
                    if plausible(entity, &text) {
                        *value = Value::String(self.redact_as(entity, &text, report));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.redact_json(item, key, report);
                }
            }
            Value::Object(map) => {
                self.redact_keys(map, report);
                for (k, v) in map.iter_mut() {
                    self.redact_json(v, Some(k), report);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn redact_hinted(&mut self, entity: EntityType, s: &str, report: &mut Report) -> String {
        if plausible(entity, s) {
            self.redact_as(entity, s, report)
        } else {
            self.redact_into(s, report)
        }
    }
}

/// What a JSON key says its value is.
fn hint_for_key(key: &str) -> Option<EntityType> {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let k = k.as_str();
    let person = [
        "name",
        "full_name",
        "fullname",
        "first_name",
        "firstname",
        "last_name",
        "lastname",
        "surname",
        "given_name",
        "family_name",
        "contact_name",
        "customer_name",
        "person",
        "recipient_name",
        "sender_name",
        "display_name",
        "author",
        "assignee",
        "patient_name",
        "attendee",
        "attendees",
        "participants",
        "employee_name",
        "user_full_name",
    ];
    let entity = if person.contains(&k) {
        EntityType::Person
    } else if k.ends_with("password")
        || k.ends_with("passwd")
        || k.ends_with("secret")
        || k.ends_with("token")
        || k.ends_with("api_key")
        || k == "apikey"
        || k.ends_with("private_key")
        || k == "passphrase"
        || k == "authorization"
    {
        EntityType::Secret
    } else if matches!(
        k,
        "phone" | "phone_number" | "mobile" | "tel" | "telephone" | "cell" | "fax"
    ) || k.ends_with("_phone")
    {
        EntityType::Phone
    } else if matches!(
        k,
        "address"
            | "street"
            | "street_address"
            | "home_address"
            | "shipping_address"
            | "billing_address"
            | "mailing_address"
            | "addr"
            | "address_line1"
            | "address_line_1"
    ) {
        EntityType::Address
    } else if matches!(k, "ssn" | "social_security_number") {
        EntityType::Ssn
    } else if k == "iban" {
        EntityType::Iban
    } else if matches!(k, "card_number" | "credit_card" | "cc_number" | "pan") {
        EntityType::CreditCard
    } else if matches!(
        k,
        "company" | "organization" | "organisation" | "employer" | "company_name"
    ) {
        EntityType::Organization
    } else if matches!(k, "ip" | "ip_address" | "client_ip" | "remote_addr") {
        EntityType::IpAddress
    } else if matches!(
        k,
        "email" | "email_address" | "to" | "cc" | "bcc" | "from" | "reply_to"
    ) {
        EntityType::Email
    } else {
        return None;
    };
    Some(entity)
}

/// Whether a value under a hinting key really is that kind of value (`"name": "report.pdf"`
/// is not a person).
fn plausible(entity: EntityType, s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() || is_pseudonym(s) || s.len() > 200 {
        return false;
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    match entity {
        EntityType::Person => {
            let words: Vec<&str> = s.split_whitespace().collect();
            (1..=5).contains(&words.len())
                && words.iter().all(|w| {
                    let core = w.trim_end_matches(['.', ',']);
                    !core.is_empty()
                        && core
                            .chars()
                            .all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '’'))
                })
                && words.iter().any(|w| {
                    let lower = w.to_lowercase();
                    w.starts_with(char::is_uppercase)
                        || is_first_name(&lower)
                        || is_last_name(&lower)
                })
        }
        EntityType::Secret => s.len() >= 4 && !s.starts_with(['<', '$', '{']),
        EntityType::Phone => (7..=15).contains(&digits),
        EntityType::Ssn => digits == 9,
        EntityType::CreditCard => (13..=19).contains(&digits) && validate::luhn(s),
        EntityType::Iban => {
            let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            validate::iban(&compact.to_uppercase())
        }
        EntityType::Address => s.len() >= 5 && (digits > 0 || s.split_whitespace().count() >= 2),
        EntityType::Organization => s.split_whitespace().count() <= 6 && s.len() <= 80,
        EntityType::IpAddress => s.parse::<std::net::IpAddr>().is_ok(),
        EntityType::Email => s.contains('@') && !s.contains(char::is_whitespace),
        EntityType::UrlCredentials => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_with_tool_calls_and_results() {
        let mut r = Redactor::new();
        let mut doc = json!({"messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi, I'm Dan Johnson. Email my boss at priya.patel@acme.example please."},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "send_email", "arguments": "{\"to\":\"priya.patel@acme.example\",\"subject\":\"Dan's leave\",\"body\":\"Dan will be out. Call him on +44 20 7946 0958.\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\":\"sent\",\"recipient\":{\"name\":\"Priya Patel\",\"phone\":\"+1 415 555 0132\"}}"},
            {"role": "assistant", "content": [{"type": "text", "text": "Done, Dan. Priya has it."}]},
            {"role": "assistant", "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "note", "arguments": "not json: card 4111 1111 1111 1111"}}]}
        ]});
        let report = r.redact_conversation(&mut doc).unwrap();
        let ms = doc["messages"].as_array().unwrap();
        assert_eq!(ms[0]["content"], "You are a helpful assistant.");
        assert_eq!(
            ms[1]["content"],
            "Hi, I'm USER_A. Email my boss at USER_B_EMAIL please."
        );
        let args: Value = serde_json::from_str(
            ms[2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["to"], "USER_B_EMAIL");
        assert_eq!(args["subject"], "USER_A's leave");
        assert_eq!(args["body"], "USER_A will be out. Call him on PHONE_1.");
        assert_eq!(ms[2]["tool_calls"][0]["function"]["name"], "send_email");
        let result: Value = serde_json::from_str(ms[3]["content"].as_str().unwrap()).unwrap();
        assert_eq!(result["recipient"]["name"], "USER_B");
        assert_eq!(result["recipient"]["phone"], "PHONE_2");
        assert_eq!(result["status"], "sent");
        assert_eq!(ms[4]["content"][0]["text"], "Done, USER_A. USER_B has it.");
        assert_eq!(
            ms[5]["tool_calls"][0]["function"]["arguments"],
            "not json: card CARD_1"
        );
        assert!(report.replaced[&EntityType::Person] >= 5);
        assert_eq!(ms[3]["tool_call_id"], "call_1");
    }

    #[test]
    fn hinted_keys_need_plausible_values() {
        assert!(plausible(EntityType::Person, "Dan"));
        assert!(plausible(EntityType::Person, "dan johnson"));
        assert!(!plausible(EntityType::Person, "report.pdf"));
        assert!(!plausible(EntityType::Person, "main"));
        assert!(!plausible(EntityType::Secret, "${TOKEN}"));
        let mut r = Redactor::new();
        let mut v = json!({"name": "report.pdf", "password": "pa55word", "phone": 4155550132u64, "max_tokens": 100});
        let mut report = Report::default();
        r.redact_json(&mut v, None, &mut report);
        assert_eq!(
            v,
            json!({"name": "report.pdf", "password": "SECRET_1", "phone": "PHONE_1", "max_tokens": 100})
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        let mut r = Redactor::new();
        assert!(r.redact_conversation(&mut json!("text")).is_err());
        assert!(r.redact_conversation(&mut json!({"msgs": []})).is_err());
        let mut plain = json!([{"role": "user", "content": "call 020 7946 0958"}]);
        r.redact_conversation(&mut plain).unwrap();
        assert_eq!(plain[0]["content"], "call PHONE_1");
    }
}
