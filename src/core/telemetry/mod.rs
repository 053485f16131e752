//! Telemetry envelopes as agents send them, their validation, and the stored form.
//!
//! Wire types: depends only on `shared::json`.
//!
//! The wire shape is the seed's `TelemetryEnvelope`; a request body holds one envelope, a
//! JSON array of them, or NDJSON. Parsing never stops at the first bad record: every
//! problem is collected so the client learns about all of them in one round trip.

pub mod conversation;
pub mod otlp;

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::shared::json::{self, CheckedJson};

/// Longest accepted `kind`, `orch_id`, tag or level.
pub const MAX_SHORT_FIELD: usize = 128;
/// Longest accepted `agent_path`.
pub const MAX_AGENT_PATH: usize = 256;
/// Most tags on one record.
pub const MAX_TAGS: usize = 32;
/// Timestamps later than now + this many seconds are refused (usually milliseconds sent
/// where seconds were meant).
pub const MAX_CLOCK_SKEW_SECS: i64 = 86_400;
/// How many record errors one response lists before summarising the rest.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// Levels accepted on the wire, in increasing severity. `warning` is stored as `warn`.
pub const LEVELS: &[&str] = &[
    "trace", "debug", "info", "notice", "warn", "error", "critical", "fatal",
];
/// The `kind` of the heartbeat every ORCH sends; the store keeps each ORCH's latest.
pub const HEARTBEAT_KIND: &str = "orch_heartbeat";
/// Levels counted as errors by the analysis.
pub const ERROR_LEVELS: &[&str] = &["error", "critical", "fatal"];

/// One telemetry event as an ORCH sends it (seed 001, "TelemetryEnvelope Structure").
///
/// Unknown fields are ignored so that newer agents can talk to older collectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryEnvelope {
    /// Raw ORCH identifier; anonymised before storage, never stored as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orch_id: Option<String>,
    /// Slash-separated agent path such as `root` or `code-gen/rust`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    /// Event time in Unix seconds; the collector's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_unix: Option<i64>,
    /// Event kind such as `orch_heartbeat` or `skill_execution`.
    pub kind: String,
    /// Severity (`info`, `warn`, `error`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Searchable tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Free-form JSON payload, kept verbatim.
    #[serde(default = "empty_payload")]
    pub payload: Box<RawValue>,
}

fn empty_payload() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("literal is valid JSON")
}

/// A record as stored and served back by `GET /telemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTelemetry {
    /// Collector-assigned identifier (UUID v7).
    pub id: String,
    /// Event time in Unix seconds.
    pub ts_unix: i64,
    /// When the collector committed it, Unix seconds.
    pub received_unix: i64,
    /// Event kind.
    pub kind: String,
    /// Normalised severity.
    pub level: Option<String>,
    /// Keyed hash of the ORCH id (`orch_` + 16 hex).
    pub orch_hash: Option<String>,
    /// Agent path.
    pub agent_path: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Payload.
    pub payload: serde_json::Value,
}

/// A validated envelope with its orch id already anonymised: exactly what the writer inserts.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Collector-assigned identifier.
    pub id: String,
    /// Event time.
    pub ts_unix: i64,
    /// Collector time at acceptance.
    pub received_unix: i64,
    /// Event kind.
    pub kind: String,
    /// Normalised level.
    pub level: Option<String>,
    /// Anonymised ORCH.
    pub orch_hash: Option<String>,
    /// Agent path.
    pub agent_path: Option<String>,
    /// Tags as a JSON array text, or `None` when there are none.
    pub tags_json: Option<String>,
    /// Payload JSON text as received.
    pub payload_json: String,
}

/// What is wrong with one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// Zero-based position of the record in the batch.
    pub index: usize,
    /// One-based NDJSON line, when the body was NDJSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The offending field, or `(record)` when the record is not an object at all.
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl RecordError {
    /// Where the record is, for humans: `line 4` for NDJSON, `record 3` otherwise.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("line {line}"),
            None => format!("record {}", self.index),
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.location(),
            self.field,
            self.message
        )
    }
}

