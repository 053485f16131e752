//! The one mapping from OTLP spans and log records to telemetry envelopes, for both LLM
//! conventions: the OTel GenAI semantic conventions (`gen_ai.*`) and OpenInference
//! (`llm.*`, `openinference.span.kind`). README's "OpenTelemetry" section is its table.
//!
//! - kind: `gen_ai.operation.name` (chat → `llm_call`, execute_tool → `tool_call`,
//!   invoke_agent → `agent_run`, embeddings → `embedding`, …) or `openinference.span.kind`
//!   (LLM → `llm_call`, TOOL → `tool_call`, AGENT → `agent_run`, RETRIEVER → `retrieval`, …);
//!   the span name otherwise; a log record's event name, else `log`.
//! - agent path: `gen_ai.agent.name` (or `agent.name`) of the span, else of its nearest
//!   ancestor in the same request, else of the resource, under the resource's
//!   `service.namespace`; else the resource's `service.namespace/service.name`.
//! - ORCH: the resource's `phoenix.orch_id`, else `service.instance.id` (anonymised by the
//!   collector exactly like `orch_id`).
//! - level: `error` for an error status, else `info`; a log record's severity.
//! - payload: `response_time` (ms), `model`, `request_model`, `response_model`, `provider`,
//!   `tokens` {input, output, total, cached, reasoning}, `cost`, `finish_reasons`,
//!   `error_type`, `tool_name`, `conversation_id`, `trace_id`, `span_id`, `parent_span_id`,
//!   `span_name`, `operation`; message content under `content`, other attributes under
//!   `attributes`, span events under `events`.
//!
//! Every string that could carry what a user wrote (content, other attributes, events, status
//! messages, log bodies) goes through the caller's `clean` check first; one that fails is left
//! out (its key listed in `content_dropped`), the record and its metrics are kept.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::core::telemetry::{
    MAX_AGENT_PATH, MAX_CLOCK_SKEW_SECS, MAX_SHORT_FIELD, TelemetryEnvelope, normalize_level,
};

/// Most span events kept per span (the rest are counted in `events_dropped`).
pub const MAX_EVENTS: usize = 32;
/// Most other attributes kept per record (the rest are counted in `attributes_dropped`).
pub const MAX_ATTRIBUTES: usize = 64;
/// Tag every record that came in over OTLP carries.
pub const OTLP_TAG: &str = "otlp";

/// What an export request became.
#[derive(Debug, Default)]
pub struct Mapped {
    /// One envelope per accepted span or log record, in request order.
    pub envelopes: Vec<TelemetryEnvelope>,
    /// Spans or log records refused (not stored).
    pub rejected: usize,
    /// Why the first one was, naming where it is and the field.
    pub first_rejection: Option<String>,
    /// Attribute values left out because they failed the `clean` check.
    pub content_dropped: usize,
    /// Where the first one was.
    pub first_drop: Option<String>,
}

