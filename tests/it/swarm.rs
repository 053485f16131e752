//! The seed's swarm loop end to end (use cases 1 and 2). ORCHs report telemetry to the
//! collector (`phoenix ingest`), `phoenix analyze` turns it into an insight, `phoenix propose
//! --context-from-insights --publish-best …` grounds the hive in that insight and publishes
//! the queen's choice through the distributor, the subscribed agents apply it (`phoenix
//! subscribe --once`), and their next telemetry reflects what they now run.
//!
//! Collector and distributor run in-process; every CLI step is the real binary; the LLM is a
//! local fake that answers the analyst, the workers and the queen.

use std::path::{Path, PathBuf};

use phoenix::core::collector::CollectorConfig;
use phoenix::core::distributor::DistributorConfig;
use serde_json::{Value, json};

use crate::propose::{
    is_ranking, json_out, phoenix, prompt_text, proposal, run, stderr, stdout, worker_of,
};
use crate::support::collector::TestCollector;
use crate::support::distributor::TestDistributor;
use crate::support::fake_llm::{FakeLlm, Reply};

/// What every agent runs before any update.
const BUILTIN_MODEL: &str = "openai/gpt-4o";
const BUILTIN_PROMPT: &str = "You are Phoenix, an AI assistant.";
const ADMIN_TOKEN: &str = "swarm-admin";

/// One ORCH: an id, an agent path, and its learning state file.
struct Agent {
    orch_id: &'static str,
    agent_path: &'static str,
    state: PathBuf,
}

/// The fleet of the use cases: two chat assistants and a code generator.
fn fleet(home: &Path) -> Vec<Agent> {
    [
        ("orch-a", "assistant/chat"),
        ("orch-b", "assistant/chat"),
        ("orch-c", "code-gen/rust"),
    ]
    .into_iter()
    .map(|(orch_id, agent_path)| Agent {
        orch_id,
        agent_path,
        state: home.join(format!("{orch_id}.state.json")),
    })
    .collect()
}

/// The whole stack: fake LLM, collector (whose analyst is the fake), distributor.
struct Stack {
    fake: FakeLlm,
    collector: TestCollector,
    distributor: TestDistributor,
    home: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let fake = FakeLlm::start().await;
        let collector = TestCollector::start(CollectorConfig {
            llm: Ok(fake.settings()),
            ..CollectorConfig::default()
        })
        .await;
        let distributor = TestDistributor::start(DistributorConfig {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..DistributorConfig::default()
        })
        .await;
        Stack {
            fake,
            collector,
            distributor,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `phoenix …` wired to this stack.
    fn phoenix(&self) -> tokio::process::Command {
        let mut cmd = phoenix(self.home.path(), Some(&self.fake));
        cmd.env("TELEMETRIST_URL", &self.collector.url)
            .env("PULSE_DISTRIBUTOR_URL", &self.distributor.ws_url)
            .env("PHOENIX_ADMIN_TOKEN", ADMIN_TOKEN);
        cmd
    }

    /// Runs `phoenix args` and insists on exit 0.
    async fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = run(self.phoenix().args(args)).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "phoenix {args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// The ORCH sends its telemetry with `phoenix ingest` (NDJSON).
    async fn send_telemetry(&self, agent: &Agent, records: &[Value]) {
        let file = self.home.path().join(format!("{}.ndjson", agent.orch_id));
        let ndjson: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&file, ndjson).unwrap();
        let out = self
            .ok(&["ingest", "--file", file.to_str().unwrap(), "--json"])
            .await;
        assert_eq!(
            json_out(&out)["accepted"],
            records.len(),
            "{}",
            stdout(&out)
        );
    }

