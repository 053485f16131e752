//! The `phoenix bench ingest` run: the scenarios against one in-process collector, the
//! generated envelopes and the storage ceiling measured beside them.

use super::load::*;
use super::*;

/// Runs every scenario against one in-process collector on this runtime; `progress` is told
/// which scenario starts. The collector's store lives in a scratch directory under the system
/// temp dir (SQLite), or in a scratch database on the `database_url` server (PostgreSQL);
/// either is removed at the end.
pub async fn run(
    opts: &BenchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, Error> {
    opts.validate()?;
    let machine = Machine::current();
    let scratch = ScratchDir::create()?;
    let metrics = Arc::new(Metrics::default());
    let Some(url) = &opts.database_url else {
        let store = SqliteStore::open(
            &StoreOptions::new(scratch.0.join("collector.db")),
            metrics.store.clone(),
        )?;
        let ceiling = Ceiling::Sqlite(&scratch.0);
        return run_on(opts, machine, ceiling, store, metrics, progress).await;
    };
    let database = ScratchDatabase::create(url).await?;
    let postgres = PostgresRun {
        server: store::postgres::mask_password(url),
        scratch_database: database.name.clone(),
    };
    let measured = async {
        let pool =
            store::open::connect_postgres(&database.url, OpenOptions::default().pool_size).await?;
        let queue = OpenOptions::default().queue_records;
        let store = PgStore::start(pool, queue, metrics.store.clone());
        let ceiling = Ceiling::Postgres(&database.url);
        run_on(opts, machine, ceiling, store, metrics, progress).await
    }
    .await;
    // Whatever happened, the scratch database goes.
    let dropped = database.drop_now().await;
    let mut report = measured?;
    dropped?;
    report.postgres = Some(postgres);
    Ok(report)
}

/// Runs every scenario against a collector on `store`.
async fn run_on(
    opts: &BenchOptions,
    machine: Machine,
    ceiling: Ceiling<'_>,
    store: impl TelemetryStore + 'static,
    metrics: Arc<Metrics>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, Error> {
    let store: Arc<dyn TelemetryStore> = Arc::new(store);
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let config = CollectorConfig {
        premium_key: Some(PREMIUM_KEY.to_owned()),
        ..CollectorConfig::default()
    };
    let state = AppState::new(store.clone(), anonymizer.clone(), config, metrics.clone())?;
    let collector = InProcess::start(state).await?;
    let addr = collector.addr;

    let rig = Rig {
        addr,
        anonymizer: &anonymizer,
        ceiling,
        store,
        metrics: &metrics,
    };
    let measured = measure(opts, machine, &rig, progress).await;

    let stopped = collector.stop().await;
    let report = measured?;
    stopped?;
    Ok(report)
}

/// The in-process collector under test and what the scenarios reach it through.
pub(super) struct Rig<'a> {
    addr: SocketAddr,
    anonymizer: &'a Anonymizer,
    /// Where the storage ceiling writes.
    ceiling: Ceiling<'a>,
    store: Arc<dyn TelemetryStore>,
    metrics: &'a Metrics,
}

/// Where the storage ceiling of a run writes, beside the collector's store.
#[derive(Clone, Copy)]
pub(super) enum Ceiling<'a> {
    /// Fresh SQLite files in this scratch directory.
    Sqlite(&'a Path),
    /// A fresh schema in this (scratch) PostgreSQL database.
    Postgres(&'a str),
}

pub(super) async fn measure(
    opts: &BenchOptions,
    machine: Machine,
    rig: &Rig<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, Error> {
    let (addr, metrics) = (rig.addr, rig.metrics);
    let ts = now_unix();
    let health = Arc::new(Template::new(
        addr,
        Method::GET,
        "/health",
        None,
        0,
        vec![Bytes::new()],
    ));
    let single_bodies = single_bodies(ts);
    let single = Arc::new(Template::new(
        addr,
        Method::POST,
        "/ingest",
        Some("application/json"),
        1,
        single_bodies,
    ));
    let batch_bodies = batch_bodies(opts.batch_size, ts);
    let rows = Arc::new(rows_like_ingest(
        &batch_bodies,
        opts.storage_rows,
        rig.anonymizer,
    ));
    let batch = Arc::new(Template::new(
        addr,
        Method::POST,
        "/ingest",
        Some("application/x-ndjson"),
        opts.batch_size,
        batch_bodies,
    ));

    let mut rounds = Vec::with_capacity(opts.rounds);
    for r in 1..=opts.rounds {
        let tag = |what: &str| format!("round {r}/{}: {what}", opts.rounds);
        progress(&tag("GET /health (HTTP ceiling)"));
        let health = load(&health, opts.connections, opts, metrics).await?;
        progress(&tag("POST /ingest, one event per request"));
        let ingest_single = load(&single, opts.connections, opts, metrics).await?;
        progress(&tag("POST /ingest, NDJSON batches"));
        let ingest_batch = load(&batch, opts.batch_connections, opts, metrics).await?;
        let storage_ceiling = match rig.ceiling {
            Ceiling::Sqlite(dir) => {
                progress(&tag("raw SQLite inserts (storage ceiling)"));
                let path = dir.join(format!("ceiling-{r}.db"));
                let rows = rows.clone();
                tokio::task::spawn_blocking(move || storage_ceiling(&path, &rows))
                    .await
                    .map_err(|e| Error::Io {
                        what: "running the storage ceiling".to_owned(),
                        source: std::io::Error::other(e),
                    })??
            }
            Ceiling::Postgres(url) => {
                progress(&tag("raw PostgreSQL binary COPY (storage ceiling)"));
                copy_ceiling(url, &rows, opts.batch_size).await?
            }
        };
        rounds.push(Round {
            single_vs_health: ingest_single.events_per_sec / health.requests_per_sec,
            batch_vs_storage: ingest_batch.events_per_sec / storage_ceiling.rows_per_sec,
            health,
            ingest_single,
            ingest_batch,
            storage_ceiling,
        });
    }

    progress(&format!("POST /analyze over {ANALYZE_RECORDS} records"));
    top_up(&rig.store, &rows).await?;
    let analyze = analyze(addr, opts.analyze_runs).await?;

    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let summary = Summary {
        health_per_sec: med(|r| r.health.requests_per_sec),
        ingest_single_per_sec: med(|r| r.ingest_single.events_per_sec),
        ingest_batch_per_sec: med(|r| r.ingest_batch.events_per_sec),
        storage_rows_per_sec: med(|r| r.storage_ceiling.rows_per_sec),
        single_vs_health: med(|r| r.single_vs_health),
        batch_vs_storage: med(|r| r.batch_vs_storage),
        analyze_median_ms: analyze.median_ms,
    };
    let mut failures = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        for (name, f) in [
            ("health", &r.health),
            ("ingest_single", &r.ingest_single),
            ("ingest_batch", &r.ingest_batch),
        ] {
            failures.extend(f.failure(name, i + 1));
        }
    }
    if analyze.failures > 0 || analyze.records_analyzed != ANALYZE_RECORDS {
        failures.push(format!(
            "analyze: {} failed calls, records_analyzed {} (expected {ANALYZE_RECORDS}); first: {}",
            analyze.failures,
            analyze.records_analyzed,
            analyze.first_failure.as_deref().unwrap_or("-")
        ));
    }
    Ok(BenchReport {
        machine,
        options: opts.clone(),
        targets: evaluate_targets(
            &summary,
            match rig.ceiling {
                Ceiling::Sqlite(_) => TARGETS,
                Ceiling::Postgres(_) => POSTGRES_TARGETS,
            },
        ),
        postgres: None,
        rounds,
        analyze,
        summary,
        failures,
    })
}

/// The single-event scenario's bodies: one envelope each.
pub(super) fn single_bodies(ts: i64) -> Vec<Bytes> {
    (0..SINGLE_BODIES)
        .map(|i| Bytes::from(envelope(i, ts)))
        .collect()
}

/// The batch scenario's bodies: `batch_size` envelopes each, as NDJSON.
pub(super) fn batch_bodies(batch_size: usize, ts: i64) -> Vec<Bytes> {
    (0..BATCH_BODIES)
        .map(|b| {
            let lines: Vec<String> = (0..batch_size)
                .map(|i| envelope(b * batch_size + i, ts))
                .collect();
            Bytes::from(lines.join("\n"))
        })
        .collect()
}

/// A cheap hash so generated values vary without a random source: runs are reproducible.
pub(super) fn mix(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th generated envelope: what an orch of a ~50-strong fleet would send.
pub(super) fn envelope(i: usize, ts: i64) -> String {
    let h = mix(i);
    let level = match h % 20 {
        0 => "error",
        1 | 2 => "warn",
        _ => "info",
    };
    serde_json::json!({
        "orch_id": format!("orch-bench-{:02}", i % ORCH_IDS),
        "agent_path": AGENT_PATHS[(h >> 8) as usize % AGENT_PATHS.len()],
        // Live agents send events seconds after they happen, so index inserts land near the
        // end of each index. Spreading them over minutes in a database that holds only those
        // minutes makes every insert random and halves both ingest and the storage ceiling.
        "ts_unix": ts - (h % 3) as i64,
        "kind": KINDS[(h >> 12) as usize % KINDS.len()],
        "level": level,
        "tags": ["bench", format!("region-{}", (h >> 16) % 3)],
        "payload": {
            "response_time": 20.0 + ((h >> 20) % 4000) as f64 / 10.0,
            "token_count": 50 + (h >> 32) % 4000,
            "love_score": ((h >> 44) % 1000) as f64 / 1000.0,
        },
    })
    .to_string()
}

/// The rows `POST /ingest` would store for these bodies, cycled up to `n` rows; mirrors the
/// collector's envelope-to-record step so the storage ceiling inserts the same data.
pub(super) fn rows_like_ingest(
    bodies: &[Bytes],
    n: usize,
    anonymizer: &Anonymizer,
) -> Vec<NewRecord> {
    let now = now_unix();
    let envelopes: Vec<_> = bodies
        .iter()
        .flat_map(|b| parse_body(b, BodyFormat::Ndjson).expect("generated envelopes are valid"))
        .collect();
    envelopes
        .iter()
        .cycle()
        .take(n)
        .map(|e| record_like_ingest(e, now, anonymizer))
        .collect()
}

/// The row the collector stores for envelope `e` received at `now`.
pub(super) fn record_like_ingest(
    e: &TelemetryEnvelope,
    now: i64,
    anonymizer: &Anonymizer,
) -> NewRecord {
    NewRecord {
        id: uuid::Uuid::now_v7().to_string(),
        ts_unix: e.ts_unix.unwrap_or(now),
        received_unix: now,
        kind: e.kind.clone(),
        level: e.level.clone(),
        orch_hash: e.orch_id.as_deref().map(|id| anonymizer.orch_hash(id)),
        agent_path: e.agent_path.clone(),
        tags_json: e
            .tags
            .as_ref()
            .filter(|t| !t.is_empty())
            .map(|t| serde_json::to_string(t).expect("strings serialize")),
        payload_json: e.payload.get().to_owned(),
    }
}

/// Inserts `rows` in one transaction into a fresh database opened as the store opens its
/// writer connection; only the inserts and the commit are timed.
pub(super) fn storage_ceiling(path: &Path, rows: &[NewRecord]) -> Result<StorageFigures, Error> {
    let seconds = store::sqlite::ceiling::raw_insert(path, rows)
        .map_err(Error::Ceiling)?
        .as_secs_f64();
    Ok(StorageFigures {
        rows: rows.len(),
        rows_per_transaction: None,
        seconds,
        rows_per_sec: rows.len() as f64 / seconds,
    })
}

/// Copies `rows` into a fresh schema of the database at `url`, `per_tx` rows per
/// transaction (the size of one batch request); only the copies and commits are timed.
pub(super) async fn copy_ceiling(
    url: &str,
    rows: &[NewRecord],
    per_tx: usize,
) -> Result<StorageFigures, Error> {
    let seconds = store::postgres::ceiling::raw_copy(url, rows, per_tx)
        .await
        .map_err(Error::Ceiling)?
        .as_secs_f64();
    Ok(StorageFigures {
        rows: rows.len(),
        rows_per_transaction: Some(per_tx),
        seconds,
        rows_per_sec: rows.len() as f64 / seconds,
    })
}

/// Makes sure the store holds at least [`ANALYZE_RECORDS`] rows, whatever the load phases
/// managed to write (a very short `--duration` may not reach it).
pub(super) async fn top_up(
    store: &Arc<dyn TelemetryStore>,
    rows: &Arc<Vec<NewRecord>>,
) -> Result<(), Error> {
    let count = store.count().await?;
    let missing = ANALYZE_RECORDS.saturating_sub(count as usize);
    if missing > 0 {
        // Fresh ids: a small `--storage-rows` repeats rows, and PostgreSQL keeps ids unique.
        let extra: Vec<_> = rows
            .iter()
            .cycle()
            .take(missing)
            .map(|r| NewRecord {
                id: uuid::Uuid::now_v7().to_string(),
                ..r.clone()
            })
            .collect();
        store.submit(extra)?.wait().await?;
    }
    Ok(())
}
