//! `phoenix propose` (the hive) as a user runs it: the real binary against a local fake
//! OpenAI-compatible endpoint that answers per worker.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phoenix::core::distributor::DistributorConfig;
use serde_json::{Value, json};

use crate::support::distributor::TestDistributor;
use crate::support::fake_llm::{FakeLlm, Reply};

/// Upper bound on one run of the binary: a guard, not a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// The real binary, isolated from the developer's configuration; with `fake`, its LLM is the
/// fake endpoint and the client makes a single HTTP attempt per call, so retries seen in the
/// output are the queen's.
pub fn phoenix(home: &Path, fake: Option<&FakeLlm>) -> tokio::process::Command {
    let mut cmd = crate::support::bin::phoenix_async(home);
    if let Some(fake) = fake {
        cmd.env("PHOENIX_LLM_BASE_URL", &fake.base_url)
            .env("PHOENIX_LLM_MODEL", "fake/model")
            .env("PHOENIX_LLM_API_KEY", "test-key")
            .env("PHOENIX_LLM_MAX_RETRIES", "0");
    }
    cmd
}

/// Runs the command to completion (within [`PATIENCE`]).
pub async fn run(cmd: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("phoenix finishes in time")
        .expect("phoenix runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON document on stdout.
pub fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

/// Text of every message of a chat request.
pub fn prompt_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The worker number a request comes from (`You are worker K of N`), if any.
pub fn worker_of(request: &Value) -> Option<usize> {
    let system = request["messages"][0]["content"].as_str()?;
    let rest = system.split("You are worker ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// Whether the request is the queen's ranking.
pub fn is_ranking(request: &Value) -> bool {
    request["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.starts_with("You are the queen"))
}

pub fn proposal(title: &str, rationale: &str, update: Value) -> Reply {
    Reply::text(json!({"title": title, "rationale": rationale, "update": update}).to_string())
}

fn distinct_proposal(worker: usize) -> Reply {
    let ideas = [
        "Cache query embeddings in an LRU",
        "Use vector similarity search instead of keyword scans",
        "Index memories by recency and topic",
        "Compress old memories into summaries",
        "Prioritise memories by access frequency",
        "Shard the memory store per agent",
    ];
    proposal(
        ideas[(worker - 1) % ideas.len()],
        &format!("Worker {worker}'s own reasoning about retrieval latency."),
        Value::Null,
    )
}

/// Counts calls per worker, so a responder can fail a worker's first attempt only.
#[derive(Clone, Default)]
struct CallCounter(Arc<Mutex<HashMap<usize, u32>>>);

impl CallCounter {
    fn next(&self, worker: usize) -> u32 {
        let mut calls = self.0.lock().unwrap();
        let n = calls.entry(worker).or_default();
        *n += 1;
        *n
    }
}

fn results(doc: &Value) -> &Vec<Value> {
    doc["results"].as_array().expect("results array")
}

#[tokio::test]
async fn workers_run_in_parallel_and_come_back_in_worker_order() {
    let delay = Duration::from_millis(400);
    let n = 5;
    let fake = FakeLlm::start().await;
    fake.set_responder(move |req| {
        let w = worker_of(req).expect("a worker request");
        Reply::Delay(delay, Box::new(distinct_proposal(w)))
    });
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path(), Some(&fake)).args([
        "propose",
        "Improve memory retrieval speed",
        "--n",
        "5",
        "--concurrency",
        "5",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["model"], "fake/model");
    assert_eq!(
        doc["counts"],
        json!({"ok": 5, "duplicates": 0, "failed": 0, "cancelled": 0})
    );
    for (i, r) in results(&doc).iter().enumerate() {
        assert_eq!(r["worker"], i + 1);
        assert_eq!(r["status"], "ok");
        assert_eq!(r["attempts"], 1);
        assert!(
            r["latency_ms"].as_f64().unwrap() >= delay.as_millis() as f64,
            "{r}"
        );
        let expected = match distinct_proposal(i + 1) {
            Reply::Text(t) => serde_json::from_str::<Value>(&t).unwrap()["title"].clone(),
            _ => unreachable!(),
        };
        assert_eq!(r["proposal"]["title"], expected);
    }
    // All five calls were in flight at once (the fake counts them), so the run costs one
    // call's delay, not five; the wall time itself is not asserted (shared, noisy machines).
    assert_eq!(fake.max_in_flight(), n);
    assert!(doc["elapsed_ms"].as_f64().unwrap() >= delay.as_millis() as f64);

    // Each worker had its own perspective and temperature.
    let requests = fake.requests();
    let systems: std::collections::BTreeSet<String> = requests
        .iter()
        .map(|r| r["messages"][0]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(systems.len(), n);
    let mut temps: Vec<String> = requests
        .iter()
        .map(|r| r["temperature"].to_string())
        .collect();
    temps.sort();
    temps.dedup();
    assert_eq!(temps.len(), n, "{temps:?}");
    for r in &requests {
        assert!(prompt_text(r).contains("Seed: Improve memory retrieval speed"));
    }
}

#[tokio::test]
async fn concurrency_bounds_the_calls_in_flight() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|req| {
        let w = worker_of(req).unwrap();
        Reply::Delay(Duration::from_millis(150), Box::new(distinct_proposal(w)))
    });
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path(), Some(&fake)).args([
        "propose",
        "Improve memory retrieval speed",
        "-n",
        "4",
        "--concurrency",
        "2",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["concurrency"], 2);
    assert_eq!(fake.hits(), 4);
    assert!(fake.max_in_flight() <= 2, "{}", fake.max_in_flight());
}

#[tokio::test]
async fn a_failing_worker_is_retried_and_one_that_always_fails_keeps_its_slot() {
    let fake = FakeLlm::start().await;
    let calls = CallCounter::default();
    fake.set_responder(move |req| {
        let w = worker_of(req).unwrap();
        match (w, calls.next(w)) {
            (2, 1) => Reply::error(500, "transient upstream error"),
            (3, _) => Reply::error(500, "upstream exploded"),
            (4, 1) => Reply::text("{\"title\": \"cut off mid"),
            _ => distinct_proposal(w),
        }
    });
    let home = tempfile::tempdir().unwrap();
    let args = [
        "propose",
        "Improve memory retrieval speed",
        "--n",
        "4",
        "--retries",
        "1",
    ];
    let out = run(phoenix(home.path(), Some(&fake)).args(args).arg("--json")).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 of 4 workers failed"),
        "{}",
        stderr(&out)
    );
    let doc = json_out(&out);
    let r = results(&doc);
    assert_eq!(
        (r[0]["status"].clone(), r[0]["attempts"].clone()),
        (json!("ok"), json!(1))
    );
    assert_eq!(
        (r[1]["status"].clone(), r[1]["attempts"].clone()),
        (json!("ok"), json!(2))
    );
    assert!(
        r[1]["attempt_errors"][0]
            .as_str()
            .unwrap()
            .contains("HTTP 500 after 1 HTTP request: transient upstream error"),
        "{}",
        r[1]
    );
    assert_eq!(
        (r[2]["status"].clone(), r[2]["attempts"].clone()),
        (json!("failed"), json!(2))
    );
    assert_eq!(
        r[2]["text"],
        "(failed) LLM endpoint failed with HTTP 500 after 1 HTTP request: upstream exploded"
    );
    assert_eq!(r[2]["error_kind"], "llm_server");
    assert_eq!(r[2]["proposal"], Value::Null);
    assert_eq!(
        (r[3]["status"].clone(), r[3]["attempts"].clone()),
        (json!("ok"), json!(2))
    );
    assert!(
        r[3]["attempt_errors"][0]
            .as_str()
            .unwrap()
            .contains("unusable answer"),
        "{}",
        r[3]
    );
    assert_eq!(doc["counts"]["failed"], 1);

    // The same run for people: the failure sits in worker 3's row, the others are intact.
    let fake2 = FakeLlm::start().await;
    fake2.set_responder(|req| match worker_of(req).unwrap() {
        3 => Reply::error(500, "upstream exploded"),
        w => distinct_proposal(w),
    });
    let out = run(phoenix(home.path(), Some(&fake2)).args(args)).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let text = stdout(&out);
    let row3 = text
        .lines()
        .find(|l| l.contains("(failed)"))
        .unwrap_or_else(|| panic!("no failed row in:\n{text}"));
    assert!(row3.contains("│ 3 "), "{row3}");
    assert!(row3.contains("(failed) LLM endpoint failed"), "{row3}");
    assert!(text.contains("3 distinct proposals, 1 failed."), "{text}");
}

#[tokio::test]
async fn all_workers_failing_exits_1() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::error(503, "overloaded"));
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path(), Some(&fake)).args([
        "propose",
        "Improve memory retrieval speed",
        "--n",
        "2",
        "--retries",
        "0",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("all 2 workers failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out).matches("(failed)").count(),
        2,
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_hung_call_is_cut_by_the_timeout() {
    let fake = FakeLlm::start().await;
    let calls = CallCounter::default();
    fake.set_responder(move |req| {
        let w = worker_of(req).unwrap();
        match (w, calls.next(w)) {
            (2, 1) | (3, _) => Reply::Hang,
            _ => distinct_proposal(w),
        }
    });
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path(), Some(&fake)).args([
        "propose",
        "Improve memory retrieval speed",
        "--n",
        "3",
        "--timeout",
        "400ms",
        "--retries",
        "1",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let doc = json_out(&out);
    let r = results(&doc);
    assert_eq!(r[0]["status"], "ok");
    assert_eq!(
        (r[1]["status"].clone(), r[1]["attempts"].clone()),
        (json!("ok"), json!(2))
    );
    assert_eq!(
        r[1]["attempt_errors"],
        json!(["attempt 1: timed out after 400ms"])
    );
    assert_eq!(
        (r[2]["status"].clone(), r[2]["attempts"].clone()),
        (json!("failed"), json!(2))
    );
    assert_eq!(r[2]["text"], "(failed) timed out after 400ms");
    assert_eq!(r[2]["error_kind"], "timeout");
}

#[tokio::test]
async fn rate_limiting_with_retry_after_is_waited_out_inside_the_attempt() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Status {
        status: 429,
        body: json!({"error": {"message": "slow down", "code": 429}}).to_string(),
        retry_after: Some(1),
    });
    fake.set_default(distinct_proposal(1));
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path(), Some(&fake))
        .env("PHOENIX_LLM_MAX_RETRIES", "1")
        .args([
            "propose",
            "Improve memory retrieval speed",
            "--n",
            "1",
            "--json",
        ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    let w = &results(&doc)[0];
    assert_eq!(w["status"], "ok");
    // One attempt of the worker, two HTTP requests, and the server's 1 s respected.
    assert_eq!(w["attempts"], 1);
    assert_eq!(w["llm_requests"], 2);
    assert!(w["latency_ms"].as_f64().unwrap() >= 1000.0, "{w}");
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn duplicate_proposals_are_collapsed_and_named() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|req| match worker_of(req).unwrap() {
        1 => proposal(
            "Add a caching layer",
            "Cache embeddings of repeated queries in an LRU so retrieval skips the embedding call.",
            Value::Null,
        ),
        2 => proposal(
            "Use vector similarity search",
            "Replace keyword scans with an HNSW index over memory embeddings.",
            Value::Null,
        ),
        // Worker 1's words with other case and punctuation.
        3 => proposal(
            "add a CACHING layer!",
            "cache embeddings of repeated queries, in an LRU, so retrieval skips the embedding call",
            Value::Null,
        ),
        // Worker 2's idea with one more word.
        _ => proposal(
            "Use vector similarity search",
            "Replace keyword scans with an HNSW index over all memory embeddings.",
            Value::Null,
        ),
    });
    let home = tempfile::tempdir().unwrap();
    let args = ["propose", "Improve memory retrieval speed", "--n", "4"];
    let out = run(phoenix(home.path(), Some(&fake)).args(args).arg("--json")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    let r = results(&doc);
    assert_eq!(r[2]["status"], "duplicate");
    assert_eq!(r[2]["duplicate_of"], 1);
    assert_eq!(r[2]["duplicate_kind"], "exact");
    assert_eq!(r[3]["status"], "duplicate");
    assert_eq!(r[3]["duplicate_of"], 2);
    assert_eq!(r[3]["duplicate_kind"], "near");
    assert!(r[3]["similarity"].as_f64().unwrap() >= 0.8);
    assert_eq!(doc["counts"]["ok"], 2);
    assert_eq!(doc["counts"]["duplicates"], 2);

    let out = run(phoenix(home.path(), Some(&fake)).args(args)).await;
    let text = stdout(&out);
    assert!(text.contains("duplicate of #1 (exact)"), "{text}");
    assert!(text.contains("duplicate of #2 (near)"), "{text}");
    assert!(
        text.contains("2 distinct proposals, 2 duplicates dropped (#3 repeats #1, #4 repeats #2)"),
        "{text}"
    );
}

#[tokio::test]
async fn rank_orders_the_distinct_proposals_with_reasons() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|req| {
        if is_ranking(req) {
            return Reply::text(
                json!({
                    "ranking": [
                        {"worker": 2, "reason": "Biggest latency win for the least effort."},
                        {"worker": 1, "reason": "Helps, but only for repeated queries."}
                    ],
                    "summary": "Switch to vector search first, then add the cache."
                })
                .to_string(),
            );
        }
        match worker_of(req).unwrap() {
            3 => distinct_proposal(1),
            w => distinct_proposal(w),
        }
    });
    let home = tempfile::tempdir().unwrap();
    let args = [
        "propose",
        "Improve memory retrieval speed",
        "--n",
        "3",
        "--rank",
    ];
    let out = run(phoenix(home.path(), Some(&fake)).args(args).arg("--json")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["ranking"]["model"], "fake/model");
    let order: Vec<(Value, Value)> = doc["ranking"]["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["worker"].clone(), r["rank"].clone()))
        .collect();
    assert_eq!(order, vec![(json!(2), json!(1)), (json!(1), json!(2))]);
    assert_eq!(
        doc["ranking"]["summary"],
        "Switch to vector search first, then add the cache."
    );
    // The queen ranked only the distinct proposals: worker 3 repeated worker 1.
    let ranking_request = fake
        .requests()
        .into_iter()
        .find(is_ranking)
        .expect("a ranking request");
    let listed = prompt_text(&ranking_request);
    assert!(
        listed.contains("\"worker\": 1") && listed.contains("\"worker\": 2"),
        "{listed}"
    );
    assert!(!listed.contains("\"worker\": 3"), "{listed}");

    let out = run(phoenix(home.path(), Some(&fake)).args(args)).await;
    let text = stdout(&out);
    assert!(text.contains("Ranking by fake/model:"), "{text}");
    assert!(
        text.contains(
            "1. #2 Use vector similarity search instead of keyword scans — Biggest latency win for the least effort."
        ),
        "{text}"
    );
    assert!(
        text.contains("Synthesis: Switch to vector search first"),
        "{text}"
    );
}

#[tokio::test]
async fn publish_best_turns_the_top_ranked_proposal_into_an_update() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|req| {
        if is_ranking(req) {
            return Reply::text(
                r#"{"ranking": [{"worker": 3, "reason": "cheapest fast model"}, {"worker": 1, "reason": "ok"}, {"worker": 2, "reason": "no model named"}], "summary": "Use haiku."}"#,
            );
        }
        match worker_of(req).unwrap() {
            1 => proposal(
                "Route to gemini flash",
                "Lower p95.",
                json!({"type": "model_tweak", "model": "google/gemini-flash-1.5"}),
            ),
            2 => proposal("Trim the context window", "Fewer tokens.", Value::Null),
            _ => proposal(
                "Switch simple queries to claude-3-haiku",
                "Three times faster at the same quality on short tasks.",
                json!({"type": "model_tweak", "model": "anthropic/claude-3-haiku"}),
            ),
        }
    });
    let distributor = TestDistributor::start(DistributorConfig {
        admin_token: Some("admin-secret".into()),
        ..DistributorConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let publish_args = [
        "propose",
        "Cut response times",
        "--n",
        "3",
        "--publish-best",
        "model-tweak",
        "--distributor-url",
        &distributor.ws_url,
        "--target-prefix",
        "assistant",
        "--rollout-percent",
        "50",
    ];

    // Without --yes and without a terminal, nothing is asked and nothing is spent.
    let out = run(phoenix(home.path(), Some(&fake)).args(publish_args)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(fake.hits(), 0);

    let out = run(phoenix(home.path(), Some(&fake))
        .env("PHOENIX_ADMIN_TOKEN", "admin-secret")
        .args(publish_args)
        .args(["--yes", "--json"]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    let published = &doc["published"];
    assert_eq!(published["worker"], 3);
    assert_eq!(published["update"]["update_type"], "model_tweak");
    assert_eq!(
        published["update"]["payload"],
        json!({"default_model": "anthropic/claude-3-haiku"})
    );
    assert_eq!(published["update"]["target_agent_prefix"], "assistant");
    assert_eq!(published["update"]["rollout_percent"], 50);
    // The workers were told the update must be a model_tweak.
    for r in fake.requests().iter().filter(|r| worker_of(r).is_some()) {
        assert!(prompt_text(r).contains("\"update\" must be a model_tweak"));
    }
    let stored = distributor.get_json("/updates").await;
    assert_eq!(
        stored["updates"][0]["update_id"],
        published["update"]["update_id"]
    );

    // --pick overrides the ranking; a proposal without the right update is refused.
    let out = run(phoenix(home.path(), Some(&fake))
        .env("PHOENIX_ADMIN_TOKEN", "admin-secret")
        .args(publish_args)
        .args(["--yes", "--pick", "2"]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("worker 2's proposal carries no model_tweak"),
        "{}",
        stderr(&out)
    );
    let out = run(phoenix(home.path(), Some(&fake))
        .env("PHOENIX_ADMIN_TOKEN", "admin-secret")
        .args(publish_args)
        .args(["--yes", "--pick", "1"]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Published worker #1's proposal as model_tweak"),
        "{text}"
    );
    assert!(text.contains("to agents under assistant"), "{text}");

    // A wrong admin token is the distributor's 401: exit 4, after the proposals are shown.
    let out = run(phoenix(home.path(), Some(&fake))
        .env("PHOENIX_ADMIN_TOKEN", "wrong")
        .args(publish_args)
        .args(["--yes"]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Switch simple queries"),
        "{}",
        stdout(&out)
    );
    distributor.stop().await;
}

#[tokio::test]
async fn bad_invocations_are_refused_before_any_llm_call() {
    let fake = FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let out =
        run(phoenix(home.path(), None).args(["propose", "Improve memory retrieval speed"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no LLM to ask: no LLM configured"),
        "{}",
        stderr(&out)
    );
    for (args, needle) in [
        (vec!["--n", "0"], "0 is not in 1..=64"),
        (vec!["--n", "1000"], "1000 is not in 1..=64"),
        (vec!["--concurrency", "0"], "0 is not in 1..=64"),
        (vec!["--timeout", "0s"], "--timeout must be above zero"),
        (
            vec!["--target-prefix", "x"],
            "only apply with --publish-best",
        ),
        (vec!["--pick", "1"], "--publish-best"),
        (
            vec!["--publish-best", "json-patch"],
            "invalid value 'json-patch'",
        ),
        (
            vec!["--publish-best", "model-tweak", "--yes", "--pick", "9"],
            "--pick 9 is not a worker",
        ),
    ] {
        let out = run(phoenix(home.path(), Some(&fake))
            .args(["propose", "Improve memory retrieval speed"])
            .args(&args))
        .await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = run(phoenix(home.path(), Some(&fake)).args(["propose", "  "])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the seed must not be empty"));
    assert_eq!(fake.hits(), 0);
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_cancels_the_workers_and_prints_what_came_back() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|req| match worker_of(req).unwrap() {
        1 => distinct_proposal(1),
        _ => Reply::Hang,
    });
    let home = tempfile::tempdir().unwrap();
    // One at a time: worker 2's request arrives only once worker 1 is completely done.
    let child = phoenix(home.path(), Some(&fake))
        .args([
            "propose",
            "Improve memory retrieval speed",
            "--n",
            "3",
            "--concurrency",
            "1",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while fake.hits() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker 2 never asked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("phoenix stops after Ctrl-C")
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["cancelled"], true);
    let r = results(&doc);
    assert_eq!(r[0]["status"], "ok");
    assert_eq!(
        (r[1]["status"].clone(), r[1]["attempts"].clone()),
        (json!("cancelled"), json!(1))
    );
    assert_eq!(
        (r[2]["status"].clone(), r[2]["attempts"].clone()),
        (json!("cancelled"), json!(0))
    );
    assert_eq!(r[2]["text"], "(cancelled)");
    assert!(
        stderr(&out).contains("2 of 3 workers were cancelled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake.hits(), 2, "worker 3 never started");
}
