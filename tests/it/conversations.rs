//! `POST /ingest/conversations` against the in-process collector (and once the real binary):
//! every body shape, validation, idempotent resends, the PII guard, metrics, anonymisation.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use phoenix::core::collector::{CollectorConfig, Limits};
use phoenix::core::store::StoreOptions;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::backend::column;
use crate::support::bin::phoenix_async;
use crate::support::collector::{
    DB_FILE, TestCollector, expect_error, metric_value, status_and_json,
};
use crate::support::full_queue::FullQueueStore;

/// A de-identified support conversation with a tool call and its result, as the edge sends it.
fn conversation(id: &str) -> Value {
    json!({
        "conversation_id": id,
        "orch_id": "orch-berlin-7",
        "agent_path": "support/billing",
        "ts_unix": 1_700_000_000,
        "feedback": "thumbs_up",
        "score": 4,
        "messages": [
            {"role": "system", "content": "You are a billing support agent."},
            {"role": "user", "content": "I'm USER_A from ORG_ID_A; reach me at USER_A_EMAIL or PHONE_1."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "lookup_invoice", "arguments": "{\"customer\":\"USER_A\",\"iban\":\"IBAN_1\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\":\"paid\",\"card\":\"CARD_1\"}"},
            {"role": "assistant", "content": [{"type": "text", "text": "Your invoice is paid, USER_A."}]}
        ]
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn ndjson(items: &[Value]) -> Vec<u8> {
    items
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>()
        .into_bytes()
}

async fn post_raw(c: &TestCollector, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = c
        .client()
        .post(c.endpoint("/ingest/conversations"))
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    status_and_json(req.send().await.expect("POST /ingest/conversations")).await
}

/// A stored conversation, read from the database file itself.
struct Row {
    id: String,
    orch_hash: Option<String>,
    feedback: Option<String>,
    score: Option<f64>,
    messages: Value,
}

/// Every stored conversation, in storage order, read from the store as another process would.
async fn stored(c: &TestCollector) -> Vec<Row> {
    let sql = if c.dir.database_url().is_some() {
        "SELECT json_build_object('id', conversation_id, 'orch_hash', orch_hash, \
         'feedback', feedback, 'score', score, 'messages', messages::json)::text \
         FROM conversations ORDER BY seq"
    } else {
        "SELECT json_object('id', conversation_id, 'orch_hash', orch_hash, \
         'feedback', feedback, 'score', score, 'messages', json(messages)) \
         FROM conversations ORDER BY seq"
    };
    column(&c.dir, DB_FILE, sql)
        .await
        .into_iter()
        .map(|text| {
            let v: Value = serde_json::from_str(&text.expect("a row")).unwrap();
            Row {
                id: v["id"].as_str().unwrap().to_owned(),
                orch_hash: v["orch_hash"].as_str().map(str::to_owned),
                feedback: v["feedback"].as_str().map(str::to_owned),
                score: v["score"].as_f64(),
                messages: v["messages"].clone(),
            }
        })
        .collect()
}

async fn stored_ids(c: &TestCollector) -> Vec<String> {
    stored(c).await.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn one_object_an_array_ndjson_and_gzip_are_stored_as_sent() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let one = c.ingest_conversations(&conversation("c1")).await;
    assert_eq!(one.0, 200, "{}", one.1);
    assert_eq!(
        one.1,
        json!({"accepted": 1, "duplicates": 0, "ids": ["c1"]})
    );

    let array = c
        .ingest_conversations(&json!([conversation("c2"), conversation("c3")]))
        .await;
    assert_eq!(
        array.1,
        json!({"accepted": 2, "duplicates": 0, "ids": ["c2", "c3"]})
    );

    let lines = ndjson(&[conversation("c4"), conversation("c5")]);
    let nd = post_raw(&c, &[("content-type", "application/x-ndjson")], lines).await;
    assert_eq!(nd.1["ids"], json!(["c4", "c5"]), "{}", nd.1);

    let zipped = gzip(&ndjson(&[conversation("c6")]));
    let gz = post_raw(
        &c,
        &[
            (CONTENT_ENCODING.as_str(), "gzip"),
            (CONTENT_TYPE.as_str(), "application/x-ndjson"),
        ],
        zipped,
    )
    .await;
    assert_eq!(gz.1["ids"], json!(["c6"]), "{}", gz.1);

    let rows = stored(&c).await;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5", "c6"]);
    let Row {
        orch_hash: orch,
        feedback,
        score,
        messages,
        ..
    } = &rows[5];
    assert_eq!(messages, &conversation("c6")["messages"]);
    assert_eq!(
        feedback.as_deref(),
        Some("positive"),
        "aliases are stored canonically"
    );
    assert_eq!(*score, Some(4.0));
    assert_eq!(
        orch.as_deref(),
        Some(c.state.anonymizer.orch_hash("orch-berlin-7").as_str())
    );
    c.stop().await;
}

#[tokio::test]
async fn invalid_records_are_named_by_line_and_field_and_nothing_is_stored() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let mut bad_role = conversation("b1");
    bad_role["messages"][1]["role"] = json!("robot");
    let mut bad_score = conversation("b2");
    bad_score["score"] = json!("high");
    let body = ndjson(&[conversation("ok"), bad_role, bad_score]);
    let answer = post_raw(&c, &[("content-type", "application/x-ndjson")], body).await;
    let detail = expect_error(&answer, 400, "invalid_record");
    assert!(
        detail.contains("line 2") && detail.contains("messages[1].role"),
        "{detail}"
    );
    let records = answer.1["records"].as_array().unwrap();
    let named: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [(2, "messages[1].role"), (3, "score")]);
    assert!(
        stored_ids(&c).await.is_empty(),
        "the valid record of the batch was stored"
    );

    let empty = post_raw(&c, &[], b"  \n".to_vec()).await;
    expect_error(&empty, 400, "empty_body");
    c.stop().await;
}

#[tokio::test]
async fn a_resend_is_acknowledged_as_duplicates_and_stored_once() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let first = c
        .ingest_conversations(&json!([conversation("r1"), conversation("r2")]))
        .await;
    assert_eq!(first.1["accepted"], 2);

    // The edge resends after an outage, with a new conversation and a changed copy of r1.
    let mut changed = conversation("r1");
    changed["score"] = json!(1);
    let again = c
        .ingest_conversations(&json!([
            changed,
            conversation("r2"),
            conversation("r3"),
            conversation("r3")
        ]))
        .await;
    assert_eq!(again.0, 200, "{}", again.1);
    assert_eq!(
        again.1,
        json!({"accepted": 1, "duplicates": 3, "ids": ["r3"]})
    );

    let rows = stored(&c).await;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(rows[0].score, Some(4.0), "the first stored copy stays");
    c.stop().await;
}