/// How a request body lays out its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Decide from the first non-blank byte and from whether more than one document follows.
    Auto,
}

/// A body that could not be turned into envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The body holds no record at all.
    Empty,
    /// The body is not JSON/NDJSON at the top level.
    Malformed(String),
    /// Some records are invalid; none of the batch may be stored.
    Records {
        /// The bad records (all of them).
        errors: Vec<RecordError>,
        /// Records in the batch, good and bad.
        total: usize,
    },
}

/// Splits a body into envelopes, collecting every record error.
pub fn parse_body(body: &[u8], format: BodyFormat) -> Result<Vec<TelemetryEnvelope>, ParseError> {
    parse_records(body, format, decode_envelope)
}

/// Splits a body (one JSON object, a JSON array or NDJSON) into records with `decode`,
/// which gets each record's text, its zero-based index and, for NDJSON, its line. Every
/// record error is collected; any error refuses the whole batch.
pub fn parse_records<T>(
    body: &[u8],
    format: BodyFormat,
    decode: impl Fn(&str, usize, Option<usize>) -> Result<T, RecordError>,
) -> Result<Vec<T>, ParseError> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(ParseError::Empty);
    };
    let format = match format {
        BodyFormat::Auto if body[first] == b'[' => BodyFormat::Json,
        BodyFormat::Auto => {
            // A single object spread over several lines is JSON; several documents are NDJSON.
            let mut docs = serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>();
            match (docs.next(), docs.next()) {
                (Some(Ok(_)), None) => BodyFormat::Json,
                _ => BodyFormat::Ndjson,
            }
        }
        other => other,
    };
    match format {
        BodyFormat::Ndjson => parse_ndjson(body, decode),
        _ => parse_json(body, decode),
    }
}

fn parse_json<T>(
    body: &[u8],
    decode: impl Fn(&str, usize, Option<usize>) -> Result<T, RecordError>,
) -> Result<Vec<T>, ParseError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| ParseError::Malformed(json::body_error(&e)))?;
        if items.is_empty() {
            return Err(ParseError::Empty);
        }
        let total = items.len();
        let mut out = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, raw) in items.into_iter().enumerate() {
            match decode(raw.get(), index, None) {
                Ok(env) if errors.is_empty() => out.push(env),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ParseError::Records { errors, total })
        }
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| ParseError::Malformed("body is not UTF-8".to_owned()))?;
        // Check it is one JSON document before blaming a field.
        serde_json::from_str::<&RawValue>(text)
            .map_err(|e| ParseError::Malformed(json::body_error(&e)))?;
        decode(text, 0, None)
            .map(|e| vec![e])
            .map_err(|e| ParseError::Records {
                errors: vec![e],
                total: 1,
            })
    }
}

fn parse_ndjson<T>(
    body: &[u8],
    decode: impl Fn(&str, usize, Option<usize>) -> Result<T, RecordError>,
) -> Result<Vec<T>, ParseError> {
    let mut out = Vec::with_capacity(body.len() / 128 + 1);
    let mut errors = Vec::new();
    let mut index = 0;
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = match std::str::from_utf8(line) {
            Ok(text) => decode(text, index, Some(n + 1)),
            Err(_) => Err(RecordError {
                index,
                line: Some(n + 1),
                field: "(record)".to_owned(),
                message: "line is not UTF-8".to_owned(),
            }),
        };
        match result {
            Ok(env) if errors.is_empty() => out.push(env),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        index += 1;
    }
    if !errors.is_empty() {
        return Err(ParseError::Records {
            errors,
            total: index,
        });
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

/// Decodes and validates one record's JSON text.
pub fn decode_envelope(
    text: &str,
    index: usize,
    line: Option<usize>,
) -> Result<TelemetryEnvelope, RecordError> {
    let err = |field: &str, message: String| RecordError {
        index,
        line,
        field: field.to_owned(),
        message,
    };
    let mut env: TelemetryEnvelope = serde_json::from_str(text).map_err(|e| {
        if let Some(detail) = json::syntax_detail(&e, line) {
            return err("(record)", detail);
        }
        let msg = e.to_string();
        // serde_json says "missing field `kind`" / "invalid type: ..., expected i64" and
        // names fields in backticks; pull the field name out when it does.
        let field = field_from_serde_message(&msg, text, ENVELOPE_FIELDS)
            .unwrap_or_else(|| "(record)".to_owned());
        err(&field, strip_position(&msg))
    })?;
    validate(&mut env).map_err(|(field, message)| err(field, message))?;
    Ok(env)
}

/// A serde_json message without its "at line L column C" suffix.
pub(crate) fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(pos) => msg[..pos].to_owned(),
        None => msg.to_owned(),
    }
}

