use super::ingest::*;
use super::load::*;
use super::*;

fn summary() -> Summary {
    Summary {
        health_per_sec: 50_000.0,
        ingest_single_per_sec: 21_000.0,
        ingest_batch_per_sec: 150_000.0,
        storage_rows_per_sec: 250_000.0,
        single_vs_health: 0.42,
        batch_vs_storage: 0.6,
        analyze_median_ms: 50.0,
    }
}

#[test]
fn targets_pass_and_fail_on_the_right_side() {
    let checks = evaluate_targets(&summary(), TARGETS);
    let pass: Vec<_> = checks.iter().map(|c| (c.target, c.pass)).collect();
    assert_eq!(
        pass,
        [
            (Target::IngestSingleRate, true),
            (Target::IngestSingleVsHealth, true),
            (Target::IngestBatchRate, false),
            (Target::IngestBatchVsStorage, true),
            // The bound is strict: exactly 50 ms misses "< 50 ms".
            (Target::AnalyzeMedian, false),
        ]
    );
    let missing = Summary {
        ingest_single_per_sec: f64::NAN,
        ..summary()
    };
    assert!(
        !evaluate_targets(&missing, TARGETS)[0].pass,
        "a missing figure never passes"
    );
    let pg: Vec<_> = evaluate_targets(&summary(), POSTGRES_TARGETS)
        .iter()
        .map(|c| (c.target, c.pass))
        .collect();
    assert_eq!(
        pg,
        [
            (Target::IngestSingleVsHealth, true),
            (Target::IngestBatchVsStorage, true),
        ]
    );
}

#[test]
fn generated_traffic_is_valid_and_varied() {
    let ts = now_unix();
    let body: Vec<String> = (0..200).map(|i| envelope(i, ts)).collect();
    let parsed = parse_body(body.join("\n").as_bytes(), BodyFormat::Ndjson).unwrap();
    assert_eq!(parsed.len(), 200);
    let orchs: std::collections::BTreeSet<_> =
        parsed.iter().filter_map(|e| e.orch_id.clone()).collect();
    assert_eq!(orchs.len(), ORCH_IDS);
    let rows = rows_like_ingest(
        &[Bytes::from(body.join("\n"))],
        450,
        &Anonymizer::from_key(b"k"),
    );
    assert_eq!(rows.len(), 450);
    assert!(rows.iter().all(|r| {
        r.orch_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("orch_"))
    }));
}

#[test]
fn writer_activity_comes_from_the_collector_metrics() {
    let metrics = Metrics::default();
    let before = WriterTotals::read(&metrics);
    for (secs, records) in [(0.25, 60.0), (0.75, 4.0)] {
        metrics.store.commit_seconds.observe(secs);
        metrics.store.group_records.observe(records);
    }
    let w = WriterTotals::read(&metrics).since(&before, 2.0);
    assert_eq!(w.commits_per_sec, 1.0);
    assert_eq!(w.records_per_commit, 32.0);
    assert_eq!(w.busy, 0.5);
}

#[test]
fn bad_options_are_refused() {
    let ok = BenchOptions::default();
    assert!(ok.validate().is_ok());
    let too_big = BenchOptions {
        batch_size: 1_000_000,
        ..ok.clone()
    };
    assert!(too_big.validate().is_err());
    let none = BenchOptions { rounds: 0, ..ok };
    assert!(none.validate().is_err());
}

#[test]
fn an_open_page_costs_its_share_of_the_extra_cpu() {
    use super::dashboard::cpu_percent_per_page;
    // 0.05 cores without streams, 0.15 with 10 open: 0.01 cores, 1 % of a core, each.
    assert!((cpu_percent_per_page(0.05, 0.15, 10) - 1.0).abs() < 1e-9);
    assert!((cpu_percent_per_page(0.2, 0.2, 4)).abs() < 1e-9);
    assert!(
        cpu_percent_per_page(0.1, 0.2, 0).is_nan(),
        "no stream, no figure"
    );
    assert!(
        cpu_percent_per_page(f64::NAN, 0.2, 3).is_nan(),
        "no /proc, no figure"
    );
}

#[test]
fn dashboard_options_need_something_to_measure() {
    use super::dashboard::DashboardOptions;
    assert!(DashboardOptions::default().validate().is_ok());
    for bad in [
        DashboardOptions {
            events: 0,
            ..DashboardOptions::default()
        },
        DashboardOptions {
            requests: 0,
            ..DashboardOptions::default()
        },
        DashboardOptions {
            streams: 0,
            ..DashboardOptions::default()
        },
        DashboardOptions {
            stream_seconds: 0,
            ..DashboardOptions::default()
        },
    ] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("must be at least 1"), "{e}");
    }
}

#[test]
fn server_sent_events_are_cut_out_of_chunks_as_they_arrive() {
    use super::dashboard::{SseEvent, SseParser};
    let mut p = SseParser::default();
    p.feed(b"event: fragments\nretry: 5000\ndata: {\"a\":");
    assert_eq!(p.next_event(), None, "incomplete");
    p.feed(b"1}\n\n:\n\nevent: problem\ndata: store down\ndata: again\n\ndata: x\n\n");
    let got: Vec<SseEvent> = std::iter::from_fn(|| p.next_event()).collect();
    let want = [
        ("fragments", "{\"a\":1}"),
        // The keep-alive comment in between is no event.
        ("problem", "store down\nagain"),
        ("message", "x"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (e, (name, data)) in got.iter().zip(want) {
        assert_eq!((e.name.as_str(), e.data.as_str()), (name, data));
    }
}

#[test]
fn the_dashboard_benchmark_publishes_only_valid_updates() {
    use super::dashboard::update_request;
    let mut ids = Vec::new();
    for i in 0..20 {
        let req = update_request(i, &ids);
        let rollback = req.update_type.as_deref() == Some("rollback");
        assert_eq!(rollback, i == 19, "update {i}");
        req.validate()
            .unwrap_or_else(|e| panic!("update {i} is refused: {e}"));
        ids.push(format!("id-{i}"));
    }
}
