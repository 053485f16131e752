//! `POST /ingest` against the in-process collector: every accepted shape, every refusal.

use std::collections::BTreeSet;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use phoenix::core::collector::{CollectorConfig, Limits};
use phoenix::core::store::StoreOptions;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::collector::{
    DB_FILE, TestCollector, expect_error, metric_value, status_and_json,
};
use crate::support::full_queue::FullQueueStore;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// POSTs raw bytes to `/ingest` with the given headers.
async fn post_raw(c: &TestCollector, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = c.client().post(c.endpoint("/ingest")).body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    status_and_json(req.send().await.expect("POST /ingest")).await
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Checks a 200 answer accepted `n` records with `n` distinct ids, and that exactly those
/// records are now served by `GET /telemetry?kind=<kind>`.
async fn assert_accepted(c: &TestCollector, answer: &(u16, Value), n: usize, kind: &str) {
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["accepted"], n, "{}", answer.1);
    let ids = ids_of(&answer.1);
    assert_eq!(ids.len(), n);
    let stored: BTreeSet<String> = c
        .telemetry(&format!("kind={kind}"))
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(stored.len(), n, "ids are not distinct: {ids:?}");
}

#[tokio::test]
async fn single_object_is_stored_and_served_back_verbatim() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let answer = c
        .ingest_json(&json!({
            "agent_path": "code-gen/rust",
            "ts_unix": 1_700_000_000,
            "kind": "skill_execution",
            "level": "WARNING",
            "tags": ["a", "b"],
            "payload": {"response_time": 12.5, "nested": {"x": [1, 2]}}
        }))
        .await;
    assert_accepted(&c, &answer, 1, "skill_execution").await;
    let stored = &c.telemetry("kind=skill_execution").await[0];
    assert_eq!(stored["id"], answer.1["ids"][0]);
    assert_eq!(stored["agent_path"], "code-gen/rust");
    assert_eq!(stored["ts_unix"], 1_700_000_000);
    assert_eq!(stored["level"], "warn", "level is normalised");
    assert_eq!(stored["tags"], json!(["a", "b"]));
    assert_eq!(
        stored["payload"],
        json!({"response_time": 12.5, "nested": {"x": [1, 2]}})
    );
    c.stop().await;
}

#[tokio::test]
async fn json_array_keeps_request_order_in_ids() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"kind": "batch", "ts_unix": 1_700_000_000 + i, "payload": {"i": i}}))
        .collect();
    let answer = c.ingest_json(&Value::Array(batch)).await;
    assert_accepted(&c, &answer, 5, "batch").await;
    // GET /telemetry is newest first; the ids are in request order.
    let stored = c.telemetry("kind=batch").await;
    let by_id: Vec<(String, i64)> = stored
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["payload"]["i"].as_i64().unwrap(),
            )
        })
        .collect();
    for (i, id) in ids_of(&answer.1).iter().enumerate() {
        let (_, payload_i) = by_id.iter().find(|(stored, _)| stored == id).unwrap();
        assert_eq!(*payload_i, i as i64, "ids[{i}] is not the {i}th record");
    }
    c.stop().await;
}