/// A serde message without the values it quotes (`invalid type: string "dan@…", expected
/// f64` becomes `invalid type: a string, expected f64`), so that an answer names what was
/// wrong without repeating what the client sent.
pub(crate) fn without_values(msg: &str) -> String {
    static QUOTED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r#"\bstring "(?:[^"\\]|\\.)*"|"#,
            r"\b(integer|floating point|character|boolean) `[^`]*`|",
            r"\bunknown (variant|field) `[^`]*`",
        ))
        .expect("valid pattern")
    });
    QUOTED
        .replace_all(msg, |c: &regex::Captures<'_>| {
            match (c.get(1).map(|k| k.as_str()), c.get(2)) {
                (Some("integer"), _) => "an integer".to_owned(),
                (Some("floating point"), _) => "a number".to_owned(),
                (Some(kind), _) => format!("a {kind}"),
                (None, Some(kind)) => format!("unknown {}", kind.as_str()),
                (None, None) => "a string".to_owned(),
            }
        })
        .into_owned()
}

/// The fields of an envelope, for naming the one a serde error is about.
const ENVELOPE_FIELDS: &[&str] = &[
    "orch_id",
    "agent_path",
    "ts_unix",
    "kind",
    "level",
    "tags",
    "payload",
];

/// The field (one of `fields`) a serde_json error message is about, when it can tell.
pub(crate) fn field_from_serde_message(msg: &str, text: &str, fields: &[&str]) -> Option<String> {
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return rest.split('`').next().map(str::to_owned);
    }
    if msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.starts_with("invalid length")
    {
        // serde_json reports the column just after the bad value: the nearest key before it
        // is the field.
        let col = msg
            .rsplit(" column ")
            .next()?
            .trim()
            .parse::<usize>()
            .ok()?;
        let line_no = msg
            .split(" at line ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse::<usize>()
            .ok()?;
        let line = text.lines().nth(line_no.checked_sub(1)?)?;
        let upto = &line[..col.min(line.len())];
        for field in fields {
            let key = format!("\"{field}\"");
            if let Some(pos) = upto.rfind(&key) {
                let after = &upto[pos + key.len()..];
                if !after.contains("\":") {
                    return Some((*field).to_owned());
                }
            }
        }
        return None;
    }
    if msg.starts_with("invalid type: ") && msg.contains("expected struct") {
        return Some("(record)".to_owned());
    }
    None
}

