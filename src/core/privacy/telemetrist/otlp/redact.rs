//! Redaction of OTLP export requests before they leave the edge: every content attribute
//! (`telemetry::otlp::map::is_content_key`) of spans, of span events and of log records,
//! and every log body, go through the session's `Redactor`; the other attributes stay as
//! they are (the collector's guard drops any of them that holds personal data).
//!
//! The pseudonym session of a span or log record is the first of: `--session` when given;
//! its own `gen_ai.conversation.id` (else `session.id`) attribute; that of another span or
//! record of the same trace in the same request; that of its resource; its trace id (32
//! hex digits); a session of its own request, `otlp-` and 16 hex digits, for a log record
//! with none of these. `phoenix redact --reveal --session <that id>` maps it back.
//!
//! A string value that is JSON (`gen_ai.input.messages` holds chat messages as JSON) is
//! redacted as messages, value by value, and written back compactly, so it stays valid
//! JSON; when nothing in it was replaced it is left as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::core::privacy::pii::vault::{self, Vault};
use crate::core::privacy::pii::{EntityType, Redactor, Report, contains_pii};
use crate::core::telemetry::otlp::map::is_content_key;

/// The attributes that name a pseudonym session, the first one present winning.
pub const SESSION_KEYS: [&str; 2] = ["gen_ai.conversation.id", "session.id"];

/// What redacting one export request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redacted {
    /// Spans or log records in the request.
    pub items: usize,
    /// The sessions they were redacted in, each once, sorted.
    pub sessions: Vec<String>,
    /// Personal data replaced, by type.
    pub replaced: BTreeMap<EntityType, usize>,
}

/// Redacts a trace export in place, committing the new pseudonyms to `vault` (one
/// transaction) before it returns; `shared` is `--session`.
pub fn redact_traces(
    request: &mut ExportTraceServiceRequest,
    vault: &mut Vault,
    shared: Option<&str>,
) -> Result<Redacted, vault::Error> {
    let groups = request
        .resource_spans
        .iter_mut()
        .map(|rs| {
            let resource = resource_session(rs.resource.as_ref());
            let items = rs
                .scope_spans
                .iter_mut()
                .flat_map(|ss| ss.spans.iter_mut())
                .collect();
            (resource, items)
        })
        .collect();
    redact_items(groups, vault, shared)
}

/// Redacts a logs export in place; see [`redact_traces`].
pub fn redact_logs(
    request: &mut ExportLogsServiceRequest,
    vault: &mut Vault,
    shared: Option<&str>,
) -> Result<Redacted, vault::Error> {
    let groups = request
        .resource_logs
        .iter_mut()
        .map(|rl| {
            let resource = resource_session(rl.resource.as_ref());
            let items = rl
                .scope_logs
                .iter_mut()
                .flat_map(|sl| sl.log_records.iter_mut())
                .collect();
            (resource, items)
        })
        .collect();
    redact_items(groups, vault, shared)
}

/// A span or a log record: where its session comes from and what in it is content.
trait Item {
    fn attributes(&self) -> &[KeyValue];
    fn trace_id(&self) -> &[u8];
    fn redact(&mut self, redactor: &mut Redactor) -> Report;
}

impl Item for Span {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }

    fn trace_id(&self) -> &[u8] {
        &self.trace_id
    }

    fn redact(&mut self, redactor: &mut Redactor) -> Report {
        let mut report = Report::default();
        redact_attributes(&mut self.attributes, redactor, &mut report);
        for event in &mut self.events {
            redact_attributes(&mut event.attributes, redactor, &mut report);
        }
        report
    }
}

impl Item for LogRecord {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }

    fn trace_id(&self) -> &[u8] {
        &self.trace_id
    }

    fn redact(&mut self, redactor: &mut Redactor) -> Report {
        let mut report = Report::default();
        redact_attributes(&mut self.attributes, redactor, &mut report);
        if let Some(body) = &mut self.body {
            redact_value(body, redactor, &mut report);
        }
        report
    }
}

/// Redacts the items of each resource (with the resource's own session, if it names one),
/// grouped by session so that each session's redactor is loaded once.
fn redact_items<T: Item>(
    groups: Vec<(Option<String>, Vec<&mut T>)>,
    vault: &mut Vault,
    shared: Option<&str>,
) -> Result<Redacted, vault::Error> {
    let mut by_trace: HashMap<&[u8], &str> = HashMap::new();
    for (_, items) in &groups {
        for item in items {
            if let Some(c) = conversation_of(item.attributes()) {
                by_trace.entry(item.trace_id()).or_insert(c);
            }
        }
    }
    let mut own_request: Option<String> = None;
    let mut sessions = Vec::new();
    for (resource, items) in &groups {
        for item in items {
            let session = match shared {
                Some(s) => s.to_owned(),
                None => conversation_of(item.attributes())
                    .or_else(|| by_trace.get(item.trace_id()).copied())
                    .or(resource.as_deref())
                    .map(str::to_owned)
                    .or_else(|| trace_session(item.trace_id()))
                    .unwrap_or_else(|| own_request.get_or_insert_with(request_session).clone()),
            };
            sessions.push(session);
        }
    }
    drop(by_trace);
    let mut targets: Vec<(String, &mut T)> = sessions
        .into_iter()
        .zip(groups.into_iter().flat_map(|(_, items)| items))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    let sessions: Vec<String> = targets.iter().map(|(s, _)| s.clone()).collect();
    let reports = vault.with_sessions(&sessions, |i, redactor| targets[i].1.redact(redactor))?;
    let mut out = Redacted {
        items: sessions.len(),
        sessions: sessions
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        replaced: BTreeMap::new(),
    };
    for report in reports {
        for (entity, n) in report.replaced {
            *out.replaced.entry(entity).or_default() += n;
        }
    }
    Ok(out)
}

