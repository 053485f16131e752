//! The evasion corpus: personal data written so that a byte-for-byte scan misses it
//! (fullwidth or other scripts' digits, `＠`, zero-width characters, percent-encoding,
//! character references, "at" and "dot" spelled out, base64) or put where a scan of the
//! message text alone does not look (the conversation id, the agent path, tool-call names
//! and ids, `tool_call_id`, keys, image URLs).
//!
//! Each case is posted to the in-process collector, which must refuse it with a 422 naming
//! field and kind and never the value; the same cases go through the edge (`phoenix redact`
//! and `phoenix ingest --conversations`, the real binary), which must leave neither the
//! value nor what it decodes to, and whose output the collector then accepts. Add a case
//! for each new evasion found.

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use phoenix::core::collector::CollectorConfig;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::bin::phoenix_async;
use crate::support::collector::{TestCollector, expect_error};

/// The address every case hides.
const ADDRESS: &str = "dana.whitfield@example.org";
/// Part of it that no redacted output may keep, however the address was written.
const ADDRESS_PART: &str = "whitfield";
/// A Luhn-valid card number, as digits.
const CARD_DIGITS: &str = "4111111111111111";

/// A de-identified conversation, as the edge sends it: the collector accepts it as it is.
fn clean(id: &str) -> Value {
    json!({
        "conversation_id": id,
        "orch_id": "orch-berlin-7",
        "agent_path": "support/billing",
        "feedback": "up",
        "messages": [
            {"role": "system", "content": "You are a billing support agent."},
            {"role": "user", "content": "I'm USER_A; my mail is USER_A_EMAIL."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "lookup_invoice", "arguments": "{\"customer\":\"USER_A\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\":\"paid\"}"},
            {"role": "assistant", "content": [{"type": "text", "text": "Your invoice is paid, USER_A."}]}
        ]
    })
}

/// One evasion: the conversation that carries it, where the guard must say it is, what
/// kinds, and what must never come back (the value as written, and decoded).
struct Evasion {
    name: &'static str,
    conversation: Value,
    field: &'static str,
    types: &'static [&'static str],
    raw: Vec<String>,
}

fn user_says(n: usize, text: &str) -> Value {
    let mut c = clean(&format!("ev-{n}"));
    c["messages"][1]["content"] = json!(text);
    c
}