impl Mapped {
    /// The `partial_success.error_message` of the answer, when there is something to say.
    pub fn message(&self, noun: &str) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(why) = &self.first_rejection {
            let more = match self.rejected {
                1 => String::new(),
                n => format!(" ({} {noun}s refused in all)", n),
            };
            parts.push(format!("{why}{more}"));
        }
        if let Some(at) = &self.first_drop {
            parts.push(format!(
                "{} attribute value(s) held personal data and were not stored, the first at {at}; \
                 redact at the edge (phoenix telemetrist --otlp-listen)",
                self.content_dropped
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(why);
        }
    }
}

/// Maps every span of a trace export. `now` is the collector's clock (Unix seconds).
pub fn map_traces(
    request: &ExportTraceServiceRequest,
    now: i64,
    clean: &dyn Fn(&str) -> bool,
) -> Mapped {
    let mut out = Mapped::default();
    for (r, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = ResourceFields::of(resource_spans.resource.as_ref());
        let agents = Agents::of(resource_spans);
        for (s, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            for (i, span) in scope_spans.spans.iter().enumerate() {
                let at = || format!("span {i} of resourceSpans[{r}].scopeSpans[{s}]");
                let inherited = agents.as_ref().and_then(|a| a.of_ancestors(span));
                match map_span(span, &resource, inherited, now, clean, &mut out, &at) {
                    Ok(env) => out.envelopes.push(env),
                    Err((field, why)) => out.reject(format!("{}: field `{field}`: {why}", at())),
                }
            }
        }
    }
    out
}

/// Maps every log record of a logs export.
pub fn map_logs(
    request: &ExportLogsServiceRequest,
    now: i64,
    clean: &dyn Fn(&str) -> bool,
) -> Mapped {
    let mut out = Mapped::default();
    for (r, resource_logs) in request.resource_logs.iter().enumerate() {
        let resource = ResourceFields::of(resource_logs.resource.as_ref());
        for (s, scope_logs) in resource_logs.scope_logs.iter().enumerate() {
            for (i, log) in scope_logs.log_records.iter().enumerate() {
                let at = || format!("log record {i} of resourceLogs[{r}].scopeLogs[{s}]");
                match map_log(log, &resource, now, clean, &mut out, &at) {
                    Ok(env) => out.envelopes.push(env),
                    Err((field, why)) => out.reject(format!("{}: field `{field}`: {why}", at())),
                }
            }
        }
    }
    out
}

type Refusal = (&'static str, String);

/// What the resource says about who sent its spans.
#[derive(Debug, Default)]
struct ResourceFields<'a> {
    service_name: Option<&'a str>,
    service_namespace: Option<&'a str>,
    instance_id: Option<&'a str>,
    orch_id: Option<&'a str>,
    agent_name: Option<&'a str>,
}

impl<'a> ResourceFields<'a> {
    fn of(resource: Option<&'a Resource>) -> Self {
        let mut out = ResourceFields::default();
        for kv in resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default()
        {
            let Some(text) = as_str(kv.value.as_ref()) else {
                continue;
            };
            match kv.key.as_str() {
                "service.name" => out.service_name = Some(text),
                "service.namespace" => out.service_namespace = Some(text),
                "service.instance.id" => out.instance_id = Some(text),
                "phoenix.orch_id" => out.orch_id = Some(text),
                "gen_ai.agent.name" => out.agent_name = Some(text),
                _ => {}
            }
        }
        out
    }

