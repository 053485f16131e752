use super::heuristic::*;
use super::parse::*;
use super::prompt::*;
use super::*;
use crate::core::collector::analysis::{AnalysisOptions, analyze};
use crate::core::telemetry::StoredTelemetry;
use serde_json::json;
use std::collections::HashMap;

fn rec(
    level: &str,
    orch: &str,
    agent: &str,
    i: i64,
    payload: serde_json::Value,
) -> StoredTelemetry {
    StoredTelemetry {
        id: format!("id-{i}"),
        ts_unix: 1_000 + i,
        received_unix: 1_000 + i,
        kind: if level == "error" {
            "tool_call".into()
        } else {
            "skill_execution".into()
        },
        level: Some(level.to_owned()),
        orch_hash: Some(orch.to_owned()),
        agent_path: Some(agent.to_owned()),
        tags: Vec::new(),
        payload,
    }
}

/// A calm fleet plus `code-gen/rust`, three times slower, and `writer`, erroring a lot.
fn troubled_stats() -> Stats {
    let mut records = Vec::new();
    for (a, agent) in ["root", "search", "critic", "planner"].iter().enumerate() {
        for i in 0..40 {
            let jitter = ((i * 7 + a as i64 * 3) % 11) as f64 - 5.0;
            records.push(rec(
                "info",
                "orch_a",
                agent,
                i,
                json!({"response_time": 800.0 + jitter * 10.0, "love_score": 0.9}),
            ));
        }
    }
    for i in 0..40 {
        records.push(rec(
            "info",
            "orch_b",
            "code-gen/rust",
            i,
            json!({"response_time": 2400.0 + (i % 5) as f64, "love_score": 0.9}),
        ));
    }
    for i in 0..20 {
        let level = if i % 2 == 0 { "error" } else { "info" };
        records.push(rec(level, "orch_c", "writer", i, json!({})));
    }
    let heartbeats = HashMap::from([("orch_a".to_owned(), 9_990), ("orch_b".to_owned(), 1_000)]);
    analyze(
        &records,
        &heartbeats,
        &AnalysisOptions {
            now_unix: 10_000,
            ..AnalysisOptions::default()
        },
    )
}

#[test]
fn bullets_name_the_outlier_agent_and_the_update_type() {
    let stats = troubled_stats();
    let bullets = heuristic_bullets(&stats, "");
    let slow = bullets
        .iter()
        .find(|b| b.contains("`code-gen/rust`"))
        .expect("slow agent bullet");
    assert!(slow.contains("model_tweak"), "{slow}");
    assert!(
        slow.contains("response_time mean 2402 is 3.0x the rest of the fleet's 800"),
        "{slow}"
    );
    let errors = bullets
        .iter()
        .find(|b| b.contains("`writer`"))
        .expect("error agent bullet");
    assert!(
        errors.contains("json_patch") && errors.contains("tool_call"),
        "{errors}"
    );
    assert!(
        bullets
            .iter()
            .any(|b| b.contains("orch_b") && b.contains("2h 30m")),
        "{bullets:#?}"
    );
    assert!(
        bullets
            .iter()
            .any(|b| b.contains("1 of 3 ORCHs in the window never sent")),
        "{bullets:#?}"
    );
    assert_eq!(bullets, heuristic_bullets(&stats, ""), "deterministic");
}

#[test]
fn focus_changes_the_order() {
    let stats = troubled_stats();
    let perf = heuristic_bullets(&stats, "performance");
    let errors = heuristic_bullets(&stats, "errors");
    assert!(perf[0].contains("response_time"), "{perf:#?}");
    assert!(errors[0].contains("error"), "{errors:#?}");
    assert_ne!(perf, errors);
    let fleet = heuristic_bullets(&stats, "fleet health");
    assert!(fleet[0].contains("orch_heartbeat"), "{fleet:#?}");
}

