//! Canonical pseudonym numbering: renames a conversation's pseudonyms per type in order of
//! first appearance (`USER_C`, `USER_A` → `USER_A`, `USER_B`; `PHONE_7` → `PHONE_1`).
//!
//! Pseudonyms only mean something inside the session that made them, and two edges number
//! the same story differently. Renumbering every string of a conversation with one
//! [`Renumbering`], in message order, makes identical prompts identical text, so datasets can
//! group them, and keeps a person the same pseudonym everywhere in the conversation, tool
//! arguments included. A person's email follows the person (`USER_C_EMAIL` → `USER_A_EMAIL`).

use std::collections::HashMap;

use serde_json::Value;

use super::redactor::{PSEUDONYM, letters};

/// One conversation's renaming; feed it the conversation's strings in order.
#[derive(Debug, Default)]
pub struct Renumbering {
    /// (prefix, old tag) → new tag, where the tag is the letters or number after the prefix.
    renamed: HashMap<(&'static str, String), String>,
    /// Tags handed out so far, per prefix.
    next: HashMap<&'static str, usize>,
}

/// Pseudonym families: those numbered with letters, and those numbered with digits.
const LETTERED: &[&str] = &["USER", "ORG_ID"];
const NUMBERED: &[&str] = &[
    "EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN", "SECRET", "URL", "ADDRESS",
];

impl Renumbering {
    /// A renaming for a new conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// `text` with its pseudonyms renamed.
    pub fn text(&mut self, text: &str) -> String {
        if !text.contains('_') {
            return text.to_owned();
        }
        PSEUDONYM
            .replace_all(text, |c: &regex::Captures<'_>| self.rename(&c[0]))
            .into_owned()
    }

    /// Renames the pseudonyms in every string of `value`, depth first, in document order
    /// (object keys in their stored order). Keys are left alone.
    pub fn json(&mut self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if PSEUDONYM.is_match(s) {
                    *s = self.text(s);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.json(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn rename(&mut self, pseudonym: &str) -> String {
        if let Some(rest) = pseudonym.strip_prefix("ORG_ID_") {
            return format!("ORG_ID_{}", self.tag("ORG_ID", rest));
        }
        if let Some(rest) = pseudonym.strip_prefix("USER_") {
            // USER_A, USER_A_EMAIL, USER_A_EMAIL_2: the email keeps its owner's new letter.
            let end = rest
                .find(|c: char| !c.is_ascii_uppercase())
                .unwrap_or(rest.len());
            let (person, suffix) = rest.split_at(end);
            return format!("USER_{}{suffix}", self.tag("USER", person));
        }
        match pseudonym.rsplit_once('_') {
            Some((prefix, number)) => match NUMBERED.iter().find(|p| **p == prefix) {
                Some(p) => format!("{prefix}_{}", self.tag(p, number)),
                None => pseudonym.to_owned(),
            },
            None => pseudonym.to_owned(),
        }
    }

    fn tag(&mut self, prefix: &'static str, old: &str) -> String {
        if let Some(new) = self.renamed.get(&(prefix, old.to_owned())) {
            return new.clone();
        }
        let n = self.next.entry(prefix).or_default();
        let new = if LETTERED.contains(&prefix) {
            letters(*n)
        } else {
            (*n + 1).to_string()
        };
        *n += 1;
        self.renamed.insert((prefix, old.to_owned()), new.clone());
        new
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renumbers_per_type_in_order_of_first_appearance() {
        let mut r = Renumbering::new();
        assert_eq!(
            r.text("USER_C met USER_A at ORG_ID_B; call PHONE_7, then PHONE_2"),
            "USER_A met USER_B at ORG_ID_A; call PHONE_1, then PHONE_2"
        );
        // The same renaming goes on in later strings, and an email follows its owner.
        assert_eq!(
            r.text("USER_A_EMAIL_2 and USER_C_EMAIL, EMAIL_9, PHONE_7"),
            "USER_B_EMAIL_2 and USER_A_EMAIL, EMAIL_1, PHONE_1"
        );
        // Words that merely look alike are not pseudonyms.
        assert_eq!(
            r.text("USER_Agent, MY_PHONE_7x, PHONE_"),
            "USER_Agent, MY_PHONE_7x, PHONE_"
        );
    }

    #[test]
    fn two_numberings_of_one_conversation_become_identical() {
        let a = json!([
            {"role": "user", "content": "I'm USER_B, mail USER_B_EMAIL; my boss is USER_D"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "mail", "arguments": "{\"to\":\"USER_D\",\"cc\":\"EMAIL_4\"}"}}]},
        ]);
        let b = json!([
            {"role": "user", "content": "I'm USER_A, mail USER_A_EMAIL; my boss is USER_Q"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "mail", "arguments": "{\"to\":\"USER_Q\",\"cc\":\"EMAIL_1\"}"}}]},
        ]);
        let (mut a, mut b) = (a, b);
        Renumbering::new().json(&mut a);
        Renumbering::new().json(&mut b);
        assert_eq!(a, b);
        assert_eq!(
            a[1]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"USER_B\",\"cc\":\"EMAIL_1\"}"
        );
    }
}