/// Checks and normalises the fields of a decoded envelope.
fn validate(env: &mut TelemetryEnvelope) -> Result<(), (&'static str, String)> {
    // RawValue checks the syntax only: numbers out of f64 range (1e400) and lone surrogate
    // escapes pass it but could never be read back, so they are refused here.
    if let Err(e) = serde_json::from_str::<CheckedJson>(env.payload.get()) {
        return Err(("payload", strip_position(&e.to_string())));
    }
    let kind = env.kind.trim();
    if kind.is_empty() {
        return Err(("kind", "must not be empty".to_owned()));
    }
    if kind.len() > MAX_SHORT_FIELD {
        return Err((
            "kind",
            format!("is {} bytes, at most {MAX_SHORT_FIELD} allowed", kind.len()),
        ));
    }
    if kind.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err((
            "kind",
            "must not contain whitespace or control characters".to_owned(),
        ));
    }
    if kind.len() != env.kind.len() {
        env.kind = kind.to_owned();
    }
    if let Some(id) = &env.orch_id {
        if id.trim().is_empty() {
            return Err(("orch_id", "must not be empty when present".to_owned()));
        }
        if id.len() > MAX_SHORT_FIELD * 2 {
            return Err((
                "orch_id",
                format!(
                    "is {} bytes, at most {} allowed",
                    id.len(),
                    MAX_SHORT_FIELD * 2
                ),
            ));
        }
    }
    if let Some(path) = &env.agent_path {
        validate_agent_path(path).map_err(|m| ("agent_path", m))?;
    }
    if let Some(ts) = env.ts_unix {
        if ts < 0 {
            return Err(("ts_unix", "must not be negative".to_owned()));
        }
        let now = now_unix();
        if ts > now + MAX_CLOCK_SKEW_SECS {
            let hint = if ts > 100_000_000_000 {
                " (milliseconds? ts_unix is in seconds)"
            } else {
                ""
            };
            return Err((
                "ts_unix",
                format!("{ts} is more than a day in the future{hint}"),
            ));
        }
    }
    if let Some(level) = &env.level {
        env.level = Some(normalize_level(level).ok_or_else(|| {
            (
                "level",
                format!(
                    "unknown level {level:?}; expected one of {}",
                    LEVELS.join(", ")
                ),
            )
        })?);
    }
    if let Some(tags) = &env.tags {
        if tags.len() > MAX_TAGS {
            return Err((
                "tags",
                format!("has {} tags, at most {MAX_TAGS} allowed", tags.len()),
            ));
        }
        for tag in tags {
            if tag.is_empty() || tag.len() > MAX_SHORT_FIELD {
                return Err((
                    "tags",
                    format!("each tag must be 1..={MAX_SHORT_FIELD} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// Lower-cases a level and maps aliases (`warning` → `warn`); `None` when unknown.
pub fn normalize_level(level: &str) -> Option<String> {
    let lower = level.trim().to_ascii_lowercase();
    let lower = match lower.as_str() {
        "warning" => "warn".to_owned(),
        "err" => "error".to_owned(),
        "crit" => "critical".to_owned(),
        _ => lower,
    };
    LEVELS.contains(&lower.as_str()).then_some(lower)
}

/// An agent path is 1..=256 bytes of non-empty, whitespace-free segments joined by `/`.
pub fn validate_agent_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty when present".to_owned());
    }
    if path.len() > MAX_AGENT_PATH {
        return Err(format!(
            "is {} bytes, at most {MAX_AGENT_PATH} allowed",
            path.len()
        ));
    }
    // The messages name the problem, not the path: an answer must not repeat what a client
    // sent (a path can hold an address).
    if path.split('/').any(str::is_empty) {
        return Err("has an empty segment (leading, trailing or doubled '/')".to_owned());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".to_owned());
    }
    Ok(())
}

/// True when `path` equals `prefix` or lies below it, segment-wise: `code-gen` matches
/// `code-gen` and `code-gen/rust`, never `code-generator`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The current time in Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(err: ParseError) -> Vec<RecordError> {
        match err {
            ParseError::Records { errors, .. } => errors,
            other => panic!("expected record errors, got {other:?}"),
        }
    }

    #[test]
    fn single_object_array_and_ndjson_parse() {
        let one = br#"{"kind":"orch_heartbeat","payload":{"a":1}}"#;
        assert_eq!(parse_body(one, BodyFormat::Auto).unwrap().len(), 1);
        let arr = br#"[{"kind":"a"},{"kind":"b","level":"WARNING"}]"#;
        let parsed = parse_body(arr, BodyFormat::Auto).unwrap();
        assert_eq!(parsed[1].level.as_deref(), Some("warn"));
        assert_eq!(parsed[0].payload.get(), "{}");
        let nd = b"{\"kind\":\"a\"}\n\n{\"kind\":\"b\"}\r\n";
        assert_eq!(parse_body(nd, BodyFormat::Auto).unwrap().len(), 2);
        assert_eq!(parse_body(nd, BodyFormat::Ndjson).unwrap().len(), 2);
        let pretty = b"{\n  \"kind\": \"a\"\n}\n";
        assert_eq!(parse_body(pretty, BodyFormat::Auto).unwrap().len(), 1);
    }

    #[test]
    fn every_bad_record_is_named() {
        let nd = b"{\"kind\":\"ok\"}\n{\"level\":\"info\"}\n{\"kind\":\"x\",\"ts_unix\":\"soon\"}\nnot json\n";
        let errs = records(parse_body(nd, BodyFormat::Ndjson).unwrap_err());
        assert_eq!(errs.len(), 3);
        assert_eq!((errs[0].line, errs[0].field.as_str()), (Some(2), "kind"));
        assert_eq!((errs[1].line, errs[1].field.as_str()), (Some(3), "ts_unix"));
        assert_eq!(
            (errs[2].line, errs[2].field.as_str()),
            (Some(4), "(record)")
        );
        assert!(
            errs[0].to_string().starts_with("line 2: field `kind`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn field_rules() {
        let cases = [
            (r#"{"kind":""}"#, "kind"),
            (r#"{"kind":"a b"}"#, "kind"),
            (r#"{"kind":"a","level":"loud"}"#, "level"),
            (r#"{"kind":"a","agent_path":"a//b"}"#, "agent_path"),
            (r#"{"kind":"a","agent_path":"/a"}"#, "agent_path"),
            (r#"{"kind":"a","ts_unix":-1}"#, "ts_unix"),
            (r#"{"kind":"a","ts_unix":1700000000000}"#, "ts_unix"),
            (r#"{"kind":"a","tags":[""]}"#, "tags"),
            (r#"{"kind":"a","tags":"x"}"#, "tags"),
            (r#"{"kind":"a","orch_id":""}"#, "orch_id"),
            (r#"[1]"#, "(record)"),
        ];
        for (body, field) in cases {
            let errs = records(parse_body(body.as_bytes(), BodyFormat::Auto).unwrap_err());
            assert_eq!(errs[0].field, field, "{body}: {}", errs[0]);
        }
        let ms = records(
            parse_body(br#"{"kind":"a","ts_unix":1700000000000}"#, BodyFormat::Auto).unwrap_err(),
        );
        assert!(ms[0].message.contains("milliseconds"));
    }

    #[test]
    fn empty_and_malformed_bodies() {
        assert_eq!(
            parse_body(b"  \n", BodyFormat::Auto).unwrap_err(),
            ParseError::Empty
        );
        assert_eq!(
            parse_body(b"[]", BodyFormat::Auto).unwrap_err(),
            ParseError::Empty
        );
        assert!(matches!(
            parse_body(b"[{\"kind\":1", BodyFormat::Auto).unwrap_err(),
            ParseError::Malformed(_)
        ));
        assert!(matches!(
            parse_body(b"{\"kind\":", BodyFormat::Json).unwrap_err(),
            ParseError::Malformed(_)
        ));
    }

    #[test]
    fn prefix_is_segment_aware() {
        assert!(path_has_prefix("code-gen", "code-gen"));
        assert!(path_has_prefix("code-gen/rust", "code-gen"));
        assert!(path_has_prefix("code-gen/rust", "code-gen/"));
        assert!(!path_has_prefix("code-generator", "code-gen"));
        assert!(!path_has_prefix("code", "code-gen"));
    }

    #[test]
    fn payload_check_refuses_what_a_value_would_refuse() {
        for bad in [
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"\udc00":1}"#,
            r#"[1,[2,{"x":-1e999}]]"#,
        ] {
            assert!(serde_json::from_str::<CheckedJson>(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
        }
        for good in [
            r#"{"a":1.5e300,"b":[true,null,"\ud83d\ude00"],"c":{"d":-12}}"#,
            "18446744073709551615",
            r#""text""#,
        ] {
            assert!(serde_json::from_str::<CheckedJson>(good).is_ok(), "{good}");
        }
    }
}
