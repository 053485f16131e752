use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000;
const START: u64 = 1_799_999_000 * 1_000_000_000;

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, Any::StringValue(value.to_owned()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, Any::IntValue(value))
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![3; 8],
        name: name.to_owned(),
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_250_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn no_email(text: &str) -> bool {
    !text.contains('@')
}

fn payload(env: &crate::core::telemetry::TelemetryEnvelope) -> Value {
    serde_json::from_str(env.payload.get()).unwrap()
}

#[test]
fn a_genai_chat_span_maps_field_by_field() {
    let req = request(
        vec![
            s("service.name", "support bot"),
            s("service.namespace", "acme"),
            s("service.instance.id", "host-1"),
            s("phoenix.orch_id", "orch-7"),
        ],
        vec![span(
            "chat gpt-4o",
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                i("gen_ai.usage.input_tokens", 120),
                i("gen_ai.usage.output_tokens", 42),
                i("gen_ai.usage.cache_read.input_tokens", 100),
                kv("gen_ai.usage.cost", Any::DoubleValue(0.0031)),
                kv(
                    "gen_ai.response.finish_reasons",
                    Any::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Any::StringValue("stop".into())),
                        }],
                    }),
                ),
                s("gen_ai.conversation.id", "conv-1"),
                s(
                    "gen_ai.input.messages",
                    r#"[{"role":"user","content":"hi USER_A"}]"#,
                ),
                s("gen_ai.output.messages", "write to bob@example.com"),
                s("app.user_tier", "gold"),
                i("app.retries", 2),
            ],
        )],
    );
    let mapped = map_traces(&req, NOW, &no_email);
    assert_eq!(mapped.rejected, 0);
    assert_eq!(mapped.content_dropped, 1);
    let env = &mapped.envelopes[0];
    assert_eq!(env.kind, "llm_call");
    assert_eq!(env.level.as_deref(), Some("info"));
    assert_eq!(env.agent_path.as_deref(), Some("acme/support-bot"));
    assert_eq!(env.orch_id.as_deref(), Some("orch-7"));
    assert_eq!(env.ts_unix, Some(1_799_999_000));
    assert_eq!(env.tags.as_deref(), Some(&["otlp".to_owned()][..]));
    let p = payload(env);
    assert_eq!(p["response_time"], json!(1250));
    assert_eq!(p["model"], "gpt-4o-2024-08-06");
    assert_eq!(p["request_model"], "gpt-4o");
    assert_eq!(p["provider"], "openai");
    assert_eq!(
        p["tokens"],
        json!({"input": 120, "output": 42, "total": 162, "cached": 100})
    );
    assert_eq!(p["cost"], json!(0.0031));
    assert_eq!(p["finish_reasons"], json!(["stop"]));
    assert_eq!(p["conversation_id"], "conv-1");
    assert_eq!(p["trace_id"], "07".repeat(16));
    assert_eq!(p["span_id"], "03".repeat(8));
    assert_eq!(
        p["content"],
        json!({"gen_ai.input.messages": r#"[{"role":"user","content":"hi USER_A"}]"#})
    );
    assert_eq!(p["content_dropped"], json!(["gen_ai.output.messages"]));
    assert_eq!(
        p["attributes"],
        json!({"app.user_tier": "gold", "app.retries": 2})
    );
    let message = mapped.message("span").unwrap();
    assert!(message.contains("gen_ai.output.messages"), "{message}");
    assert!(
        !message.contains("bob@"),
        "the answer never repeats the value: {message}"
    );
}

#[test]
fn an_openinference_span_maps_to_the_same_fields() {
    let req = request(
        vec![s("service.name", "rag")],
        vec![span(
            "ChatCompletion",
            vec![
                s("openinference.span.kind", "LLM"),
                s("llm.model_name", "claude-sonnet-4"),
                s("llm.provider", "anthropic"),
                i("llm.token_count.prompt", 900),
                i("llm.token_count.completion", 80),
                i("llm.token_count.total", 980),
                i("llm.token_count.completion_details.reasoning", 30),
                kv("llm.cost.total", Any::DoubleValue(0.01)),
                s("session.id", "sess-9"),
                s("input.value", "what is our refund policy"),
            ],
        )],
    );
    let mapped = map_traces(&req, NOW, &no_email);
    let env = &mapped.envelopes[0];
    assert_eq!(env.kind, "llm_call");
    assert_eq!(env.agent_path.as_deref(), Some("rag"));
    let p = payload(env);
    assert_eq!(p["model"], "claude-sonnet-4");
    assert_eq!(p["provider"], "anthropic");
    assert_eq!(
        p["tokens"],
        json!({"input": 900, "output": 80, "total": 980, "reasoning": 30})
    );
    assert_eq!(p["cost"], json!(0.01));
    assert_eq!(p["conversation_id"], "sess-9");
    assert_eq!(p["content"]["input.value"], "what is our refund policy");

    for (oi, kind) in [
        ("TOOL", "tool_call"),
        ("AGENT", "agent_run"),
        ("RETRIEVER", "retrieval"),
        ("EMBEDDING", "embedding"),
        ("chain", "chain"),
    ] {
        let req = request(
            vec![],
            vec![span("x", vec![s("openinference.span.kind", oi)])],
        );
        assert_eq!(
            map_traces(&req, NOW, &no_email).envelopes[0].kind,
            kind,
            "{oi}"
        );
    }
    for (op, kind) in [
        ("execute_tool", "tool_call"),
        ("invoke_agent", "agent_run"),
        ("embeddings", "embedding"),
        ("text_completion", "llm_call"),
        ("my op", "my_op"),
    ] {
        let req = request(
            vec![],
            vec![span("x", vec![s("gen_ai.operation.name", op)])],
        );
        assert_eq!(
            map_traces(&req, NOW, &no_email).envelopes[0].kind,
            kind,
            "{op}"
        );
    }
}

#[test]
fn without_conventions_the_span_name_and_service_decide() {
    let mut failed = span("GET /orders", vec![s("gen_ai.tool.name", "search")]);
    failed.status = Some(Status {
        code: 2,
        message: "timeout".to_owned(),
    });
    failed.events = vec![Event {
        name: "exception".to_owned(),
        time_unix_nano: START + 1_000_000,
        attributes: vec![
            s("exception.type", "TimeoutError"),
            s("exception.message", "no answer from jane@example.com"),
        ],
        ..Default::default()
    }];
    let req = request(
        vec![s("service.name", "shop"), s("service.instance.id", "i-1")],
        vec![failed],
    );
    let mapped = map_traces(&req, NOW, &no_email);
    let env = &mapped.envelopes[0];
    assert_eq!(env.kind, "GET_/orders");
    assert_eq!(env.level.as_deref(), Some("error"));
    assert_eq!(env.orch_id.as_deref(), Some("i-1"));
    let p = payload(env);
    assert_eq!(p["error_type"], "TimeoutError");
    assert_eq!(p["tool_name"], "search");
    assert_eq!(p["status_message"], "timeout");
    assert_eq!(p["events"][0]["name"], "exception");
    assert_eq!(p["events"][0]["at_ms"], json!(1));
    assert_eq!(
        p["events"][0]["attributes"],
        json!({"exception.type": "TimeoutError"})
    );
    assert_eq!(p["content_dropped"], json!(["events.exception.message"]));
}

#[test]
fn bad_spans_are_refused_by_position_and_field_and_the_rest_kept() {
    let mut no_trace = span("a", vec![]);
    no_trace.trace_id = vec![0; 16];
    let mut short_span = span("b", vec![]);
    short_span.span_id = vec![1; 4];
    let mut backwards = span("c", vec![]);
    backwards.end_time_unix_nano = START - 1;
    let mut future = span("d", vec![]);
    future.start_time_unix_nano = (NOW as u64 + 2 * 86_400) * 1_000_000_000;
    future.end_time_unix_nano = future.start_time_unix_nano;
    let req = request(
        vec![],
        vec![span("ok", vec![]), no_trace, short_span, backwards, future],
    );
    let mapped = map_traces(&req, NOW, &no_email);
    assert_eq!(mapped.envelopes.len(), 1);
    assert_eq!(mapped.rejected, 4);
    let message = mapped.message("span").unwrap();
    assert!(
        message.starts_with("span 1 of resourceSpans[0].scopeSpans[0]: field `traceId`"),
        "{message}"
    );
    assert!(message.contains("(4 spans refused in all)"), "{message}");
}

#[test]
fn json_takes_enum_names_or_numbers_hex_ids_and_string_integers() {
    let body = json!({"resourceSpans": [{"resource": null, "scopeSpans": [{"spans": [
        {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174",
         "name": "n", "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": "1799999000000000000",
         "endTimeUnixNano": 1799999000500000000u64,
         "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}],
         "status": {"code": "STATUS_CODE_ERROR"}},
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
         "name": "m", "kind": 3, "status": {"code": 1}}
    ]}]}]});
    let req = decode_traces(body.to_string().as_bytes(), Encoding::Json).unwrap();
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0].kind, 3);
    assert_eq!(spans[0].status.as_ref().unwrap().code, 2);
    assert_eq!(spans[0].trace_id[0], 0x5b);
    assert_eq!(spans[1].kind, 3);
    let mapped = map_traces(&req, NOW, &no_email);
    let p = payload(&mapped.envelopes[0]);
    assert_eq!(p["response_time"], json!(500));
    assert_eq!(p["tokens"]["input"], json!(12));
    assert_eq!(mapped.envelopes[0].level.as_deref(), Some("error"));

    // The same request as protobuf decodes to the same message.
    let bytes = req.encode_to_vec();
    assert_eq!(decode_traces(&bytes, Encoding::Protobuf).unwrap(), req);
}

