//! OpenAI fine-tuning shapes: chat messages restricted to what the fine-tuning API accepts
//! (supervised `{"messages"}` lines and preference `{"input", "preferred_output",
//! "non_preferred_output"}` lines).
//!
//! Accepted: roles `system`, `user`, `assistant`, `tool`; `content` as a string; assistant
//! `tool_calls` as `[{"id", "type": "function", "function": {"name", "arguments": string}}]`;
//! tool results with a `tool_call_id`; `name` matching `^[A-Za-z0-9_-]{1,64}$`; assistant
//! `weight` 0 or 1. What can be converted is converted and counted (`developer` → `system`,
//! legacy `function_call`/`function` → `tool_calls`/`tool`, text parts joined into one string,
//! arguments given as JSON turned into a string, missing call ids filled in); what cannot
//! (images or audio, a tool result answering no call, a call without a function name) refuses
//! the conversation with a reason.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::prompt::role;

/// Conversions made, by kind.
pub(super) type Counts = BTreeMap<&'static str, u64>;

fn bump(counts: &mut Counts, what: &'static str) {
    *counts.entry(what).or_default() += 1;
}

/// A supervised example's messages; the conversation needs an assistant message to learn.
pub(super) fn chat_example(
    messages: &[Value],
    converted: &mut Counts,
) -> Result<Vec<Value>, &'static str> {
    let out = convert(messages, converted)?;
    if !out.iter().any(|m| role(m) == "assistant") {
        return Err("no_assistant_message");
    }
    Ok(out)
}

/// A preference example: the prompt as input, each final turn as one text reply (OpenAI's
/// preference tuning takes exactly one assistant message with text per output).
pub(super) fn preference_example(
    prompt: &[Value],
    chosen: &[Value],
    rejected: &[Value],
    converted: &mut Counts,
) -> Result<Value, &'static str> {
    let input = convert(prompt, converted)?;
    let preferred = single_text_reply(chosen, converted)?;
    let non_preferred = single_text_reply(rejected, converted)?;
    Ok(json!({
        "input": {"messages": input},
        "preferred_output": [preferred],
        "non_preferred_output": [non_preferred],
    }))
}

fn single_text_reply(turn: &[Value], converted: &mut Counts) -> Result<Value, &'static str> {
    let mut messages = convert(turn, converted)?;
    match messages.as_mut_slice() {
        [m] if m.get("tool_calls").is_none() && m.get("content").is_some_and(Value::is_string) => {
            Ok(json!({"role": "assistant", "content": m["content"].take()}))
        }
        _ => Err("reply_not_one_text_message"),
    }
}

/// Converts messages to the accepted shape, or says why it cannot.
fn convert(messages: &[Value], converted: &mut Counts) -> Result<Vec<Value>, &'static str> {
    let mut out = Vec::with_capacity(messages.len());
    // Calls of the latest assistant message that no tool result has answered yet.
    let mut unanswered: VecDeque<String> = VecDeque::new();
    for (i, message) in messages.iter().enumerate() {
        let obj = message.as_object().ok_or("malformed_message")?;
        let role = match role(message) {
            r @ ("system" | "user" | "assistant" | "tool") => r,
            "developer" => {
                bump(converted, "developer_to_system");
                "system"
            }
            "function" => {
                bump(converted, "function_to_tool");
                "tool"
            }
            _ => return Err("unknown_role"),
        };
        let kept: &[&str] = match role {
            "assistant" => &[
                "role",
                "content",
                "name",
                "tool_calls",
                "function_call",
                "weight",
            ],
            "tool" => &["role", "content", "tool_call_id"],
            _ => &["role", "content", "name"],
        };
        for key in obj.keys() {
            // A legacy `function` result names its function; the `tool_call_id` replaces it.
            let legacy_name = role == "tool" && key == "name";
            if !(kept.contains(&key.as_str()) || legacy_name) {
                bump(converted, "fields_dropped");
            }
        }
        let content = match obj.get("content") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(parts)) => Some(join_text_parts(parts, converted)?),
            None | Some(Value::Null) => None,
            Some(_) => return Err("malformed_message"),
        };
        let mut m = Map::new();
        m.insert("role".into(), role.into());
        match role {
            "assistant" => {
                let mut calls = Vec::new();
                for call in obj
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    calls.push(tool_call(call, i, calls.len(), converted)?);
                }
                if let Some(function) = obj.get("function_call") {
                    bump(converted, "function_call_to_tool_calls");
                    let call = json!({"function": function});
                    calls.push(tool_call(&call, i, calls.len(), converted)?);
                }
                if content.is_none() && calls.is_empty() {
                    return Err("empty_message");
                }
                unanswered = calls
                    .iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect();
                if let Some(c) = content {
                    m.insert("content".into(), c.into());
                }
                if !calls.is_empty() {
                    m.insert("tool_calls".into(), calls.into());
                }
                match obj.get("weight").and_then(Value::as_u64) {
                    Some(w @ (0 | 1)) => _ = m.insert("weight".into(), w.into()),
                    _ if obj.contains_key("weight") => bump(converted, "fields_dropped"),
                    _ => {}
                }
            }
            "tool" => {
                let given = obj.get("tool_call_id").and_then(Value::as_str);
                let id = match given {
                    Some(id) => {
                        unanswered.retain(|u| u != id);
                        id.to_owned()
                    }
                    None => {
                        bump(converted, "tool_call_id_added");
                        unanswered.pop_front().ok_or("orphan_tool_result")?
                    }
                };
                m.insert("tool_call_id".into(), id.into());
                m.insert("content".into(), content.unwrap_or_default().into());
            }
            _ => {
                m.insert("content".into(), content.ok_or("empty_message")?.into());
            }
        }
        if role != "tool" {
            match obj.get("name").and_then(Value::as_str) {
                Some(name) if valid_name(name) => _ = m.insert("name".into(), name.into()),
                Some(_) => bump(converted, "name_dropped"),
                None => {}
            }
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

fn tool_call(
    call: &Value,
    message: usize,
    index: usize,
    converted: &mut Counts,
) -> Result<Value, &'static str> {
    let function = call.get("function").ok_or("malformed_tool_call")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("malformed_tool_call")?;
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            bump(converted, "arguments_stringified");
            "{}".to_owned()
        }
        Some(other) => {
            bump(converted, "arguments_stringified");
            other.to_string()
        }
    };
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            bump(converted, "tool_call_id_added");
            format!("call_{message}_{index}")
        }
    };
    Ok(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
}

