//! `POST /analyze` and `GET /insights`: statistics checked against figures computed here,
//! independently, and the LLM summary with every way the LLM can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use phoenix::core::collector::CollectorConfig;
use phoenix::core::telemetry::now_unix;
use serde_json::{Value, json};

use crate::support::collector::{TestCollector, expect_error, status_and_json};
use crate::support::fake_llm::{FakeLlm, Reply};

/// One record of the reference dataset.
struct Rec {
    kind: &'static str,
    level: &'static str,
    path: Option<&'static str>,
    orch: &'static str,
    ts: i64,
    response_time: Option<f64>,
}

const PLANNER: [f64; 6] = [120.0, 80.0, 100.0, 140.0, 110.0, 90.0];
const REVIEWER: [f64; 7] = [95.0, 105.0, 100.0, 85.0, 115.0, 130.0, 70.0];
/// The slow agent.
const CODER: [f64; 6] = [900.0, 1100.0, 950.0, 1000.0, 1200.0, 1050.0];
const ORCHS: [&str; 4] = ["orch-a", "orch-b", "orch-c", "orch-d"];
const STALE_HEARTBEAT_AGE: i64 = 3600;

/// Three agents (one slow), a few errors, fresh heartbeats from orch-a and orch-b (orch-a
/// also has an older one), only an hour-old heartbeat from orch-c, none from orch-d.
fn dataset(now: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut ts = now - 200;
    let mut next_ts = || {
        ts += 1;
        ts
    };
    let mut n = 0;
    for (path, values) in [
        ("planner", &PLANNER[..]),
        ("reviewer", &REVIEWER[..]),
        ("coder", &CODER[..]),
    ] {
        for v in values {
            out.push(Rec {
                kind: "skill_execution",
                level: "info",
                path: Some(path),
                orch: ORCHS[n % ORCHS.len()],
                ts: next_ts(),
                response_time: Some(*v),
            });
            n += 1;
        }
    }
    for (kind, level, path, orch) in [
        ("task_failed", "error", "reviewer", "orch-a"),
        ("task_failed", "error", "reviewer", "orch-d"),
        ("task_failed", "critical", "coder", "orch-b"),
        ("task_retry", "warn", "planner", "orch-c"),
    ] {
        out.push(Rec {
            kind,
            level,
            path: Some(path),
            orch,
            ts: next_ts(),
            response_time: None,
        });
    }
    for (orch, ts) in [
        ("orch-a", now - 5000),
        ("orch-a", now - 30),
        ("orch-b", now - 60),
        ("orch-c", now - STALE_HEARTBEAT_AGE),
    ] {
        out.push(Rec {
            kind: "orch_heartbeat",
            level: "info",
            path: None,
            orch,
            ts,
            response_time: None,
        });
    }
    out
}

fn envelope(r: &Rec) -> Value {
    let payload = match r.response_time {
        Some(v) => json!({"response_time": v, "skill_id": "s-1"}),
        None if r.kind == "orch_heartbeat" => json!({}),
        None => json!({"reason": "upstream timeout"}),
    };
    let mut env = json!({
        "orch_id": r.orch,
        "ts_unix": r.ts,
        "kind": r.kind,
        "level": r.level,
        "payload": payload,
    });
    if let Some(path) = r.path {
        env["agent_path"] = json!(path);
    }
    env
}