    fn agent_path(&self) -> Option<String> {
        match (self.service_namespace, self.service_name) {
            (Some(ns), Some(name)) => agent_path(&format!("{ns}/{name}")),
            (None, Some(name)) => agent_path(name),
            (Some(ns), None) => agent_path(ns),
            (None, None) => None,
        }
    }
}

/// The fields one span's (or log record's) attributes fill.
#[derive(Default)]
struct Fields {
    operation: Option<String>,
    oi_kind: Option<String>,
    agent_name: Option<String>,
    orch_id: Option<String>,
    request_model: Option<String>,
    response_model: Option<String>,
    oi_model: Option<String>,
    provider: Option<(u8, String)>,
    input_tokens: Option<(u8, f64)>,
    output_tokens: Option<(u8, f64)>,
    total_tokens: Option<(u8, f64)>,
    cached_tokens: Option<(u8, f64)>,
    reasoning_tokens: Option<(u8, f64)>,
    cost: Option<(u8, f64)>,
    finish_reasons: Option<Value>,
    error_type: Option<String>,
    tool_name: Option<String>,
    conversation_id: Option<String>,
    response_id: Option<String>,
    event_name: Option<String>,
    content: Map<String, Value>,
    attributes: Map<String, Value>,
    attributes_dropped: usize,
}

/// Keeps the value of the highest-priority key seen (lower number wins).
fn better<T>(slot: &mut Option<(u8, T)>, rank: u8, value: Option<T>) {
    if let Some(v) = value
        && slot.as_ref().is_none_or(|(r, _)| rank < *r)
    {
        *slot = Some((rank, v));
    }
}

/// True for the attributes that hold message content: prompts, completions, tool
/// arguments and results, retrieved documents.
pub fn is_content_key(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "gen_ai.input.",
        "gen_ai.output.",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.choice",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.system.message",
        "gen_ai.tool.message",
        "input.value",
        "output.value",
        "llm.input_messages",
        "llm.output_messages",
        "llm.prompts",
        "llm.prompt_template.",
        "llm.tools",
        "tool.parameters",
        "tool_call.function.arguments",
        "retrieval.documents",
        "reranker.",
        "embedding.embeddings",
        "message.content",
        "content",
        "body",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

impl Fields {
    fn read(&mut self, attributes: &[KeyValue], clean: &dyn Fn(&str) -> bool, drops: &mut Drops) {
        for kv in attributes {
            let value = kv.value.as_ref();
            let key = kv.key.as_str();
            match key {
                "gen_ai.operation.name" => self.operation = as_string(value),
                "openinference.span.kind" => self.oi_kind = as_string(value),
                "gen_ai.agent.name" | "agent.name" => {
                    if self.agent_name.is_none() || key == "gen_ai.agent.name" {
                        self.agent_name = as_string(value);
                    }
                }
                "phoenix.orch_id" => self.orch_id = as_string(value),
                "gen_ai.request.model" => self.request_model = as_string(value),
                "gen_ai.response.model" => self.response_model = as_string(value),
                "llm.model_name" => self.oi_model = as_string(value),
                "gen_ai.provider.name" => better(&mut self.provider, 0, as_string(value)),
                "gen_ai.system" => better(&mut self.provider, 1, as_string(value)),
                "llm.provider" => better(&mut self.provider, 2, as_string(value)),
                "llm.system" => better(&mut self.provider, 3, as_string(value)),
                "gen_ai.usage.input_tokens" => better(&mut self.input_tokens, 0, as_f64(value)),
                "gen_ai.usage.prompt_tokens" => better(&mut self.input_tokens, 1, as_f64(value)),
                "llm.token_count.prompt" => better(&mut self.input_tokens, 2, as_f64(value)),
                "llm.usage.prompt_tokens" => better(&mut self.input_tokens, 3, as_f64(value)),
                "gen_ai.usage.output_tokens" => better(&mut self.output_tokens, 0, as_f64(value)),
                "gen_ai.usage.completion_tokens" => {
                    better(&mut self.output_tokens, 1, as_f64(value))
                }
                "llm.token_count.completion" => better(&mut self.output_tokens, 2, as_f64(value)),
                "llm.usage.completion_tokens" => better(&mut self.output_tokens, 3, as_f64(value)),
                "gen_ai.usage.total_tokens" => better(&mut self.total_tokens, 0, as_f64(value)),
                "llm.token_count.total" => better(&mut self.total_tokens, 1, as_f64(value)),
                "llm.usage.total_tokens" => better(&mut self.total_tokens, 2, as_f64(value)),
                "gen_ai.usage.cache_read.input_tokens" => {
                    better(&mut self.cached_tokens, 0, as_f64(value))
                }
                "gen_ai.usage.cache_read_input_tokens" => {
                    better(&mut self.cached_tokens, 1, as_f64(value))
                }
                "llm.token_count.prompt_details.cache_read" => {
                    better(&mut self.cached_tokens, 2, as_f64(value))
                }
                "gen_ai.usage.cached_tokens" => better(&mut self.cached_tokens, 3, as_f64(value)),
                "gen_ai.usage.reasoning_tokens" | "gen_ai.usage.reasoning.output_tokens" => {
                    better(&mut self.reasoning_tokens, 0, as_f64(value))
                }
                "llm.token_count.completion_details.reasoning" => {
                    better(&mut self.reasoning_tokens, 1, as_f64(value))
                }
                "gen_ai.usage.cost" => better(&mut self.cost, 0, as_f64(value)),
                "llm.cost.total" => better(&mut self.cost, 1, as_f64(value)),
                "gen_ai.cost" | "operation.cost" => better(&mut self.cost, 2, as_f64(value)),
                "gen_ai.response.finish_reasons" => {
                    self.finish_reasons = value.map(to_json).filter(|v| match v {
                        Value::Array(items) => items.iter().all(Value::is_string),
                        Value::String(_) => true,
                        _ => false,
                    });
                    if let Some(Value::String(s)) = &self.finish_reasons {
                        self.finish_reasons = Some(json!([s]));
                    }
                }
                "error.type" => self.error_type = as_string(value),
                "gen_ai.tool.name" | "tool.name" => {
                    if self.tool_name.is_none() || key == "gen_ai.tool.name" {
                        self.tool_name = as_string(value);
                    }
                }
                "gen_ai.conversation.id" | "session.id" => {
                    if self.conversation_id.is_none() || key == "gen_ai.conversation.id" {
                        self.conversation_id = as_string(value);
                    }
                }
                "gen_ai.response.id" => self.response_id = as_string(value),
                "event.name" => self.event_name = as_string(value),
                _ => {
                    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
                        continue;
                    };
                    let content = is_content_key(key);
                    if !content && self.attributes.len() >= MAX_ATTRIBUTES {
                        self.attributes_dropped += 1;
                        continue;
                    }
                    let Some(v) = checked(value, clean) else {
                        drops.note(key);
                        continue;
                    };
                    if content {
                        self.content.insert(key.to_owned(), v);
                    } else {
                        self.attributes.insert(key.to_owned(), v);
                    }
                }
            }
        }
    }

    /// The envelope kind for a span named `name`.
    fn span_kind(&self, name: &str) -> String {
        if let Some(op) = &self.operation {
            let mapped = match op.as_str() {
                "chat" | "text_completion" | "generate_content" | "completion" => "llm_call",
                "embeddings" | "embedding" => "embedding",
                "execute_tool" => "tool_call",
                "invoke_agent" | "create_agent" => "agent_run",
                "retrieval" | "retrieve" => "retrieval",
                other => return kind(other, "span"),
            };
            return mapped.to_owned();
        }
        if let Some(k) = &self.oi_kind {
            let mapped = match k.to_ascii_uppercase().as_str() {
                "LLM" => "llm_call",
                "TOOL" => "tool_call",
                "AGENT" => "agent_run",
                "CHAIN" => "chain",
                "RETRIEVER" => "retrieval",
                "EMBEDDING" => "embedding",
                "RERANKER" => "rerank",
                "GUARDRAIL" => "guardrail",
                "EVALUATOR" => "evaluation",
                "PROMPT" => "prompt",
                _ => return kind(&k.to_ascii_lowercase(), "span"),
            };
            return mapped.to_owned();
        }
        kind(name, "span")
    }

    /// The payload members these fields make, in the documented names.
    fn payload(self, payload: &mut Map<String, Value>) {
        let model = self
            .response_model
            .clone()
            .or_else(|| self.oi_model.clone())
            .or_else(|| self.request_model.clone());
        put(payload, "model", model.map(Value::from));
        put(
            payload,
            "request_model",
            self.request_model
                .or(self.oi_model.clone())
                .map(Value::from),
        );
        put(
            payload,
            "response_model",
            self.response_model.or(self.oi_model).map(Value::from),
        );
        put(
            payload,
            "provider",
            self.provider.map(|(_, p)| Value::from(p)),
        );
        put(payload, "operation", self.operation.map(Value::from));
        let input = self.input_tokens.map(|(_, n)| n);
        let output = self.output_tokens.map(|(_, n)| n);
        let total = self.total_tokens.map(|(_, n)| n).or(match (input, output) {
            (Some(i), Some(o)) => Some(i + o),
            _ => None,
        });
        let mut tokens = Map::new();
        put(&mut tokens, "input", input.map(number));
        put(&mut tokens, "output", output.map(number));
        put(&mut tokens, "total", total.map(number));
        put(
            &mut tokens,
            "cached",
            self.cached_tokens.map(|(_, n)| number(n)),
        );
        put(
            &mut tokens,
            "reasoning",
            self.reasoning_tokens.map(|(_, n)| number(n)),
        );
        if !tokens.is_empty() {
            payload.insert("tokens".to_owned(), Value::Object(tokens));
        }
        put(payload, "cost", self.cost.map(|(_, c)| number(c)));
        put(payload, "finish_reasons", self.finish_reasons);
        put(payload, "error_type", self.error_type.map(Value::from));
        put(payload, "tool_name", self.tool_name.map(Value::from));
        put(
            payload,
            "conversation_id",
            self.conversation_id.map(Value::from),
        );
        put(payload, "response_id", self.response_id.map(Value::from));
        if !self.content.is_empty() {
            payload.insert("content".to_owned(), Value::Object(self.content));
        }
        if !self.attributes.is_empty() {
            payload.insert("attributes".to_owned(), Value::Object(self.attributes));
        }
        if self.attributes_dropped > 0 {
            payload.insert(
                "attributes_dropped".to_owned(),
                Value::from(self.attributes_dropped),
            );
        }
    }
}

/// The keys of values left out by the `clean` check, for one record.
#[derive(Default)]
struct Drops {
    keys: Vec<String>,
}

impl Drops {
    fn note(&mut self, key: &str) {
        if !self.keys.iter().any(|k| k == key) {
            self.keys.push(key.to_owned());
        }
    }