#[test]
fn low_scores_ask_for_a_prompt_tweak_and_quality_focus_puts_them_first() {
    let mut records = Vec::new();
    for (agent, score) in [("a", 0.7), ("b", 0.75), ("c", 0.72)] {
        for i in 0..10 {
            let latency = if i == 9 { 9_000.0 } else { 1_000.0 };
            records.push(rec(
                "info",
                "orch_a",
                agent,
                i,
                json!({"love_score": score, "latency_ms": latency}),
            ));
        }
    }
    let heartbeats = HashMap::from([("orch_a".to_owned(), 1_000)]);
    let stats = analyze(
        &records,
        &heartbeats,
        &AnalysisOptions {
            now_unix: 1_000,
            ..AnalysisOptions::default()
        },
    );
    let bullets = heuristic_bullets(&stats, "emotional_resonance");
    assert!(
        bullets[0].starts_with("love_score averages 0.723"),
        "{bullets:#?}"
    );
    assert!(
        bullets[0].contains("prompt_tweak targeted at agent prefix `a`"),
        "{bullets:#?}"
    );
    let tail = bullets
        .iter()
        .find(|b| b.contains("long tail"))
        .expect("tail bullet");
    assert!(
        tail.starts_with("latency_ms") && tail.contains("timeout"),
        "{tail}"
    );
}

#[test]
fn bullets_are_capped_and_never_empty() {
    assert_eq!(
        heuristic_bullets(
            &analyze(&[], &HashMap::new(), &AnalysisOptions::default()),
            "x"
        )
        .len(),
        1
    );
    assert!(
        heuristic_bullets(
            &analyze(&[], &HashMap::new(), &AnalysisOptions::default()),
            ""
        )[0]
        .starts_with("No telemetry in the selected window: ")
    );

    // Twenty outliers and a noisy fleet give far more than twelve findings.
    let mut stats = troubled_stats();
    let template = stats
        .outliers
        .iter()
        .find(|o| o.field == "response_time")
        .unwrap()
        .clone();
    for i in 0..20 {
        stats.outliers.push(Outlier {
            agent_path: format!("agent-{i:02}"),
            ..template.clone()
        });
    }
    let bullets = heuristic_bullets(&stats, "errors");
    assert_eq!(bullets.len(), MAX_BULLETS);
    assert!(bullets[0].contains("`writer`"), "{bullets:#?}");

    let calm: Vec<_> = (0..10)
        .map(|i| rec("info", "orch_a", "root", i, json!({"latency_ms": 100})))
        .collect();
    let heartbeats = HashMap::from([("orch_a".to_owned(), 1_000)]);
    let stats = analyze(
        &calm,
        &heartbeats,
        &AnalysisOptions {
            now_unix: 1_000,
            ..AnalysisOptions::default()
        },
    );
    let bullets = heuristic_bullets(&stats, "");
    assert_eq!(bullets.len(), 1);
    assert!(
        bullets[0].starts_with("No actionable anomaly in 10 records"),
        "{bullets:?}"
    );
}

#[test]
fn figures_are_readable() {
    assert_eq!(num(2400.4), "2400");
    assert_eq!(num(12.34), "12.3");
    assert_eq!(num(3.0), "3");
    assert_eq!(num(0.61234), "0.612");
    assert_eq!(num(-0.0001), "0");
    assert_eq!(pct(0.125), "12.5%");
    assert_eq!(pct(0.05), "5%");
    assert_eq!(duration(9_000), "2h 30m");
    assert_eq!(duration(900), "15m");
    assert_eq!(duration(90_061), "1d 1h");
}

#[test]
fn prompt_json_keeps_four_significant_digits() {
    let mut value =
        json!({"a": 0.010000000000000007, "b": [123456.7, 2.0, 7], "c": {"d": -0.000123456}});
    round_floats(&mut value);
    assert_eq!(
        value.to_string(),
        r#"{"a":0.01,"b":[123500.0,2.0,7],"c":{"d":-0.0001235}}"#
    );
}

#[test]
fn metrics_are_classified_by_name() {
    assert_eq!(Metric::of("response_time"), Metric::Latency);
    assert_eq!(Metric::of("llm.latency_ms"), Metric::Latency);
    assert_eq!(Metric::of("tokens.prompt"), Metric::Tokens);
    assert_eq!(Metric::of("tokens_per_sec"), Metric::Throughput);
    assert_eq!(Metric::of("love_score"), Metric::Score);
    assert_eq!(Metric::of("timeout_count"), Metric::Failure);
    assert_eq!(Metric::of("started_ts"), Metric::Neutral);
    assert_eq!(Metric::of("interval_seconds"), Metric::Latency);
}

