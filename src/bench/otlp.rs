//! The benchmark behind `phoenix bench otlp`: OTLP/HTTP protobuf span ingest into one
//! in-process collector on SQLite, judged against the NDJSON batch rate and the `/health`
//! rate of the same collector measured in the same round.
//!
//! The spans are what an OpenTelemetry-instrumented agent fleet exports: GenAI attributes
//! (operation, provider, request and response model, token usage, finish reasons, response
//! and conversation ids, agent name, tool name, error type), spread over a few resources
//! (ORCHs) per request. The GenAI instrumentations leave message content out unless asked
//! (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`), so the targeted scenario has none;
//! a second scenario adds `gen_ai.input.messages` / `gen_ai.output.messages` to every chat
//! span, which the collector's PII guard then scans, and is reported beside it.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use crate::core::telemetry::otlp::{Encoding, decode_traces, map_traces};

use super::ingest::{batch_bodies, mix, record_like_ingest, storage_ceiling};
use super::load::{Template, load};
use super::*;

/// Distinct request bodies each connection cycles through.
const OTLP_BODIES: usize = 8;
/// Resources (ORCHs) per request: an exporter batches the spans of one process, a gateway
/// those of several.
const RESOURCES_PER_REQUEST: usize = 4;
const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet-4",
    "gemini-2.5-flash",
];
const AGENTS: &[&str] = &["planner", "coder", "reviewer", "researcher", "triage"];
const PROMPTS: &[&str] = &[
    "Summarise the build log of job 4411 and list the failing tests by module.",
    "Rewrite the retry loop so it backs off exponentially and gives up after five tries.",
    "Which of the three migration plans keeps the service up during the schema change?",
    "Draft release notes for version 2.3 from the merged pull requests of this week.",
];
const ANSWERS: &[&str] = &[
    "Three tests fail, all in the parser module: they expect the old error wording.",
    "Here is the loop with a capped exponential delay and a final error after five tries.",
    "The second plan: it adds the column nullable first and backfills in small batches.",
    "Version 2.3 adds streaming answers, fixes two crashes and drops the legacy flag.",
];

/// What a `phoenix bench otlp` run does.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpOptions {
    /// Measured time of each load scenario.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Unmeasured load before each measurement.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Keep-alive connections sending OTLP requests.
    pub connections: usize,
    /// Spans per OTLP request.
    pub spans_per_request: usize,
    /// Keep-alive connections of the NDJSON batch scenario.
    pub batch_connections: usize,
    /// Records per NDJSON batch request.
    pub batch_size: usize,
    /// Keep-alive connections of `GET /health`.
    pub health_connections: usize,
    /// Rows of the OTLP scenario the raw SQLite ceiling inserts in one transaction.
    pub storage_rows: usize,
    /// Repetitions of the three scenarios; figures are medians over rounds.
    pub rounds: usize,
}

impl Default for OtlpOptions {
    fn default() -> Self {
        OtlpOptions {
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            connections: 8,
            spans_per_request: 512,
            batch_connections: 4,
            batch_size: 1000,
            health_connections: 64,
            storage_rows: 100_000,
            rounds: 1,
        }
    }
}

impl OtlpOptions {
    fn validate(&self) -> Result<(), Error> {
        let max_batch = Limits::default().max_batch_records;
        let problem = if self.duration.is_zero() {
            "the duration must be longer than zero".to_owned()
        } else if [
            self.connections,
            self.spans_per_request,
            self.batch_connections,
            self.batch_size,
            self.health_connections,
            self.storage_rows,
            self.rounds,
        ]
        .contains(&0)
        {
            "connections, spans per request, batch size, storage rows and rounds must be at \
             least 1"
                .to_owned()
        } else if self.spans_per_request.max(self.batch_size) > max_batch {
            format!(
                "spans per request and the batch size must be at most {max_batch}, the \
                 collector's per-request limit"
            )
        } else {
            return Ok(());
        };
        Err(Error::Options(problem))
    }

    /// The load options of one scenario on `connections`.
    fn load(&self) -> BenchOptions {
        BenchOptions {
            duration: self.duration,
            warmup: self.warmup,
            ..BenchOptions::default()
        }
    }
}

