//! `phoenix bench fanout` and `phoenix bench abuse` run for real at a small scale: the binary
//! starts its own servers as child processes and drives them with real clients. No timing or
//! memory figure is asserted (machines are noisy); the report's shape and counts are.

use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

#[test]
fn fanout_benchmark_connects_everyone_and_times_every_ack() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .current_dir(home.path())
        .stdin(Stdio::null())
        .args([
            "bench",
            "fanout",
            "--subscribers",
            "20",
            "--publishes",
            "2",
            "--settle",
            "100ms",
            "--json",
        ])
        .output()
        .expect("phoenix runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");

    assert_eq!(report["connect"]["connected"], 20, "{report}");
    assert_eq!(report["connect"]["failed"], 0, "{report}");
    let latency = &report["latency"];
    assert_eq!(latency["acks"], 40, "{report}");
    assert_eq!(latency["expected"], 40, "{report}");
    let (p50, p99) = (
        latency["p50_ms"].as_f64().unwrap(),
        latency["p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{latency}");
    assert!(p99 <= latency["max_ms"].as_f64().unwrap(), "{latency}");
    let publishes = report["publishes"].as_array().unwrap();
    assert_eq!(publishes.len(), 2);
    for p in publishes {
        assert_eq!(p["acks"], 20, "{p}");
        assert!(
            p["recorded_ms"].is_number(),
            "the distributor recorded every ack: {p}"
        );
    }
    let memory = &report["memory"];
    assert!(memory["baseline_kib"].as_u64().unwrap() > 0, "{memory}");
    assert!(memory["per_subscriber_kib"].is_number(), "{memory}");
    let targets: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        ["all_connected", "ack_latency_p99", "memory_per_subscriber"]
    );
    assert_eq!(report["targets"][0]["pass"], true);
    assert_eq!(report["failures"], serde_json::json!([]));
    // The scratch directory (update log, hash key) is removed on the way out.
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("phoenix-bench-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn abuse_benchmark_runs_every_scenario_and_reports_what_the_servers_did() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .current_dir(home.path())
        .stdin(Stdio::null())
        .args([
            "bench",
            "abuse",
            "--slow-clients",
            "6",
            "--shutdown-timeout",
            "2s",
            "--slowloris",
            "20",
            "--slowloris-duration",
            "500ms",
            "--pings",
            "5000",
            "--bombs",
            "3",
            "--bomb-decoded-mib",
            "80",
            "--json",
        ])
        .output()
        .expect("phoenix runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");

    let shutdown = &report["shutdown"];
    assert_eq!(shutdown["slow_clients"], 6, "{shutdown}");
    assert_eq!(shutdown["exit_code"], 0, "{shutdown}");
    let slowloris = &report["slowloris"];
    assert_eq!(slowloris["connected"], 20, "{slowloris}");
    assert_eq!(slowloris["health_failures"], 0, "{slowloris}");
    assert!(slowloris["health_p99_ms"].is_number(), "{slowloris}");
    let flood = &report["ping_flood"];
    assert_eq!(flood["peer_closed"], true, "{flood}");
    assert_eq!(flood["floods_counted"], 1.0, "{flood}");
    let bombs = &report["gzip_bombs"];
    let answered: u64 = ["too_large", "busy", "no_answer"]
        .iter()
        .map(|k| bombs[k].as_u64().unwrap())
        .sum();
    assert_eq!(answered, 3, "every bomb is refused: {bombs}");
    assert!(bombs["peak_rss_mb"].as_f64().unwrap() > 0.0, "{bombs}");
    let targets: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "shutdown_exit_code",
            "shutdown_seconds",
            "slowloris_health_p99",
            "ping_flood_rss_growth",
            "ping_flood_peer_closed",
            "gzip_bombs_peak_rss"
        ]
    );
    assert_eq!(report["failures"], serde_json::json!([]));
}

#[test]
fn impossible_benchmark_options_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["bench", "fanout", "--subscribers", "0"][..],
        &["bench", "ingest", "--rounds", "0"][..],
        &["bench", "abuse", "--bombs", "0"][..],
    ] {
        let out = Command::new(BIN)
            .env("PHOENIX_HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .current_dir(home.path())
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("must be at least 1"), "{args:?}: {stderr}");
    }
}