#[test]
fn undecodable_bodies_name_where_they_fail() {
    let e = decode_traces(
        b"{\"resourceSpans\": [{\"scopeSpans\": [{\"spans\": [{\"kind\": \"SPAN_KIND_NOPE\"}]}]}]}",
        Encoding::Json,
    )
    .unwrap_err();
    assert!(
        e.0.contains("resourceSpans[0].scopeSpans[0].spans[0].kind"),
        "{e}"
    );
    let e = decode_traces(
        br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "xyz"}]}]}]}"#,
        Encoding::Json,
    )
    .unwrap_err();
    assert!(e.0.contains("spans[0].spanId"), "{e}");
    assert!(decode_traces(b"[1]", Encoding::Json).is_err());
    assert!(decode_traces(b"not json", Encoding::Json).is_err());
    assert!(decode_traces(b"\xff\xff\xff", Encoding::Protobuf).is_err());
    assert_eq!(
        Encoding::from_content_type("application/x-protobuf; charset=binary"),
        Some(Encoding::Protobuf)
    );
    assert_eq!(Encoding::from_content_type("text/plain"), None);
}

#[test]
fn log_records_take_severity_event_name_and_body() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let log = |severity: i32, body: &str| LogRecord {
        time_unix_nano: START,
        severity_number: severity,
        event_name: "gen_ai.client.inference.operation.details".to_owned(),
        body: Some(AnyValue {
            value: Some(Any::StringValue(body.to_owned())),
        }),
        attributes: vec![
            s("gen_ai.request.model", "m1"),
            i("gen_ai.usage.output_tokens", 5),
        ],
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![s("service.name", "kb")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![log(17, "failed for USER_B"), log(9, "mail x@y.z")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mapped = map_logs(&req, NOW, &no_email);
    assert_eq!(mapped.envelopes.len(), 2);
    let (a, b) = (&mapped.envelopes[0], &mapped.envelopes[1]);
    assert_eq!(a.kind, "gen_ai.client.inference.operation.details");
    assert_eq!(a.level.as_deref(), Some("error"));
    assert_eq!(b.level.as_deref(), Some("info"));
    assert_eq!(a.agent_path.as_deref(), Some("kb"));
    let pa = payload(a);
    assert_eq!(pa["content"]["body"], "failed for USER_B");
    assert_eq!(pa["model"], "m1");
    assert_eq!(pa["tokens"]["output"], json!(5));
    let pb = payload(b);
    assert!(pb.get("content").is_none());
    assert_eq!(pb["content_dropped"], json!(["body"]));
    assert_eq!(mapped.content_dropped, 1);
}

#[test]
fn answers_are_empty_on_full_success_and_status_bodies_have_codes() {
    let ok = encode(&trace_response(0, None), Encoding::Json);
    assert_eq!(ok, b"{}");
    assert!(encode(&trace_response(0, None), Encoding::Protobuf).is_empty());
    let partial: Value = serde_json::from_slice(&encode(
        &trace_response(2, Some("x".into())),
        Encoding::Json,
    ))
    .unwrap();
    assert_eq!(partial["partialSuccess"]["rejectedSpans"], json!(2));
    let status = RpcStatus {
        code: rpc_code(400),
        message: "bad".into(),
        details: vec![],
    };
    let back = RpcStatus::decode(encode(&status, Encoding::Protobuf).as_slice()).unwrap();
    assert_eq!(back.code, 3);
    assert_eq!(back.message, "bad");
    assert_eq!(rpc_code(429), 8);
    assert_eq!(rpc_code(503), 14);
}

#[test]
fn spans_inside_an_agent_span_belong_to_that_agent_under_the_namespace() {
    let with_ids = |name: &str, id: u8, parent: Option<u8>, attrs: Vec<KeyValue>| Span {
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        ..span(name, attrs)
    };
    let req = request(
        vec![s("service.name", "app"), s("service.namespace", "acme")],
        vec![
            // Children first: the order in a request is not the order of the tree.
            with_ids(
                "chat gpt-4o",
                3,
                Some(2),
                vec![s("gen_ai.operation.name", "chat")],
            ),
            with_ids(
                "execute_tool search",
                2,
                Some(1),
                vec![s("gen_ai.operation.name", "execute_tool")],
            ),
            with_ids(
                "invoke_agent planner",
                1,
                None,
                vec![
                    s("gen_ai.operation.name", "invoke_agent"),
                    s("gen_ai.agent.name", "planner"),
                ],
            ),
            with_ids(
                "invoke_agent triage",
                4,
                None,
                vec![s("gen_ai.agent.name", "acme/triage")],
            ),
            with_ids("chat unrelated", 5, None, vec![]),
            // A parent cycle in hostile input ends at the resource's path.
            with_ids("loop a", 6, Some(7), vec![]),
            with_ids("loop b", 7, Some(6), vec![]),
        ],
    );
    let mapped = map_traces(&req, NOW, &no_email);
    let paths: Vec<_> = mapped
        .envelopes
        .iter()
        .map(|e| e.agent_path.as_deref().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "acme/planner",
            "acme/planner",
            "acme/planner",
            "acme/triage",
            "acme/app",
            "acme/app",
            "acme/app"
        ]
    );
}