/// Every percent-encoded byte of `s`.
fn percent_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn corpus() -> Vec<Evasion> {
    let card = "4111 1111 1111 1111";
    let in_text: Vec<(&str, String, &[&str], Vec<String>)> = vec![
        (
            "fullwidth @",
            "Write to dana.whitfield\u{FF20}example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "small commercial at (U+FE6B)",
            "Write to dana.whitfield\u{FE6B}example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "an address in fullwidth letters",
            "Write to \u{FF44}\u{FF41}\u{FF4E}\u{FF41}.\u{FF57}\u{FF48}\u{FF49}\u{FF54}\u{FF46}\u{FF49}\u{FF45}\u{FF4C}\u{FF44}\u{FF20}example\u{FF0E}org".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "zero-width characters inside an address",
            "Write to dana\u{200B}.whitfield\u{200D}@\u{FEFF}example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "a word joiner and a bidi override inside an address",
            "Write to dana.whitfield\u{2060}@\u{202E}example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "fullwidth card digits (U+FF10-FF19)",
            "My card is \u{FF14}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11}".to_owned(),
            &["credit_card"],
            vec![card.to_owned()],
        ),
        (
            "Arabic-Indic card digits",
            "My card is \u{0664}\u{0661}\u{0661}\u{0661} \u{0661}\u{0661}\u{0661}\u{0661} \u{0661}\u{0661}\u{0661}\u{0661} \u{0661}\u{0661}\u{0661}\u{0661}".to_owned(),
            &["credit_card"],
            vec![card.to_owned()],
        ),
        (
            "soft hyphens between card digits",
            "My card is 4111\u{00AD}1111\u{00AD}1111\u{00AD}1111".to_owned(),
            &["credit_card"],
            vec![CARD_DIGITS.to_owned()],
        ),
        (
            "Devanagari phone digits",
            "Call me back on +\u{096A}\u{096A} \u{0968}\u{0966} \u{096D}\u{096F}\u{096A}\u{096C} \u{0966}\u{096F}\u{096B}\u{096E}.".to_owned(),
            &["phone"],
            vec!["7946 0958".to_owned()],
        ),
        (
            "%40",
            "Write to mailto:dana.whitfield%40example.org please".to_owned(),
            &["email"],
            vec!["dana.whitfield%40example.org".to_owned()],
        ),
        (
            "every byte percent-encoded",
            format!("Write to {} please", percent_all(ADDRESS)),
            &["email"],
            vec![percent_all(ADDRESS)],
        ),
        (
            "&#64;",
            "Write to dana.whitfield&#64;example.org please".to_owned(),
            &["email"],
            vec!["dana.whitfield&#64;example.org".to_owned()],
        ),
        (
            "&#x40;",
            "Write to dana.whitfield&#x40;example&#x2e;org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "&commat;",
            "Write to dana.whitfield&commat;example&period;org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "a \\u0040 escape left in the text",
            "Write to dana.whitfield\\u0040example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "[at] and [dot]",
            "Write to dana.whitfield [at] example [dot] org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "at and dot as words",
            "Write to dana.whitfield at example dot org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "(at)",
            "Write to dana.whitfield(at)example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "{at}",
            "Write to dana.whitfield {at} example.org please".to_owned(),
            &["email"],
            vec![],
        ),
        (
            "base64 of an address",
            format!("ref {} thanks", STANDARD.encode(ADDRESS)),
            &["email"],
            vec![STANDARD.encode(ADDRESS)],
        ),
        (
            "URL-safe base64 of a card number",
            format!("blob:{} end", URL_SAFE_NO_PAD.encode(format!("card {card}"))),
            &["credit_card"],
            vec![URL_SAFE_NO_PAD.encode(format!("card {card}")), card.to_owned()],
        ),
    ];
    let mut cases: Vec<Evasion> = in_text
        .into_iter()
        .enumerate()
        .map(|(n, (name, text, types, raw))| Evasion {
            name,
            conversation: user_says(n, &text),
            field: "messages[1].content",
            types,
            raw: std::iter::once(text).chain(raw).collect(),
        })
        .collect();
    let n = cases.len();
    let email = &["email"][..];
    let mut place = |name, field, f: &dyn Fn(&mut Value)| {
        let mut c = clean(&format!("ev-{}", n + cases.len()));
        f(&mut c);
        cases.push(Evasion {
            name,
            conversation: c,
            field,
            types: email,
            raw: vec![ADDRESS.to_owned()],
        });
    };
    place("an address as conversation_id", "conversation_id", &|c| {
        c["conversation_id"] = json!(ADDRESS)
    });
    place("an address in agent_path", "agent_path", &|c| {
        c["agent_path"] = json!(format!("support/{ADDRESS}"))
    });
    place(
        "an address as a tool call's function name",
        "messages[2].tool_calls[0].function.name",
        &|c| c["messages"][2]["tool_calls"][0]["function"]["name"] = json!(ADDRESS),
    );
    place(
        "an address as a tool call's id",
        "messages[2].tool_calls[0].id",
        &|c| c["messages"][2]["tool_calls"][0]["id"] = json!(ADDRESS),
    );
    place(
        "an address in tool_call_id",
        "messages[3].tool_call_id",
        &|c| c["messages"][3]["tool_call_id"] = json!(format!("call-{ADDRESS}")),
    );
    place(
        "an address as a JSON key in tool arguments",
        "messages[2].tool_calls[0].function.arguments",
        &|c| {
            c["messages"][2]["tool_calls"][0]["function"]["arguments"] =
                json!(json!({ ADDRESS: "primary", "customer": "USER_A" }).to_string())
        },
    );
    place(
        "an address as a JSON key in a tool result",
        "messages[3].content",
        &|c| c["messages"][3]["content"] = json!(json!({ "owners": { ADDRESS: 1 } }).to_string()),
    );
    place(
        "an address in an image_url",
        "messages[4].content[1].image_url",
        &|c| {
            c["messages"][4]["content"]
                .as_array_mut()
                .unwrap()
                .push(json!({
                    "type": "image_url",
                    "image_url": {"url": format!("https://cdn.example.net/u/{ADDRESS}/avatar.png")}
                }))
        },
    );
    place("an address as a message's key", "messages[1].(key)", &|c| {
        c["messages"][1][ADDRESS] = json!("primary")
    });
    // Scanned before these holes were closed; kept so that it stays so.
    place(
        "an address in a message field of another name",
        "messages[1].metadata",
        &|c| c["messages"][1]["metadata"] = json!({"contact": [format!("mail {ADDRESS}")]}),
    );
    cases
}

