//! OTLP/HTTP ingest, exercised with the real OpenTelemetry Rust SDK (`opentelemetry_sdk` +
//! `opentelemetry-otlp`, HTTP/protobuf and HTTP/JSON) and with hand-made bodies for every
//! error class.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{LogExporter, Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use phoenix::core::collector::{CollectorConfig, Limits};
use phoenix::core::store::StoreOptions;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::support::bytes::{contains, files_in};
use crate::support::collector::{DB_FILE, TestCollector, metric_value};
use crate::support::full_queue::FullQueueStore;
use crate::support::otlp::rpc_status;

const RAW_EMAIL: &str = "maria.gonzalez@example.org";
const RAW_PHONE: &str = "+1 415 555 0134";

fn resource(service: &str, orch: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.to_owned()),
            KeyValue::new("service.namespace", "acme"),
            KeyValue::new("service.instance.id", orch.to_owned()),
        ])
        .build()
}

/// One GenAI chat span, one OpenInference tool span and one failed chat span, exported
/// through the SDK's simple processor (each span is one POST) with `protocol`.
async fn export_spans(url: String, protocol: Protocol) {
    tokio::task::spawn_blocking(move || {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{url}/v1/traces"))
            .build()
            .expect("span exporter");
        let provider = SdkTracerProvider::builder()
            .with_resource(resource("support-bot", "orch-otel-1"))
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("openai-instrumentation");
        let mut chat = tracer
            .span_builder("chat gpt-4o")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.provider.name", "openai"),
                KeyValue::new("gen_ai.request.model", "gpt-4o"),
                KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
                KeyValue::new("gen_ai.usage.input_tokens", 812_i64),
                KeyValue::new("gen_ai.usage.output_tokens", 96_i64),
                KeyValue::new("gen_ai.usage.cache_read.input_tokens", 512_i64),
                KeyValue::new("gen_ai.usage.cost", 0.0042),
                KeyValue::new("gen_ai.conversation.id", "conv-77"),
                KeyValue::new(
                    "gen_ai.input.messages",
                    format!(
                        r#"[{{"role":"user","content":"I am Maria Gonzalez, mail {RAW_EMAIL} or call {RAW_PHONE}"}}]"#
                    ),
                ),
                KeyValue::new(
                    "gen_ai.output.messages",
                    r#"[{"role":"assistant","content":"Your order ships tomorrow."}]"#,
                ),
            ])
            .start(&tracer);
        chat.set_attribute(KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(vec![opentelemetry::StringValue::from("stop")].into()),
        ));
        chat.end();

        let mut tool = tracer
            .span_builder("lookup_order")
            .with_attributes([
                KeyValue::new("openinference.span.kind", "TOOL"),
                KeyValue::new("tool.name", "lookup_order"),
                KeyValue::new("input.value", r#"{"order": 1234}"#),
            ])
            .start(&tracer);
        tool.end();

        let mut failed = tracer
            .span_builder("chat claude")
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", "claude-sonnet-4"),
                KeyValue::new("error.type", "rate_limited"),
            ])
            .start(&tracer);
        failed.set_status(Status::error("429 from the provider"));
        failed.end();
        provider.shutdown().expect("tracer provider shutdown");
    })
    .await
    .unwrap();
}

/// Every file of the collector's data directory, as bytes: raw PII must be in none.
fn data_files(c: &TestCollector) -> Vec<u8> {
    files_in(c.dir.path())
}

