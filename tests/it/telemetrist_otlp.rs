//! The edge OTLP proxy as an agent uses it: `phoenix telemetrist --otlp-listen` (the real
//! binary, its own PHOENIX_HOME) between the OpenTelemetry Rust SDK and an in-process
//! collector. What reaches the collector is redacted, the edge's vault maps it back, and a
//! collector outage loses nothing and duplicates nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{LogExporter, Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue as ProtoValue, KeyValue as ProtoKeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use phoenix::core::collector::{CollectorConfig, Limits};
use phoenix::core::privacy::telemetrist::spool::{OtlpCounts, Spool};
use prost::Message as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::support::bin::phoenix_async;
use crate::support::bytes::{contains, files_in};
use crate::support::collector::{TestCollector, metric_value};
use crate::support::otlp::rpc_status;

const RAW_NAME: &str = "Dan Johnson";
const RAW_EMAIL: &str = "dan.johnson@globex.example";
const RAW_PHONE: &str = "+1 415 555 0132";
/// Pieces of the raw values that must be in no byte the collector holds.
const RAW_PIECES: &[&str] = &["Johnson", RAW_EMAIL, "555 0132"];
const WAIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn input_messages() -> String {
    json!([{"role": "user", "content": format!(
        "Hi, I'm {RAW_NAME}. Mail {RAW_EMAIL} or call {RAW_PHONE} about my order."
    )}])
    .to_string()
}

/// A running `phoenix telemetrist --otlp-listen 127.0.0.1:0 --json`.
struct EdgeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its `listening` line.
    url: String,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl EdgeProcess {
    async fn start(home: &Path, collector: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = phoenix_async(home);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args([
                "telemetrist",
                "--otlp-listen",
                "127.0.0.1:0",
                "--url",
                collector,
                "--retries",
                "0",
                "--json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(child.stderr.take().unwrap(), stderr.clone()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("the listening line in time")
            .unwrap()
            .unwrap_or_else(|| panic!("no listening line: {}", stderr.lock().unwrap()));
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (&event["event"], &event["service"]),
            (&json!("listening"), &json!("otlp")),
            "the first line says where: {line}"
        );
        let url = event["url"].as_str().unwrap().to_owned();
        EdgeProcess {
            child,
            url,
            stdout,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM; it must exit 0 in time.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        while let Ok(Some(_)) = self.stdout.next_line().await {}
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops within 30 s of SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.log());
    }
}

async fn collect(from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut all = into.lock().unwrap();
        all.push_str(&line);
        all.push('\n');
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "support-bot"),
            KeyValue::new("service.namespace", "acme"),
        ])
        .build()
}

/// One GenAI chat span through the SDK (simple processor: one POST, over when this returns).
async fn export_chat(url: &str, protocol: Protocol, conversation: &str) {
    let (url, conversation) = (url.to_owned(), conversation.to_owned());
    tokio::task::spawn_blocking(move || {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{url}/v1/traces"))
            .build()
            .expect("span exporter");
        let provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("openai-instrumentation");
        let mut chat = tracer
            .span_builder("chat gpt-4o")
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", "gpt-4o"),
                KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
                KeyValue::new("gen_ai.usage.input_tokens", 812_i64),
                KeyValue::new("gen_ai.usage.output_tokens", 96_i64),
                KeyValue::new("gen_ai.conversation.id", conversation),
                KeyValue::new("gen_ai.input.messages", input_messages()),
                KeyValue::new(
                    "gen_ai.output.messages",
                    json!([{"role": "assistant", "content": "Your order ships tomorrow."}])
                        .to_string(),
                ),
            ])
            .start(&tracer);
        chat.end();
        provider.shutdown().expect("tracer provider shutdown");
    })
    .await
    .unwrap();
}

