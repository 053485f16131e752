use super::*;
use serde_json::json;

fn rec(
    kind: &str,
    level: Option<&str>,
    orch: Option<&str>,
    agent: Option<&str>,
    ts: i64,
    payload: serde_json::Value,
) -> StoredTelemetry {
    StoredTelemetry {
        id: format!("id-{ts}"),
        ts_unix: ts,
        received_unix: ts,
        kind: kind.to_owned(),
        level: level.map(str::to_owned),
        orch_hash: orch.map(str::to_owned),
        agent_path: agent.map(str::to_owned),
        tags: Vec::new(),
        payload,
    }
}

fn opts() -> AnalysisOptions {
    AnalysisOptions {
        now_unix: 10_000,
        ..AnalysisOptions::default()
    }
}

fn field<'a>(stats: &'a Stats, name: &str) -> &'a FieldStats {
    stats
        .fields
        .iter()
        .find(|f| f.field == name)
        .unwrap_or_else(|| panic!("no field {name}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn summary_of_a_small_field_matches_hand_computation() {
    let values = [10.0, 20.0, 30.0, 40.0, 100.0];
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            rec(
                "skill_execution",
                Some("info"),
                None,
                Some("a"),
                i as i64,
                json!({"latency_ms": v}),
            )
        })
        .collect();
    let stats = analyze(&records, &HashMap::new(), &opts());
    let s = &field(&stats, "latency_ms").overall;
    assert_eq!(s.count, 5);
    assert!(close(s.mean, 40.0));
    assert!(close(s.p50, 30.0));
    // rank 0.95·4 = 3.8 → 40 + 0.8·60 = 88; rank 0.99·4 = 3.96 → 40 + 0.96·60 = 97.6
    assert!(close(s.p95, 88.0));
    assert!(close(s.p99, 97.6));
    assert_eq!((s.min, s.max), (10.0, 100.0));
    assert_eq!(stats.from_ts, Some(0));
    assert_eq!(stats.to_ts, Some(4));
}

#[test]
fn nested_numbers_count_but_booleans_strings_and_deeper_levels_do_not() {
    let records = vec![
        rec(
            "k",
            None,
            None,
            Some("a"),
            1,
            json!({
                "tokens": {"prompt": 100, "completion": 50, "deep": {"x": 1}},
                "ok": true, "latency": "12", "list": [1, 2], "score": 0.5
            }),
        ),
        rec(
            "k",
            None,
            None,
            Some("b"),
            2,
            json!({"tokens": {"prompt": 300}, "score": null}),
        ),
        rec("k", None, None, Some("b"), 3, json!(42)),
    ];
    let stats = analyze(&records, &HashMap::new(), &opts());
    let names: Vec<&str> = stats.fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(names, ["score", "tokens.completion", "tokens.prompt"]);
    let prompt = field(&stats, "tokens.prompt");
    assert!(close(prompt.overall.mean, 200.0));
    let agents: Vec<&str> = prompt
        .per_agent
        .iter()
        .map(|a| a.agent_path.as_str())
        .collect();
    assert_eq!(agents, ["a", "b"]);
    assert!(close(prompt.per_agent[1].summary.mean, 300.0));
}

