//! `phoenix bench fanout` and `phoenix bench abuse` run for real at a small scale: the binary
//! starts its own servers as child processes and drives them with real clients. No timing or
//! memory figure is asserted (machines are noisy); the report's shape and counts are.

use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

#[test]
fn fanout_benchmark_connects_everyone_and_times_every_ack() {
    let home = tempfile::tempdir().unwrap();
    let _turn = take_turn();
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
    let targets = target_names(&report);
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
fn fanout_benchmark_on_two_nodes_times_the_subscribers_of_the_other_node() {
    let (Some(db), Some(nats)) = (
        crate::support::services::database_url(),
        crate::support::services::nats_url(),
    ) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let report = bench_json(
        home.path(),
        &[
            "fanout",
            "--nodes",
            "2",
            "--database-url",
            &db,
            "--nats-url",
            &nats,
            "--subscribers",
            "21",
            "--publishes",
            "2",
            "--settle",
            "100ms",
        ],
    );
    assert_eq!(report["connect"]["connected"], 21, "{report}");
    assert_eq!(report["latency"]["acks"], 42, "{report}");
    let cluster = &report["cluster"];
    assert_eq!(cluster["subscribers_per_node"], serde_json::json!([11, 10]));
    assert_eq!(cluster["publish_node"], 0);
    assert_eq!(cluster["status_node"], 1);
    // Node 1's ten subscribers are the cross-node ones, on both publishes.
    let cross = &report["cross_node"];
    assert_eq!(cross["acks"], 20, "{report}");
    assert!(positive(&cross["p50_ms"]), "{cross}");
    assert!(
        cross["p50_ms"].as_f64() <= cross["p99_ms"].as_f64(),
        "{cross}"
    );
    for p in report["publishes"].as_array().unwrap() {
        assert_eq!(p["acks"], 21, "{p}");
        assert!(
            p["recorded_ms"].is_number(),
            "node 1 saw every ack recorded, wherever it arrived: {p}"
        );
    }
    assert_eq!(
        target_names(&report),
        [
            "all_connected",
            "cross_node_ack_latency_p99",
            "memory_per_subscriber"
        ]
    );
    assert_eq!(report["failures"], serde_json::json!([]));
    let scratch = cluster["scratch_database"].as_str().unwrap();
    assert!(
        !database_exists(&db, scratch),
        "the scratch database {scratch} is dropped"
    );
}

#[test]
fn a_fanout_cluster_without_a_database_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_remove("PHOENIX_DATABASE_URL")
        .env("PHOENIX_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .current_dir(home.path())
        .stdin(Stdio::null())
        .args(["bench", "fanout", "--nodes", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--database-url"), "{stderr}");
}

#[test]
fn abuse_benchmark_runs_every_scenario_and_reports_what_the_servers_did() {
    let home = tempfile::tempdir().unwrap();
    let _turn = take_turn();
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
    let targets = target_names(&report);
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
        &["bench", "otlp", "--connections", "0"][..],
        &["bench", "query", "--events", "0"][..],
        &["bench", "dashboard", "--streams", "0"][..],
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

#[test]
fn otlp_benchmark_stores_every_span_it_counts_next_to_the_batch_and_health_rates() {
    let home = tempfile::tempdir().unwrap();
    let report = bench_json(
        home.path(),
        &[
            "otlp",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--spans-per-request",
            "64",
            "--connections",
            "2",
            "--batch-size",
            "100",
            "--storage-rows",
            "2000",
        ],
    );
    let round = &report["rounds"][0];
    for scenario in ["health", "ingest_batch", "otlp", "otlp_content"] {
        assert!(positive(&round[scenario]["ok"]), "{scenario}: {round}");
        assert_eq!(round[scenario]["non_2xx"], 0, "{scenario}: {round}");
    }
    assert_eq!(round["otlp"]["events_per_request"], 64);
    let s = &report["summary"];
    for figure in [
        "health_per_sec",
        "ingest_batch_per_sec",
        "otlp_spans_per_sec",
        "otlp_content_spans_per_sec",
        "storage_rows_per_sec",
        "otlp_vs_batch",
    ] {
        assert!(positive(&s[figure]), "{figure}: {s}");
    }
    assert!(
        s["otlp_content_request_bytes"].as_u64() > s["otlp_request_bytes"].as_u64(),
        "{s}"
    );
    // Every acknowledged span and event is in the store (warm-up ones too).
    let acknowledged = ["otlp", "otlp_content", "ingest_batch"]
        .iter()
        .map(|k| {
            round[k]["ok"].as_u64().unwrap() * round[k]["events_per_request"].as_u64().unwrap()
        })
        .sum::<u64>();
    assert!(
        report["stored_records"].as_u64().unwrap() >= acknowledged,
        "{report}"
    );
    assert_eq!(target_names(&report), ["otlp_spans_rate", "otlp_vs_batch"]);
    assert_eq!(report["failures"], serde_json::json!([]));
}

/// Benchmarks saturate this machine's two cores and its disk for their whole run: two at
/// once starve each other's short windows (a 300 ms window with no completed request), so
/// the benchmark runs of this file take turns.
static ONE_BENCHMARK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_BENCHMARK_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `phoenix bench …` in a clean environment and returns its JSON report.
fn bench_json(home: &std::path::Path, args: &[&str]) -> Value {
    let _turn = take_turn();
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("TMPDIR", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .current_dir(home)
        .stdin(Stdio::null())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("phoenix runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0)
}

/// Whether a database of that name is still on the server at `admin_url`.
fn database_exists(admin_url: &str, name: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .expect("the test database is reachable");
        let task = tokio::spawn(conn);
        let found = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap()
            .is_some();
        drop(client);
        let _ = task.await;
        found
    })
}

fn check_query_report(report: &Value, backend: &str) {
    assert_eq!(report["backend"], backend, "{report}");
    assert_eq!(report["fill"]["events"], 20_000, "{report}");
    assert!(positive(&report["fill"]["events_per_sec"]), "{report}");
    assert!(positive(&report["disk"]["bytes"]), "{report}");
    assert!(positive(&report["disk"]["bytes_per_event"]), "{report}");
    let names: Vec<&str> = report["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kind", "agent_prefix_level", "orch", "cursor_paging"],
        "{report}"
    );
    for q in report["queries"].as_array().unwrap() {
        let n = q["requests"].as_u64().unwrap();
        // 20 unless the 60 s budget ran out first (a very slow machine): no timing asserted.
        assert!(n == 20 || (n >= 1 && q["budget_exhausted"] == true), "{q}");
        assert!(q["budget_exhausted"].is_boolean(), "{q}");
        assert_eq!(q["failures"], 0, "{q}");
        assert!(positive(&q["mean_records"]), "{q}");
        for figure in ["p50_ms", "p99_ms", "max_ms"] {
            assert!(positive(&q[figure]), "{figure}: {q}");
        }
        assert!(q["p50_ms"].as_f64() <= q["p99_ms"].as_f64(), "{q}");
    }
    // Pages of 100 whenever that many match: 20 000 events hold 7 000 llm_calls.
    assert_eq!(report["queries"][0]["mean_records"], 100.0, "{report}");
    assert_eq!(report["queries"][3]["mean_records"], 100.0, "{report}");
    let targets = target_names(report);
    assert_eq!(
        targets,
        [
            "kind_p50_ms",
            "agent_prefix_level_p50_ms",
            "orch_p50_ms",
            "cursor_paging_p50_ms"
        ]
    );
    assert_eq!(report["failures"], serde_json::json!([]));
}

#[test]
fn query_benchmark_fills_a_scratch_store_and_times_every_filter() {
    let home = tempfile::tempdir().unwrap();
    let small = ["query", "--events", "20000", "--requests", "20"];
    let report = bench_json(home.path(), &small);
    check_query_report(&report, "sqlite");
    assert!(report.get("postgres").is_none(), "{report}");
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("phoenix-bench-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    let Some(url) = crate::support::services::database_url() else {
        return;
    };
    let report = bench_json(
        home.path(),
        &[&small[..], &["--database-url", &url]].concat(),
    );
    check_query_report(&report, "postgres");
    let scratch = report["postgres"]["scratch_database"].as_str().unwrap();
    assert!(scratch.starts_with("phoenix_bench_"), "{report}");
    assert!(!database_exists(&url, scratch), "{scratch} was not dropped");
}

#[test]
fn dashboard_benchmark_times_every_page_and_what_open_streams_cost() {
    let home = tempfile::tempdir().unwrap();
    let report = bench_json(
        home.path(),
        &[
            "dashboard",
            "--events",
            "20000",
            "--requests",
            "3",
            "--streams",
            "2",
            "--stream-seconds",
            "2",
        ],
    );
    assert_eq!(report["backend"], "sqlite", "{report}");
    assert_eq!(report["fill"]["events"], 20_000, "{report}");
    assert!(positive(&report["fill"]["events_per_sec"]), "{report}");
    let content = &report["content"];
    assert_eq!(content["updates"], 20, "{content}");
    assert!(positive(&content["insight_records"]), "{content}");
    let pages = report["pages"].as_array().unwrap();
    let names: Vec<&str> = pages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["fleet", "insights", "updates", "update", "privacy"],
        "{report}"
    );
    for p in pages {
        assert_eq!(p["requests"], 3, "{p}");
        assert_eq!(p["failures"], 0, "{p}");
        assert!(positive(&p["mean_bytes"]), "{p}");
        for figure in ["p50_ms", "p95_ms", "max_ms"] {
            assert!(positive(&p[figure]), "{figure}: {p}");
        }
        assert!(p["p50_ms"].as_f64() <= p["p95_ms"].as_f64(), "{p}");
    }
    let id = content["update_id"].as_str().unwrap();
    assert_eq!(pages[3]["path"], format!("/ui/updates/{id}"));
    let first = &report["first_event"];
    assert_eq!(first["samples"], 3, "{first}");
    assert_eq!(first["failures"], 0, "{first}");
    assert!(positive(&first["p50_ms"]), "{first}");
    let stream = &report["stream"];
    assert_eq!(stream["streams"], 2, "{stream}");
    assert_eq!(stream["failures"], 0, "{stream}");
    assert_eq!(stream["live_every_secs"], 2.0, "{stream}");
    for figure in [
        "baseline_seconds",
        "with_streams_seconds",
        "trickle_per_sec",
    ] {
        assert!(positive(&stream[figure]), "{figure}: {stream}");
    }
    // CPU figures of 2 s windows are a few ticks: only their presence is checked.
    for figure in [
        "baseline_cores",
        "with_streams_cores",
        "cpu_percent_per_page",
        "events_per_stream_mean",
    ] {
        assert!(stream[figure].is_number(), "{figure}: {stream}");
    }
    assert_eq!(
        target_names(&report),
        [
            "fleet_p95_ms",
            "insights_p95_ms",
            "updates_p95_ms",
            "update_p95_ms",
            "privacy_p95_ms",
            "stream_cpu_percent_per_page"
        ]
    );
    assert_eq!(report["failures"], serde_json::json!([]));
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("phoenix-bench-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn ingest_benchmark_runs_on_postgres_against_a_copy_ceiling() {
    let Some(url) = crate::support::services::database_url() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let report = bench_json(
        home.path(),
        &[
            "ingest",
            "--database-url",
            &url,
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--connections",
            "2",
            "--batch-connections",
            "1",
            "--batch-size",
            "50",
            "--storage-rows",
            "500",
            "--analyze-runs",
            "1",
        ],
    );
    let round = &report["rounds"][0];
    for scenario in ["health", "ingest_single", "ingest_batch"] {
        assert!(positive(&round[scenario]["ok"]), "{scenario}: {round}");
    }
    let ceiling = &round["storage_ceiling"];
    assert_eq!(ceiling["rows"], 500, "{ceiling}");
    assert_eq!(ceiling["rows_per_transaction"], 50, "{ceiling}");
    assert!(positive(&ceiling["rows_per_sec"]), "{ceiling}");
    assert!(positive(&report["summary"]["batch_vs_storage"]), "{report}");
    assert_eq!(report["analyze"]["records_analyzed"], 5000, "{report}");
    let targets = target_names(&report);
    assert_eq!(
        targets,
        ["ingest_single_vs_health", "ingest_batch_vs_storage"]
    );
    assert_eq!(report["failures"], serde_json::json!([]));
    let scratch = report["postgres"]["scratch_database"].as_str().unwrap();
    assert!(!database_exists(&url, scratch), "{scratch} was not dropped");
}

/// The names of a report's targets, in order.
fn target_names(report: &serde_json::Value) -> Vec<&str> {
    report["targets"]
        .as_array()
        .expect("a targets array")
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect()
}

#[test]
fn pii_benchmark_scores_the_multi_locale_corpus_on_both_pools_with_targets_on_the_held_out_one() {
    let home = tempfile::tempdir().unwrap();
    let report = bench_json(
        home.path(),
        &[
            "pii",
            "--conversations",
            "40",
            "--locale-conversations",
            "60",
            "--session-mb",
            "",
            "--min-time",
            "0s",
        ],
    );
    let locales = report["locales"].as_array().expect("locales");
    assert_eq!(locales.len(), 2, "{report:#}");
    assert_eq!(locales[0]["pool"], "tuning");
    assert_eq!(locales[1]["pool"], "held_out");
    for pool in locales {
        assert_eq!(pool["conversations"], 60);
        for locale in ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES"] {
            assert!(
                pool["by_locale"][locale]["gold"].as_u64().unwrap() > 0,
                "{locale}"
            );
        }
        for entity in ["person", "phone", "organization", "address", "email"] {
            assert!(
                pool["by_type"][entity]["gold"].as_u64().unwrap() > 0,
                "{entity}"
            );
        }
        let kept = pool["kept"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&kept));
    }
    assert!(report["faker"].as_str().unwrap().starts_with("37."));
    let targets: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["target"].as_str())
        .collect();
    for t in [
        "held_out_person_recall",
        "held_out_phone_recall",
        "held_out_kept",
        "held_out_f2",
    ] {
        assert!(targets.contains(&t), "{t} in {targets:?}");
    }
    // Examples come from the tuning pool only: the held-out values are never printed.
    assert!(report["locale_examples"].is_array());
}