    fn finish(self, payload: &mut Map<String, Value>, out: &mut Mapped, at: &dyn Fn() -> String) {
        if self.keys.is_empty() {
            return;
        }
        out.content_dropped += self.keys.len();
        if out.first_drop.is_none() {
            out.first_drop = Some(format!("{}, attribute `{}`", at(), self.keys[0]));
        }
        payload.insert("content_dropped".to_owned(), json!(self.keys));
    }
}

fn map_span(
    span: &Span,
    resource: &ResourceFields<'_>,
    inherited_agent: Option<&str>,
    now: i64,
    clean: &dyn Fn(&str) -> bool,
    out: &mut Mapped,
    at: &dyn Fn() -> String,
) -> Result<TelemetryEnvelope, Refusal> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(("traceId", "must be 16 bytes and not all zero".to_owned()));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(("spanId", "must be 8 bytes and not all zero".to_owned()));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(("parentSpanId", "must be empty or 8 bytes".to_owned()));
    }
    if span.end_time_unix_nano != 0 && span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(("endTimeUnixNano", "is before startTimeUnixNano".to_owned()));
    }
    let ts_unix = timestamp(span.start_time_unix_nano, now, "startTimeUnixNano")?;

    let mut drops = Drops::default();
    let mut fields = Fields::default();
    fields.read(&span.attributes, clean, &mut drops);
    let kind = fields.span_kind(&span.name);
    let agent_path = agent_name_path(&fields, inherited_agent, resource);
    let orch_id = fields
        .orch_id
        .clone()
        .or_else(|| resource.orch_id.or(resource.instance_id).map(str::to_owned))
        .filter(|id| !id.trim().is_empty())
        .map(|id| truncate(&id, MAX_SHORT_FIELD * 2));

    let mut payload = Map::new();
    if span.start_time_unix_nano > 0 && span.end_time_unix_nano >= span.start_time_unix_nano {
        let ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
        payload.insert("response_time".to_owned(), number(ms));
    }
    let error = span.status.as_ref().is_some_and(|s| s.code == 2);
    let mut error_type = fields.error_type.clone();
    let mut events = Vec::new();
    let mut events_dropped = 0usize;
    for event in &span.events {
        if event.name == "exception" {
            for kv in &event.attributes {
                if kv.key == "exception.type" && error_type.is_none() {
                    error_type = as_string(kv.value.as_ref());
                }
            }
        }
        if events.len() >= MAX_EVENTS {
            events_dropped += 1;
            continue;
        }
        let mut attributes = Map::new();
        for kv in &event.attributes {
            let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                continue;
            };
            match checked(value, clean) {
                Some(v) => {
                    attributes.insert(kv.key.clone(), v);
                }
                None => drops.note(&format!("events.{}", kv.key)),
            }
        }
        let mut e = Map::new();
        e.insert(
            "name".to_owned(),
            Value::from(truncate(&event.name, MAX_SHORT_FIELD)),
        );
        if event.time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0 {
            let ms = (event.time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
            e.insert("at_ms".to_owned(), number(ms));
        }
        if !attributes.is_empty() {
            e.insert("attributes".to_owned(), Value::Object(attributes));
        }
        events.push(Value::Object(e));
    }
    fields.error_type = error_type;
    fields.payload(&mut payload);
    if let Some(status) = &span.status
        && !status.message.is_empty()
    {
        if clean(&status.message) {
            payload.insert(
                "status_message".to_owned(),
                Value::from(status.message.clone()),
            );
        } else {
            drops.note("status.message");
        }
    }
    if error && !payload.contains_key("error_type") {
        payload.insert("error_type".to_owned(), Value::from("error"));
    }
    payload.insert(
        "span_name".to_owned(),
        Value::from(truncate(&span.name, 512)),
    );
    payload.insert(
        "trace_id".to_owned(),
        Value::from(hex::encode(&span.trace_id)),
    );
    payload.insert(
        "span_id".to_owned(),
        Value::from(hex::encode(&span.span_id)),
    );
    if !span.parent_span_id.is_empty() {
        payload.insert(
            "parent_span_id".to_owned(),
            Value::from(hex::encode(&span.parent_span_id)),
        );
    }
    if !events.is_empty() {
        payload.insert("events".to_owned(), Value::Array(events));
    }
    if events_dropped > 0 {
        payload.insert("events_dropped".to_owned(), Value::from(events_dropped));
    }
    drops.finish(&mut payload, out, at);

    Ok(envelope(
        kind,
        Some(if error { "error" } else { "info" }.to_owned()),
        agent_path,
        orch_id,
        ts_unix,
        payload,
    ))
}