async fn check_stored_spans(c: &TestCollector) {
    let chats = c.telemetry("kind=llm_call").await;
    assert_eq!(chats.len(), 2, "{chats:#?}");
    let chat = chats
        .iter()
        .find(|r| r["payload"]["request_model"] == "gpt-4o")
        .expect("the gpt-4o span");
    assert_eq!(chat["agent_path"], "acme/support-bot");
    assert_eq!(chat["level"], "info");
    assert_eq!(chat["tags"], json!(["otlp"]));
    let orch = chat["orch_hash"].as_str().unwrap();
    assert_eq!(orch, c.state.anonymizer.orch_hash("orch-otel-1"));
    let p = &chat["payload"];
    assert_eq!(p["model"], "gpt-4o-2024-08-06");
    assert_eq!(p["response_model"], "gpt-4o-2024-08-06");
    assert_eq!(p["provider"], "openai");
    assert_eq!(
        p["tokens"],
        json!({"input": 812, "output": 96, "total": 908, "cached": 512})
    );
    assert_eq!(p["cost"], json!(0.0042));
    assert_eq!(p["finish_reasons"], json!(["stop"]));
    assert_eq!(p["conversation_id"], "conv-77");
    assert_eq!(p["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(p["span_id"].as_str().unwrap().len(), 16);
    assert!(p["response_time"].as_f64().unwrap() >= 0.0);
    // The prompt held an email and a phone number: dropped, the metrics kept.
    assert_eq!(p["content_dropped"], json!(["gen_ai.input.messages"]));
    assert!(p["content"].get("gen_ai.input.messages").is_none());
    assert_eq!(
        p["content"]["gen_ai.output.messages"],
        r#"[{"role":"assistant","content":"Your order ships tomorrow."}]"#
    );

    let failed = chats
        .iter()
        .find(|r| r["payload"]["request_model"] == "claude-sonnet-4")
        .unwrap();
    assert_eq!(failed["level"], "error");
    assert_eq!(failed["payload"]["error_type"], "rate_limited");
    assert_eq!(failed["payload"]["status_message"], "429 from the provider");

    let tools = c.telemetry("kind=tool_call").await;
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["payload"]["tool_name"], "lookup_order");
    assert_eq!(
        tools[0]["payload"]["content"]["input.value"],
        r#"{"order": 1234}"#
    );

    let all = serde_json::to_string(&c.telemetry("").await).unwrap();
    assert!(
        !all.contains(RAW_EMAIL) && !all.contains("555 0134"),
        "{all}"
    );
    let files = data_files(c);
    assert!(
        !contains(&files, RAW_EMAIL),
        "raw email in the store's files"
    );
    assert!(
        !contains(&files, "555 0134"),
        "raw phone in the store's files"
    );

    let metrics = c.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "phoenix_otlp_accepted_total", "signal=\"span\""),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "phoenix_otlp_content_dropped_total", ""),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_otel_sdk_over_http_protobuf_are_stored_field_by_field() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    export_spans(c.url.clone(), Protocol::HttpBinary).await;
    check_stored_spans(&c).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_otel_sdk_over_http_json_are_stored_field_by_field() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    export_spans(c.url.clone(), Protocol::HttpJson).await;
    check_stored_spans(&c).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_from_the_otel_sdk_are_stored_with_their_severity() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let url = c.url.clone();
    tokio::task::spawn_blocking(move || {
        let exporter = LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{url}/v1/logs"))
            .build()
            .unwrap();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource("kb-agent", "orch-otel-2"))
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("genai-events");
        let mut record = logger.create_log_record();
        record.set_event_name("gen_ai.client.inference.operation.details");
        record.set_severity_number(Severity::Error);
        record.set_severity_text("ERROR");
        record.set_body(AnyValue::from(format!("could not reach {RAW_EMAIL}")));
        record.add_attribute("gen_ai.request.model", "gpt-4o-mini");
        record.add_attribute("gen_ai.usage.output_tokens", 17_i64);
        logger.emit(record);
        let mut info = logger.create_log_record();
        info.set_severity_number(Severity::Info);
        info.set_body(AnyValue::from("retrieval finished"));
        logger.emit(info);
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let events = c
        .telemetry("kind=gen_ai.client.inference.operation.details")
        .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["level"], "error");
    assert_eq!(e["agent_path"], "acme/kb-agent");
    assert_eq!(e["payload"]["model"], "gpt-4o-mini");
    assert_eq!(e["payload"]["tokens"]["output"], json!(17));
    assert_eq!(e["payload"]["content_dropped"], json!(["body"]));
    let plain = c.telemetry("kind=log").await;
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0]["level"], "info");
    assert_eq!(plain[0]["payload"]["content"]["body"], "retrieval finished");
    assert!(!contains(&data_files(&c), RAW_EMAIL));
    c.stop().await;
}

/// A minimal OTLP JSON trace body with `spans`.
fn json_body(spans: Value) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"spans": spans}]
    }]})
}

