//! Reading a provider's answer: the completion out of a success body, and a short, useful
//! detail out of an error body.

use super::*;

/// Turns a success body into a response, or says why it is not one.
pub(super) fn parse_completion(body: &str, requested_model: &str) -> Result<ChatResponse, Error> {
    let json: Value = serde_json::from_str(body).map_err(|e| Error::Malformed {
        detail: format!("body is not JSON ({e}): {}", excerpt(body)),
    })?;
    if let Some(error) = json.get("error").filter(|e| !e.is_null()) {
        return Err(api_error(error));
    }
    let Some(choices) = json.get("choices").and_then(Value::as_array) else {
        return Err(Error::Malformed {
            detail: format!("no `choices` array: {}", excerpt(body)),
        });
    };
    let Some(first) = choices.first() else {
        return Err(Error::Empty);
    };
    let Some(message) = first.get("message").filter(|m| m.is_object()) else {
        return Err(Error::Malformed {
            detail: format!("`choices[0]` has no `message`: {}", excerpt(body)),
        });
    };
    let content =
        extract_content(message.get("content").unwrap_or(&Value::Null)).ok_or_else(|| {
            Error::Malformed {
                detail: format!(
                    "`message.content` is neither text nor parts: {}",
                    excerpt(body)
                ),
            }
        })?;
    if content.trim().is_empty() {
        return Err(Error::Empty);
    }
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(requested_model)
        .to_owned();
    // Usage is informational: a provider with odd accounting should not fail the answer.
    let usage = json.get("usage").and_then(|u| Usage::deserialize(u).ok());
    Ok(ChatResponse {
        content,
        model,
        usage,
        attempts: 0,
    })
}

/// Content as a string, from a plain string or an array of `{type:"text", text}` parts;
/// `null` (tool calls, refusals) counts as empty. `None` for any other shape.
pub(super) fn extract_content(content: &Value) -> Option<String> {
    match content {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text")
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn api_error(error: &Value) -> Error {
    let code = match error.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = match error {
        Value::String(s) => s.clone(),
        _ => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string()),
    };
    Error::Api {
        code,
        message: truncate(&message),
    }
}

/// The provider's message from an error body (`{"error":{"message"}}`, `{"error":"…"}` or
/// `{"message"}`), else the body itself; short and on one line either way.
pub(super) fn provider_detail(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|json| {
        let message = match json.get("error") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(error) => error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => None,
        };
        message.or_else(|| {
            json.get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    });
    let detail = from_json.unwrap_or_else(|| body.to_owned());
    if detail.trim().is_empty() {
        "no details given".into()
    } else {
        excerpt(&detail)
    }
}

/// Whitespace-collapsed, truncated text for error messages.
pub(super) fn excerpt(text: &str) -> String {
    truncate(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

pub(super) fn truncate(text: &str) -> String {
    match text.char_indices().nth(DETAIL_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