    /// The agent's learning pipeline applies what is pending and exits.
    async fn subscribe_once(&self, agent: &Agent) -> Vec<Value> {
        let out = self
            .ok(&[
                "subscribe",
                "--orch-id",
                agent.orch_id,
                "--agent-path",
                agent.agent_path,
                "--state",
                agent.state.to_str().unwrap(),
                "--once",
                "--json",
            ])
            .await;
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The agent's overrides as `phoenix subscribe show --json` reports them.
    async fn overrides(&self, agent: &Agent) -> Value {
        let out = self
            .ok(&[
                "subscribe",
                "show",
                "--state",
                agent.state.to_str().unwrap(),
                "--json",
            ])
            .await;
        json_out(&out)["overrides"].clone()
    }

    /// Newest stored records of `kind` from `agent_path`, newest first.
    async fn telemetry(&self, kind: &str, agent_path: &str) -> Vec<Value> {
        self.collector
            .telemetry(&format!("kind={kind}&agent_prefix={agent_path}"))
            .await
    }
}

/// The model an agent runs: its override if it has one, else its built-in model.
fn model_in_use(overrides: &Value) -> &str {
    overrides["default_model"].as_str().unwrap_or(BUILTIN_MODEL)
}

/// The prompt an agent runs: its override if it has one, else its built-in prompt.
fn prompt_in_use(overrides: &Value) -> &str {
    overrides["default_prompt"]
        .as_str()
        .unwrap_or(BUILTIN_PROMPT)
}

/// Performance telemetry of one ORCH (use case 1): response times depend on the model.
fn performance_records(agent: &Agent, model: &str, rounds: u32) -> Vec<Value> {
    (0..rounds)
        .map(|i| {
            let base = if model == BUILTIN_MODEL { 2400 } else { 650 };
            json!({
                "orch_id": agent.orch_id,
                "agent_path": agent.agent_path,
                "kind": "performance",
                "level": "info",
                "payload": {
                    "response_time_ms": base + 37 * i,
                    "token_count": 900 + 11 * i,
                    "model_used": model,
                }
            })
        })
        .collect()
}

/// Feedback telemetry of one ORCH (use case 2): warmth depends on the prompt.
fn feedback_records(agent: &Agent, prompt: &str, rounds: u32) -> Vec<Value> {
    (0..rounds)
        .map(|i| {
            let base = if prompt == BUILTIN_PROMPT { 0.70 } else { 0.90 };
            json!({
                "orch_id": agent.orch_id,
                "agent_path": agent.agent_path,
                "kind": "interaction_feedback",
                "level": "info",
                "payload": {
                    "love_score": base + 0.005 * f64::from(i),
                    "prompt": prompt,
                }
            })
        })
        .collect()
}

/// The analyst's bullets, the workers' proposals and the queen's ranking, by request.
fn responder(
    analysis: &'static str,
    proposals: Vec<Reply>,
    ranking: Value,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |req| {
        if prompt_text(req).contains("telemetry analyst") {
            return Reply::text(analysis);
        }
        if is_ranking(req) {
            return Reply::text(ranking.to_string());
        }
        let w = worker_of(req).expect("an analyst, worker or ranking request");
        proposals[(w - 1) % proposals.len()].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_case_1_slow_fleet_gets_a_faster_model_and_reports_it() {
    let stack = Stack::start().await;
    let fleet = fleet(stack.home.path());
    stack.fake.set_responder(responder(
        "- model_tweak for assistant/chat: response_time_ms p95 is 3.1 s on openai/gpt-4o; use a faster model such as anthropic/claude-3-haiku for simple queries\n- token_count is stable; no change needed",
        vec![
            proposal(
                "Route chat agents to claude-3-haiku",
                "p95 response_time_ms is 3.1 s; haiku answers short queries 3x faster at similar quality.",
                json!({"type": "model_tweak", "model": "anthropic/claude-3-haiku"}),
            ),
            proposal(
                "Try gemini flash for chat",
                "Cheaper and fast, but quality on long answers is unproven.",
                json!({"type": "model_tweak", "model": "google/gemini-flash-1.5"}),
            ),
            proposal(
                "Fall back to a small model on timeouts",
                "Keeps gpt-4o for hard queries and retries slow ones on mistral-small.",
                json!({"type": "model_tweak", "model": "mistralai/mistral-small"}),
            ),
        ],
        json!({
            "ranking": [
                {"worker": 1, "reason": "Largest p95 cut with the least quality risk."},
                {"worker": 3, "reason": "Safe, but only helps the slowest queries."},
                {"worker": 2, "reason": "Quality unproven."}
            ],
            "summary": "Switch to claude-3-haiku fleet-wide and watch response_time_ms."
        }),
    ));

    // The hive cannot be grounded in telemetry before there is an insight.
    let out = run(stack.phoenix().args([
        "propose",
        "Reduce response times across the fleet",
        "--context-from-insights",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no insight yet: run `phoenix analyze` first"),
        "{}",
        stderr(&out)
    );

    // 1. The ORCHs report slow responses on their built-in model.
    for agent in &fleet {
        stack
            .send_telemetry(agent, &performance_records(agent, BUILTIN_MODEL, 20))
            .await;
    }

    // 2. Analyze: the insight names the problem.
    let out = stack
        .ok(&[
            "analyze",
            "--focus",
            "performance",
            "--last-n",
            "1000",
            "--json",
        ])
        .await;
    let insight = json_out(&out);
    assert_eq!(insight["source"], "llm", "{insight}");
    assert_eq!(insight["records_analyzed"], 60);

    // 3. The queen's hive, grounded in that insight, publishes the best model_tweak.
    let out = stack
        .ok(&[
            "propose",
            "Reduce response times across the fleet",
            "--n",
            "3",
            "--context-from-insights",
            "--publish-best",
            "model-tweak",
            "--yes",
            "--json",
        ])
        .await;
    let hive = json_out(&out);
    assert_eq!(hive["context"]["insight_id"], insight["id"]);
    assert_eq!(hive["counts"]["ok"], 3);
    assert_eq!(hive["ranking"]["order"][0]["worker"], 1);
    let update = &hive["published"]["update"];
    assert_eq!(update["update_type"], "model_tweak");
    assert_eq!(
        update["payload"],
        json!({"default_model": "anthropic/claude-3-haiku"})
    );
    // Every worker saw the insight's figures.
    let worker_prompts: Vec<String> = stack
        .fake
        .requests()
        .iter()
        .filter(|r| worker_of(r).is_some())
        .map(prompt_text)
        .collect();
    assert_eq!(worker_prompts.len(), 3);
    for p in &worker_prompts {
        assert!(p.contains(insight["id"].as_str().unwrap()), "{p}");
        assert!(p.contains("response_time_ms p95 is 3.1 s"), "{p}");
        assert!(p.contains("\"field\":\"response_time_ms\""), "{p}");
    }

    // 4. Every subscribed agent applies it, without a restart of anything.
    for agent in &fleet {
        let reports = stack.subscribe_once(agent).await;
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0]["update_id"], update["update_id"]);
        assert_eq!(reports[0]["status"], "applied");
    }
    let status = stack
        .distributor
        .status(update["update_id"].as_str().unwrap())
        .await;
    assert_eq!(status["applied"], 3, "{status}");

    // 5. Their next telemetry runs on the new model, and it is faster.
    for agent in &fleet {
        let overrides = stack.overrides(agent).await;
        assert_eq!(model_in_use(&overrides), "anthropic/claude-3-haiku");
        stack
            .send_telemetry(
                agent,
                &performance_records(agent, model_in_use(&overrides), 5),
            )
            .await;
    }
    for path in ["assistant/chat", "code-gen/rust"] {
        let records = stack.telemetry("performance", path).await;
        let newest = &records[0];
        assert_eq!(
            newest["payload"]["model_used"], "anthropic/claude-3-haiku",
            "{newest}"
        );
        assert!(newest["payload"]["response_time_ms"].as_u64().unwrap() < 1000);
        let before = records.last().unwrap();
        assert_eq!(before["payload"]["model_used"], BUILTIN_MODEL);
    }
    stack.distributor.stop().await;
    stack.collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_case_2_cold_answers_get_a_warmer_prompt_and_love_scores_rise() {
    let warm = "You are Phoenix, a warm and caring AI. Greet the user kindly, acknowledge how they feel, then help.";
    let stack = Stack::start().await;
    let fleet = fleet(stack.home.path());
    stack.fake.set_responder(responder(
        "- prompt_tweak fleet-wide: love_score mean is 0.75, below 0.80 on every agent; add a warmer opening to the default prompt",
        vec![
            proposal(
                "Open every answer warmly",
                "love_score averages 0.75; a warm greeting and acknowledgement raised it in similar fleets.",
                json!({"type": "prompt_tweak", "prompt": warm}),
            ),
            proposal(
                "Ask how the user feels first",
                "Slower, but more empathetic.",
                json!({"type": "prompt_tweak", "prompt": "You are Phoenix. Before helping, ask the user how they feel."}),
            ),
        ],
        json!({
            "ranking": [
                {"worker": 1, "reason": "Directly targets the low love_score without slowing answers."},
                {"worker": 2, "reason": "Adds a turn to every conversation."}
            ],
            "summary": "Publish the warm opening."
        }),
    ));

    for agent in &fleet {
        stack
            .send_telemetry(agent, &feedback_records(agent, BUILTIN_PROMPT, 10))
            .await;
    }
    let out = stack
        .ok(&["analyze", "--focus", "emotional_resonance", "--json"])
        .await;
    let insight = json_out(&out);
    let love = insight["stats"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "love_score")
        .expect("love_score statistics");
    assert!(love["overall"]["mean"].as_f64().unwrap() < 0.8, "{love}");

    // Plain-text run this time, as an operator would read it.
    let out = stack
        .ok(&[
            "propose",
            "Improve emotional resonance",
            "--n",
            "2",
            "--context-from-insights",
            "--publish-best",
            "prompt-tweak",
            "--yes",
        ])
        .await;
    let text = stdout(&out);
    assert!(text.contains("Grounded in insight"), "{text}");
    assert!(text.contains("1. #1 Open every answer warmly"), "{text}");
    assert!(
        text.contains("Published worker #1's proposal as prompt_tweak"),
        "{text}"
    );
    for p in stack
        .fake
        .requests()
        .iter()
        .filter(|r| worker_of(r).is_some())
        .map(prompt_text)
    {
        assert!(p.contains("love_score mean is 0.75"), "{p}");
    }

    for agent in &fleet {
        let reports = stack.subscribe_once(agent).await;
        assert_eq!(reports[0]["update_type"], "prompt_tweak");
        assert_eq!(reports[0]["status"], "applied");
        let overrides = stack.overrides(agent).await;
        assert_eq!(prompt_in_use(&overrides), warm);
        stack
            .send_telemetry(
                agent,
                &feedback_records(agent, prompt_in_use(&overrides), 5),
            )
            .await;
    }
    for path in ["assistant/chat", "code-gen/rust"] {
        let records = stack.telemetry("interaction_feedback", path).await;
        let newest = &records[0];
        assert_eq!(newest["payload"]["prompt"], warm);
        assert!(
            newest["payload"]["love_score"].as_f64().unwrap() >= 0.9,
            "{newest}"
        );
    }
    // A second analysis over the newest feedback shows the rise.
    let out = stack
        .ok(&[
            "analyze",
            "--focus",
            "emotional_resonance",
            "--last-n",
            "15",
            "--json",
        ])
        .await;
    let after = json_out(&out);
    let love = after["stats"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "love_score")
        .unwrap();
    assert!(love["overall"]["mean"].as_f64().unwrap() >= 0.9, "{love}");
    stack.distributor.stop().await;
    stack.collector.stop().await;
}