/// One unredacted value per case, in each place the guard scans.
fn leaks() -> Vec<(
    &'static str,
    Value,
    &'static str,
    Vec<&'static str>,
    &'static str,
)> {
    let mut cases = Vec::new();
    let mut c = conversation("email");
    c["messages"][1]["content"] = json!("Write to dana.whitfield@example.org please");
    cases.push((
        "email in content",
        c,
        "messages[1].content",
        vec!["email"],
        "dana.whitfield@example.org",
    ));
    let mut c = conversation("several");
    c["messages"][1]["content"] =
        json!("I'm Dan Johnson, mail dan.johnson@example.com or call +1 415 555 0132");
    cases.push((
        "person, email and phone in one message",
        c,
        "messages[1].content",
        vec!["person", "email", "phone"],
        "555 0132",
    ));
    let mut c = conversation("part");
    c["messages"][4]["content"][0]["text"] = json!("Call me back on +44 20 7946 0958.");
    cases.push((
        "phone in a content part",
        c,
        "messages[4].content[0].text",
        vec!["phone"],
        "7946 0958",
    ));
    let mut c = conversation("args");
    c["messages"][2]["tool_calls"][0]["function"]["arguments"] =
        json!("{\"customer\":\"USER_A\",\"iban\":\"DE89 3704 0044 0532 0130 00\"}");
    cases.push((
        "IBAN in tool-call arguments",
        c,
        "messages[2].tool_calls[0].function.arguments",
        vec!["iban"],
        "DE89 3704",
    ));
    let mut c = conversation("result");
    c["messages"][3]["content"] = json!("{\"status\":\"paid\",\"card\":\"4111 1111 1111 1111\"}");
    cases.push((
        "card number in a tool result",
        c,
        "messages[3].content",
        vec!["credit_card"],
        "4111 1111",
    ));
    let mut c = conversation("secret");
    c["messages"][1]["content"] = json!("my key is sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t");
    cases.push((
        "API key",
        c,
        "messages[1].content",
        vec!["secret"],
        "Ab3dEf6hIj9kLm2nOp5qRs8t",
    ));
    let mut c = conversation("name");
    c["messages"][1]["name"] = json!("jo.bloggs@example.net");
    cases.push((
        "email as a message name",
        c,
        "messages[1].name",
        vec!["email"],
        "jo.bloggs@example.net",
    ));
    cases
}

