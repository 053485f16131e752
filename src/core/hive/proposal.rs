//! A worker's proposal: the JSON shape workers are asked for, a plain-text fallback, and the
//! checks that make a proposal safe to turn into a hot update.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::updates::UpdateType;

/// Longest title kept; longer ones are cut with `…`.
pub const TITLE_LIMIT: usize = 160;
/// Longest rationale kept; longer ones are cut with `…`.
pub const RATIONALE_LIMIT: usize = 4000;
/// Longest model id accepted in a model_tweak.
const MODEL_LIMIT: usize = 200;

/// One improvement proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// One line saying what to change.
    pub title: String,
    /// Why it helps and how to tell; may be empty for a one-line plain-text answer.
    pub rationale: String,
    /// The hot update that carries it out, when the worker named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<ProposedUpdate>,
}

/// A hot update a proposal can be published as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProposedUpdate {
    /// Switch the agents' default model.
    ModelTweak {
        /// Provider model id, e.g. `anthropic/claude-3-haiku`.
        model: String,
    },
    /// Replace the agents' default system prompt.
    PromptTweak {
        /// The complete new prompt.
        prompt: String,
    },
}

impl ProposedUpdate {
    /// The update type it is published as.
    pub fn update_type(&self) -> UpdateType {
        match self {
            ProposedUpdate::ModelTweak { .. } => UpdateType::ModelTweak,
            ProposedUpdate::PromptTweak { .. } => UpdateType::PromptTweak,
        }
    }

    /// The `payload` of the `UpdateEnvelope` (DESIGN.md: `{"default_model"}` / `{"default_prompt"}`).
    pub fn payload(&self) -> Value {
        match self {
            ProposedUpdate::ModelTweak { model } => json!({ "default_model": model }),
            ProposedUpdate::PromptTweak { prompt } => json!({ "default_prompt": prompt }),
        }
    }

    /// `model_tweak anthropic/claude-3-haiku`, `prompt_tweak "You are…"`.
    pub fn describe(&self, max_chars: usize) -> String {
        match self {
            ProposedUpdate::ModelTweak { model } => format!("model_tweak {model}"),
            ProposedUpdate::PromptTweak { prompt } => {
                format!("prompt_tweak {:?}", cut(prompt.trim(), max_chars))
            }
        }
    }
}

impl Proposal {
    /// The text compared for duplicates and shown in a worker's slot.
    pub fn text(&self) -> String {
        if self.rationale.is_empty() {
            self.title.clone()
        } else {
            format!("{}: {}", self.title, self.rationale)
        }
    }
}

/// Reads a worker's answer: the JSON object it was asked for (bare, fenced in ``` or with
/// words around it), else plain text whose first line is the title.
///
/// An answer that tries to be JSON but is broken or breaks the rules is an error, so the
/// queen retries the worker instead of passing garbage on as a proposal.
pub fn parse(answer: &str) -> Result<Proposal, String> {
    let answer = answer.trim();
    if answer.is_empty() {
        return Err("the answer is empty".to_owned());
    }
    match extract_json_object(answer) {
        Some(Ok(object)) => from_json(&object),
        Some(Err(e)) => Err(format!("the answer looks like JSON but is not valid: {e}")),
        None => from_text(answer),
    }
}

/// The JSON object in an LLM answer: the whole answer, a ```json fence, or the span from the
/// first `{` to the last `}`. `None` when the answer holds no `{…}` at all.
pub fn extract_json_object(answer: &str) -> Option<Result<Map<String, Value>, String>> {
    let trimmed = answer.trim();
    let fenced = fenced_block(trimmed);
    let candidate = fenced.unwrap_or(trimmed);
    let start = candidate.find('{')?;
    // Prose that merely mentions braces ("use {placeholders}") is not an attempt at JSON.
    let looks_like_json = fenced.is_some()
        || start == 0
        || candidate[start..]
            .trim_start_matches('{')
            .trim_start()
            .starts_with('"');
    if !looks_like_json {
        return None;
    }
    let Some(end) = candidate.rfind('}').filter(|&end| end > start) else {
        return Some(Err("the object is not closed (cut off?)".to_owned()));
    };
    Some(
        match serde_json::from_str::<Value>(&candidate[start..=end]) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("not an object".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    )
}

/// The body of the first ``` fence, if the text has one.
fn fenced_block(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after = &text[open + 3..];
    // Skip the info string (`json`) up to the end of the line.
    let body_start = after.find('\n').map(|i| i + 1)?;
    let body = &after[body_start..];
    let close = body.find("```")?;
    Some(body[..close].trim())
}

fn from_json(object: &Map<String, Value>) -> Result<Proposal, String> {
    let title = match object.get("title") {
        Some(Value::String(s)) if !s.trim().is_empty() => one_line(s),
        Some(Value::String(_)) | None => return Err("`title` is missing or empty".to_owned()),
        Some(other) => return Err(format!("`title` is not a string: {other}")),
    };
    let rationale = match object.get("rationale") {
        Some(Value::String(s)) => cut(s.trim(), RATIONALE_LIMIT),
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(format!("`rationale` is not a string: {other}")),
    };
    let update = match object.get("update") {
        None | Some(Value::Null) => None,
        Some(Value::Object(u)) => Some(update_from_json(u)?),
        Some(other) => return Err(format!("`update` is not an object: {other}")),
    };
    Ok(Proposal {
        title,
        rationale,
        update,
    })
}

fn update_from_json(u: &Map<String, Value>) -> Result<ProposedUpdate, String> {
    let kind = u
        .get("type")
        .and_then(Value::as_str)
        .map(|t| t.trim().replace('-', "_"))
        .ok_or("`update.type` is missing")?;
    // The envelope's own payload names (`default_model`) are accepted as well.
    let text = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|k| u.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    match kind.as_str() {
        "model_tweak" => {
            let model = text(["model", "default_model"])
                .ok_or("`update.model` is missing or empty for a model_tweak")?;
            if model.chars().any(char::is_whitespace) || model.chars().count() > MODEL_LIMIT {
                return Err(format!(
                    "`update.model` {:?} is not a model id (no spaces, at most {MODEL_LIMIT} characters)",
                    cut(model, 60)
                ));
            }
            Ok(ProposedUpdate::ModelTweak {
                model: model.to_owned(),
            })
        }
        "prompt_tweak" => {
            let prompt = text(["prompt", "default_prompt"])
                .ok_or("`update.prompt` is missing or empty for a prompt_tweak")?;
            Ok(ProposedUpdate::PromptTweak {
                prompt: prompt.to_owned(),
            })
        }
        other => Err(format!(
            "`update.type` {other:?} is not model_tweak or prompt_tweak"
        )),
    }
}

fn from_text(answer: &str) -> Result<Proposal, String> {
    let mut lines = answer.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().ok_or("the answer is empty")?;
    let title = one_line(strip_marker(first));
    if title.is_empty() {
        return Err("the answer has no title line".to_owned());
    }
    let rationale = cut(&lines.collect::<Vec<_>>().join(" "), RATIONALE_LIMIT);
    Ok(Proposal {
        title,
        rationale,
        update: None,
    })
}

/// `# Title`, `- item`, `1. item`, `**Title:** x` → the words.
fn strip_marker(line: &str) -> &str {
    let line = line.trim_start_matches(['#', '-', '*', '>', ' ']);
    let line = match line.split_once(". ") {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    };
    let line = line.trim().trim_matches('*').trim();
    for prefix in ["Title:", "title:", "Proposal:", "proposal:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().trim_matches('*').trim();
        }
    }
    line
}