/// numpy's default percentile ("type 7"): linear interpolation between closest ranks.
fn type7(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = p * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - h.floor()) * (v[hi] - v[lo])
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[track_caller]
fn approx(got: &Value, want: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[track_caller]
fn check_summary(summary: &Value, values: &[f64], what: &str) {
    assert_eq!(summary["count"], values.len(), "{what} count");
    approx(&summary["mean"], mean(values), &format!("{what} mean"));
    approx(&summary["p50"], type7(values, 0.50), &format!("{what} p50"));
    approx(&summary["p95"], type7(values, 0.95), &format!("{what} p95"));
    approx(&summary["p99"], type7(values, 0.99), &format!("{what} p99"));
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    approx(&summary["min"], min, &format!("{what} min"));
    approx(&summary["max"], max, &format!("{what} max"));
}

/// `[{"name", "count"}]` as a map, checking it is sorted most frequent first.
#[track_caller]
fn counts(list: &Value) -> BTreeMap<String, u64> {
    let items = list.as_array().unwrap();
    let numbers: Vec<u64> = items.iter().map(|c| c["count"].as_u64().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] >= w[1]),
        "not most frequent first: {list}"
    );
    items
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn tally<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for k in keys {
        *out.entry(k.to_owned()).or_insert(0) += 1;
    }
    out
}

const ERROR_LEVELS: [&str; 3] = ["error", "critical", "fatal"];