#[test]
fn prompt_holds_the_rules_focus_tier_and_statistics() {
    let stats = troubled_stats();
    let (system, user) = llm_prompt(&stats, "performance", "premium");
    assert!(system.contains("telemetry analyst") && system.contains("at most 12 bullet points"));
    for update in ["prompt_tweak", "model_tweak", "json_patch", "yaml_graft"] {
        assert!(system.contains(update), "{update}");
    }
    assert!(user.contains("Focus: performance") && user.contains("Tier: premium"));
    assert!(user.contains(r#""agent_path":"code-gen/rust""#));
    assert!(!user.contains("Note:"));
}

#[test]
fn oversized_statistics_keep_the_largest_agents_and_say_so() {
    let mut records = Vec::new();
    for a in 0..60 {
        for i in 0..=a % 7 {
            records.push(rec(
                "info",
                "orch_a",
                &format!("agent-{a:02}"),
                i,
                json!({"x": i, "y": a, "z": {"w": 1}}),
            ));
        }
    }
    let stats = analyze(&records, &HashMap::new(), &AnalysisOptions::default());
    assert!(serde_json::to_string(&stats).unwrap().len() > PROMPT_STATS_BUDGET);
    let (_, user) = llm_prompt(&stats, "", "free");
    assert!(
        user.contains("Note: per-agent field summaries are kept only for the 20 agents"),
        "{}",
        &user[..400]
    );
    let json_line = user.lines().find(|l| l.starts_with('{')).unwrap();
    assert!(json_line.len() <= PROMPT_STATS_BUDGET);
    let trimmed: Stats = serde_json::from_str(json_line).unwrap();
    assert!(
        trimmed
            .fields
            .iter()
            .all(|f| f.per_agent.len() <= PROMPT_TOP_AGENTS)
    );
    // agent-06 has 7 records, among the largest; agent-00 has one, among the smallest.
    assert!(
        trimmed.fields[0]
            .per_agent
            .iter()
            .any(|a| a.agent_path == "agent-06")
    );
    assert!(
        trimmed.fields[0]
            .per_agent
            .iter()
            .all(|a| a.agent_path != "agent-00")
    );
}

#[test]
fn parses_dashes_with_preamble_and_epilogue() {
    let text = "Here are the optimizations:\n\n- Publish a prompt_tweak for `a`\n- Publish a model_tweak for `b`\n\nLet me know if you need more.";
    assert_eq!(
        parse_bullets(text),
        [
            "Publish a prompt_tweak for `a`",
            "Publish a model_tweak for `b`"
        ]
    );
}

#[test]
fn parses_numbered_bold_and_continuations() {
    let text = "## Recommendations\n1. **Switch `code-gen` to a faster model**\n   because p95 is 3s.\n2) **Trim the prompt**: tokens are 2x.\n\u{2022} bullet dot\n10. tenth";
    assert_eq!(
        parse_bullets(text),
        [
            "Switch `code-gen` to a faster model because p95 is 3s.",
            "**Trim the prompt**: tokens are 2x.",
            "bullet dot",
            "tenth",
        ]
    );
}

#[test]
fn nested_bullets_join_their_parent_and_bold_is_not_a_marker() {
    let text = "- **Latency:**\n  - use a faster model\n**Not a bullet**\n- 1.5x faster is fine";
    assert_eq!(
        parse_bullets(text),
        ["Latency: use a faster model", "1.5x faster is fine"]
    );
}

#[test]
fn caps_at_twelve_and_falls_back_to_lines() {
    let many: String = (1..=20).map(|i| format!("- item {i}\n")).collect();
    let parsed = parse_bullets(&many);
    assert_eq!(parsed.len(), MAX_BULLETS);
    assert_eq!(parsed[11], "item 12");

    let plain = "Summary:\n\nRaise max_tokens for writer\n  **Use a cheaper model**  \n# heading\n";
    assert_eq!(
        parse_bullets(plain),
        ["Raise max_tokens for writer", "Use a cheaper model"]
    );
    assert!(parse_bullets("\n\n- \n").is_empty());
}

#[test]
fn renders_a_markdown_list() {
    assert_eq!(render_summary(&["a".into(), "b".into()]), "- a\n- b");
    assert_eq!(render_summary(&[]), "");
    let bullets = heuristic_bullets(&troubled_stats(), "");
    assert_eq!(parse_bullets(&render_summary(&bullets)), bullets);
}