/// The conversation an item's attributes name.
fn conversation_of(attributes: &[KeyValue]) -> Option<&str> {
    SESSION_KEYS.iter().find_map(|key| {
        attributes.iter().find(|kv| kv.key == *key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) if !s.trim().is_empty() => Some(s.as_str()),
                _ => None,
            }
        })
    })
}

fn resource_session(resource: Option<&Resource>) -> Option<String> {
    resource
        .and_then(|r| conversation_of(&r.attributes))
        .map(str::to_owned)
}

/// The trace id as the collector shows it (`payload.trace_id`), unless it is unset.
fn trace_session(trace_id: &[u8]) -> Option<String> {
    (!trace_id.is_empty() && trace_id.iter().any(|b| *b != 0)).then(|| hex::encode(trace_id))
}

fn request_session() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("otlp-{}", &id[..16])
}

fn redact_attributes(attributes: &mut [KeyValue], redactor: &mut Redactor, report: &mut Report) {
    for kv in attributes {
        if is_content_key(&kv.key)
            && let Some(value) = &mut kv.value
        {
            redact_value(value, redactor, report);
        }
    }
}

/// Redacts every string in a value (the keys of a key-value list too); numbers, booleans
/// and bytes stay as they are.
fn redact_value(value: &mut AnyValue, redactor: &mut Redactor, report: &mut Report) {
    match &mut value.value {
        Some(Any::StringValue(s)) => *s = redact_string(s, redactor, report),
        Some(Any::ArrayValue(array)) => {
            for v in &mut array.values {
                redact_value(v, redactor, report);
            }
        }
        Some(Any::KvlistValue(list)) => {
            for kv in &mut list.values {
                kv.key = redactor.redact_into(&kv.key, report);
                if let Some(v) = &mut kv.value {
                    redact_value(v, redactor, report);
                }
            }
        }
        _ => {}
    }
}

/// Redacts a string: as chat messages (or any JSON) when it is JSON, else as text.
fn redact_string(s: &str, redactor: &mut Redactor, report: &mut Report) -> String {
    let t = s.trim_start();
    if (t.starts_with('[') || t.starts_with('{'))
        && let Ok(mut doc) = serde_json::from_str::<Value>(s)
    {
        let before = report.total();
        match redactor.redact_conversation(&mut doc) {
            Ok(r) => merge(report, r),
            Err(_) => redactor.redact_json(&mut doc, None, report),
        }
        if report.total() == before {
            return s.to_owned();
        }
        let out = doc.to_string();
        if contains_pii(&out).is_empty() {
            return out;
        }
        // The collector's guard reads the JSON text as a whole, where a detector can see
        // what it did not in the values one by one: redacted as text too, since content
        // that fails the guard is dropped at the collector.
        return redactor.redact_into(&out, report);
    }
    redactor.redact_into(s, report)
}