#[tokio::test]
async fn ndjson_with_content_type_and_auto_detected() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let nd = "{\"kind\":\"nd_typed\",\"payload\":{\"n\":1}}\n\n{\"kind\":\"nd_typed\"}\r\n{\"kind\":\"nd_typed\",\"level\":\"error\"}\n";
    let answer = post_raw(
        &c,
        &[("content-type", "application/x-ndjson")],
        nd.as_bytes().to_vec(),
    )
    .await;
    assert_accepted(&c, &answer, 3, "nd_typed").await;

    // No Content-Type at all: several documents, one per line, is NDJSON.
    let nd = "{\"kind\":\"nd_auto\"}\n{\"kind\":\"nd_auto\"}\n";
    let answer = post_raw(&c, &[], nd.as_bytes().to_vec()).await;
    assert_accepted(&c, &answer, 2, "nd_auto").await;

    // curl -d sends form encoding: a pretty-printed single object is still one record.
    let pretty = "{\n  \"kind\": \"pretty\",\n  \"payload\": {\"a\": 1}\n}\n";
    let answer = post_raw(
        &c,
        &[("content-type", "application/x-www-form-urlencoded")],
        pretty.as_bytes().to_vec(),
    )
    .await;
    assert_accepted(&c, &answer, 1, "pretty").await;
    c.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_decoded() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let body = json!([{"kind": "zipped"}, {"kind": "zipped", "payload": {"z": true}}]);
    let answer = post_raw(
        &c,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gzip(body.to_string().as_bytes()),
    )
    .await;
    assert_accepted(&c, &answer, 2, "zipped").await;

    let nd = b"{\"kind\":\"zipped_nd\"}\n{\"kind\":\"zipped_nd\"}\n{\"kind\":\"zipped_nd\"}\n";
    let answer = post_raw(
        &c,
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
        gzip(nd),
    )
    .await;
    assert_accepted(&c, &answer, 3, "zipped_nd").await;
    c.stop().await;
}

/// The envelope exactly as the seed's Rust snippet serialises it (`ts_unix: None` → null).
#[tokio::test]
async fn seed_rust_snippet_envelope_is_accepted() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let before = phoenix::core::telemetry::now_unix();
    let answer = c
        .ingest_json(&json!({
            "orch_id": "orch-from-seed",
            "agent_path": "root",
            "ts_unix": null,
            "kind": "skill_execution",
            "level": "info",
            "tags": ["skill", "execution"],
            "payload": {"skill_id": "skill-123", "love_score": 0.95, "utility_score": 0.80}
        }))
        .await;
    assert_accepted(&c, &answer, 1, "skill_execution").await;
    let stored = &c.telemetry("kind=skill_execution").await[0];
    let ts = stored["ts_unix"].as_i64().unwrap();
    assert!(
        ts >= before && ts <= phoenix::core::telemetry::now_unix(),
        "null ts_unix must become the collector's clock, got {ts}"
    );
    assert_eq!(stored["payload"]["love_score"], 0.95);
    assert_eq!(stored["tags"], json!(["skill", "execution"]));
    let hash = stored["orch_hash"].as_str().unwrap();
    assert!(
        hash.starts_with("orch_") && hash != "orch-from-seed",
        "{hash}"
    );
    c.stop().await;
}

