//! `phoenix export` (the real binary) over conversations stored through the real
//! `POST /ingest/conversations`: each format field by field, preference pairing with
//! pseudonyms numbered differently by different edges, filters, outputs, exit codes.

use std::path::Path;
use std::process::Output;

use phoenix::core::collector::CollectorConfig;
use phoenix::core::telemetry::now_unix;
use serde_json::{Value, json};

use crate::support::bin::phoenix_async;
use crate::support::collector::TestCollector;

const DAY: i64 = 86_400;

fn conversation(
    id: &str,
    ts: i64,
    score: Option<f64>,
    feedback: Option<&str>,
    messages: Value,
) -> Value {
    let mut c =
        json!({"conversation_id": id, "ts_unix": ts, "orch_id": "orch-1", "messages": messages});
    if let Some(s) = score {
        c["score"] = json!(s);
    }
    if let Some(f) = feedback {
        c["feedback"] = json!(f);
    }
    c
}

/// The refund prompt as one edge numbered its pseudonyms, and a reply.
fn refund(user: &str, org: &str, card: &str, reply: &str) -> Value {
    json!([
        {"role": "system", "content": "You are a billing agent."},
        {"role": "user", "content": format!("I'm {user} from {org}; {card} was charged twice. Mail {user}_EMAIL.")},
        {"role": "assistant", "content": reply},
    ])
}

/// The canonical refund prompt every numbering above becomes.
fn canonical_refund_prompt() -> Value {
    json!([
        {"role": "system", "content": "You are a billing agent."},
        {"role": "user", "content": "I'm USER_A from ORG_ID_A; CARD_1 was charged twice. Mail USER_A_EMAIL."},
    ])
}

/// Nine conversations: four share the refund prompt under four pseudonym numberings (one of
/// them 30 days old), two share a prompt with equal scores, one is alone, one uses tools and
/// OpenAI-incompatible shapes, one never got an answer.
async fn store_dataset(c: &TestCollector) {
    let now = now_unix();
    let batch = json!([
        conversation(
            "best",
            now - 100,
            Some(5.0),
            Some("positive"),
            refund(
                "USER_C",
                "ORG_ID_B",
                "CARD_3",
                "Refunded, USER_C: CARD_3 gets the money back."
            )
        ),
        conversation(
            "curt",
            now - 200,
            Some(1.0),
            None,
            refund("USER_A", "ORG_ID_A", "CARD_1", "That is not possible.")
        ),
        conversation(
            "stall",
            now - 300,
            None,
            Some("negative"),
            refund(
                "USER_B",
                "ORG_ID_D",
                "CARD_2",
                "Please wait, USER_B; USER_E will call."
            )
        ),
        conversation(
            "old",
            now - 30 * DAY,
            Some(0.0),
            None,
            refund("USER_D", "ORG_ID_C", "CARD_9", "Old reply.")
        ),
        conversation(
            "alone",
            now - 50,
            None,
            Some("up"),
            json!([
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
            ])
        ),
        conversation(
            "tie-1",
            now - 60,
            Some(3.0),
            None,
            json!([
                {"role": "user", "content": "Summarise the ticket of USER_A."},
                {"role": "assistant", "content": "Summary one."},
            ])
        ),
        conversation(
            "tie-2",
            now - 70,
            Some(3.0),
            None,
            json!([
                {"role": "user", "content": "Summarise the ticket of USER_B."},
                {"role": "assistant", "content": "Summary two."},
            ])
        ),
        conversation(
            "tools",
            now - 80,
            None,
            None,
            json!([
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [{"type": "text", "text": "Status of invoice 7?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                    "function": {"name": "invoice_status", "arguments": {"invoice": 7}}}]},
                {"role": "tool", "tool_call_id": "call_9", "content": "{\"status\":\"paid\"}"},
                {"role": "assistant", "content": "Invoice 7 is paid."},
            ])
        ),
        conversation(
            "unanswered",
            now - 90,
            Some(2.0),
            None,
            json!([
                {"role": "user", "content": "Are you there?"},
            ])
        ),
    ]);
    let (status, answer) = c.ingest_conversations(&batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 9);
}

async fn export(home: &Path, args: &[&str]) -> Output {
    phoenix_async(home)
        .arg("export")
        .args(args)
        .output()
        .await
        .expect("phoenix export runs")
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs an export to stdout with `--json` and returns the lines and the summary (on stderr).
async fn export_stdout(home: &Path, db: &Path, args: &[&str]) -> (Vec<Value>, Value) {
    let out = export(
        home,
        &[&["--db", db.to_str().unwrap(), "--json"], args].concat(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = serde_json::from_str(stderr(&out).trim()).expect("JSON summary on stderr");
    (lines(&String::from_utf8(out.stdout).unwrap()), summary)
}

fn by_first_user_text<'a>(lines: &'a [Value], text: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["messages"].to_string().contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?}"))
}

#[tokio::test]
async fn sft_writes_each_answered_conversation_with_canonical_pseudonyms() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let home = tempfile::tempdir().unwrap();
    // The collector is still running: the export reads next to its writer.
    let (sft, summary) =
        export_stdout(home.path(), &c.store_location(), &["--format", "sft"]).await;
    assert_eq!(sft.len(), 8);
    assert_eq!(summary["written"], 8);
    assert_eq!(summary["stored"], 9);
    assert_eq!(summary["skipped"], json!({"no_assistant_message": 1}));
    let stall = by_first_user_text(&sft, "Please wait");
    let mut expected = canonical_refund_prompt();
    expected
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "Please wait, USER_A; USER_B will call."}));
    assert_eq!(stall, &json!({ "messages": expected }));
    // TRL keeps the stored shapes (tool calls, content parts) as they are.
    let tools = by_first_user_text(&sft, "invoice_status");
    assert_eq!(tools["messages"][0]["role"], "developer");
    assert_eq!(
        tools["messages"][2]["tool_calls"][0]["function"]["arguments"],
        json!({"invoice": 7})
    );

    // Stopped and checkpointed, the same export gives the same lines.
    let db = c.store_location();
    let _dir = c.stop().await;
    let (again, _) = export_stdout(home.path(), &db, &["--format", "sft"]).await;
    assert_eq!(again, sft);
}