#[tokio::test]
async fn raw_personal_data_is_refused_by_type_and_place_never_by_value() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    for (case, body, field, types, raw) in leaks() {
        let (status, answer) = c.ingest_conversations(&body).await;
        let detail = expect_error(&(status, answer.clone()), 422, "pii_detected");
        assert!(detail.contains(field), "{case}: {detail}");
        let id = body["conversation_id"].clone();
        assert_eq!(
            answer["records"],
            json!([{"index": 0, "conversation_id": id, "field": field, "types": types}]),
            "{case}"
        );
        assert!(
            !answer.to_string().contains(raw),
            "{case}: the answer repeats the value: {answer}"
        );
    }
    assert!(stored_ids(&c).await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn one_unredacted_conversation_refuses_the_whole_batch() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let (_, dirty, field, _, _) = leaks().swap_remove(3);
    let batch = json!([conversation("clean-1"), dirty, conversation("clean-2")]);
    let answer = c.ingest_conversations(&batch).await;
    let detail = expect_error(&answer, 422, "pii_detected");
    assert!(
        detail.contains("nothing from this batch was stored"),
        "{detail}"
    );
    assert_eq!(answer.1["rejected"], 1);
    assert_eq!(answer.1["records"][0]["index"], 1);
    assert_eq!(answer.1["records"][0]["field"], field);
    assert!(
        stored_ids(&c).await.is_empty(),
        "clean conversations of a refused batch were stored"
    );

    // Once the edge redacts it, the same batch goes through.
    let fixed = json!([
        conversation("clean-1"),
        conversation("args"),
        conversation("clean-2")
    ]);
    let answer = c.ingest_conversations(&fixed).await;
    assert_eq!(answer.1["accepted"], 3, "{}", answer.1);
    c.stop().await;
}

#[tokio::test]
async fn metrics_count_stored_duplicate_and_refused_conversations() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    c.ingest_conversations(&json!([conversation("m1"), conversation("m2")]))
        .await;
    c.ingest_conversations(&json!([conversation("m2"), conversation("m3")]))
        .await;
    let (_, dirty, _, _, _) = leaks().swap_remove(0);
    c.ingest_conversations(&json!([conversation("m4"), dirty, conversation("m5")]))
        .await;
    let mut bad = conversation("m6");
    bad["messages"] = json!([]);
    c.ingest_conversations(&bad).await;

    let text = c.metrics_text().await;
    let value = |name: &str, labels: &str| metric_value(&text, name, labels);
    assert_eq!(
        value("phoenix_ingest_conversations_total", ""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value("phoenix_ingest_conversation_duplicates_total", ""),
        Some(1.0)
    );
    let rejected = "phoenix_ingest_conversations_rejected_total";
    assert_eq!(
        value(rejected, "reason=\"pii_detected\""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(rejected, "reason=\"batch_rejected\""), Some(2.0));
    assert_eq!(value(rejected, "reason=\"invalid_record\""), Some(1.0));
    // Telemetry's counters are not touched by conversations.
    assert_eq!(value("phoenix_ingest_records_total", ""), Some(0.0));
    c.stop().await;
}

#[tokio::test]
async fn the_raw_orch_id_never_reaches_the_database_files() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let mut body = conversation("orch");
    body["orch_id"] = json!("orch-raw-id-0451-zeta");
    assert_eq!(c.ingest_conversations(&body).await.0, 200);
    let hash = c.state.anonymizer.orch_hash("orch-raw-id-0451-zeta");
    assert_eq!(
        stored(&c).await[0].orch_hash.as_deref(),
        Some(hash.as_str())
    );
    let dir = c.stop().await;
    if dir.database_url().is_some() {
        // On PostgreSQL, every stored text of every row.
        let rows = column(
            &dir,
            DB_FILE,
            "SELECT concat_ws(' ', conversation_id, orch_hash, agent_path, feedback, prompt_key, \
             messages) FROM conversations",
        )
        .await;
        assert_eq!(rows.len(), 1);
        for row in rows {
            assert!(!row.unwrap().contains("orch-raw-id-0451-zeta"));
        }
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes
            .windows(b"orch-raw-id-0451-zeta".len())
            .any(|w| w == b"orch-raw-id-0451-zeta");
        assert!(!found, "the raw orch id is in {}", path.display());
    }
}