async fn orch_hash(c: &TestCollector, raw: &str) -> String {
    c.telemetry(&format!("orch={raw}")).await[0]["orch_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// POSTs the seed's curl body, with the given Content-Type (none when `None`).
async fn analyze_raw(c: &TestCollector, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = c
        .client()
        .post(c.endpoint("/analyze"))
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    status_and_json(req.send().await.unwrap()).await
}

#[tokio::test]
async fn statistics_match_independently_computed_figures() {
    // numpy.percentile([1, 2, 3, 4], 95) == 3.85; numpy.percentile([15, 20, 35, 40, 50], 40) == 29.
    assert!((type7(&[4.0, 1.0, 3.0, 2.0], 0.95) - 3.85).abs() < 1e-12);
    assert!((type7(&[15.0, 20.0, 35.0, 40.0, 50.0], 0.40) - 29.0).abs() < 1e-12);

    let c = TestCollector::start(CollectorConfig::default()).await;
    let now = now_unix();
    let data = dataset(now);
    c.ingest_ok(&Value::Array(data.iter().map(envelope).collect()))
        .await;

    // The seed's curl shape, with the JSON content type it sets.
    let seed = r#"{
    "last_n": 500,
    "focus": "performance"
  }"#;
    let (status, insight) = analyze_raw(&c, Some("application/json"), seed).await;
    assert_eq!(status, 200, "{insight}");
    let stats = &insight["stats"];

    assert_eq!(insight["records_analyzed"], data.len());
    assert_eq!(stats["records"], data.len());
    assert_eq!(stats["from_ts"], data.iter().map(|r| r.ts).min().unwrap());
    assert_eq!(stats["to_ts"], data.iter().map(|r| r.ts).max().unwrap());
    assert_eq!(
        counts(&stats["by_kind"]),
        tally(data.iter().map(|r| r.kind))
    );
    assert_eq!(
        counts(&stats["by_level"]),
        tally(data.iter().map(|r| r.level))
    );
    assert_eq!(
        counts(&stats["by_agent_path"]),
        tally(data.iter().map(|r| r.path.unwrap_or("(none)")))
    );
    let is_error = |r: &&Rec| ERROR_LEVELS.contains(&r.level);
    let errors = data.iter().filter(is_error).count();
    assert_eq!(stats["errors"], errors);
    approx(
        &stats["error_rate"],
        errors as f64 / data.len() as f64,
        "error_rate",
    );
    assert_eq!(
        counts(&stats["error_kinds"]),
        tally(data.iter().filter(is_error).map(|r| r.kind))
    );

    // Per agent: records, errors, error rate, distinct ORCHs.
    let agents = stats["agents"].as_array().unwrap();
    let paths: BTreeSet<&str> = data.iter().map(|r| r.path.unwrap_or("(none)")).collect();
    let listed: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, paths.iter().copied().collect::<Vec<_>>());
    for agent in agents {
        let path = agent["agent_path"].as_str().unwrap();
        let mine: Vec<&Rec> = data
            .iter()
            .filter(|r| r.path.unwrap_or("(none)") == path)
            .collect();
        let errs = mine.iter().filter(|r| is_error(r)).count();
        assert_eq!(agent["records"], mine.len(), "{path}");
        assert_eq!(agent["errors"], errs, "{path}");
        approx(
            &agent["error_rate"],
            errs as f64 / mine.len() as f64,
            &format!("{path} error_rate"),
        );
        let orchs: BTreeSet<&str> = mine.iter().map(|r| r.orch).collect();
        assert_eq!(agent["orchs"], orchs.len(), "{path} orchs");
    }

    // Heartbeats: a and b fresh, c stale (an hour > 15 min), d never sent one.
    let orchs = &stats["orchs"];
    assert_eq!(orchs["distinct"], 4, "{orchs}");
    assert_eq!(orchs["with_heartbeat"], 3, "{orchs}");
    assert_eq!(orchs["never_heartbeat"], 1, "{orchs}");
    assert_eq!(orchs["fresh"], 2, "{orchs}");
    assert_eq!(orchs["stale_after_secs"], 900);
    let stale = orchs["stale"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{orchs}");
    assert_eq!(
        stale[0]["orch_hash"],
        orch_hash(&c, "orch-c").await.as_str()
    );
    assert_eq!(stale[0]["last_heartbeat_ts"], now - STALE_HEARTBEAT_AGE);
    assert!(stale[0]["age_secs"].as_i64().unwrap() >= STALE_HEARTBEAT_AGE);

    // response_time, overall and per agent.
    let fields = stats["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "only response_time is numeric: {fields:?}");
    let rt = &fields[0];
    assert_eq!(rt["field"], "response_time");
    let all: Vec<f64> = data.iter().filter_map(|r| r.response_time).collect();
    check_summary(&rt["overall"], &all, "overall response_time");
    let per_agent = rt["per_agent"].as_array().unwrap();
    let per_agent_paths: Vec<&str> = per_agent
        .iter()
        .map(|a| a["agent_path"].as_str().unwrap())
        .collect();
    assert_eq!(per_agent_paths, ["coder", "planner", "reviewer"]);
    for (path, values) in [
        ("coder", &CODER[..]),
        ("planner", &PLANNER[..]),
        ("reviewer", &REVIEWER[..]),
    ] {
        let summary = &per_agent.iter().find(|a| a["agent_path"] == path).unwrap()["summary"];
        check_summary(summary, values, path);
    }

    // The slow agent, and only it, stands out on response_time.
    let outliers = stats["outliers"].as_array().unwrap();
    let slow: Vec<&Value> = outliers
        .iter()
        .filter(|o| o["field"] == "response_time")
        .collect();
    assert_eq!(slow.len(), 1, "{outliers:?}");
    assert_eq!(slow[0]["agent_path"], "coder");
    assert_eq!(slow[0]["direction"], "higher");
    assert_eq!(slow[0]["samples"], CODER.len());
    approx(&slow[0]["agent_mean"], mean(&CODER), "coder mean");
    let rest: Vec<f64> = PLANNER.iter().chain(&REVIEWER).copied().collect();
    approx(
        &slow[0]["fleet_mean"],
        mean(&rest),
        "rest of the fleet mean",
    );
    // The reviewer's 2 errors in 9 records are well above the others' 1 in 18.
    assert!(
        outliers
            .iter()
            .any(|o| o["field"] == "error_rate" && o["agent_path"] == "reviewer"),
        "{outliers:?}"
    );
    // And the summary a person reads names the slow agent.
    let bullets = insight["bullets"].as_array().unwrap();
    assert!(
        bullets
            .iter()
            .any(|b| b.as_str().unwrap().contains("coder")),
        "{bullets:?}"
    );
    assert_eq!(insight["focus"], "performance");

    // curl -d without -H sends form encoding: same body, same figures.
    let (status, again) = analyze_raw(&c, Some("application/x-www-form-urlencoded"), seed).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["stats"]["by_kind"], stats["by_kind"]);
    assert_eq!(again["stats"]["fields"], stats["fields"]);
    let (status, again) = analyze_raw(&c, None, seed).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["records_analyzed"], data.len());
    // An empty body means every default.
    let (status, defaults) = analyze_raw(&c, None, "").await;
    assert_eq!(status, 200, "{defaults}");
    assert_eq!(defaults["focus"], "general");
    assert_eq!(defaults["last_n"], 200);
    c.stop().await;
}