fn merge(into: &mut Report, from: Report) {
    for (entity, n) in from.replaced {
        *into.replaced.entry(entity).or_default() += n;
    }
    into.pseudonyms.extend(from.pseudonyms);
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;
    use crate::core::privacy::pii::reveal;
    use crate::core::privacy::pii::vault::VaultKey;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Any::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn text(kv: &KeyValue) -> &str {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn span(trace: u8, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: "chat".to_owned(),
            attributes,
            ..Span::default()
        }
    }

    fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn vault(dir: &tempfile::TempDir) -> Vault {
        Vault::open(&dir.path().join("v.db"), &VaultKey::from_bytes([3; 32])).unwrap()
    }

    const MESSAGES: &str = r#"[{"role":"user","content":"I'm Dan Johnson, mail dan@example.com or call +1 415 555 0132"}]"#;

    #[test]
    fn content_is_redacted_as_json_per_conversation_and_the_rest_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut vault = vault(&dir);
        let mut request = traces(vec![
            span(
                7,
                vec![
                    string("gen_ai.conversation.id", "conv-1"),
                    string("gen_ai.input.messages", MESSAGES),
                    string("gen_ai.request.model", "gpt-4o"),
                    string("user.note", "Dan Johnson"),
                ],
            ),
            // Same trace, no conversation id of its own: the trace's.
            Span {
                events: vec![Event {
                    name: "gen_ai.content.prompt".to_owned(),
                    attributes: vec![string("gen_ai.prompt", "Dan Johnson again")],
                    ..Event::default()
                }],
                ..span(7, vec![string("gen_ai.output.messages", "[]")])
            },
            // Another trace: its own session, the trace id.
            span(9, vec![string("input.value", "I'm Priya Patel")]),
        ]);
        let out = redact_traces(&mut request, &mut vault, None).unwrap();
        assert_eq!(out.items, 3);
        assert_eq!(out.sessions, ["09090909090909090909090909090909", "conv-1"]);
        assert_eq!(out.replaced[&EntityType::Person], 3);

        let spans = &request.resource_spans[0].scope_spans[0].spans;
        let input = text(&spans[0].attributes[1]);
        let doc: Value = serde_json::from_str(input).expect("still JSON");
        assert_eq!(
            doc[0]["content"],
            "I'm USER_A, mail USER_A_EMAIL or call PHONE_1"
        );
        assert!(contains_pii(input).is_empty(), "{input}");
        assert_eq!(text(&spans[0].attributes[2]), "gpt-4o");
        assert_eq!(text(&spans[0].attributes[3]), "Dan Johnson", "not content");
        assert_eq!(text(&spans[1].attributes[0]), "[]", "unchanged as written");
        assert_eq!(text(&spans[1].events[0].attributes[0]), "USER_A again");
        assert_eq!(text(&spans[2].attributes[0]), "I'm USER_A");

        let back = reveal(input, &vault.load_session("conv-1").unwrap()).0;
        let doc: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(
            doc[0]["content"],
            "I'm Dan Johnson, mail dan@example.com or call +1 415 555 0132"
        );
        let other = vault
            .load_session("09090909090909090909090909090909")
            .unwrap();
        assert_eq!(reveal("USER_A", &other).0, "Priya Patel");
    }

    #[test]
    fn a_later_request_of_the_session_reuses_its_pseudonyms() {
        let dir = tempfile::tempdir().unwrap();
        let mut vault = vault(&dir);
        let first = || {
            traces(vec![span(
                1,
                vec![
                    string("session.id", "s-9"),
                    string("gen_ai.prompt", "Dan Johnson here"),
                ],
            )])
        };
        let mut a = first();
        redact_traces(&mut a, &mut vault, None).unwrap();
        let mut b = traces(vec![span(
            2,
            vec![
                string("session.id", "s-9"),
                string("gen_ai.prompt", "Priya Patel and Dan Johnson"),
            ],
        )]);
        redact_traces(&mut b, &mut vault, None).unwrap();
        let spans = &b.resource_spans[0].scope_spans[0].spans;
        assert_eq!(text(&spans[0].attributes[1]), "USER_B and USER_A");
    }

    #[test]
    fn log_bodies_and_lists_are_redacted_and_untraced_records_share_a_request_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut vault = vault(&dir);
        let record = |body: AnyValue| LogRecord {
            body: Some(body),
            attributes: vec![KeyValue {
                key: "gen_ai.input.messages".to_owned(),
                value: Some(AnyValue {
                    value: Some(Any::KvlistValue(KeyValueList {
                        values: vec![string("content", "mail dan@example.com")],
                    })),
                }),
                ..KeyValue::default()
            }],
            ..LogRecord::default()
        };
        let mut request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        record(AnyValue {
                            value: Some(Any::StringValue("could not reach dan@example.com".into())),
                        }),
                        record(AnyValue {
                            value: Some(Any::IntValue(7)),
                        }),
                    ],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        let out = redact_logs(&mut request, &mut vault, None).unwrap();
        assert_eq!(out.items, 2);
        assert_eq!(out.sessions.len(), 1);
        assert!(out.sessions[0].starts_with("otlp-"), "{:?}", out.sessions);
        let logs = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(
            logs[0].body.as_ref().unwrap().value,
            Some(Any::StringValue("could not reach EMAIL_1".into()))
        );
        let Some(Any::KvlistValue(list)) = &logs[1].attributes[0].value.as_ref().unwrap().value
        else {
            panic!("a list")
        };
        assert_eq!(
            text(&list.values[0]),
            "mail EMAIL_1",
            "one session: one pseudonym"
        );
        assert_eq!(logs[1].body.as_ref().unwrap().value, Some(Any::IntValue(7)));
    }

    #[test]
    fn a_shared_session_takes_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut vault = vault(&dir);
        let mut request = traces(vec![span(
            4,
            vec![
                string("gen_ai.conversation.id", "conv-2"),
                string("gen_ai.prompt", "Dan Johnson"),
            ],
        )]);
        let out = redact_traces(&mut request, &mut vault, Some("fleet")).unwrap();
        assert_eq!(out.sessions, ["fleet"]);
        assert_eq!(vault.load_session("fleet").unwrap().len(), 1);
    }
}