/// The three scenarios of one round, back to back on the same collector.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpRound {
    /// `GET /health`: the HTTP ceiling.
    pub health: LoadFigures,
    /// `POST /ingest`, NDJSON batches of Phoenix envelopes.
    pub ingest_batch: LoadFigures,
    /// `POST /v1/traces`, OTLP protobuf, GenAI attributes.
    pub otlp: LoadFigures,
    /// `POST /v1/traces`, the same spans with message content on every chat span.
    pub otlp_content: LoadFigures,
    /// Raw SQLite inserts of the rows `otlp` stores: the storage ceiling.
    pub storage_ceiling: StorageFigures,
    /// `otlp` spans/s over `ingest_batch` events/s.
    pub otlp_vs_batch: f64,
    /// `otlp` spans/s over the storage ceiling's rows/s.
    pub otlp_vs_storage: f64,
}

/// Medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpSummary {
    /// `GET /health` requests/s.
    pub health_per_sec: f64,
    /// NDJSON batch ingest, events/s.
    pub ingest_batch_per_sec: f64,
    /// OTLP protobuf ingest, spans/s stored.
    pub otlp_spans_per_sec: f64,
    /// The same with message content, spans/s stored.
    pub otlp_content_spans_per_sec: f64,
    /// Median of the per-round `otlp_vs_batch`.
    pub otlp_vs_batch: f64,
    /// Storage ceiling rows/s.
    pub storage_rows_per_sec: f64,
    /// Median of the per-round `otlp_vs_storage`.
    pub otlp_vs_storage: f64,
    /// Mean size of the payload the collector stores for one span, bytes.
    pub stored_payload_bytes: usize,
    /// Mean size of one OTLP request body, bytes.
    pub otlp_request_bytes: usize,
    /// Mean size of one OTLP request body with content, bytes.
    pub otlp_content_request_bytes: usize,
    /// Mean size of one NDJSON batch body, bytes.
    pub batch_request_bytes: usize,
}

/// A figure `phoenix bench otlp` has a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpTarget {
    /// OTLP spans stored per second.
    OtlpSpansRate,
    /// OTLP spans/s over NDJSON batch events/s.
    OtlpVsBatch,
}

/// The targets.
pub const OTLP_TARGETS: &[(OtlpTarget, Bound, f64)] = &[
    (OtlpTarget::OtlpSpansRate, Bound::AtLeast, 100_000.0),
    (OtlpTarget::OtlpVsBatch, Bound::AtLeast, 0.50),
];

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: OtlpOptions,
    /// Each round's figures.
    pub rounds: Vec<OtlpRound>,
    /// Medians over rounds.
    pub summary: OtlpSummary,
    /// Records in the store at the end (warm-up included).
    pub stored_records: u64,
    /// Targets, checked against the summary.
    pub targets: Vec<TargetCheck<OtlpTarget>>,
    /// Failed requests, rejected spans, dropped content or missing rows: any makes the
    /// figures untrustworthy.
    pub failures: Vec<String>,
}

