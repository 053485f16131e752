//! Seed 000 end to end, as an operator runs it: raw conversations go through
//! `phoenix ingest --conversations` (the real binary, its own vault and spool) into the real
//! collector, which keeps only pseudonyms; `phoenix export` turns them into a DPO pair; the
//! vault on the edge maps the pair back. Nothing else is faked.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::bin::phoenix_async;
use crate::support::bytes::contains;
use crate::support::collector::TestCollector;
use phoenix::core::collector::CollectorConfig;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn run(home: &Path, args: &[&str]) -> Output {
    phoenix_async(home).args(args).output().await.unwrap()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}

/// What the customer wrote, with personal data of several kinds, one of them in a tool call.
const PROMPT: &str = "Hi, I'm Dan Johnson (dan.johnson@globex.example, +44 20 7946 0958). \
                      My card 4111 1111 1111 1111 was charged twice.";
const RAW: &[&str] = &[
    "Dan Johnson",
    "Johnson",
    "dan.johnson@globex.example",
    "7946 0958",
    "4111 1111 1111 1111",
];

fn conversation(id: &str, score: f64, reply: &str) -> Value {
    json!({
        "conversation_id": id,
        "orch_id": "orch-edge-1",
        "score": score,
        "messages": [
            {"role": "system", "content": "You are a billing agent."},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup_customer",
                             "arguments": "{\"email\": \"dan.johnson@globex.example\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "customer Dan Johnson, 2 charges"},
            {"role": "assistant", "content": reply},
        ],
    })
}

/// Every byte the collector keeps: the database and its WAL.
fn collector_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_conversations_become_a_pseudonymous_dpo_pair_the_edge_can_reveal() {
    let collector = TestCollector::start(CollectorConfig::default()).await;
    let edge = tempfile::tempdir().unwrap();
    let file = edge.path().join("chats.jsonl");
    let good = "I am sorry, Dan Johnson: the duplicate charge is refunded to your card.";
    let bad = "Please contact your bank.";
    let chats = [
        conversation("c-good", 5.0, good),
        conversation("c-bad", 1.0, bad),
    ];
    std::fs::write(
        &file,
        chats.iter().map(|c| format!("{c}\n")).collect::<String>(),
    )
    .unwrap();
    let url = collector.endpoint("");
    let url = url.trim_end_matches('/');

    let args = [
        "ingest",
        "--conversations",
        file.to_str().unwrap(),
        "--url",
        url,
        "--json",
    ];
    let out = run(edge.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json_out(&out);
    assert_eq!(report["sent"], 2, "{report}");
    assert!(
        report["redacted"]["person"].as_u64().unwrap() >= 2,
        "{report}"
    );

    // Sending the same file again sends nothing: the edge remembers what left.
    let again = json_out(&run(edge.path(), &args).await);
    assert_eq!(
        (again["sent"].as_u64(), again["already_sent"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );

    // The collector accepted it (its own PII guard found nothing) and kept no raw value.
    let db = collector.db_path();
    let kept = collector_bytes(&db);
    assert!(
        contains(&kept, "USER_A"),
        "the conversations are not in the collector's files"
    );
    for raw in RAW {
        assert!(
            !contains(&kept, raw),
            "{raw:?} reached the collector's files"
        );
    }

    // The two conversations share their de-identified prompt: one DPO pair, the better
    // scored reply chosen.
    let out = run(
        edge.path(),
        &["export", "--format", "dpo", "--db", db.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(&out.stdout));
    let pair = &lines[0];
    let chosen = pair["chosen"][0]["content"].as_str().unwrap();
    let rejected = pair["rejected"][0]["content"].as_str().unwrap();
    assert_eq!(rejected, bad);
    assert!(
        chosen.contains("USER_A") && !chosen.contains("Dan"),
        "{chosen}"
    );
    let prompt_text = pair["prompt"].to_string();
    for raw in RAW {
        assert!(!prompt_text.contains(raw), "{raw:?} in the exported prompt");
    }

    // Only the edge's vault maps the pseudonyms back.
    let user_turn = pair["prompt"][1]["content"].as_str().unwrap();
    let mut reveal = phoenix_async(edge.path());
    reveal
        .args(["redact", "--reveal", "--session", "c-good", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = reveal.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(user_turn.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), PROMPT);
    collector.stop().await;
}