fn map_log(
    log: &LogRecord,
    resource: &ResourceFields<'_>,
    now: i64,
    clean: &dyn Fn(&str) -> bool,
    out: &mut Mapped,
    at: &dyn Fn() -> String,
) -> Result<TelemetryEnvelope, Refusal> {
    if !log.trace_id.is_empty() && log.trace_id.len() != 16 {
        return Err(("traceId", "must be empty or 16 bytes".to_owned()));
    }
    if !log.span_id.is_empty() && log.span_id.len() != 8 {
        return Err(("spanId", "must be empty or 8 bytes".to_owned()));
    }
    let (time, field) = if log.time_unix_nano != 0 {
        (log.time_unix_nano, "timeUnixNano")
    } else {
        (log.observed_time_unix_nano, "observedTimeUnixNano")
    };
    let ts_unix = timestamp(time, now, field)?;

    let mut drops = Drops::default();
    let mut fields = Fields::default();
    fields.read(&log.attributes, clean, &mut drops);
    let name = if !log.event_name.is_empty() {
        Some(log.event_name.clone())
    } else {
        fields.event_name.clone()
    };
    let kind = match (&fields.operation, &fields.oi_kind, &name) {
        (None, None, Some(name)) => self::kind(name, "log"),
        (None, None, None) => "log".to_owned(),
        _ => fields.span_kind("log"),
    };
    let level = severity(log.severity_number).or_else(|| normalize_level(&log.severity_text));
    let agent_path = agent_name_path(&fields, None, resource);
    let orch_id = fields
        .orch_id
        .clone()
        .or_else(|| resource.orch_id.or(resource.instance_id).map(str::to_owned))
        .filter(|id| !id.trim().is_empty())
        .map(|id| truncate(&id, MAX_SHORT_FIELD * 2));

    let mut payload = Map::new();
    fields.payload(&mut payload);
    if let Some(name) = name {
        payload.insert("event_name".to_owned(), Value::from(truncate(&name, 512)));
    }
    if let Some(body) = log.body.as_ref().and_then(|b| b.value.as_ref()) {
        match checked(body, clean) {
            Some(v) => {
                let content = payload
                    .entry("content")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(content) = content {
                    content.insert("body".to_owned(), v);
                }
            }
            None => drops.note("body"),
        }
    }
    if !log.severity_text.is_empty() {
        payload.insert(
            "severity_text".to_owned(),
            Value::from(truncate(&log.severity_text, MAX_SHORT_FIELD)),
        );
    }
    if !log.trace_id.is_empty() {
        payload.insert(
            "trace_id".to_owned(),
            Value::from(hex::encode(&log.trace_id)),
        );
    }
    if !log.span_id.is_empty() {
        payload.insert("span_id".to_owned(), Value::from(hex::encode(&log.span_id)));
    }
    drops.finish(&mut payload, out, at);
    Ok(envelope(kind, level, agent_path, orch_id, ts_unix, payload))
}