fn json_span(span_id: &str) -> Value {
    json!({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "chat",
           "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": "1700000000000000000",
           "endTimeUnixNano": "1700000000400000000",
           "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]})
}

async fn post(
    c: &TestCollector,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    c.client()
        .post(c.endpoint(path))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_otlp_error_class_has_its_status_and_a_status_body() {
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let c = TestCollector::start(CollectorConfig {
        limits,
        ..CollectorConfig::default()
    })
    .await;

    // 415: neither protobuf nor JSON.
    let resp = post(&c, "/v1/traces", "text/plain", b"hello".to_vec()).await;
    let (code, status, _) = rpc_status(resp).await;
    assert_eq!((code, status.code), (415, 3));
    assert!(
        status.message.contains("application/x-protobuf"),
        "{status:?}"
    );

    // 400, protobuf: the answer is a protobuf Status.
    let resp = post(&c, "/v1/traces", "application/x-protobuf", vec![0xff; 12]).await;
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/x-protobuf");
    let (code, status, _) = rpc_status(resp).await;
    assert_eq!((code, status.code), (400, 3));
    assert!(status.message.contains("protobuf"), "{status:?}");

    // 400, JSON: names where it fails.
    let bad = json_body(json!([{"traceId": "not-hex", "spanId": "eee19b7ec3c1b174"}]));
    let resp = post(&c, "/v1/traces", "application/json", bad.to_string().into()).await;
    let (code, status, _) = rpc_status(resp).await;
    assert_eq!((code, status.code), (400, 3));
    assert!(
        status
            .message
            .contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        "{status:?}"
    );
    let resp = post(&c, "/v1/logs", "application/json", b"[]".to_vec()).await;
    assert_eq!(rpc_status(resp).await.0, 400);

    // 413: over the body limit, also when gzip inflates past it... the wire size decides.
    let big = json_body(json!([json_span("eee19b7ec3c1b174")])).to_string() + &" ".repeat(5000);
    let resp = post(&c, "/v1/traces", "application/json", big.into()).await;
    let (code, status, _) = rpc_status(resp).await;
    assert_eq!((code, status.code), (413, 8));

    // Partial success: the bad span named by position and field, the good one stored.
    let mixed = json_body(json!([
        json_span("eee19b7ec3c1b174"),
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0000000000000000", "name": "x"}
    ]));
    let resp = post(
        &c,
        "/v1/traces",
        "application/json",
        mixed.to_string().into(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedSpans"],
        json!(1),
        "{answer}"
    );
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("span 1 of resourceSpans[0].scopeSpans[0]: field `spanId`"),
        "{message}"
    );
    assert_eq!(c.telemetry("kind=llm_call").await.len(), 1);

    // gzip is accepted; full success answers an empty message.
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(
        json_body(json!([json_span("eee19b7ec3c1b175")]))
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let resp = c
        .client()
        .post(c.endpoint("/v1/traces"))
        .header(CONTENT_TYPE, "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(c.telemetry("kind=llm_call").await.len(), 2);

    let metrics = c.metrics_text().await;
    for (reason, n) in [
        ("unsupported_media_type", 1.0),
        ("invalid_otlp", 3.0),
        ("too_large", 1.0),
        ("invalid_span", 1.0),
    ] {
        assert_eq!(
            metric_value(
                &metrics,
                "phoenix_otlp_rejected_total",
                &format!("reason=\"{reason}\"")
            ),
            Some(n),
            "{reason}: {metrics}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after_and_authentication_answers_a_status() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path().join(DB_FILE));
    let (c, store) = FullQueueStore::start(dir, options).await;
    let body = json_body(json!([json_span("eee19b7ec3c1b174")])).to_string();
    let resp = post(&c, "/v1/traces", "application/json", body.clone().into()).await;
    let (code, status, retry) = rpc_status(resp).await;
    assert_eq!((code, status.code), (429, 8));
    assert!(retry.expect("Retry-After").parse::<u64>().unwrap() >= 1);
    assert!(c.telemetry("kind=llm_call").await.is_empty());
    store.set_full(false);
    let resp = post(&c, "/v1/traces", "application/json", body.into()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(c.telemetry("kind=llm_call").await.len(), 1);
    c.stop().await;

    let c = TestCollector::start(CollectorConfig {
        ingest_tokens: vec!["s3cret".to_owned()],
        ..CollectorConfig::default()
    })
    .await;
    let resp = post(&c, "/v1/logs", "application/x-protobuf", Vec::new()).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (code, status, _) = rpc_status(resp).await;
    assert_eq!((code, status.code), (401, 16));
    let resp = c
        .client()
        .post(c.endpoint("/v1/logs"))
        .header(CONTENT_TYPE, "application/x-protobuf")
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "an empty export is a success");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reports_per_model_figures_and_recommends_a_model_tweak() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let url = c.url.clone();
    tokio::task::spawn_blocking(move || {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{url}/v1/traces"))
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource("planner", "orch-otel-3"))
            // The batch processor runs its own thread without a Tokio runtime, which the async
            // reqwest client needs: one POST per span here.
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("genai");
        let start = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for i in 0..24u64 {
            // gpt-4o answers in ~2.4 s, gpt-4o-mini in ~0.4 s.
            let (model, ms, tokens) = if i % 2 == 0 {
                ("gpt-4o", 2400 + i * 10, 900)
            } else {
                ("gpt-4o-mini", 400 + i * 5, 700)
            };
            let begin = start + std::time::Duration::from_secs(i);
            let mut span = tracer
                .span_builder(format!("chat {model}"))
                .with_start_time(begin)
                .with_attributes([
                    KeyValue::new("gen_ai.operation.name", "chat"),
                    KeyValue::new("gen_ai.request.model", model),
                    KeyValue::new("gen_ai.usage.input_tokens", tokens as i64),
                    KeyValue::new("gen_ai.usage.output_tokens", 50_i64),
                ])
                .start(&tracer);
            span.end_with_timestamp(begin + std::time::Duration::from_millis(ms));
        }
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(c.telemetry("kind=llm_call").await.len(), 24);

    let home = tempfile::tempdir().unwrap();
    let out = crate::support::bin::phoenix(home.path())
        .args(["analyze", "--url", &c.url, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let insight: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = insight["stats"]["models"]
        .as_array()
        .expect("per-model stats");
    let big = models.iter().find(|m| m["model"] == "gpt-4o").unwrap();
    let mini = models.iter().find(|m| m["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(big["records"], 12);
    assert_eq!(big["agents"], json!(["acme/planner"]));
    let p50 = |m: &Value| m["response_time"]["p50"].as_f64().unwrap();
    assert!((p50(big) - 2510.0).abs() < 1.0, "{big}");
    assert!((p50(mini) - 460.0).abs() < 1.0, "{mini}");
    assert_eq!(big["input_tokens"]["mean"], json!(900.0));
    assert_eq!(mini["total_tokens"]["mean"], json!(750.0));
    let bullets = insight["summary"].to_string();
    assert!(
        bullets.contains("model_tweak")
            && bullets.contains("`gpt-4o`")
            && bullets.contains("`gpt-4o-mini`"),
        "{bullets}"
    );

    let out = crate::support::bin::phoenix(home.path())
        .args(["analyze", "--url", &c.url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("gpt-4o-mini") && table.contains("latency p50 ms"),
        "{table}"
    );
    c.stop().await;
}

/// `serve all --otlp-bind` answers OTLP (and /health) on a second port, announces it after the
/// services' lines, shares the store with the main listener and stops with it.
#[tokio::test]
async fn serve_all_otlp_bind_is_a_second_listener_on_the_same_store() {
    use tokio::io::AsyncBufReadExt as _;

    let home = tempfile::tempdir().unwrap();
    let out = crate::support::bin::phoenix(home.path())
        .args(["serve", "collector", "--bind", "127.0.0.1:0"])
        .args(["--otlp-bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without authentication"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = crate::support::bin::phoenix_async(home.path())
        .args(["serve", "all", "--bind", "127.0.0.1:0"])
        .args([
            "--distributor-bind",
            "127.0.0.1:0",
            "--otlp-bind",
            "127.0.0.1:0",
        ])
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for _ in 0..3 {
        let line = lines.next_line().await.unwrap().expect("an announce line");
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let services: Vec<_> = events.iter().map(|e| e["service"].clone()).collect();
    assert_eq!(
        services,
        json!(["collector", "distributor", "otlp"])
            .as_array()
            .unwrap()
            .clone()
    );
    let main = events[0]["url"].as_str().unwrap().to_owned();
    let otlp = events[2]["url"].as_str().unwrap().to_owned();
    assert_ne!(main, otlp);

    let http = reqwest::Client::new();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "side-door"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "chat",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000250000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
        }]}]
    }]});
    let resp = http
        .post(format!("{otlp}/v1/traces"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    // Only OTLP and /health there; the rest of the API stays on the main listener.
    assert_eq!(
        http.get(format!("{otlp}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = http.get(format!("{otlp}/telemetry")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let stored: Value = http
        .get(format!("{main}/telemetry?agent_prefix=side-door"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = stored["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{stored}");
    assert_eq!(records[0]["kind"], "llm_call");
    assert_eq!(records[0]["payload"]["response_time"].as_f64(), Some(250.0));

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().await.unwrap().success());
}