#[tokio::test]
async fn filters_narrow_the_window() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let now = now_unix();
    let data = dataset(now);
    c.ingest_ok(&Value::Array(data.iter().map(envelope).collect()))
        .await;
    let (status, insight) = c
        .analyze(&json!({"agent_prefix": "coder", "level": "info"}), None)
        .await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["records_analyzed"], CODER.len());
    assert_eq!(insight["filters"]["agent_prefix"], "coder");
    let (status, insight) = c
        .analyze(&json!({"kind": "orch_heartbeat", "since": now - 100}), None)
        .await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(
        insight["records_analyzed"], 2,
        "heartbeats of the last 100 s"
    );
    // last_n takes the newest: the four heartbeats were sent last.
    let (status, insight) = c.analyze(&json!({"last_n": 4}), None).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(
        counts(&insight["stats"]["by_kind"]),
        BTreeMap::from([("orch_heartbeat".to_owned(), 4)])
    );
    c.stop().await;
}

#[tokio::test]
async fn staleness_threshold_comes_from_the_configuration() {
    let c = TestCollector::start(CollectorConfig {
        stale_after: Duration::from_secs(59),
        ..CollectorConfig::default()
    })
    .await;
    let now = now_unix();
    c.ingest_ok(&Value::Array(dataset(now).iter().map(envelope).collect()))
        .await;
    let (status, insight) = c.analyze(&json!({}), None).await;
    assert_eq!(status, 200, "{insight}");
    let orchs = &insight["stats"]["orchs"];
    assert_eq!(orchs["stale_after_secs"], 59);
    // orch-b's heartbeat is a minute old now: stale, listed after the older orch-c.
    let stale: Vec<&Value> = orchs["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["last_heartbeat_ts"])
        .collect();
    assert_eq!(stale, [&json!(now - STALE_HEARTBEAT_AGE), &json!(now - 60)]);
    assert_eq!(orchs["fresh"], 1, "{orchs}");
    c.stop().await;
}

#[tokio::test]
async fn bad_analyze_requests_are_400_naming_the_problem() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let cases: [(Value, &str); 9] = [
        (json!({"last_n": 0}), "last_n"),
        (json!({"last_n": -5}), "last_n"),
        (json!({"last_n": "500"}), "invalid type"),
        (json!({"lastn": 500}), "lastn"),
        (json!({"last_n": 10, "foucs": "performance"}), "foucs"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": 200, "until": 100}), "since"),
        (json!({"level": "loud"}), "level"),
        (json!({"focus": "x".repeat(201)}), "focus"),
    ];
    for (body, named) in cases {
        let got = c.analyze(&body, None).await;
        let detail = expect_error(&got, 400, "invalid_request");
        assert!(detail.contains(named), "{body}: {detail}");
    }
    let got = analyze_raw(&c, Some("application/json"), "{\"last_n\": ").await;
    expect_error(&got, 400, "invalid_request");
    let got = analyze_raw(&c, Some("application/json"), "[1, 2]").await;
    expect_error(&got, 400, "invalid_request");

    let insights = c.get_json("/insights").await;
    assert_eq!(insights["count"], 0, "a refused request stored an insight");
    for query in ["limit=0", "limit=abc", "limit=5000", "since=1"] {
        let resp = c
            .client()
            .get(c.endpoint(&format!("/insights?{query}")))
            .send()
            .await
            .unwrap();
        expect_error(&status_and_json(resp).await, 400, "invalid_request");
    }
    c.stop().await;
}

/// Errors are JSON whatever went wrong, including a body over the analyze size limit.
#[tokio::test]
async fn oversized_analyze_body_is_a_json_error() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let body = format!("{{\"focus\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let resp = c
        .client()
        .post(c.endpoint("/analyze"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!((400..500).contains(&status), "HTTP {status}");
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("HTTP {status} body is not JSON: {text:?}"));
    assert!(
        json["error"].is_string() && json["detail"].is_string(),
        "{json}"
    );
    c.stop().await;
}

/// `/analyze` reads bodies like the ingest endpoints: gzip is undone, other encodings are
/// refused, and a key given twice is an error rather than "last one wins".
#[tokio::test]
async fn analyze_honours_content_encoding_and_refuses_duplicate_keys() {
    use std::io::Write as _;
    let c = TestCollector::start(CollectorConfig::default()).await;
    c.ingest_ok(&json!({"kind": "skill_execution", "payload": {"response_time": 5}}))
        .await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"last_n": 7, "focus": "performance"}"#)
        .unwrap();
    let post = |encoding: &'static str, body: Vec<u8>| {
        let req = c
            .client()
            .post(c.endpoint("/analyze"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body);
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    let (status, insight) = post("gzip", gz.finish().unwrap()).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(
        (
            insight["requested_last_n"].as_u64(),
            insight["focus"].as_str()
        ),
        (Some(7), Some("performance"))
    );
    expect_error(
        &post("br", br#"{"last_n": 7}"#.to_vec()).await,
        415,
        "unsupported_encoding",
    );
    let detail = expect_error(
        &analyze_raw(
            &c,
            Some("application/json"),
            r#"{"last_n": 5, "last_n": 5000}"#,
        )
        .await,
        400,
        "invalid_request",
    );
    assert!(detail.contains("duplicate key `last_n`"), "{detail}");
    c.stop().await;
}

fn config_with_llm(fake: &FakeLlm) -> CollectorConfig {
    let mut settings = fake.settings();
    settings.timeout = Duration::from_millis(300);
    settings.max_retries = 1;
    CollectorConfig {
        llm: Ok(settings),
        ..CollectorConfig::default()
    }
}

#[tokio::test]
async fn llm_summary_is_used_and_sees_the_statistics() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(
        "Here is what to do:\n\n1. Coder is slow: publish a model_tweak for `coder`\n2. Reviewer fails tasks: add retries\n",
    ));
    let c = TestCollector::start(config_with_llm(&fake)).await;
    let data = dataset(now_unix());
    c.ingest_ok(&Value::Array(data.iter().map(envelope).collect()))
        .await;

    let (status, insight) = c
        .analyze(&json!({"last_n": 500, "focus": "performance"}), None)
        .await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["source"], "llm", "{insight}");
    assert_eq!(insight["model"], "fake/model");
    assert!(insight.get("fallback_reason").is_none(), "{insight}");
    assert_eq!(
        insight["bullets"],
        json!([
            "Coder is slow: publish a model_tweak for `coder`",
            "Reviewer fails tasks: add retries"
        ])
    );
    assert_eq!(
        insight["summary"],
        "- Coder is slow: publish a model_tweak for `coder`\n- Reviewer fails tasks: add retries"
    );
    assert!(insight["llm_ms"].is_number());

    // The LLM was given the statistics, not just asked for an opinion.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let prompt: String = requests[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "performance".to_owned(),
        "\"agent_path\":\"coder\"".to_owned(),
        "response_time".to_owned(),
        format!("\"records\":{}", data.len()),
        format!("\"max\":{}", 1200),
        "\"errors\":3".to_owned(),
    ] {
        assert!(
            prompt.contains(&needle),
            "{needle} not in prompt:\n{prompt}"
        );
    }

    let stored = c.get_json("/insights?limit=1").await;
    assert_eq!(stored["insights"][0], insight);
    c.stop().await;
}