/// One log record over OTLP/HTTP JSON, in conversation `conversation`, whose body names
/// the raw email.
async fn export_log(url: &str, conversation: &str) {
    let (url, conversation) = (url.to_owned(), conversation.to_owned());
    tokio::task::spawn_blocking(move || {
        let exporter = LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{url}/v1/logs"))
            .build()
            .unwrap();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource())
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("genai-events");
        let mut record = logger.create_log_record();
        record.set_event_name("support.escalation");
        record.set_body(AnyValue::from(format!("could not reach {RAW_EMAIL}")));
        record.add_attribute("gen_ai.conversation.id", conversation);
        logger.emit(record);
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

/// Polls `check` until it gives a value or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spool_path(home: &Path) -> PathBuf {
    home.join("data/spool.db")
}

fn otlp_counts(home: &Path) -> OtlpCounts {
    Spool::open(&spool_path(home))
        .unwrap()
        .otlp_counts()
        .unwrap()
}

/// The URL of a port nothing listens on (it was free a moment ago).
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Brings `addr` up as a plain TCP relay to `to`: the collector "comes back" at the URL the
/// edge was started with.
async fn relay(addr: std::net::SocketAddr, to: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pseudonyms_reach_the_collector_and_the_edge_vault_reveals_them() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let home = tempfile::tempdir().unwrap();
    // Conversations from a directory go the old way beside the OTLP ones, in one process.
    let source = home.path().join("conversations");
    std::fs::create_dir(&source).unwrap();
    let conversation = json!({"conversation_id": "conv-file-1", "ready_to_log": true,
        "messages": [{"role": "user", "content": format!("I'm {RAW_NAME}")}]});
    std::fs::write(source.join("a.json"), conversation.to_string()).unwrap();
    let source_arg = source.to_str().unwrap();
    let edge = EdgeProcess::start(home.path(), &c.url, &["--source", source_arg], &[]).await;
    export_chat(&edge.url, Protocol::HttpBinary, "conv-otlp-1").await;
    export_log(&edge.url, "conv-otlp-1").await;

    let (chat, log) = eventually("the span and the log record at the collector", || async {
        let chats = c.telemetry("kind=llm_call").await;
        let logs = c.telemetry("kind=support.escalation").await;
        (chats.len() == 1 && logs.len() == 1).then(|| (chats[0].clone(), logs[0].clone()))
    })
    .await;
    let p = &chat["payload"];
    assert_eq!(p["model"], "gpt-4o-2024-08-06");
    assert_eq!(
        p["tokens"],
        json!({"input": 812, "output": 96, "total": 908})
    );
    assert_eq!(p["conversation_id"], "conv-otlp-1");
    assert_eq!(chat["agent_path"], "acme/support-bot");
    assert!(p.get("content_dropped").is_none(), "{p}");
    let input = p["content"]["gen_ai.input.messages"].as_str().unwrap();
    let messages: Value = serde_json::from_str(input).expect("still a JSON string of messages");
    assert_eq!(
        messages[0]["content"], "Hi, I'm USER_A. Mail USER_A_EMAIL or call PHONE_1 about my order.",
        "{input}"
    );
    assert_eq!(
        p["content"]["gen_ai.output.messages"],
        json!([{"role": "assistant", "content": "Your order ships tomorrow."}]).to_string(),
        "content without personal data is left as it was"
    );
    // One session per conversation, across signals: the same email, the same pseudonym.
    assert_eq!(
        log["payload"]["content"]["body"],
        "could not reach USER_A_EMAIL"
    );

    // Nothing raw at the collector: not in its records, not in any byte of its files.
    let all = serde_json::to_string(&c.telemetry("").await).unwrap();
    let files = files_in(c.dir.path());
    for raw in RAW_PIECES {
        assert!(!all.contains(raw), "{raw} reached the collector: {all}");
        assert!(!contains(&files, raw), "{raw} in the collector's files");
    }
    let metrics = c.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "phoenix_otlp_content_dropped_total", ""),
        Some(0.0),
        "{metrics}"
    );
    // The edge's spool holds only the redacted requests too.
    let spool = files_in(&home.path().join("data"));
    assert!(!contains(&spool, "Johnson") && !contains(&spool, RAW_EMAIL));

    // The collector answered 200 for the conversation: it is in the edge's ledger.
    eventually("the conversation in the ledger", || async {
        let counts = Spool::open(&spool_path(home.path()))
            .unwrap()
            .counts()
            .unwrap();
        (counts.sent == 1).then_some(())
    })
    .await;
    edge.stop().await;
    let counts = otlp_counts(home.path());
    assert_eq!((counts.pending, counts.sent), (0, 2), "{counts:?}");

    // The edge's vault maps the stored content back, in the conversation's session.
    let mut reveal = phoenix_async(home.path())
        .args(["redact", "--reveal", "--session", "conv-otlp-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = reveal.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = reveal.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revealed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let original: Value = serde_json::from_str(&input_messages()).unwrap();
    assert_eq!(revealed, original);
    c.stop().await;
}

/// A trace export request with one chat span, protobuf-encoded.
fn raw_span_request(content: &str) -> Vec<u8> {
    let string = |key: &str, value: &str| ProtoKeyValue {
        key: key.to_owned(),
        value: Some(ProtoValue {
            value: Some(Any::StringValue(value.to_owned())),
        }),
        ..ProtoKeyValue::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![ProtoSpan {
                    trace_id: vec![0x5b; 16],
                    span_id: vec![0x2a; 8],
                    name: "chat".to_owned(),
                    start_time_unix_nano: now,
                    end_time_unix_nano: now + 1_000_000,
                    attributes: vec![
                        string("gen_ai.operation.name", "chat"),
                        string("gen_ai.prompt", content),
                    ],
                    ..ProtoSpan::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

async fn post(url: &str, content_type: &str, body: Vec<u8>, gzip: bool) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/traces"))
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if gzip {
        req = req.header(CONTENT_ENCODING, "gzip");
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_restart_lose_nothing_and_each_batch_arrives_once() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let down = closed_port().await;
    let down_url = format!("http://{down}");
    let home = tempfile::tempdir().unwrap();

    // The collector is unreachable: the SDK's requests are answered 200 all the same, from
    // the spool.
    let edge = EdgeProcess::start(home.path(), &down_url, &[], &[]).await;
    export_chat(&edge.url, Protocol::HttpBinary, "conv-a").await;
    let resp = post(
        &edge.url,
        "application/x-protobuf",
        raw_span_request("ticket for Dan Johnson"),
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None, "full success");
    assert_eq!(otlp_counts(home.path()).pending, 2);
    edge.stop().await;
    assert_eq!(otlp_counts(home.path()).pending, 2, "kept across the stop");

    // A new process, the collector still down; then it comes back at that URL and the
    // forwarder, retrying with backoff, delivers everything.
    let edge = EdgeProcess::start(home.path(), &down_url, &[], &[]).await;
    export_chat(&edge.url, Protocol::HttpJson, "conv-b").await;
    assert_eq!(otlp_counts(home.path()).pending, 3);
    assert!(c.telemetry("").await.is_empty());
    let relay = relay(down, c.url.trim_start_matches("http://").to_owned()).await;
    eventually("the spool to drain", || async {
        let counts = otlp_counts(home.path());
        (counts.pending == 0).then_some(counts)
    })
    .await;
    edge.stop().await;
    let counts = otlp_counts(home.path());
    assert_eq!((counts.pending, counts.sent), (0, 3), "{counts:?}");
    let records = c.telemetry("kind=llm_call").await;
    assert_eq!(records.len(), 3, "each batch exactly once: {records:#?}");
    let mut conversations: Vec<&str> = records
        .iter()
        .filter_map(|r| r["payload"]["conversation_id"].as_str())
        .collect();
    conversations.sort();
    assert_eq!(conversations, ["conv-a", "conv-b"]);
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("Johnson"), "{all}");
    relay.abort();
    c.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_is_answered_like_the_collector_and_a_full_spool_says_retry() {
    let home = tempfile::tempdir().unwrap();
    let down = format!("http://{}", closed_port().await);
    let edge = EdgeProcess::start(
        home.path(),
        &down,
        &["--otlp-spool-limit-mb", "1"],
        &[("PHOENIX_MAX_BODY_BYTES", "4096")],
    )
    .await;

    let (code, status, _) =
        rpc_status(post(&edge.url, "text/plain", b"hi".to_vec(), false).await).await;
    assert_eq!((code, status.code), (415, 3), "{}", status.message);
    let (code, status, _) =
        rpc_status(post(&edge.url, "application/x-protobuf", vec![0xff, 0x01], false).await).await;
    assert_eq!((code, status.code), (400, 3));
    assert!(status.message.contains("protobuf"), "{}", status.message);
    let (code, status, _) =
        rpc_status(post(&edge.url, "application/json", b"{not json".to_vec(), false).await).await;
    assert_eq!((code, status.code), (400, 3));
    let big = raw_span_request(&"lorem ipsum ".repeat(1000));
    let (code, status, _) =
        rpc_status(post(&edge.url, "application/x-protobuf", big, false).await).await;
    assert_eq!((code, status.code), (413, 8), "{}", status.message);

    // Over a MiB of content, gzip-compressed to a few KiB: taken; then the spool is full.
    let huge = raw_span_request(&"a".repeat(1200 * 1024));
    let resp = post(&edge.url, "application/x-protobuf", gzip(&huge), true).await;
    assert_eq!(resp.status(), 200);
    let (code, status, retry) = rpc_status(
        post(
            &edge.url,
            "application/json",
            br#"{"resourceSpans": []}"#.to_vec(),
            false,
        )
        .await,
    )
    .await;
    assert_eq!((code, status.code), (503, 14), "{}", status.message);
    assert!(retry.is_some(), "Retry-After");
    assert!(status.message.contains("spool"), "{}", status.message);
    edge.stop().await;
    assert_eq!(otlp_counts(home.path()).pending, 1);

    // --once has no meaning for a listener.
    let out = phoenix_async(home.path())
        .args(["telemetrist", "--otlp-listen", "127.0.0.1:0", "--once"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_collector_refuses_is_quarantined_listed_and_requeued() {
    let c = TestCollector::start(CollectorConfig {
        limits: Limits {
            max_body_bytes: 300,
            ..Limits::default()
        },
        ..CollectorConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::start(home.path(), &c.url, &[], &[]).await;
    let resp = post(
        &edge.url,
        "application/x-protobuf",
        raw_span_request(&"status of the order ".repeat(30)),
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let small = post(
        &edge.url,
        "application/x-protobuf",
        raw_span_request("ok"),
        false,
    )
    .await;
    assert_eq!(small.status(), 200);
    eventually("the refused batch in the quarantine", || async {
        let counts = otlp_counts(home.path());
        (counts.quarantined == 1 && counts.pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        c.telemetry("").await.len(),
        1,
        "the rest went: {}",
        edge.log()
    );
    edge.stop().await;

    let out = phoenix_async(home.path())
        .args(["telemetrist", "--quarantine", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = &listed[0];
    assert_eq!(
        (&q["kind"], &q["signal"], &q["status"], &q["error"]),
        (
            &json!("otlp"),
            &json!("traces"),
            &json!(413),
            &json!("resource_exhausted")
        ),
        "{listed}"
    );
    assert_eq!(q["items"], 1);
    assert_eq!(q["sessions"], json!(["5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b"]));
    let human = phoenix_async(home.path())
        .args(["telemetrist", "--quarantine"])
        .output()
        .await
        .unwrap();
    assert!(
        text(&human.stdout).contains("OTLP batch"),
        "{}",
        text(&human.stdout)
    );

    let out = phoenix_async(home.path())
        .args(["telemetrist", "--requeue-quarantined", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["requeued"].as_u64(), doc["otlp_requeued"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(otlp_counts(home.path()).pending, 1);
    c.stop().await;
}