/// Runs every round against one in-process collector on a scratch SQLite store.
pub async fn run(
    opts: &OtlpOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<OtlpReport, Error> {
    opts.validate()?;
    let machine = Machine::current();
    let scratch = ScratchDir::create()?;
    let metrics = Arc::new(Metrics::default());
    let store = SqliteStore::open(
        &StoreOptions::new(scratch.0.join("collector.db")),
        metrics.store.clone(),
    )?;
    let store: Arc<dyn TelemetryStore> = Arc::new(store);
    let state = AppState::new(
        store.clone(),
        Anonymizer::from_key(b"phoenix-bench"),
        CollectorConfig::default(),
        metrics.clone(),
    )?;
    let collector = InProcess::start(state).await?;
    let measured = measure(
        opts,
        machine,
        collector.addr,
        &metrics,
        &scratch.0,
        progress,
    )
    .await;
    let stopped = collector.stop().await;
    let mut report = measured?;
    stopped?;
    report.stored_records = store.count().await?;
    let measured_records: u64 = report
        .rounds
        .iter()
        .map(|r| {
            (r.otlp.ok + r.otlp_content.ok) * r.otlp.events_per_request as u64
                + r.ingest_batch.ok * r.ingest_batch.events_per_request as u64
        })
        .sum();
    if report.stored_records < measured_records {
        report.failures.push(format!(
            "the store holds {} records, fewer than the {measured_records} acknowledged in \
             the measured windows",
            report.stored_records
        ));
    }
    Ok(report)
}

async fn measure(
    opts: &OtlpOptions,
    machine: Machine,
    addr: SocketAddr,
    metrics: &Metrics,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<OtlpReport, Error> {
    let ts = now_unix();
    let load_opts = opts.load();
    let health = Arc::new(Template::new(
        addr,
        Method::GET,
        "/health",
        None,
        0,
        vec![Bytes::new()],
    ));
    let ndjson = batch_bodies(opts.batch_size, ts);
    let batch_request_bytes = mean_len(&ndjson);
    let batch = Arc::new(Template::new(
        addr,
        Method::POST,
        "/ingest",
        Some("application/x-ndjson"),
        opts.batch_size,
        ndjson,
    ));
    let now_nanos = u64::try_from(ts).unwrap_or(0) * 1_000_000_000;
    let traces = |content: bool| {
        let bodies: Vec<Bytes> = (0..OTLP_BODIES)
            .map(|b| Bytes::from(otlp_body(b, opts.spans_per_request, now_nanos, content)))
            .collect();
        let bytes = mean_len(&bodies);
        let template = Template::new(
            addr,
            Method::POST,
            "/v1/traces",
            Some("application/x-protobuf"),
            opts.spans_per_request,
            bodies,
        );
        (Arc::new(template), bytes)
    };
    let (otlp, otlp_request_bytes) = traces(false);
    let (otlp_content, otlp_content_request_bytes) = traces(true);
    let rows = Arc::new(rows_like_otlp(&otlp, opts.storage_rows, ts)?);
    let stored_payload_bytes =
        rows.iter().map(|r| r.payload_json.len()).sum::<usize>() / rows.len().max(1);

    let mut rounds = Vec::with_capacity(opts.rounds);
    for r in 1..=opts.rounds {
        let tag = |what: &str| format!("round {r}/{}: {what}", opts.rounds);
        progress(&tag("GET /health (HTTP ceiling)"));
        let health = load(&health, opts.health_connections, &load_opts, metrics).await?;
        progress(&tag("POST /ingest, NDJSON batches"));
        let ingest_batch = load(&batch, opts.batch_connections, &load_opts, metrics).await?;
        progress(&tag("POST /v1/traces, OTLP protobuf"));
        let otlp = load(&otlp, opts.connections, &load_opts, metrics).await?;
        progress(&tag("POST /v1/traces, OTLP protobuf with message content"));
        let otlp_content = load(&otlp_content, opts.connections, &load_opts, metrics).await?;
        progress(&tag(
            "raw SQLite inserts of the OTLP rows (storage ceiling)",
        ));
        let path = scratch.join(format!("ceiling-{r}.db"));
        let ceiling_rows = rows.clone();
        let storage_ceiling =
            tokio::task::spawn_blocking(move || storage_ceiling(&path, &ceiling_rows))
                .await
                .map_err(|e| Error::Io {
                    what: "running the storage ceiling".to_owned(),
                    source: std::io::Error::other(e),
                })??;
        rounds.push(OtlpRound {
            otlp_vs_batch: otlp.events_per_sec / ingest_batch.events_per_sec,
            otlp_vs_storage: otlp.events_per_sec / storage_ceiling.rows_per_sec,
            storage_ceiling,
            health,
            ingest_batch,
            otlp,
            otlp_content,
        });
    }

    let med = |f: fn(&OtlpRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let summary = OtlpSummary {
        health_per_sec: med(|r| r.health.requests_per_sec),
        ingest_batch_per_sec: med(|r| r.ingest_batch.events_per_sec),
        otlp_spans_per_sec: med(|r| r.otlp.events_per_sec),
        otlp_content_spans_per_sec: med(|r| r.otlp_content.events_per_sec),
        otlp_vs_batch: med(|r| r.otlp_vs_batch),
        storage_rows_per_sec: med(|r| r.storage_ceiling.rows_per_sec),
        otlp_vs_storage: med(|r| r.otlp_vs_storage),
        stored_payload_bytes,
        otlp_request_bytes,
        otlp_content_request_bytes,
        batch_request_bytes,
    };
    let mut failures = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        for (name, f) in [
            ("health", &r.health),
            ("ingest_batch", &r.ingest_batch),
            ("otlp", &r.otlp),
            ("otlp_content", &r.otlp_content),
        ] {
            failures.extend(f.failure(name, i + 1));
        }
    }
    // A 200 may carry a partial success: rejected spans or dropped content would mean the
    // figure counts work the collector did not do.
    let exposition = metrics.encode();
    for (metric, what) in [
        ("phoenix_otlp_rejected_total", "spans rejected"),
        (
            "phoenix_otlp_content_dropped_total",
            "content attributes dropped",
        ),
    ] {
        let n = counter_sum(&exposition, metric);
        if n > 0.0 {
            failures.push(format!(
                "{n} {what} ({metric}): the generated spans are wrong"
            ));
        }
    }
    let targets = OTLP_TARGETS
        .iter()
        .map(|&(target, bound, threshold)| {
            let measured = match target {
                OtlpTarget::OtlpSpansRate => summary.otlp_spans_per_sec,
                OtlpTarget::OtlpVsBatch => summary.otlp_vs_batch,
            };
            TargetCheck::new(target, measured, bound, threshold)
        })
        .collect();
    Ok(OtlpReport {
        machine,
        options: opts.clone(),
        rounds,
        summary,
        stored_records: 0,
        targets,
        failures,
    })
}

/// The rows the collector stores for the requests of `template`, cycled up to `n`: decoded
/// and mapped as `POST /v1/traces` does, so the ceiling inserts the same data.
fn rows_like_otlp(template: &Template, n: usize, now: i64) -> Result<Vec<NewRecord>, Error> {
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let clean = |text: &str| crate::core::privacy::pii::contains_pii(text).is_empty();
    let mut envelopes = Vec::new();
    for body in template.bodies() {
        let request = decode_traces(body, Encoding::Protobuf).map_err(|e| Error::Io {
            what: "decoding a generated OTLP request".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        envelopes.extend(map_traces(&request, now, &clean).envelopes);
    }
    Ok(envelopes
        .iter()
        .cycle()
        .take(n)
        .map(|e| record_like_ingest(e, now, &anonymizer))
        .collect())
}

fn mean_len(bodies: &[Bytes]) -> usize {
    bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len().max(1)
}

/// The sum of every series of counter `name` in a Prometheus exposition.
fn counter_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Any::StringValue(value.into()))
}

fn int(key: &str, value: u64) -> KeyValue {
    kv(key, Any::IntValue(value as i64))
}

/// The `b`-th OTLP request: `spans` spans spread over [`RESOURCES_PER_REQUEST`] resources,
/// each ending in the last few seconds before `now_nanos`; chat spans carry their messages
/// when `content`.
pub(super) fn otlp_body(b: usize, spans: usize, now_nanos: u64, content: bool) -> Vec<u8> {
    let per_resource = spans.div_ceil(RESOURCES_PER_REQUEST);
    let resource_spans = (0..spans)
        .collect::<Vec<_>>()
        .chunks(per_resource)
        .enumerate()
        .map(|(r, chunk)| {
            let orch = (b * RESOURCES_PER_REQUEST + r) % ORCH_IDS;
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", "agent-fleet"),
                        text("service.namespace", "acme"),
                        text("service.instance.id", format!("orch-bench-{orch:02}")),
                        text("telemetry.sdk.language", "python"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai_v2".to_owned(),
                        version: "2.1b0".to_owned(),
                        ..Default::default()
                    }),
                    spans: chunk
                        .iter()
                        .map(|&i| span(b * spans + i, now_nanos, content))
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// The `i`-th generated span: mostly chat calls, some tool calls and embeddings.
fn span(i: usize, now_nanos: u64, content: bool) -> Span {
    let h = mix(i);
    let model = MODELS[(h >> 4) as usize % MODELS.len()];
    let (operation, name) = match h % 10 {
        0 => ("execute_tool", "execute_tool run_tests".to_owned()),
        1 => ("embeddings", format!("embeddings {model}")),
        _ => ("chat", format!("chat {model}")),
    };
    let millis = 50 + (h >> 12) % 4000;
    let end = now_nanos - ((h >> 24) % 3_000_000_000);
    let start = end - millis * 1_000_000;
    let failed = (h >> 40).is_multiple_of(20);
    let input = 200 + (h >> 28) % 3000;
    let output = 20 + (h >> 36) % 800;
    let prompt = PROMPTS[(h >> 44) as usize % PROMPTS.len()];
    let answer = ANSWERS[(h >> 46) as usize % ANSWERS.len()];
    let mut attributes = vec![
        text("gen_ai.operation.name", operation),
        text("gen_ai.provider.name", "openai"),
        text("gen_ai.request.model", model),
        text("gen_ai.response.model", format!("{model}-2024-08-06")),
        text(
            "gen_ai.agent.name",
            AGENTS[(h >> 8) as usize % AGENTS.len()],
        ),
        text("gen_ai.conversation.id", format!("conv-{:x}", h >> 50)),
        int("gen_ai.usage.input_tokens", input),
        int("gen_ai.usage.output_tokens", output),
        kv("gen_ai.request.temperature", Any::DoubleValue(0.2)),
    ];
    if operation == "chat" {
        attributes.extend([
            text("gen_ai.response.id", format!("chatcmpl-{h:016x}")),
            kv(
                "gen_ai.response.finish_reasons",
                Any::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Any::StringValue("stop".to_owned())),
                    }],
                }),
            ),
        ]);
    }
    if operation == "chat" && content {
        attributes.extend([
            text(
                "gen_ai.input.messages",
                serde_json::json!([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])
                    .to_string(),
            ),
            text(
                "gen_ai.output.messages",
                serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}])
                    .to_string(),
            ),
        ]);
    } else if operation == "execute_tool" {
        attributes.push(text("gen_ai.tool.name", "run_tests"));
    }
    if failed {
        attributes.push(text("error.type", "timeout"));
    }
    let id = |salt: u64| mix(i ^ salt as usize);
    Span {
        trace_id: [id(1).to_be_bytes(), id(2).to_be_bytes()].concat(),
        span_id: (id(3) | 1).to_be_bytes().to_vec(),
        parent_span_id: if h.is_multiple_of(3) {
            Vec::new()
        } else {
            (id(4) | 1).to_be_bytes().to_vec()
        },
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status {
            code: if failed {
                StatusCode::Error
            } else {
                StatusCode::Ok
            } as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_spans_map_completely_and_pass_the_pii_guard() {
        let now = 1_800_000_000;
        for content in [false, true] {
            let body = otlp_body(3, 512, now as u64 * 1_000_000_000, content);
            let request = decode_traces(&body, Encoding::Protobuf).expect("a valid request");
            let mapped = map_traces(&request, now, &|text: &str| {
                crate::core::privacy::pii::contains_pii(text).is_empty()
            });
            assert_eq!(mapped.envelopes.len(), 512, "{:?}", mapped.message("span"));
            assert_eq!(mapped.rejected, 0);
            assert_eq!(mapped.content_dropped, 0, "{:?}", mapped.first_drop);
            let kinds: std::collections::HashSet<_> =
                mapped.envelopes.iter().map(|e| e.kind.as_str()).collect();
            assert!(
                kinds.contains("llm_call") && kinds.contains("tool_call"),
                "{kinds:?}"
            );
            let with_content = mapped
                .envelopes
                .iter()
                .filter(|e| e.payload.get().contains("\"content\":{"))
                .count();
            assert_eq!(with_content > 0, content);
        }
    }

    #[test]
    fn counters_are_summed_over_their_series_only() {
        let text = "# HELP x\nphoenix_otlp_rejected_total{reason=\"a\"} 2\n\
                    phoenix_otlp_rejected_total{reason=\"b\"} 3\nphoenix_otlp_rejected_totalx 9\n";
        assert_eq!(counter_sum(text, "phoenix_otlp_rejected_total"), 5.0);
    }
}