#[tokio::test]
async fn every_llm_failure_falls_back_to_the_heuristic_and_says_why() {
    let fake = FakeLlm::start().await;
    let c = TestCollector::start(config_with_llm(&fake)).await;
    c.ingest_ok(&Value::Array(
        dataset(now_unix()).iter().map(envelope).collect(),
    ))
    .await;

    let cases: Vec<(&str, Reply, &[&str])> = vec![
        (
            "500 forever",
            Reply::error(500, "internal meltdown"),
            &["server", "500", "internal meltdown"],
        ),
        (
            "401",
            Reply::error(401, "bad key"),
            &["unauthorized", "401", "bad key"],
        ),
        ("hang", Reply::Hang, &["timeout", "did not answer"]),
        (
            "garbage",
            Reply::Garbage("<html>gateway page</html>".into()),
            &["malformed"],
        ),
        (
            "error in a 200 body",
            Reply::ErrorInBody {
                code: json!("invalid_prompt"),
                message: "prompt rejected".into(),
            },
            &["api", "prompt rejected"],
        ),
        ("empty content", Reply::Empty, &["empty"]),
    ];
    let mut created = Vec::new();
    for (what, reply, reasons) in cases {
        fake.set_default(reply);
        let (status, insight) = c
            .analyze(&json!({"last_n": 100, "focus": "performance"}), None)
            .await;
        assert_eq!(status, 200, "{what}: {insight}");
        assert_eq!(insight["source"], "heuristic", "{what}: {insight}");
        assert!(insight.get("model").is_none(), "{what}: {insight}");
        let reason = insight["fallback_reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no fallback_reason in {insight}"));
        for needle in reasons {
            assert!(
                reason.contains(needle),
                "{what}: {needle:?} not in {reason:?}"
            );
        }
        let bullets = insight["bullets"].as_array().unwrap();
        assert!(!bullets.is_empty(), "{what}: no bullets");
        assert!(
            bullets
                .iter()
                .any(|b| b.as_str().unwrap().contains("coder")),
            "{what}: the heuristic missed the slow agent: {bullets:?}"
        );
        created.push(insight["id"].as_str().unwrap().to_owned());
    }

    // GET /insights: every one of them, newest first.
    let listed = c.get_json("/insights?limit=100").await;
    assert_eq!(listed["count"], created.len());
    let ids: Vec<&str> = listed["insights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = created.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    assert!(
        listed["insights"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["source"] == "heuristic" && i["fallback_reason"].is_string())
    );
    let two = c.get_json("/insights?limit=2").await;
    assert_eq!(two["count"], 2);
    assert_eq!(two["insights"][0]["id"], newest_first[0]);
    assert_eq!(two["insights"][1]["id"], newest_first[1]);
    c.stop().await;
}

#[tokio::test]
async fn without_an_llm_the_heuristic_says_so() {
    let c = TestCollector::start(CollectorConfig::default()).await;
    let (status, empty) = c.analyze(&json!({}), None).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["source"], "heuristic");
    assert_eq!(empty["fallback_reason"], "no LLM configured");
    assert_eq!(empty["records_analyzed"], 0);
    assert!(
        !empty["bullets"].as_array().unwrap().is_empty(),
        "an empty window still gets advice"
    );

    c.ingest_ok(&Value::Array(
        dataset(now_unix()).iter().map(envelope).collect(),
    ))
    .await;
    let (status, insight) = c.analyze(&json!({"focus": "errors"}), None).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["source"], "heuristic");
    assert_eq!(insight["fallback_reason"], "no LLM configured");
    assert!(insight.get("llm_ms").is_none(), "{insight}");

    let listed = c.get_json("/insights").await;
    assert_eq!(listed["insights"][0]["id"], insight["id"]);
    assert_eq!(listed["insights"][1]["id"], empty["id"]);
    c.stop().await;
}
