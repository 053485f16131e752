//! The evolving playbook (`playbook.yaml`): a version, the history of updates and telemetry
//! metrics, with every other key kept as it was.
//!
//! The document is held as a YAML mapping so keys Phoenix does not know survive a round trip
//! in their original order. Comments inside the document cannot survive: the serde-based YAML
//! crates (serde_norway here) drop them when parsing. The comment block at the top of the
//! file, the one a template or a person most often writes, is kept verbatim.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

/// The seed's template, as a new agent receives it.
pub const TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/templates/playbook.yaml"
));

/// Why a playbook cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not YAML at all.
    #[error("playbook.yaml line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// YAML, but not the shape of a playbook.
    #[error("playbook.yaml{}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        /// 1-based line of the offending key, when it can be found.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Could not be written back as YAML.
    #[error("cannot write playbook.yaml: {0}")]
    Serialize(String),
}

/// A parsed playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    header: String,
    doc: Mapping,
}

impl Playbook {
    /// Parses and checks `version`, `updates` and `telemetry`; other keys are kept untouched.
    pub fn parse(text: &str) -> Result<Playbook, Error> {
        let value: Value = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            Error::Syntax {
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let doc = match value {
            Value::Mapping(m) => m,
            Value::Null => {
                return Err(Error::Invalid {
                    line: None,
                    message: "the file is empty; expected at least `version: 1`".to_owned(),
                });
            }
            _ => {
                return Err(Error::Invalid {
                    line: Some(first_content_line(text)),
                    message: "expected a mapping with `version`, `updates` and `telemetry`"
                        .to_owned(),
                });
            }
        };
        let invalid = |key: &str, message: String| Error::Invalid {
            line: line_of_key(text, key),
            message,
        };
        match doc.get("version") {
            Some(v)
                if v.as_u64()
                    .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX)) => {}
            Some(v) => {
                return Err(invalid(
                    "version",
                    format!(
                        "`version` must be a whole number of at least 1, not {}",
                        describe(v)
                    ),
                ));
            }
            None => {
                return Err(Error::Invalid {
                    line: None,
                    message: "`version` is missing".to_owned(),
                });
            }
        }
        match doc.get("updates") {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(items)) => {
                if let Some((i, item)) = items.iter().enumerate().find(|(_, v)| !v.is_string()) {
                    return Err(invalid(
                        "updates",
                        format!(
                            "`updates` item {} must be a string, not {}",
                            i + 1,
                            describe(item)
                        ),
                    ));
                }
            }
            Some(v) => {
                return Err(invalid(
                    "updates",
                    format!("`updates` must be a list, not {}", describe(v)),
                ));
            }
        }
        match doc.get("telemetry") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    if !k.is_string() || !v.is_number() {
                        return Err(invalid(
                            "telemetry",
                            format!(
                                "`telemetry` maps metric names to numbers; {} is {}",
                                describe(k),
                                describe(v)
                            ),
                        ));
                    }
                }
            }
            Some(v) => {
                return Err(invalid(
                    "telemetry",
                    format!("`telemetry` must be a mapping, not {}", describe(v)),
                ));
            }
        }
        Ok(Playbook {
            header: leading_comments(text),
            doc,
        })
    }

    /// The playbook's version.
    pub fn version(&self) -> u32 {
        self.doc
            .get("version")
            .and_then(Value::as_u64)
            .map(|v| v as u32)
            .unwrap_or(1)
    }

    /// The update history, oldest first.
    pub fn updates(&self) -> Vec<String> {
        match self.doc.get("updates") {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The latest update note, if any.
    pub fn last_update(&self) -> Option<String> {
        self.updates().pop()
    }

    /// The telemetry metrics.
    pub fn telemetry(&self) -> BTreeMap<String, f64> {
        match self.doc.get("telemetry") {
            Some(Value::Mapping(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_f64()?)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The next version: `version + 1`, `note` appended to `updates`, `metrics` merged into
    /// `telemetry` (a metric already present takes the new value).
    pub fn evolved(&self, note: &str, metrics: &BTreeMap<String, f64>) -> Playbook {
        let mut doc = self.doc.clone();
        doc.insert(
            Value::from("version"),
            Value::from(u64::from(self.version()) + 1),
        );
        let mut updates: Vec<Value> = self.updates().into_iter().map(Value::from).collect();
        updates.push(Value::from(note));
        doc.insert(Value::from("updates"), Value::Sequence(updates));
        let mut telemetry = match doc.get("telemetry") {
            Some(Value::Mapping(m)) => m.clone(),
            _ => Mapping::new(),
        };
        for (k, v) in metrics {
            telemetry.insert(Value::from(k.as_str()), metric_value(*v));
        }
        doc.insert(Value::from("telemetry"), Value::Mapping(telemetry));
        Playbook {
            header: self.header.clone(),
            doc,
        }
    }

    /// The YAML text: the original header comments, then the document.
    pub fn to_yaml(&self) -> Result<String, Error> {
        let body =
            serde_norway::to_string(&self.doc).map_err(|e| Error::Serialize(e.to_string()))?;
        Ok(format!("{}{body}", self.header))
    }
}

/// Whole numbers are written as integers so `requests: 12` does not become `12.0`.
fn metric_value(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The comment and blank lines before the first line of content.
fn leading_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') || t.is_empty() {
            out.push_str(line);
            out.push('\n');
        } else {
            break;
        }
    }
    // Trailing blank lines separate header and body; keep at most one.
    while out.ends_with("\n\n\n") {
        out.pop();
    }
    if out.trim().is_empty() {
        String::new()
    } else {
        out
    }
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The 1-based line of a top-level `key:`.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_version_1_with_nothing_in_it() {
        let p = Playbook::parse(TEMPLATE).unwrap();
        assert_eq!(p.version(), 1);
        assert!(p.updates().is_empty());
        assert!(p.telemetry().is_empty());
    }

    #[test]
    fn evolving_bumps_appends_merges_and_keeps_unknown_keys_and_header() {
        let text = "# My playbook\n# keep me\n\nversion: 3\nowner: team-a\nupdates:\n- first\ntelemetry:\n  latency_ms: 120\n  accuracy: 0.9\nrules:\n  max_retries: 2\n";
        let p = Playbook::parse(text).unwrap();
        let metrics = BTreeMap::from([("latency_ms".to_owned(), 95.0), ("errors".to_owned(), 0.5)]);
        let next = p.evolved("faster retries", &metrics);
        let out = next.to_yaml().unwrap();
        assert!(out.starts_with("# My playbook\n# keep me\n\n"), "{out}");
        let again = Playbook::parse(&out).unwrap();
        assert_eq!(again.version(), 4);
        assert_eq!(again.updates(), vec!["first", "faster retries"]);
        let t = again.telemetry();
        assert_eq!(t["latency_ms"], 95.0);
        assert_eq!(t["accuracy"], 0.9);
        assert_eq!(t["errors"], 0.5);
        assert!(out.contains("owner: team-a"), "{out}");
        assert!(out.contains("max_retries: 2"), "{out}");
        assert!(
            out.contains("latency_ms: 95\n"),
            "integers stay integers: {out}"
        );
        // Unknown keys keep their place: owner still comes before rules.
        assert!(out.find("owner").unwrap() < out.find("rules").unwrap());
    }

    #[test]
    fn errors_name_the_line() {
        let err = Playbook::parse("version: 1\nupdates: [unclosed\n").unwrap_err();
        assert!(matches!(err, Error::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line "), "{err}");

        let err = Playbook::parse("# c\nversion: 1\nupdates: []\ntelemetry:\n  speed: fast\n")
            .unwrap_err();
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            "playbook.yaml line 4"
        );
        assert!(err.to_string().contains("\"fast\""), "{err}");

        let err = Playbook::parse("version: two\n").unwrap_err();
        assert!(
            err.to_string().starts_with("playbook.yaml line 1:"),
            "{err}"
        );
        let err = Playbook::parse("updates: []\n").unwrap_err();
        assert!(err.to_string().contains("`version` is missing"), "{err}");
        let err = Playbook::parse("").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = Playbook::parse("- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