#[tokio::test]
async fn limits_content_types_and_back_pressure_behave_like_ingest() {
    let c = TestCollector::start(CollectorConfig {
        limits: Limits {
            max_body_bytes: 4096,
            max_decoded_bytes: 8192,
            max_batch_records: 2,
        },
        ..CollectorConfig::default()
    })
    .await;
    let body = conversation("x").to_string().into_bytes();
    let wrong = post_raw(&c, &[("content-type", "text/csv")], body.clone()).await;
    expect_error(&wrong, 415, "unsupported_media_type");
    let brotli = post_raw(&c, &[("content-encoding", "br")], body).await;
    expect_error(&brotli, 415, "unsupported_encoding");
    let three = json!([conversation("a"), conversation("b"), conversation("c")]);
    expect_error(&c.ingest_conversations(&three).await, 413, "too_large");
    let mut big = conversation("big");
    big["messages"][1]["content"] = json!("USER_A ".repeat(1000));
    expect_error(&c.ingest_conversations(&big).await, 413, "too_large");
    let bomb = gzip(&ndjson(&vec![conversation("z"); 20]));
    let inflated = post_raw(&c, &[("content-encoding", "gzip")], bomb).await;
    expect_error(&inflated, 413, "too_large");
    assert!(stored_ids(&c).await.is_empty());
    c.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path().join(DB_FILE));
    let (c, store) = FullQueueStore::start(dir, options).await;
    let resp = c
        .client()
        .post(c.endpoint("/ingest/conversations"))
        .json(&conversation("q"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key(RETRY_AFTER));
    expect_error(&status_and_json(resp).await, 429, "queue_full");
    store.set_full(false);
    assert_eq!(
        c.ingest_conversations(&conversation("q")).await.1["ids"],
        json!(["q"])
    );
    c.stop().await;
}

#[tokio::test]
async fn the_served_binary_never_logs_the_values_it_refuses() {
    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("stderr.log")).unwrap();
    let mut child = phoenix_async(home.path())
        .args(["serve", "collector", "--bind", "127.0.0.1:0", "--json"])
        .env("PHOENIX_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let url = serde_json::from_str::<Value>(&line).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let batch: Vec<Value> = leaks().into_iter().map(|l| l.1).collect();
    let resp = reqwest::Client::new()
        .post(format!("{url}/ingest/conversations"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    let logged = std::fs::read_to_string(home.path().join("stderr.log")).unwrap();
    assert!(
        logged.contains("personal data"),
        "the refusal is not logged: {logged}"
    );
    for (case, _, _, _, raw) in leaks() {
        assert!(
            !logged.contains(raw),
            "{case}: the log holds the value:\n{logged}"
        );
    }
}

#[tokio::test]
async fn retention_deletes_old_conversations_in_the_background() {
    let c = TestCollector::start(CollectorConfig {
        retention_days: Some(7),
        retention_interval: std::time::Duration::from_millis(20),
        ..CollectorConfig::default()
    })
    .await;
    let now = phoenix::core::telemetry::now_unix();
    let mut old = conversation("old");
    old["ts_unix"] = json!(now - 10 * 86_400);
    let mut recent = conversation("recent");
    recent["ts_unix"] = json!(now - 86_400);
    let answer = c.ingest_conversations(&json!([old, recent])).await;
    assert_eq!(answer.1["accepted"], 2, "{}", answer.1);
    // The task runs every 20 ms; poll until it has reported its work (bounded).
    let mut deleted = None;
    for _ in 0..500 {
        let text = c.metrics_text().await;
        deleted = metric_value(&text, "phoenix_retention_deleted_conversations_total", "");
        if deleted == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        deleted,
        Some(1.0),
        "retention did not delete the old conversation"
    );
    assert_eq!(stored_ids(&c).await, ["recent"]);
    c.stop().await;
}
