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