#[tokio::test]
async fn openai_sft_converts_what_openai_refuses_and_counts_it() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let dir = c.stop().await;
    let db = dir.store_location(crate::support::collector::DB_FILE);
    let home = tempfile::tempdir().unwrap();
    let (lines, summary) = export_stdout(home.path(), &db, &["--format", "openai-sft"]).await;
    assert_eq!(lines.len(), 8);
    let tools = by_first_user_text(&lines, "invoice_status");
    assert_eq!(
        tools,
        &json!({"messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Status of invoice 7?"},
            {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "invoice_status", "arguments": "{\"invoice\":7}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "{\"status\":\"paid\"}"},
            {"role": "assistant", "content": "Invoice 7 is paid."},
        ]})
    );
    for line in &lines {
        for m in line["messages"].as_array().unwrap() {
            let role = m["role"].as_str().unwrap();
            assert!(
                ["system", "user", "assistant", "tool"].contains(&role),
                "{m}"
            );
            assert!(
                m["content"].is_string() || m["tool_calls"].is_array(),
                "{m}"
            );
        }
    }
    assert_eq!(
        summary["converted"],
        json!({"arguments_stringified": 1, "content_parts_joined": 1, "developer_to_system": 1})
    );
}

#[tokio::test]
async fn dpo_pairs_the_best_against_each_worse_with_one_numbering_per_pair() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let home = tempfile::tempdir().unwrap();
    let (pairs, summary) =
        export_stdout(home.path(), &c.store_location(), &["--format", "dpo"]).await;
    // The refund prompt, under four numberings, is one group: the best (score 5, positive) is
    // chosen against the one scored lower, the old one scored lower, and the negative one.
    let chosen =
        json!([{"role": "assistant", "content": "Refunded, USER_A: CARD_1 gets the money back."}]);
    let rejected: Vec<&str> = pairs
        .iter()
        .map(|p| {
            assert_eq!(p["prompt"], canonical_refund_prompt(), "{p}");
            assert_eq!(p["chosen"], chosen, "{p}");
            assert_eq!(
                p.as_object().unwrap().len(),
                3,
                "only prompt, chosen, rejected: {p}"
            );
            p["rejected"][0]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        rejected,
        [
            "That is not possible.",
            "Please wait, USER_A; USER_B will call.",
            "Old reply."
        ]
    );
    assert_eq!(summary["pairs"], 3);
    assert_eq!(
        summary["skipped"],
        json!({"no_final_assistant_turn": 1, "no_preference_in_group": 2, "only_one_with_its_prompt": 2})
    );

    // Seven days back the old conversation is out, and so is its pair.
    let (recent, summary) = export_stdout(
        home.path(),
        &c.store_location(),
        &["--format", "dpo", "--since", "7d"],
    )
    .await;
    assert_eq!(recent.len(), 2);
    assert_eq!(summary["skipped"]["before_since"], 1);
    c.stop().await;
}

#[tokio::test]
async fn openai_dpo_lines_have_input_and_single_replies() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let home = tempfile::tempdir().unwrap();
    let since = (now_unix() - 7 * DAY).to_string();
    let (pairs, summary) = export_stdout(
        home.path(),
        &c.store_location(),
        &["--format", "openai-dpo", "--since", &since],
    )
    .await;
    assert_eq!(summary["pairs"], 2);
    assert_eq!(
        pairs[0],
        json!({
            "input": {"messages": canonical_refund_prompt()},
            "preferred_output": [{"role": "assistant", "content": "Refunded, USER_A: CARD_1 gets the money back."}],
            "non_preferred_output": [{"role": "assistant", "content": "That is not possible."}],
        })
    );
    assert_eq!(
        pairs[1]["non_preferred_output"],
        json!([{"role": "assistant", "content": "Please wait, USER_A; USER_B will call."}])
    );
    c.stop().await;
}