#[tokio::test]
async fn every_evasion_is_refused_by_field_and_type_never_by_value() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    for case in corpus() {
        let answer = c.ingest_conversations(&case.conversation).await;
        let name = case.name;
        let detail = expect_error(&answer, 422, "pii_detected");
        assert!(detail.contains(case.field), "{name}: {detail}");
        let mut expected = json!({"index": 0, "field": case.field, "types": case.types});
        if case.field != "conversation_id" {
            expected["conversation_id"] = case.conversation["conversation_id"].clone();
        }
        assert_eq!(answer.1["records"], json!([expected]), "{name}");
        let shown = answer.1.to_string();
        for raw in case.raw.iter().chain([&ADDRESS.to_owned()]) {
            assert!(
                !shown.contains(raw.as_str()),
                "{name}: the answer repeats {raw:?}: {shown}"
            );
        }
    }
    assert_eq!(
        stored(&c.db_path()).len(),
        0,
        "a refused conversation was stored"
    );
    c.stop().await;
}

/// What the edge must leave alone and the collector must accept: text that looks like an
/// evasion and is not one.
#[tokio::test]
async fn lookalikes_of_evasions_are_accepted() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let image: Vec<u8> = (0..6000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let texts = [
        "Look at this dot product: it is zero.",
        "We met at the station at noon; 20% off & free shipping at AT&T.",
        "Ｈｅｌｌｏ！ Your order of \u{0663} items ships on 2024\u{FF0D}03\u{FF0D}15.",
        "The family emoji is \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}, the flag \u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}.",
        "Path /Users/USER_A/Documents/Reports-2024/InternationalizationOfThings.pdf",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, uuid 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "base64 of hello world: aGVsbG8gd29ybGQsIGhvdyBhcmUgeW91Pw==",
        "C:\\Program Files\\phoenix\\bin and 100% &amp; more",
    ];
    let mut batch: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(n, t)| user_says(n, t))
        .collect();
    let mut with_ids = clean("ids");
    with_ids["messages"][2]["tool_calls"][0]["id"] = json!("call_Ab3dEf6hIj9kLm2nOp5qRs8t");
    with_ids["messages"][3]["tool_call_id"] = json!("call_Ab3dEf6hIj9kLm2nOp5qRs8t");
    with_ids["messages"][4]["content"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "image_url", "image_url": {
            "url": format!("data:image/png;base64,{}", STANDARD.encode(&image))}}));
    batch.push(with_ids);
    let n = batch.len();
    let (status, answer) = c.ingest_conversations(&Value::Array(batch)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], n, "{answer}");
    c.stop().await;
}

/// A 400 says which field is wrong and why, never what it held.
#[tokio::test]
async fn an_invalid_value_is_never_echoed_in_the_answer() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    // What is wrong, the field named, how the record is made wrong, what must not show.
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Change, &str)> = vec![
        (
            "unknown feedback",
            "feedback",
            Box::new(|c| c["feedback"] = json!(ADDRESS)),
            ADDRESS,
        ),
        (
            "feedback of the wrong type",
            "feedback",
            Box::new(|c| c["feedback"] = json!([ADDRESS])),
            ADDRESS,
        ),
        (
            "unknown role",
            "messages[1].role",
            Box::new(|c| c["messages"][1]["role"] = json!(ADDRESS)),
            ADDRESS,
        ),
        (
            "a score that is a string",
            "score",
            Box::new(|c| c["score"] = json!(ADDRESS)),
            ADDRESS,
        ),
        (
            "an agent path with a space",
            "agent_path",
            Box::new(|c| c["agent_path"] = json!(format!("support/ {ADDRESS}"))),
            ADDRESS,
        ),
        (
            "an agent path with an empty segment",
            "agent_path",
            Box::new(|c| c["agent_path"] = json!(format!("support//{ADDRESS}"))),
            ADDRESS,
        ),
        (
            "a conversation id that is a number",
            "conversation_id",
            Box::new(|c| c["conversation_id"] = json!(4_111_111_111_111_111u64)),
            CARD_DIGITS,
        ),
        (
            "a timestamp far in the future",
            "ts_unix",
            Box::new(|c| c["ts_unix"] = json!(4_111_111_111_111_111u64)),
            CARD_DIGITS,
        ),
        (
            "messages that are a string",
            "messages",
            Box::new(|c| c["messages"] = json!(ADDRESS)),
            ADDRESS,
        ),
    ];
    for (name, field, change, raw) in cases {
        let mut body = clean("bad");
        change(&mut body);
        let answer = c.ingest_conversations(&body).await;
        let detail = expect_error(&answer, 400, "invalid_record");
        assert!(detail.contains(field), "{name}: {detail}");
        assert_eq!(answer.1["records"][0]["field"], field, "{name}");
        let shown = answer.1.to_string();
        assert!(
            !shown.contains(raw) && !shown.contains(ADDRESS_PART),
            "{name}: the answer repeats the value: {shown}"
        );
    }
    c.stop().await;
}