fn envelope(
    kind: String,
    level: Option<String>,
    agent_path: Option<String>,
    orch_id: Option<String>,
    ts_unix: i64,
    payload: Map<String, Value>,
) -> TelemetryEnvelope {
    let text = serde_json::to_string(&Value::Object(payload)).expect("a JSON map serializes");
    TelemetryEnvelope {
        orch_id,
        agent_path,
        ts_unix: Some(ts_unix),
        kind,
        level,
        tags: Some(vec![OTLP_TAG.to_owned()]),
        payload: RawValue::from_string(text).expect("serde_json wrote valid JSON"),
    }
}

/// The record's agent path: the span's own agent name, else the nearest ancestor's in the
/// same request (`inherited`), else the resource's, each under the resource's
/// `service.namespace`; else the resource's `service.namespace/service.name`.
fn agent_name_path(
    fields: &Fields,
    inherited: Option<&str>,
    resource: &ResourceFields<'_>,
) -> Option<String> {
    let qualified = |name: &str| match resource.service_namespace {
        Some(ns) if name != ns && !name.starts_with(&format!("{ns}/")) => {
            agent_path(&format!("{ns}/{name}"))
        }
        _ => agent_path(name),
    };
    fields
        .agent_name
        .as_deref()
        .or(inherited)
        .or(resource.agent_name)
        .and_then(qualified)
        .or_else(|| resource.agent_path())
}