/// Text parts joined with newlines; any other part (image, audio, file) is refused.
fn join_text_parts(parts: &[Value], converted: &mut Counts) -> Result<String, &'static str> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Value::String(s) => texts.push(s.as_str()),
            Value::Object(p) => match (p.get("type").and_then(Value::as_str), p.get("text")) {
                (None | Some("text"), Some(Value::String(t))) => texts.push(t),
                _ => return Err("non_text_content"),
            },
            _ => return Err("non_text_content"),
        }
    }
    bump(converted, "content_parts_joined");
    Ok(texts.join("\n"))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn converts_what_openai_would_refuse_and_counts_it() {
        let m = msgs(json!([
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "name": "USER_A", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}]},
            {"role": "assistant", "content": null, "reasoning": "x", "function_call": {"name": "weather", "arguments": {"city": "Oslo"}}},
            {"role": "function", "name": "weather", "content": "{\"temp\": 3}"},
            {"role": "assistant", "name": "bot 1", "content": "3 °C.", "weight": 1},
        ]));
        let mut counts = Counts::new();
        let out = chat_example(&m, &mut counts).unwrap();
        assert_eq!(
            Value::Array(out),
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "name": "USER_A", "content": "Weather\nin Oslo?"},
                {"role": "assistant", "tool_calls": [{"id": "call_2_0", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_2_0", "content": "{\"temp\": 3}"},
                {"role": "assistant", "content": "3 °C.", "weight": 1},
            ])
        );
        let expected: Counts = [
            ("arguments_stringified", 1),
            ("content_parts_joined", 1),
            ("developer_to_system", 1),
            ("fields_dropped", 1),
            ("function_call_to_tool_calls", 1),
            ("function_to_tool", 1),
            ("name_dropped", 1),
            ("tool_call_id_added", 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(counts, expected);
    }

    #[test]
    fn refuses_what_cannot_be_converted() {
        let mut counts = Counts::new();
        let image = msgs(json!([
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "A cat."},
        ]));
        assert_eq!(chat_example(&image, &mut counts), Err("non_text_content"));
        let orphan = msgs(json!([
            {"role": "user", "content": "hi"},
            {"role": "tool", "content": "stray"},
            {"role": "assistant", "content": "ok"},
        ]));
        assert_eq!(
            chat_example(&orphan, &mut counts),
            Err("orphan_tool_result")
        );
        let no_reply = msgs(json!([{"role": "user", "content": "hi"}]));
        assert_eq!(
            chat_example(&no_reply, &mut counts),
            Err("no_assistant_message")
        );
    }

    #[test]
    fn preference_outputs_are_single_text_replies() {
        let mut counts = Counts::new();
        let prompt = msgs(json!([{"role": "user", "content": "2+2?"}]));
        let good = msgs(json!([{"role": "assistant", "content": "4"}]));
        let bad = msgs(json!([{"role": "assistant", "content": [{"type": "text", "text": "5"}]}]));
        let line = preference_example(&prompt, &good, &bad, &mut counts).unwrap();
        assert_eq!(
            line,
            json!({
                "input": {"messages": [{"role": "user", "content": "2+2?"}]},
                "preferred_output": [{"role": "assistant", "content": "4"}],
                "non_preferred_output": [{"role": "assistant", "content": "5"}],
            })
        );
        let two = msgs(
            json!([{"role": "assistant", "content": "4"}, {"role": "assistant", "content": "!"}]),
        );
        assert_eq!(
            preference_example(&prompt, &two, &good, &mut counts),
            Err("reply_not_one_text_message")
        );
    }
}