/// Every stored conversation: its id, and its agent path and messages as text.
fn stored(db: &Path) -> Vec<(String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT conversation_id, agent_path, messages FROM conversations")
        .unwrap();
    stmt.query_map([], |r| {
        let id: String = r.get(0)?;
        let path: Option<String> = r.get(1)?;
        let messages: String = r.get(2)?;
        Ok((id, format!("{path:?} {messages}")))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary with `input` on stdin.
async fn run_with_stdin(home: &Path, args: &[&str], input: &str) -> std::process::Output {
    let mut child = phoenix_async(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phoenix starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.expect("phoenix runs")
}

/// Fails with the case's name when `doc` still holds its value, as written or decoded.
fn assert_gone(case: &Evasion, doc: &str) {
    for raw in case.raw.iter().map(String::as_str).chain([ADDRESS_PART]) {
        assert!(
            !doc.contains(raw),
            "{}: {raw:?} is still in {doc}",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_redact_removes_every_evasion_and_the_collector_accepts_the_result() {
    let home = tempfile::tempdir().unwrap();
    let cases = corpus();
    let input: String = cases
        .iter()
        .map(|c| format!("{}\n", c.conversation))
        .collect();
    let args = [
        "redact",
        "--format",
        "messages",
        "--json",
        "--session",
        "ev",
        "-",
    ];
    let out = run_with_stdin(home.path(), &args, &input).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs = v["messages"].as_array().expect("one document per line");
    assert_eq!(docs.len(), cases.len());
    for (case, doc) in cases.iter().zip(docs) {
        assert_gone(case, &doc.to_string());
    }

    let c = TestCollector::start(CollectorConfig::default()).await;
    let (status, answer) = c.ingest_conversations(&Value::Array(docs.clone())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], cases.len(), "{answer}");
    c.stop().await;
}

/// The edge that sends: `phoenix ingest --conversations` redacts each case before it leaves,
/// so the collector takes every one and keeps none of the values. (An address as the
/// conversation id is the edge's own key for the conversation; the collector refuses it,
/// which the first test shows, and the edge quarantines it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_ingest_redacts_every_evasion_before_it_leaves() {
    let collector = TestCollector::start(CollectorConfig::default()).await;
    let edge = tempfile::tempdir().unwrap();
    let cases: Vec<Evasion> = corpus()
        .into_iter()
        .filter(|c| c.field != "conversation_id")
        .collect();
    let file = edge.path().join("chats.jsonl");
    let lines: String = cases
        .iter()
        .map(|c| format!("{}\n", c.conversation))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let url = collector.endpoint("");
    let args = [
        "ingest",
        "--conversations",
        file.to_str().unwrap(),
        "--url",
        url.trim_end_matches('/'),
        "--json",
    ];
    let out = phoenix_async(edge.path())
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], cases.len(), "{report}");

    let stored = stored(&collector.db_path());
    assert_eq!(stored.len(), cases.len());
    for (id, row) in &stored {
        let case = cases
            .iter()
            .find(|c| c.conversation["conversation_id"] == id.as_str())
            .unwrap();
        assert_gone(case, row);
    }
    collector.stop().await;
}