/// The agent names the spans of one resource declare, by span id, with each span's parent:
/// a tool call or LLM call inside an `invoke_agent` span belongs to that agent even when it
/// does not repeat `gen_ai.agent.name`. Only the spans of the same request are known.
struct Agents<'a> {
    spans: HashMap<&'a [u8], (&'a [u8], Option<&'a str>)>,
}

impl<'a> Agents<'a> {
    /// Parent links climbed at most, so that a cycle in hostile input ends.
    const MAX_DEPTH: usize = 64;

    /// `None` when no span of the resource names an agent: nothing to inherit.
    fn of(resource_spans: &'a ResourceSpans) -> Option<Agents<'a>> {
        let all = || {
            resource_spans
                .scope_spans
                .iter()
                .flat_map(|s| s.spans.iter())
        };
        if !all().any(|span| declared_agent(span).is_some()) {
            return None;
        }
        let spans = all()
            .map(|span| {
                let link = (span.parent_span_id.as_slice(), declared_agent(span));
                (span.span_id.as_slice(), link)
            })
            .collect();
        Some(Agents { spans })
    }

    /// The agent name of `span`'s nearest ancestor that declares one.
    fn of_ancestors(&self, span: &Span) -> Option<&'a str> {
        let mut parent = span.parent_span_id.as_slice();
        for _ in 0..Self::MAX_DEPTH {
            if parent.is_empty() {
                return None;
            }
            let &(grandparent, name) = self.spans.get(parent)?;
            if name.is_some() {
                return name;
            }
            parent = grandparent;
        }
        None
    }
}