fn one_line(s: &str) -> String {
    cut(
        &s.split_whitespace().collect::<Vec<_>>().join(" "),
        TITLE_LIMIT,
    )
}

/// At most `max` characters, marking a cut with `…`.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_read_bare_fenced_or_wrapped_in_words() {
        let bare = r#"{"title": "Cache embeddings", "rationale": "Cuts p95.", "update": {"type": "model_tweak", "model": "anthropic/claude-3-haiku"}}"#;
        let p = parse(bare).unwrap();
        assert_eq!(p.title, "Cache embeddings");
        assert_eq!(p.rationale, "Cuts p95.");
        assert_eq!(
            p.update,
            Some(ProposedUpdate::ModelTweak {
                model: "anthropic/claude-3-haiku".into()
            })
        );
        let fenced = format!("Here you go:\n```json\n{bare}\n```\nHope it helps.");
        assert_eq!(parse(&fenced).unwrap(), p);
        let wrapped = format!("Sure! {bare} That's my proposal.");
        assert_eq!(parse(&wrapped).unwrap(), p);
    }

    #[test]
    fn envelope_payload_names_and_dashes_are_accepted() {
        let p = parse(
            r#"{"title":"Warmer","update":{"type":"prompt-tweak","default_prompt":"Be warm."}}"#,
        )
        .unwrap();
        assert_eq!(
            p.update,
            Some(ProposedUpdate::PromptTweak {
                prompt: "Be warm.".into()
            })
        );
        assert_eq!(p.rationale, "");
        assert_eq!(
            p.update.unwrap().payload(),
            json!({"default_prompt": "Be warm."})
        );
    }

    #[test]
    fn plain_text_falls_back_to_title_and_rationale() {
        let p =
            parse("## 1. **Add a memory index**\nKeep an HNSW index.\n\nRebuild nightly.").unwrap();
        assert_eq!(p.title, "Add a memory index");
        assert_eq!(p.rationale, "Keep an HNSW index. Rebuild nightly.");
        assert_eq!(p.update, None);
        // Braces in prose are not mistaken for JSON.
        let p = parse("Use {placeholders} in the prompt").unwrap();
        assert_eq!(p.title, "Use {placeholders} in the prompt");
    }

    #[test]
    fn broken_or_invalid_json_is_an_error_naming_the_problem() {
        for (answer, needle) in [
            (r#"{"title": "x", "#, "not closed"),
            (r#"{"title": "x",, }"#, "not valid"),
            (r#"{"rationale": "no title"}"#, "`title`"),
            (r#"{"title": 3}"#, "`title` is not a string"),
            (
                r#"{"title":"t","update":{"type":"json_patch"}}"#,
                "not model_tweak or prompt_tweak",
            ),
            (
                r#"{"title":"t","update":{"type":"model_tweak","model":"a fast model"}}"#,
                "is not a model id",
            ),
            (
                r#"{"title":"t","update":{"type":"prompt_tweak","prompt":"  "}}"#,
                "`update.prompt`",
            ),
            ("   ", "empty"),
        ] {
            let err = parse(answer).unwrap_err();
            assert!(err.contains(needle), "{answer}: {err}");
        }
    }

    #[test]
    fn long_titles_are_cut_to_one_line() {
        let long = format!(r#"{{"title": "{}\nsecond line"}}"#, "word ".repeat(100));
        let p = parse(&long).unwrap();
        assert!(!p.title.contains('\n'));
        assert_eq!(p.title.chars().count(), TITLE_LIMIT + 1);
        assert!(p.title.ends_with('…'));
    }
}