#[tokio::test]
async fn invalid_record_rejects_the_whole_batch_and_names_it() {
    let c = TestCollector::start(CollectorConfig::default()).await;

    // JSON array: the third record (index 2) has a bad level.
    let answer = c
        .ingest_json(&json!([
            {"kind": "doomed"},
            {"kind": "doomed"},
            {"kind": "doomed", "level": "loud"},
        ]))
        .await;
    let detail = expect_error(&answer, 400, "invalid_record");
    assert!(
        detail.contains("record 2") && detail.contains("level"),
        "{detail}"
    );
    assert!(detail.contains("nothing from this batch"), "{detail}");
    assert_eq!(answer.1["invalid"], 1, "{}", answer.1);
    assert_eq!(answer.1["records"][0]["index"], 2);
    assert_eq!(answer.1["records"][0]["field"], "level");

    // NDJSON: lines 2 and 4 are bad (missing kind; ts_unix a string); both are listed.
    let nd = "{\"kind\":\"doomed\"}\n{\"level\":\"info\"}\n{\"kind\":\"doomed\"}\n{\"kind\":\"doomed\",\"ts_unix\":\"soon\"}\n";
    let answer = post_raw(
        &c,
        &[("content-type", "application/x-ndjson")],
        nd.as_bytes().to_vec(),
    )
    .await;
    let detail = expect_error(&answer, 400, "invalid_record");
    assert!(
        detail.contains("line 2") && detail.contains("kind"),
        "{detail}"
    );
    assert!(detail.contains("1 more"), "{detail}");
    let listed: Vec<(u64, &str)> = answer.1["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(2, "kind"), (4, "ts_unix")]);

    // Milliseconds where seconds are meant are refused with a hint.
    let answer = c
        .ingest_json(&json!({"kind": "doomed", "ts_unix": 1_700_000_000_000_i64}))
        .await;
    let detail = expect_error(&answer, 400, "invalid_record");
    assert!(
        detail.contains("ts_unix") && detail.contains("milliseconds"),
        "{detail}"
    );

    assert!(
        c.telemetry("kind=doomed").await.is_empty(),
        "a rejected batch left records behind"
    );
    assert!(c.telemetry("").await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn malformed_empty_and_unsupported_bodies_are_refused() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let json_ct = [("content-type", "application/json")];

    let detail = expect_error(
        &post_raw(&c, &json_ct, b"{\"kind\":".to_vec()).await,
        400,
        "invalid_json",
    );
    assert!(detail.contains("not valid JSON"), "{detail}");
    expect_error(
        &post_raw(&c, &json_ct, b"[{\"kind\":\"a\"},".to_vec()).await,
        400,
        "invalid_json",
    );
    // Where the body stops being JSON, in people's words rather than serde's.
    let got = post_raw(&c, &json_ct, b"{nope".to_vec()).await;
    let text = got.1.to_string();
    assert!(text.contains("not valid JSON at line 1 column 2"), "{text}");
    assert!(!text.contains("expected ident"), "{text}");
    // A key given twice, at the top or deep in the payload, is refused, not "last one wins".
    for twice in [
        &br#"{"kind":"a","kind":"b"}"#[..],
        br#"{"kind":"a","payload":{"score":1,"nested":{"x":1,"x":2}}}"#,
    ] {
        let got = post_raw(&c, &json_ct, twice.to_vec()).await;
        assert_eq!(got.0, 400, "{}", got.1);
        assert!(got.1.to_string().contains("duplicate"), "{}", got.1);
    }

    for empty in [&b""[..], b"   \n", b"[]"] {
        let detail = expect_error(
            &post_raw(&c, &json_ct, empty.to_vec()).await,
            400,
            "empty_body",
        );
        assert!(detail.contains("no telemetry record"), "{detail}");
    }

    let detail = expect_error(
        &post_raw(
            &c,
            &[("content-type", "text/xml")],
            b"<kind>a</kind>".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert!(detail.contains("text/xml"), "{detail}");

    let detail = expect_error(
        &post_raw(
            &c,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
            b"{\"kind\":\"a\"}".to_vec(),
        )
        .await,
        415,
        "unsupported_encoding",
    );
    assert!(detail.contains("br"), "{detail}");

    let detail = expect_error(
        &post_raw(
            &c,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            b"this is not gzip at all".to_vec(),
        )
        .await,
        400,
        "invalid_body",
    );
    assert!(detail.contains("gzip"), "{detail}");

    // A truncated gzip stream is corrupt too, not a partial batch.
    let mut truncated = gzip(
        json!([{"kind": "cut"}, {"kind": "cut"}])
            .to_string()
            .as_bytes(),
    );
    truncated.truncate(truncated.len() / 2);
    expect_error(
        &post_raw(
            &c,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            truncated,
        )
        .await,
        400,
        "invalid_body",
    );

    assert!(c.telemetry("").await.is_empty());
    c.stop().await;
}

fn small_limits() -> CollectorConfig {
    CollectorConfig {
        limits: Limits {
            max_body_bytes: 4 * 1024,
            max_decoded_bytes: 16 * 1024,
            max_batch_records: 5,
        },
        ..CollectorConfig::default()
    }
}

#[tokio::test]
async fn oversized_bodies_gzip_bombs_and_big_batches_are_413() {
    let c = TestCollector::start(small_limits()).await;
    let json_ct = ("content-type", "application/json");

    // Over max_body_bytes on the wire (Content-Length known up front).
    let big = json!([{"kind": "big", "payload": {"pad": "x".repeat(5000)}}]).to_string();
    let detail = expect_error(
        &post_raw(&c, &[json_ct], big.into_bytes()).await,
        413,
        "too_large",
    );
    assert!(detail.contains("4096"), "{detail}");

    // A gzip bomb: tiny on the wire, over max_decoded_bytes once inflated.
    let mut bomb = String::from("{\"kind\":\"bomb\",\"payload\":{\"pad\":\"");
    bomb.push_str(&"a".repeat(100_000));
    bomb.push_str("\"}}");
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 4 * 1024, "bomb must fit the wire limit");
    let detail = expect_error(
        &post_raw(&c, &[json_ct, ("content-encoding", "gzip")], compressed).await,
        413,
        "too_large",
    );
    assert!(detail.contains("decompressed"), "{detail}");

    // More records than max_batch_records.
    let batch: Vec<Value> = (0..6).map(|_| json!({"kind": "many"})).collect();
    let detail = expect_error(&c.ingest_json(&Value::Array(batch)).await, 413, "too_large");
    assert!(detail.contains('6') && detail.contains('5'), "{detail}");
    // Exactly the limit is fine.
    let batch: Vec<Value> = (0..5).map(|_| json!({"kind": "many"})).collect();
    let answer = c.ingest_json(&Value::Array(batch)).await;
    assert_accepted(&c, &answer, 5, "many").await;

    assert!(c.telemetry("kind=big").await.is_empty());
    assert!(c.telemetry("kind=bomb").await.is_empty());
    c.stop().await;
}

/// A chunked body (no Content-Length) over the limit is cut off while it streams in.
#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let c = TestCollector::start(small_limits()).await;
    let addr = c.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /ingest HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let line = format!(
        "{{\"kind\":\"chunked\",\"payload\":{{\"pad\":\"{}\"}}}}\n",
        "y".repeat(900)
    );
    let mut body = Vec::new();
    for _ in 0..8 {
        body.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(&body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"error\":\"too_large\""), "{response}");
    assert!(c.telemetry("kind=chunked").await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn full_write_queue_is_429_with_retry_after_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path().join(DB_FILE));
    let (c, store) = FullQueueStore::start(dir, options).await;

    let body = json!([{"kind": "pressed"}, {"kind": "pressed"}, {"kind": "pressed"}]);
    let resp = c
        .client()
        .post(c.endpoint("/ingest"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let answer = status_and_json(resp).await;
    let detail = expect_error(&answer, 429, "queue_full");
    assert!(detail.contains("retry"), "{detail}");
    let secs: u64 = retry_after
        .expect("429 without Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(secs >= 1);
    assert!(c.telemetry("kind=pressed").await.is_empty());

    // Once the queue drains, the same request goes through.
    store.set_full(false);
    let answer = c.ingest_json(&body).await;
    assert_accepted(&c, &answer, 3, "pressed").await;

    // The three refused records are counted once each.
    let metrics = c.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "phoenix_ingest_rejected_records_total",
            "reason=\"queue_full\""
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "phoenix_ingest_records_total", ""),
        Some(3.0),
        "{metrics}"
    );
    c.stop().await;
}

/// Odd inputs a fuzzer or a confused client would send: always a JSON 4xx, never a 500.
#[tokio::test]
async fn hostile_inputs_get_a_json_4xx_never_a_500() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_payload = format!(
        "{{\"kind\":\"deep\",\"payload\":{}{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("null", b"null".to_vec()),
        ("a string", b"\"kind\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("array of numbers", b"[1,2,3]".to_vec()),
        ("array of arrays", b"[[{\"kind\":\"a\"}]]".to_vec()),
        ("kind is a number", b"{\"kind\":1}".to_vec()),
        ("kind is null", b"{\"kind\":null}".to_vec()),
        (
            "float ts_unix",
            b"{\"kind\":\"a\",\"ts_unix\":1.5}".to_vec(),
        ),
        (
            "huge ts_unix",
            b"{\"kind\":\"a\",\"ts_unix\":1e30}".to_vec(),
        ),
        (
            "i64::MAX ts_unix",
            b"{\"kind\":\"a\",\"ts_unix\":9223372036854775807}".to_vec(),
        ),
        (
            "u64 ts_unix",
            b"{\"kind\":\"a\",\"ts_unix\":18446744073709551615}".to_vec(),
        ),
        ("invalid UTF-8", b"{\"kind\":\"\xff\xfe\"}".to_vec()),
        ("NUL byte", b"{\"kind\":\"a\x00b\"}".to_vec()),
        ("BOM", "\u{feff}{\"kind\":\"a\"}".as_bytes().to_vec()),
        ("trailing garbage", b"{\"kind\":\"a\"} trailing".to_vec()),
        ("nested arrays", nested.into_bytes()),
        ("deep payload", deep_payload.into_bytes()),
        (
            "bad agent path",
            b"{\"kind\":\"a\",\"agent_path\":\"a//b\"}".to_vec(),
        ),
        (
            "tags not strings",
            b"{\"kind\":\"a\",\"tags\":[1]}".to_vec(),
        ),
        (
            "too many tags",
            format!(
                "{{\"kind\":\"a\",\"tags\":[{}]}}",
                vec!["\"t\""; 40].join(",")
            )
            .into_bytes(),
        ),
        (
            "blank orch_id",
            b"{\"kind\":\"a\",\"orch_id\":\"  \"}".to_vec(),
        ),
    ];
    for (what, body) in bodies {
        for ct in ["application/json", "application/x-ndjson"] {
            let resp = c
                .client()
                .post(c.endpoint("/ingest"))
                .header(CONTENT_TYPE, ct)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let (status, answer) = status_and_json(resp).await;
            assert!(
                (400..500).contains(&status),
                "{what} as {ct}: HTTP {status} {answer}"
            );
            assert!(
                answer["error"].is_string() && answer["detail"].is_string(),
                "{what} as {ct}: {answer}"
            );
        }
    }
    // A gzip header with an unsupported content type still says 415, not 500.
    let resp = c
        .client()
        .post(c.endpoint("/ingest"))
        .header(CONTENT_TYPE, "image/png")
        .header(CONTENT_ENCODING, "gzip")
        .body(gzip(b"{\"kind\":\"a\"}"))
        .send()
        .await
        .unwrap();
    expect_error(&status_and_json(resp).await, 415, "unsupported_media_type");
    assert!(
        c.telemetry("").await.is_empty(),
        "a hostile input was stored"
    );
    c.stop().await;
}

/// A payload the collector accepts must not break reading: a number that does not fit an
/// f64, or a lone UTF-16 surrogate escape, is valid JSON syntax but not a JSON value serde
/// can read back, and one such record must not make `GET /telemetry` or `POST /analyze` fail.
#[tokio::test]
async fn accepted_payloads_do_not_poison_reads() {
    let mut problems = Vec::new();
    for payload in [r#"{"response_time":1e400}"#, r#"{"note":"\ud800"}"#] {
        let c = TestCollector::start(CollectorConfig::default()).await;
        c.ingest_ok(&json!({"kind": "fine", "payload": {"response_time": 5}}))
            .await;
        let body = format!(r#"{{"kind":"odd","payload":{payload}}}"#);
        let (status, answer) = post_raw(
            &c,
            &[("content-type", "application/json")],
            body.into_bytes(),
        )
        .await;
        if status == 200 {
            // Accepted: then it must read back like any other record, and be analysable.
            let resp = c
                .client()
                .get(c.endpoint("/telemetry?limit=10"))
                .send()
                .await
                .unwrap();
            let (status, page) = status_and_json(resp).await;
            if status != 200 {
                problems.push(format!("{payload}: GET /telemetry: {status} {page}"));
            }
            let (status, insight) = c.analyze(&json!({}), None).await;
            if status != 200 {
                problems.push(format!("{payload}: POST /analyze: {status} {insight}"));
            }
        } else {
            // Refused: with a 400 that names the payload.
            let detail = expect_error(&(status, answer), 400, "invalid_record");
            assert!(detail.contains("payload"), "{detail}");
        }
        c.stop().await;
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