/// The span's own `gen_ai.agent.name` (else `agent.name`).
fn declared_agent(span: &Span) -> Option<&str> {
    let named = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| as_str(kv.value.as_ref()))
            .filter(|s| !s.trim().is_empty())
    };
    named("gen_ai.agent.name").or_else(|| named("agent.name"))
}

/// Unix seconds of a nanosecond timestamp; `now` for 0 (unset). Refused more than a day
/// ahead of the collector's clock, like `ts_unix`.
fn timestamp(nanos: u64, now: i64, field: &'static str) -> Result<i64, Refusal> {
    if nanos == 0 {
        return Ok(now);
    }
    let secs = (nanos / 1_000_000_000) as i64;
    if secs > now + MAX_CLOCK_SKEW_SECS {
        return Err((field, "is more than a day in the future".to_owned()));
    }
    Ok(secs)
}

/// A log severity number's level: TRACE 1–4 … FATAL 21–24.
fn severity(number: i32) -> Option<String> {
    let level = match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    };
    Some(level.to_owned())
}

/// A kind made from a name: whitespace and control characters become `_`, at most
/// [`MAX_SHORT_FIELD`] bytes; `fallback` when nothing is left.
fn kind(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = truncate(&cleaned, MAX_SHORT_FIELD);
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned
    }
}

/// An agent path made from a name: whitespace and control characters become `-`, empty
/// segments go, at most [`MAX_AGENT_PATH`] bytes; `None` when nothing is left.
fn agent_path(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    let joined = cleaned
        .split('/')
        .map(|s| s.trim_matches('-'))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    let path = truncate(&joined, MAX_AGENT_PATH);
    let path = path.trim_end_matches('/');
    (!path.is_empty()).then(|| path.to_owned())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v);
    }
}

/// A JSON number: integral values as integers (token counts print as `120`, not `120.0`).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

fn as_str(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        Any::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn as_string(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Any::StringValue(s) if !s.is_empty() => Some(truncate(s, 512)),
        Any::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_f64(value: Option<&AnyValue>) -> Option<f64> {
    match value?.value.as_ref()? {
        Any::IntValue(i) => Some(*i as f64),
        Any::DoubleValue(d) if d.is_finite() => Some(*d),
        Any::StringValue(s) => s.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
        _ => None,
    }
}

/// An attribute value as JSON: strings, numbers, booleans, arrays and maps as themselves,
/// bytes as base64.
fn to_json(value: &AnyValue) -> Value {
    value.value.as_ref().map_or(Value::Null, any_to_json)
}

fn any_to_json(value: &Any) -> Value {
    use base64::Engine as _;
    match value {
        Any::StringValue(s) => Value::from(s.as_str()),
        Any::BoolValue(b) => Value::from(*b),
        Any::IntValue(i) => Value::from(*i),
        Any::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Any::ArrayValue(a) => Value::Array(a.values.iter().map(to_json).collect()),
        Any::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, to_json),
                    )
                })
                .collect(),
        ),
        Any::BytesValue(b) => Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
        // An index into a profiles string table: meaningless outside profiles.
        Any::StringValueStrindex(_) => Value::Null,
    }
}

/// The value as JSON when every string in it passes `clean`; `None` when one does not.
fn checked(value: &Any, clean: &dyn Fn(&str) -> bool) -> Option<Value> {
    let json = any_to_json(value);
    all_clean(&json, clean).then_some(json)
}

fn all_clean(value: &Value, clean: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => clean(s),
        Value::Array(items) => items.iter().all(|v| all_clean(v, clean)),
        Value::Object(map) => map.iter().all(|(k, v)| clean(k) && all_clean(v, clean)),
        _ => true,
    }
}
