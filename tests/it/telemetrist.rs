//! The edge privacy pipeline as a user runs it: `phoenix ingest --conversations` and
//! `phoenix telemetrist` (the real binary, its own PHOENIX_HOME) against a fake collector
//! that records everything that left the machine.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::support::bin::phoenix_async;
use crate::support::fake_conversations::FakeConversations;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A conversation with a fixed id, a person and one line of content.
fn conversation(id: &str, content: &str) -> Value {
    json!({"conversation_id": id, "messages": [
        {"role": "user", "content": content},
        {"role": "assistant", "content": "Noted."}
    ]})
}

fn jsonl(docs: &[Value]) -> String {
    docs.iter().map(|d| format!("{d}\n")).collect()
}

async fn run(home: &Path, args: &[&str]) -> Output {
    phoenix_async(home).args(args).output().await.unwrap()
}

async fn run_stdin(home: &Path, args: &[&str], input: &str) -> Output {
    let mut child = phoenix_async(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Written by its own task: the child's output is read meanwhile.
    let writer = tokio::spawn(async move {
        stdin.write_all(input.as_bytes()).await.unwrap();
    });
    let out = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    out
}

/// `phoenix ingest --conversations FILE --url URL --json ...`, its JSON summary and output.
async fn ingest(home: &Path, file: &Path, url: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec![
        "ingest",
        "--conversations",
        file.to_str().unwrap(),
        "--url",
        url,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run(home, &args).await;
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out, doc)
}

const RAW_PII: &[&str] = &[
    "Dan Johnson",
    "Johnson",
    "dan.johnson@globex.example",
    "7946 0958",
    "4111 1111 1111 1111",
    "4111111111111111",
    "Priya",
    "Patel",
    "priya.patel@initech.example",
    "415 555 0132",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
];

fn pii_conversations() -> Vec<Value> {
    vec![
        json!({"conversation_id": "conv-001", "orch_id": "orch-edge-7", "agent_path": "support/billing",
            "feedback": "up", "score": 4.5, "ts_unix": 1_700_000_000, "messages": [
            {"role": "system", "content": "You are a billing assistant."},
            {"role": "user", "content": "Hi, I'm Dan Johnson. Mail dan.johnson@globex.example or call +44 20 7946 0958."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "charge_card",
                "arguments": "{\"card_number\":\"4111 1111 1111 1111\",\"email\":\"dan.johnson@globex.example\",\"name\":\"Dan Johnson\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"receipt_to\":\"dan.johnson@globex.example\",\"status\":\"ok\"}"},
            {"role": "assistant", "content": "Done, Dan Johnson. The receipt went to dan.johnson@globex.example."}
        ]}),
        json!({"conversation_id": "conv-002", "orch_id": "orch-edge-7", "messages": [
            {"role": "user", "content": "This is Priya Patel (priya.patel@initech.example); my key is sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"},
            {"role": "assistant", "tool_calls": [{"id": "c2", "type": "function", "function": {
                "name": "send_sms", "arguments": "{\"phone\":\"+1 415 555 0132\",\"text\":\"Hi Priya Patel, shipped\"}"}}]}
        ]}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pseudonyms_leave_the_machine_and_the_vault_reveals_them() {
    let fake = FakeConversations::start().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("chats.jsonl");
    let originals = pii_conversations();
    std::fs::write(&file, jsonl(&originals)).unwrap();

    let (out, doc) = ingest(home.path(), &file, &fake.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (doc["read"].as_u64(), doc["sent"].as_u64()),
        (Some(2), Some(2)),
        "{doc}"
    );
    assert_eq!(doc["pending"], 0);
    for kind in ["person", "email", "phone", "credit_card", "secret"] {
        assert!(doc["redacted"][kind].as_u64() > Some(0), "{kind}: {doc}");
    }

    // Nothing raw in any byte that reached the collector, tool-call arguments included.
    let wire = fake.bodies().concat();
    for raw in RAW_PII {
        assert!(!wire.contains(raw), "{raw} left the machine: {wire}");
    }
    let stored = fake.stored();
    let c1 = &stored["conv-001"];
    let args: Value = serde_json::from_str(
        c1["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        args,
        json!({"card_number": "CARD_1", "email": "USER_A_EMAIL", "name": "USER_A"})
    );
    assert_eq!(
        c1["messages"][1]["content"],
        "Hi, I'm USER_A. Mail USER_A_EMAIL or call PHONE_1."
    );
    // Each conversation is its own session: Priya is USER_A there too.
    let c2 = &stored["conv-002"];
    assert!(
        c2["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("This is USER_A ("),
        "{c2}"
    );
    // Metadata passes through; the collector hashes the orch id.
    assert_eq!(c1["orch_id"], "orch-edge-7");
    assert_eq!(c1["agent_path"], "support/billing");
    assert_eq!(c1["feedback"], "positive");
    assert_eq!(c1["score"], 4.5);
    assert_eq!(c1["ts_unix"], 1_700_000_000);

    // The spool on disk holds no raw personal data either.
    let data = home.path().join("data");
    for f in ["spool.db", "spool.db-wal"] {
        let bytes = std::fs::read(data.join(f)).unwrap_or_default();
        let on_disk = String::from_utf8_lossy(&bytes);
        assert!(
            !on_disk.contains("Johnson") && !on_disk.contains("4111"),
            "{f}"
        );
    }

    // The vault maps what left back to the originals, per conversation session.
    let sent_messages = c1["messages"].to_string();
    let back = run_stdin(
        home.path(),
        &[
            "redact",
            "--reveal",
            "--session",
            "conv-001",
            "--format",
            "messages",
            "--json",
        ],
        &sent_messages,
    )
    .await;
    assert!(back.status.success(), "{}", text(&back.stderr));
    let revealed: Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(revealed["messages"], originals[0]["messages"]);
    assert_eq!(revealed["unknown"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_survives_an_outage_and_a_restart_and_sends_each_once() {
    let mut fake = FakeConversations::start().await;
    fake.down().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("chats.jsonl");
    let convs: Vec<Value> = (1..=3)
        .map(|i| conversation(&format!("c{i}"), &format!("I'm Dan Johnson, ticket {i}")))
        .collect();
    std::fs::write(&file, jsonl(&convs)).unwrap();
    let spool = home.path().join("data/spool.db");

    // Run 1: the collector is down. Everything is redacted and kept; exit 3 says where.
    let (out, doc) = ingest(home.path(), &file, &fake.url(), &["--retries", "1"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        (doc["spooled"].as_u64(), doc["pending"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(doc["sent"], 0);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "3 conversation(s) are kept in the spool at {}",
            spool.display()
        )) && err.contains(
            "the next `phoenix ingest --conversations` or `phoenix telemetrist` run sends them"
        ) && err.contains("cannot reach"),
        "{err}"
    );

    // Run 2, a new process with the collector up: the spool goes first, each conversation
    // arrives once, and re-reading the same file adds nothing.
    fake.up().await;
    let (out, doc) = ingest(home.path(), &file, &fake.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (doc["sent"].as_u64(), doc["already_sent"].as_u64()),
        (Some(3), Some(3)),
        "{doc}"
    );
    assert_eq!(
        (doc["spooled"].as_u64(), doc["pending"].as_u64()),
        (Some(0), Some(0))
    );
    let received: Vec<Value> = fake.received();
    let mut ids: Vec<&str> = received
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["c1", "c2", "c3"], "each exactly once");

    // Run 3: nothing is sent again, and the summary says so.
    let requests = fake.requests().len();
    let out = run(
        home.path(),
        &[
            "ingest",
            "--conversations",
            file.to_str().unwrap(),
            "--url",
            &fake.url(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 already sent"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.requests().len(), requests, "no request at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_and_outages_are_retried_honouring_retry_after() {
    let fake = FakeConversations::start().await;
    fake.script([(429, Some(1)), (503, None)]);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("chats.jsonl");
    let big = "lorem ipsum dolor sit amet ".repeat(3000);
    let convs = [
        conversation("r1", "hello"),
        conversation("r2", "call +44 20 7946 0958"),
        conversation("r3", &big),
    ];
    std::fs::write(&file, jsonl(&convs)).unwrap();
    let started = Instant::now();
    let (out, doc) = ingest(home.path(), &file, &fake.url(), &["--retries", "3"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    let requests = fake.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
    assert!(
        requests.iter().all(|r| r.gzip),
        "a body over 64 KiB goes gzip-compressed"
    );
    assert_eq!(doc["sent"], 3);
    assert_eq!(fake.stored().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_named_and_skipped_and_the_rest_go() {
    let fake = FakeConversations::start().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("chats.jsonl");
    let body = format!(
        "{}\n{{not json\n{}\n\n{}\n",
        conversation("ok-1", "hi"),
        json!({"conversation_id": "no-messages", "messages": []}),
        conversation("ok-2", "bye"),
    );
    std::fs::write(&file, body).unwrap();
    let out = run(
        home.path(),
        &[
            "ingest",
            "--conversations",
            file.to_str().unwrap(),
            "--url",
            &fake.url(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("skipped: line 2:"), "{err}");
    assert!(err.contains("skipped: line 3: field `messages`"), "{err}");
    assert!(
        text(&out.stdout).contains("read 2 conversation(s); 2 invalid"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.stored().keys().collect::<Vec<_>>(), ["ok-1", "ok-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_conversation_is_quarantined_without_blocking_the_rest() {
    let fake = FakeConversations::start().await;
    fake.refuse_containing("NIGHTJAR");
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("chats.jsonl");
    let convs: Vec<Value> = (1..=5)
        .map(|i| {
            let content = if i == 3 {
                "status of project NIGHTJAR?"
            } else {
                "hello"
            };
            conversation(&format!("q{i}"), content)
        })
        .collect();
    std::fs::write(&file, jsonl(&convs)).unwrap();

    let (out, doc) = ingest(home.path(), &file, &fake.url(), &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(doc["sent"], 4);
    assert_eq!(doc["quarantined"][0]["conversation_id"], "q3");
    assert_eq!(doc["quarantined"][0]["status"], 422);
    assert_eq!(doc["quarantined"][0]["error"], "pii_detected");
    assert_eq!(
        (doc["quarantine_total"].as_u64(), doc["pending"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        fake.stored().keys().collect::<Vec<_>>(),
        ["q1", "q2", "q4", "q5"]
    );
    // The refused batch was halved until the culprit was alone.
    let tried: Vec<(u16, Vec<String>)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.status, r.ids))
        .collect();
    let ids = |s: &[&str]| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(
        tried,
        [
            (422, ids(&["q1", "q2", "q3", "q4", "q5"])),
            (200, ids(&["q1", "q2"])),
            (422, ids(&["q3", "q4", "q5"])),
            (422, ids(&["q3"])),
            (200, ids(&["q4", "q5"])),
        ]
    );

    // Not resent automatically; visible until requeued.
    let requests = fake.requests().len();
    let (out, doc) = ingest(home.path(), &file, &fake.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(doc["already_quarantined"], 1);
    assert_eq!(fake.requests().len(), requests);
    let listed = run(home.path(), &["telemetrist", "--quarantine", "--json"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["conversation_id"], "q3");
    assert_eq!(listed[0]["error"], "pii_detected");
}

fn ready(id: &str, ready: bool) -> Value {
    let mut c = conversation(
        id,
        &format!("I'm Dan Johnson ({id}), dan.johnson@globex.example"),
    );
    c["ready_to_log"] = json!(ready);
    c
}

async fn telemetrist_once(home: &Path, source: &Path, url: &str) -> (Output, Value) {
    let out = run(
        home,
        &[
            "telemetrist",
            "--source",
            source.to_str().unwrap(),
            "--once",
            "--url",
            url,
            "--json",
        ],
    )
    .await;
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetrist_takes_ready_conversations_once_and_waits_for_half_written_files() {
    let fake = FakeConversations::start().await;
    let home = tempfile::tempdir().unwrap();
    let source = home.path().join("conversations");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("a.json"), ready("a", true).to_string()).unwrap();
    std::fs::write(source.join("b.json"), ready("b", false).to_string()).unwrap();
    std::fs::write(
        source.join("c.jsonl"),
        jsonl(&[ready("c1", true), ready("c2", false), ready("c3", true)]),
    )
    .unwrap();
    let d = ready("d", true).to_string();
    std::fs::write(source.join("d.json"), &d[..d.len() / 2]).unwrap();

    let (out, doc) = telemetrist_once(home.path(), &source, &fake.url()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fake.stored().keys().collect::<Vec<_>>(), ["a", "c1", "c3"]);
    assert_eq!(
        (doc["not_ready"].as_u64(), doc["incomplete"].as_u64()),
        (Some(2), Some(1)),
        "{doc}"
    );
    assert!(!fake.bodies().concat().contains("Johnson"));

    // The half-written file is complete now and b became ready: only those two go.
    std::fs::write(source.join("d.json"), &d).unwrap();
    std::fs::write(source.join("b.json"), ready("b", true).to_string()).unwrap();
    let (out, doc) = telemetrist_once(home.path(), &source, &fake.url()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (doc["sent"].as_u64(), doc["already_sent"].as_u64()),
        (Some(2), Some(3)),
        "{doc}"
    );

    // A third cycle sends nothing; every conversation arrived exactly once.
    let (out, doc) = telemetrist_once(home.path(), &source, &fake.url()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(doc["sent"], 0);
    let mut ids: Vec<String> = fake
        .received()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c1", "c3", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetrist_stops_on_sigterm_after_its_cycle() {
    let fake = FakeConversations::start().await;
    fake.require_token("edge-stream-key-1");
    let home = tempfile::tempdir().unwrap();
    let source = home.path().join("conversations");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("a.json"), ready("a", true).to_string()).unwrap();
    let child = phoenix_async(home.path())
        .env("PHOENIX_TELEMETRIST_SOURCE", &source)
        .env("TELEMETRIST_URL", fake.url())
        .env("PHOENIX_TELEMETRY_STREAM_KEY", "edge-stream-key-1")
        .args(["telemetrist", "--interval", "3600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    fake.wait_stored(1, Duration::from_secs(60)).await;
    // The collector has it; the cycle is over once the telemetrist says so (a send still in
    // flight when the stop comes is abandoned by design, so waiting on the fake is not enough).
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = String::new();
    let cycle_done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            logged.push_str(&line);
            logged.push('\n');
            if line.contains("telemetrist cycle done") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(cycle_done, Ok(true), "{logged}");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            logged.push_str(&line);
            logged.push('\n');
        }
        logged
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("telemetrist stops within 30 s of SIGTERM")
        .unwrap();
    let logged = rest.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{logged}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("stopped after 1 cycle(s); 0 conversation(s) pending"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetrist_settings_show_with_the_stream_key_masked() {
    let home = tempfile::tempdir().unwrap();
    let out = phoenix_async(home.path())
        .env("PHOENIX_TELEMETRY_STREAM_KEY", "stream-key-secret-9876")
        .env("PHOENIX_TELEMETRIST_INTERVAL", "60")
        .args(["config", "show", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains("stream-key-secret-9876"), "{shown}");
    let doc: Value = serde_json::from_str(&shown).unwrap();
    let find = |key: &str| {
        doc["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .clone()
    };
    assert_eq!(find("telemetrist.interval_secs")["value"], "60");
    assert_eq!(
        find("telemetrist.telemetry_stream_key")["value"],
        "****9876"
    );
    assert_eq!(
        find("telemetrist.telemetry_endpoint")["env"],
        "TELEMETRIST_URL"
    );
    assert!(
        find("telemetrist.spool_path")["value"]
            .as_str()
            .unwrap()
            .ends_with("data/spool.db")
    );
}