#[test]
fn counts_are_sorted_by_count_then_name_with_placeholders() {
    let records = vec![
        rec("b_kind", Some("info"), None, Some("x"), 1, json!({})),
        rec("a_kind", Some("error"), None, None, 2, json!({})),
        rec("a_kind", None, None, Some("x"), 3, json!({})),
        rec("c_kind", Some("fatal"), None, Some("y"), 4, json!({})),
    ];
    let stats = analyze(&records, &HashMap::new(), &opts());
    let pairs = |c: &[Count]| {
        c.iter()
            .map(|c| (c.name.clone(), c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pairs(&stats.by_kind),
        [
            ("a_kind".into(), 2),
            ("b_kind".into(), 1),
            ("c_kind".into(), 1)
        ]
    );
    assert_eq!(
        pairs(&stats.by_level),
        [
            ("error".into(), 1),
            ("fatal".into(), 1),
            ("info".into(), 1),
            ("none".into(), 1)
        ]
    );
    assert_eq!(
        pairs(&stats.by_agent_path),
        [("x".into(), 2), ("(none)".into(), 1), ("y".into(), 1)]
    );
    assert_eq!(stats.errors, 2);
    assert!(close(stats.error_rate, 0.5));
    assert_eq!(
        pairs(&stats.error_kinds),
        [("a_kind".into(), 1), ("c_kind".into(), 1)]
    );
    let y = stats.agents.iter().find(|a| a.agent_path == "y").unwrap();
    assert_eq!((y.records, y.errors), (1, 1));
    assert!(close(y.error_rate, 1.0));
}

#[test]
fn empty_window_is_all_zero() {
    let stats = analyze(&[], &HashMap::new(), &opts());
    assert_eq!(stats.records, 0);
    assert_eq!(stats.error_rate, 0.0);
    assert_eq!(stats.from_ts, None);
    assert!(stats.fields.is_empty() && stats.outliers.is_empty() && stats.agents.is_empty());
}

#[test]
fn heartbeats_split_fresh_stale_and_never() {
    let records = vec![
        rec("k", None, Some("orch_fresh"), Some("a"), 1, json!({})),
        rec("k", None, Some("orch_old"), Some("a"), 2, json!({})),
        rec("k", None, Some("orch_older"), Some("b"), 3, json!({})),
        rec("k", None, Some("orch_silent"), Some("b"), 4, json!({})),
        rec("k", None, Some("orch_silent"), Some("b"), 5, json!({})),
        rec("k", None, None, Some("b"), 6, json!({})),
    ];
    let heartbeats: HashMap<String, i64> = [
        ("orch_fresh".to_owned(), 9_500),
        ("orch_old".to_owned(), 8_000),
        ("orch_older".to_owned(), 1_000),
        ("orch_elsewhere".to_owned(), 1),
    ]
    .into();
    let stats = analyze(&records, &heartbeats, &opts());
    let o = &stats.orchs;
    assert_eq!(
        (o.distinct, o.with_heartbeat, o.never_heartbeat, o.fresh),
        (4, 3, 1, 1)
    );
    let stale: Vec<(&str, i64)> = o
        .stale
        .iter()
        .map(|s| (s.orch_hash.as_str(), s.age_secs))
        .collect();
    assert_eq!(stale, [("orch_older", 9_000), ("orch_old", 2_000)]);
    let b = stats.agents.iter().find(|a| a.agent_path == "b").unwrap();
    assert_eq!(b.orchs, 2);
}

/// Five agents of `n` samples each around 100, with small deterministic jitter.
fn fleet(n: usize) -> Vec<StoredTelemetry> {
    let mut out = Vec::new();
    for (a, agent) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for i in 0..n {
            let jitter = ((i * 7 + a * 3) % 11) as f64 - 5.0;
            out.push(rec(
                "skill_execution",
                Some("info"),
                Some("orch_1"),
                Some(agent),
                i as i64,
                json!({"response_time": 100.0 + jitter, "love_score": 0.9 + jitter / 100.0}),
            ));
        }
    }
    out
}

#[test]
fn a_normal_fleet_has_no_outliers() {
    let stats = analyze(&fleet(40), &HashMap::new(), &opts());
    assert!(stats.outliers.is_empty(), "{:?}", stats.outliers);
}

#[test]
fn an_injected_slow_and_unloved_agent_is_flagged_with_its_direction() {
    let mut records = fleet(40);
    for i in 0..40 {
        let jitter = (i % 5) as f64;
        records.push(rec(
            "skill_execution",
            Some("info"),
            Some("orch_2"),
            Some("code-gen/rust"),
            i,
            json!({"response_time": 300.0 + jitter, "love_score": 0.4}),
        ));
    }
    let stats = analyze(&records, &HashMap::new(), &opts());
    assert_eq!(stats.outliers.len(), 2, "{:?}", stats.outliers);
    let slow = stats
        .outliers
        .iter()
        .find(|o| o.field == "response_time")
        .unwrap();
    assert_eq!(slow.agent_path, "code-gen/rust");
    assert_eq!(slow.direction, Direction::Higher);
    assert_eq!(slow.samples, 40);
    assert!(close(
        slow.fleet_mean,
        rest_mean_of(&records, "code-gen/rust")
    ));
    assert!(slow.ratio.unwrap() > 2.9 && slow.z.unwrap() > 2.0);
    let unloved = stats
        .outliers
        .iter()
        .find(|o| o.field == "love_score")
        .unwrap();
    assert_eq!(unloved.direction, Direction::Lower);
    assert!(unloved.z.unwrap() < -2.0);
    // Outliers come largest |z| first.
    let zs: Vec<f64> = stats.outliers.iter().map(|o| o.z.unwrap().abs()).collect();
    assert!(zs.windows(2).all(|w| w[0] >= w[1]));
    let json = serde_json::to_string(&stats).unwrap();
    assert!(json.contains(r#""direction":"higher""#));
    let back: Stats = serde_json::from_str(&json).unwrap();
    assert_eq!(back.outliers.len(), 2);
}

fn rest_mean_of(records: &[StoredTelemetry], agent: &str) -> f64 {
    let rest: Vec<f64> = records
        .iter()
        .filter(|r| r.agent_path.as_deref() != Some(agent))
        .map(|r| r.payload["response_time"].as_f64().unwrap())
        .collect();
    rest.iter().sum::<f64>() / rest.len() as f64
}

#[test]
fn z_uses_the_sample_deviation_of_the_other_agents() {
    // Rest: 1..=6 (mean 3.5, sample std √3.5); agent: six tens.
    let mut records = Vec::new();
    for v in 1..=6 {
        records.push(rec("k", None, None, Some("rest"), v, json!({"x": v})));
    }
    for i in 0..6 {
        records.push(rec("k", None, None, Some("odd"), i, json!({"x": 10})));
    }
    let stats = analyze(&records, &HashMap::new(), &opts());
    let o = stats
        .outliers
        .iter()
        .find(|o| o.agent_path == "odd")
        .unwrap();
    assert!(close(o.fleet_mean, 3.5));
    assert!(close(o.z.unwrap(), 6.5 / 3.5f64.sqrt()));
    assert!(close(o.ratio.unwrap(), 10.0 / 3.5));
}

#[test]
fn constant_rest_of_fleet_reports_no_z_but_still_flags() {
    let mut records = Vec::new();
    for i in 0..6 {
        records.push(rec(
            "k",
            None,
            None,
            Some("steady"),
            i,
            json!({"retries": 1}),
        ));
        records.push(rec(
            "k",
            None,
            None,
            Some("flaky"),
            i,
            json!({"retries": 3 + i % 2}),
        ));
    }
    let stats = analyze(&records, &HashMap::new(), &opts());
    let flaky = stats
        .outliers
        .iter()
        .find(|o| o.agent_path == "flaky")
        .unwrap();
    assert_eq!(flaky.z, None);
    assert!(close(flaky.fleet_mean, 1.0));
    assert!(!serde_json::to_string(flaky).unwrap().contains("\"z\""));
}

#[test]
fn too_few_samples_are_never_outliers() {
    let mut records = fleet(40);
    for i in 0..4 {
        records.push(rec(
            "k",
            None,
            None,
            Some("tiny"),
            i,
            json!({"response_time": 5000}),
        ));
    }
    let stats = analyze(&records, &HashMap::new(), &opts());
    assert!(stats.outliers.iter().all(|o| o.agent_path != "tiny"));
}

#[test]
fn error_prone_agent_gets_an_error_rate_outlier() {
    let mut records = fleet(20);
    for i in 0..10 {
        let level = if i < 4 { "error" } else { "info" };
        records.push(rec(
            "tool_call",
            Some(level),
            None,
            Some("flaky"),
            i,
            json!({}),
        ));
    }
    records[0].level = Some("critical".into());
    let stats = analyze(&records, &HashMap::new(), &opts());
    let o = stats
        .outliers
        .iter()
        .find(|o| o.field == ERROR_RATE_FIELD)
        .unwrap();
    assert_eq!(o.agent_path, "flaky");
    assert!(close(o.agent_mean, 0.4));
    assert!(close(o.fleet_mean, 0.01));
    assert_eq!(o.samples, 10);
    let flaky = stats
        .agents
        .iter()
        .find(|a| a.agent_path == "flaky")
        .unwrap();
    assert_eq!(
        flaky.error_kinds,
        [Count {
            name: "tool_call".into(),
            count: 4
        }]
    );
    assert!(
        stats
            .outliers
            .iter()
            .filter(|o| o.field == ERROR_RATE_FIELD)
            .count()
            == 1
    );
}

#[test]
fn non_finite_and_records_without_agent_are_handled() {
    let records = vec![
        rec("k", None, None, None, 1, json!({"x": 1e308})),
        rec("k", None, None, None, 2, json!({"x": 1e308})),
    ];
    let stats = analyze(&records, &HashMap::new(), &opts());
    let x = field(&stats, "x");
    assert!(x.overall.mean.is_finite());
    assert_eq!(x.per_agent[0].agent_path, NO_AGENT_PATH);
    assert!(serde_json::from_str::<Stats>(&serde_json::to_string(&stats).unwrap()).is_ok());
}

#[test]
fn five_thousand_records_analyse_quickly() {
    let agents = [
        "root",
        "code-gen",
        "code-gen/rust",
        "search",
        "writer",
        "critic",
    ];
    let records: Vec<_> = (0..5000)
            .map(|i| {
                let v = (i * 37 % 101) as f64;
                rec(
                    "skill_execution",
                    Some(if i % 23 == 0 { "error" } else { "info" }),
                    Some(["orch_a", "orch_b", "orch_c"][i % 3]),
                    Some(agents[i % agents.len()]),
                    i as i64,
                    json!({"response_time": 100.0 + v, "love_score": v / 101.0, "tokens": {"prompt": v * 10.0, "completion": v}, "cost": v / 1000.0}),
                )
            })
            .collect();
    let started = std::time::Instant::now();
    let stats = analyze(&records, &HashMap::new(), &opts());
    let elapsed = started.elapsed();
    assert_eq!(stats.fields.len(), 5);
    // Generous for debug builds; release runs in about a millisecond.
    assert!(
        elapsed < std::time::Duration::from_millis(500),
        "{elapsed:?}"
    );
}