#[tokio::test]
async fn since_and_min_score_filter_and_say_what_they_left_out() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let home = tempfile::tempdir().unwrap();
    let db = c.store_location();
    let (scored, summary) =
        export_stdout(home.path(), &db, &["--format", "sft", "--min-score", "2"]).await;
    let answers: Vec<String> = scored
        .iter()
        .map(|l| l["messages"][l["messages"].as_array().unwrap().len() - 1]["content"].to_string())
        .collect();
    assert_eq!(
        answers,
        [
            "\"Refunded, USER_A: CARD_1 gets the money back.\"",
            "\"Summary one.\"",
            "\"Summary two.\""
        ]
    );
    assert_eq!(
        summary["skipped"],
        json!({"below_min_score": 2, "unscored": 3, "no_assistant_message": 1})
    );
    // RFC 3339, Unix seconds and an age name the same instant.
    let cutoff = now_unix() - 7 * DAY;
    let rfc3339 = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(cutoff as u64),
    )
    .to_string();
    for since in [rfc3339.as_str(), &cutoff.to_string(), "7d"] {
        let (recent, summary) =
            export_stdout(home.path(), &db, &["--format", "sft", "--since", since]).await;
        assert_eq!(recent.len(), 7, "--since {since}");
        assert_eq!(summary["skipped"]["before_since"], 1, "--since {since}");
    }
    c.stop().await;
}

#[tokio::test]
async fn out_writes_the_same_lines_atomically_and_json_puts_the_summary_on_stdout() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    store_dataset(&c).await;
    let home = tempfile::tempdir().unwrap();
    let db = c.store_location();
    let db = db.to_str().unwrap();
    let to_stdout = export(home.path(), &["--format", "dpo", "--db", db]).await;
    assert!(to_stdout.status.success(), "{}", stderr(&to_stdout));
    assert!(
        stderr(&to_stdout)
            .contains("dpo: wrote 3 lines (3 pairs) to stdout from 8 of 9 stored conversations"),
        "{}",
        stderr(&to_stdout)
    );

    let target = home.path().join("sets").join("pairs.jsonl");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "stale\n").unwrap();
    let out = export(
        home.path(),
        &[
            "--format",
            "dpo",
            "--db",
            db,
            "--out",
            target.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), to_stdout.stdout);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary JSON on stdout");
    assert_eq!(summary["written"], 3);
    assert_eq!(summary["out"], target.to_str().unwrap());
    let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["pairs.jsonl"], "a temporary file was left behind");

    // The default database is the collector's: TELEMETRIST_DB_PATH, as `serve collector` uses.
    let default = phoenix_async(home.path())
        .args(["export", "--format", "dpo"])
        .env("TELEMETRIST_DB_PATH", db)
        .output()
        .await
        .unwrap();
    assert_eq!(default.stdout, to_stdout.stdout, "{}", stderr(&default));
    c.stop().await;
}

#[tokio::test]
async fn a_missing_database_exits_1_and_bad_flags_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nope.db");
    let out = export(
        home.path(),
        &["--format", "sft", "--db", missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no collector database at"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let target = home.path().join("out.jsonl");
    let out = export(
        home.path(),
        &[
            "--format",
            "sft",
            "--db",
            missing.to_str().unwrap(),
            "--out",
            target.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(!target.exists(), "a failed export created its output");

    for args in [
        &["--format", "csv"][..],
        &["--format", "sft", "--since", "last tuesday"],
        &["--format", "sft", "--min-score", "NaN"],
        &["--since", "7d"],
    ] {
        let out = export(home.path(), args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn a_store_url_picks_the_backend() {
    let home = tempfile::tempdir().unwrap();
    // A scheme no backend has: a usage error, exit 2, nothing on stdout.
    let out = export(
        home.path(),
        &["--format", "sft", "--db", "mysql://127.0.0.1/test"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown store URL scheme `mysql://`"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    // A PostgreSQL that cannot be reached: exit 3 (unreachable), the password never shown.
    let out = export(
        home.path(),
        &[
            "--format",
            "sft",
            "--database-url",
            "postgres://phx:s3cret@127.0.0.1:1/db",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("phx:****@127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    // A PostgreSQL store with nothing in it yet: nothing to export, and no error.
    if let Some(db) = crate::support::services::TestDatabase::create().await {
        let out = export(home.path(), &["--format", "sft", "--database-url", &db.url]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // `sqlite:PATH` is the SQLite file at PATH.
    let missing = home.path().join("nope.db");
    let out = export(
        home.path(),
        &[
            "--format",
            "sft",
            "--db",
            &format!("sqlite:{}", missing.display()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no collector database at {}", missing.display())),
        "{}",
        stderr(&out)
    );
    // `memory:` is an empty store: nothing to export, and no error.
    let out = export(home.path(), &["--format", "sft", "--db", "memory:"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
