//! The load benchmark behind `phoenix bench ingest`: one in-process collector, a keep-alive
//! HTTP/1.1 load generator on the same runtime, and this machine's HTTP and storage ceilings
//! measured in the same run, so ingest rates are judged against what the machine can do.
//!
//! Speed targets live here and are checked by this benchmark, never by timed tests.

pub mod abuse;
pub mod cpu;
pub mod fanout;
pub mod pii_eval;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize, Serializer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::core::collector::{self, AppState, CollectorConfig, Limits, Metrics};
use crate::core::shared::anonymize::Anonymizer;
pub use crate::core::shared::stats::median;
use crate::core::shared::stats::nearest_rank_percentile;
use crate::core::store::{self, SqliteStore, StoreOptions, TelemetryStore, insert_statement};
use crate::core::telemetry::{BodyFormat, NewRecord, now_unix, parse_body};

/// Records `POST /analyze` is asked to look at (the premium tier's window).
pub const ANALYZE_RECORDS: usize = 5000;
/// `X402` key the benchmark's collector accepts, so `last_n` 5000 is not clamped.
const PREMIUM_KEY: &str = "bench";
/// Distinct orch ids in the generated traffic, as a small fleet would send.
const ORCH_IDS: usize = 50;
const AGENT_PATHS: &[&str] = &["root", "code-gen", "code-gen/rust", "review", "search/web"];
const KINDS: &[&str] = &["skill_execution", "llm_call", "tool_call", "orch_heartbeat"];
/// Distinct single-event bodies each connection cycles through; enough to vary every field.
const SINGLE_BODIES: usize = 600;
/// Distinct batch bodies; few, because each one is already `batch_size` varied records.
const BATCH_BODIES: usize = 4;
/// How long the collector may take to drain once the benchmark is over.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What a benchmark run does.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Measured time of each load scenario.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Unmeasured load before each scenario's measurement (connections, caches, allocator).
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Keep-alive connections of the `health` and `ingest_single` scenarios.
    pub connections: usize,
    /// Keep-alive connections of the `ingest_batch` scenario.
    pub batch_connections: usize,
    /// Records per NDJSON request of `ingest_batch`.
    pub batch_size: usize,
    /// Rows the storage ceiling inserts in one transaction.
    pub storage_rows: usize,
    /// Timed `POST /analyze` calls.
    pub analyze_runs: usize,
    /// Repetitions of the load and storage scenarios; figures are medians over rounds.
    pub rounds: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            connections: 64,
            batch_connections: 4,
            batch_size: 1000,
            storage_rows: 200_000,
            analyze_runs: 21,
            rounds: 1,
        }
    }
}

impl BenchOptions {
    fn validate(&self) -> Result<(), Error> {
        let max_batch = Limits::default().max_batch_records;
        let problem = if self.duration.is_zero() {
            "the duration must be longer than zero".to_owned()
        } else if [
            self.connections,
            self.batch_connections,
            self.batch_size,
            self.storage_rows,
            self.analyze_runs,
            self.rounds,
        ]
        .contains(&0)
        {
            "connections, batch size, storage rows, analyze runs and rounds must be at least 1"
                .to_owned()
        } else if self.batch_size > max_batch {
            format!("the batch size must be at most {max_batch}, the collector's per-request limit")
        } else {
            return Ok(());
        };
        Err(Error::Options(problem))
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Why the benchmark could not run (failed requests are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// The scratch directory or the listener could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The collector's store failed.
    #[error("telemetry store: {0}")]
    Store(#[from] store::Error),
    /// The storage ceiling's own connection failed.
    #[error("storage ceiling: sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The collector could not be set up.
    #[error("collector: {0}")]
    Collector(#[from] collector::Error),
    /// The generator could not open a connection to the in-process collector.
    #[error("cannot connect to the in-process collector at {addr}: {message}")]
    Connect {
        /// Collector address.
        addr: SocketAddr,
        /// Cause.
        message: String,
    },
    /// The collector did not stop cleanly.
    #[error("the collector did not shut down cleanly: {0}")]
    Shutdown(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// One HTTP load scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    /// Keep-alive connections used.
    pub connections: usize,
    /// Telemetry events carried by one request (0 for `/health`).
    pub events_per_request: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// 2xx responses completed in the measured window.
    pub ok: u64,
    /// Non-2xx responses, warm-up included: any is a failed run.
    pub non_2xx: u64,
    /// Transport errors, warm-up included: any is a failed run.
    pub errors: u64,
    /// `ok / seconds`.
    pub requests_per_sec: f64,
    /// `ok × events_per_request / seconds`.
    pub events_per_sec: f64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// What the store's single writer did during the window.
    pub writer: WriterActivity,
    /// Where the process's CPU went during the window.
    pub cpu: cpu::CpuUse,
}

/// The store writer's group commits during a measured window, from the collector's metrics:
/// whether ingest is bound by the writer or by the HTTP side shows here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriterActivity {
    /// Group commits per second.
    pub commits_per_sec: f64,
    /// Mean records per group commit (NaN, i.e. null, without commits).
    pub records_per_commit: f64,
    /// Share of the window the writer spent inside group commits (1.0 = saturated).
    pub busy: f64,
}

/// The raw SQLite insert loop's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StorageFigures {
    /// Rows inserted in the one transaction.
    pub rows: usize,
    /// Seconds for the inserts and the commit.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
}

/// Scenarios 1–4 measured back to back; the ratios compare figures of the same round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// `GET /health`: the HTTP ceiling.
    pub health: LoadFigures,
    /// `POST /ingest`, one event per request.
    pub ingest_single: LoadFigures,
    /// `POST /ingest`, NDJSON batches.
    pub ingest_batch: LoadFigures,
    /// Raw rusqlite inserts of the same rows: the storage ceiling.
    pub storage_ceiling: StorageFigures,
    /// `ingest_single` events/s over `health` requests/s.
    pub single_vs_health: f64,
    /// `ingest_batch` events/s over the storage ceiling's rows/s.
    pub batch_vs_storage: f64,
}

/// `POST /analyze` latency, sequential calls on one connection.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeFigures {
    /// Timed calls (one more, untimed, warms the reader pool and checks the answer).
    pub runs: usize,
    /// `records_analyzed` of the answers (must be [`ANALYZE_RECORDS`]).
    pub records_analyzed: usize,
    /// Median round trip.
    pub median_ms: f64,
    /// 95th percentile round trip (nearest rank).
    pub p95_ms: f64,
    /// Slowest round trip.
    pub max_ms: f64,
    /// Median of the collector's own `analysis_ms` (read + statistics, no HTTP, no commit).
    pub server_analysis_median_ms: f64,
    /// Failed calls.
    pub failures: u64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// Medians over rounds: the figures the targets are checked against.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `GET /health` requests/s.
    pub health_per_sec: f64,
    /// Single-event ingest events/s.
    pub ingest_single_per_sec: f64,
    /// Batch ingest events/s.
    pub ingest_batch_per_sec: f64,
    /// Storage ceiling rows/s.
    pub storage_rows_per_sec: f64,
    /// Median of the per-round `single_vs_health`.
    pub single_vs_health: f64,
    /// Median of the per-round `batch_vs_storage`.
    pub batch_vs_storage: f64,
    /// Median `POST /analyze` round trip in ms.
    pub analyze_median_ms: f64,
}

/// A figure the issue sets a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Single-event ingest, events/s.
    IngestSingleRate,
    /// Single-event ingest over the `/health` ceiling.
    IngestSingleVsHealth,
    /// Batch ingest, events/s.
    IngestBatchRate,
    /// Batch ingest over the storage ceiling.
    IngestBatchVsStorage,
    /// Median `POST /analyze` latency over 5000 records, ms.
    AnalyzeMedian,
}

/// Which side of the threshold passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// `measured >= threshold`.
    AtLeast,
    /// `measured < threshold`.
    Below,
    /// `measured <= threshold`.
    AtMost,
}

impl Bound {
    /// Whether `measured` is on the passing side of `threshold` (never when it is NaN).
    pub fn passes(self, measured: f64, threshold: f64) -> bool {
        match self {
            Bound::AtLeast => measured >= threshold,
            Bound::Below => measured < threshold,
            Bound::AtMost => measured <= threshold,
        }
    }
}

/// The targets.
pub const TARGETS: [(Target, Bound, f64); 5] = [
    (Target::IngestSingleRate, Bound::AtLeast, 20_000.0),
    (Target::IngestSingleVsHealth, Bound::AtLeast, 0.40),
    (Target::IngestBatchRate, Bound::AtLeast, 200_000.0),
    (Target::IngestBatchVsStorage, Bound::AtLeast, 0.50),
    (Target::AnalyzeMedian, Bound::Below, 50.0),
];

/// One target, checked; `T` names the figures of one benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck<T = Target> {
    /// Which figure.
    pub target: T,
    /// Its measured value.
    pub measured: f64,
    /// Which side passes.
    pub bound: Bound,
    /// The threshold.
    pub threshold: f64,
    /// Whether it is met (never when the figure is missing, i.e. NaN).
    pub pass: bool,
}

impl<T> TargetCheck<T> {
    /// Checks `measured` against `threshold`.
    pub fn new(target: T, measured: f64, bound: Bound, threshold: f64) -> Self {
        TargetCheck {
            target,
            measured,
            bound,
            threshold,
            pass: bound.passes(measured, threshold),
        }
    }
}

/// Checks every target against the summary.
pub fn evaluate_targets(s: &Summary) -> Vec<TargetCheck> {
    TARGETS
        .iter()
        .map(|&(target, bound, threshold)| {
            let measured = match target {
                Target::IngestSingleRate => s.ingest_single_per_sec,
                Target::IngestSingleVsHealth => s.single_vs_health,
                Target::IngestBatchRate => s.ingest_batch_per_sec,
                Target::IngestBatchVsStorage => s.batch_vs_storage,
                Target::AnalyzeMedian => s.analyze_median_ms,
            };
            let pass = bound.passes(measured, threshold);
            TargetCheck {
                target,
                measured,
                bound,
                threshold,
                pass,
            }
        })
        .collect()
}

/// Facts about the machine and build, without which the figures mean little.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `release` or `debug` (optimised or not).
    pub profile: &'static str,
    /// Operating system.
    pub os: &'static str,
    /// CPU architecture.
    pub arch: &'static str,
    /// 1-minute load average as the run started (Linux): other work skews every figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_before: Option<f64>,
}

impl Machine {
    fn current() -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            load_before: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok()),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: BenchOptions,
    /// Each round's figures.
    pub rounds: Vec<Round>,
    /// `POST /analyze` latency.
    pub analyze: AnalyzeFigures,
    /// Medians over rounds.
    pub summary: Summary,
    /// Targets, checked against the summary.
    pub targets: Vec<TargetCheck>,
    /// Scenarios that had non-2xx answers or errors; a run with any is not trustworthy.
    pub failures: Vec<String>,
}

/// Runs every scenario against one in-process collector on this runtime; `progress` is told
/// which scenario starts. The collector's database lives in a scratch directory under the
/// system temp dir, removed at the end.
pub async fn run(
    opts: &BenchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, Error> {
    opts.validate()?;
    let machine = Machine::current();
    let scratch = ScratchDir::create()?;
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn TelemetryStore> = Arc::new(SqliteStore::open(
        &StoreOptions::new(scratch.0.join("collector.db")),
        metrics.store.clone(),
    )?);
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let config = CollectorConfig {
        premium_key: Some(PREMIUM_KEY.to_owned()),
        ..CollectorConfig::default()
    };
    let state = AppState::new(store.clone(), anonymizer.clone(), config, metrics.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(collector::serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    let rig = Rig {
        addr,
        anonymizer: &anonymizer,
        dir: &scratch.0,
        store,
        metrics: &metrics,
    };
    let measured = measure(opts, machine, &rig, progress).await;

    let _ = stop_tx.send(());
    let stopped = match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(Error::Shutdown(e.to_string())),
        Ok(Err(e)) => Err(Error::Shutdown(e.to_string())),
        Err(_) => Err(Error::Shutdown(format!(
            "still draining after {}s",
            SHUTDOWN_GRACE.as_secs()
        ))),
    };
    let report = measured?;
    stopped?;
    Ok(report)
}

/// The in-process collector under test and what the scenarios reach it through.
struct Rig<'a> {
    addr: SocketAddr,
    anonymizer: &'a Anonymizer,
    /// Scratch directory for the storage ceiling's databases.
    dir: &'a Path,
    store: Arc<dyn TelemetryStore>,
    metrics: &'a Metrics,
}

async fn measure(
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
    let single_bodies = (0..SINGLE_BODIES)
        .map(|i| Bytes::from(envelope(i, ts)))
        .collect();
    let single = Arc::new(Template::new(
        addr,
        Method::POST,
        "/ingest",
        Some("application/json"),
        1,
        single_bodies,
    ));
    let batch_bodies: Vec<Bytes> = (0..BATCH_BODIES)
        .map(|b| {
            let lines: Vec<String> = (0..opts.batch_size)
                .map(|i| envelope(b * opts.batch_size + i, ts))
                .collect();
            Bytes::from(lines.join("\n"))
        })
        .collect();
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
        progress(&tag("raw SQLite inserts (storage ceiling)"));
        let path = rig.dir.join(format!("ceiling-{r}.db"));
        let rows = rows.clone();
        let storage_ceiling = tokio::task::spawn_blocking(move || storage_ceiling(&path, &rows))
            .await
            .map_err(|e| Error::Io {
                what: "running the storage ceiling".to_owned(),
                source: std::io::Error::other(e),
            })??;
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
            if f.non_2xx + f.errors > 0 {
                failures.push(format!(
                    "{name} (round {}): {} non-2xx, {} errors; first: {}",
                    i + 1,
                    f.non_2xx,
                    f.errors,
                    f.first_failure.as_deref().unwrap_or("-")
                ));
            }
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
        targets: evaluate_targets(&summary),
        rounds,
        analyze,
        summary,
        failures,
    })
}

/// A scratch directory removed on drop, so an early error leaves nothing behind either.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> Result<Self, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("phoenix-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(io(format!("creating scratch directory {}", dir.display())))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cheap hash so generated values vary without a random source: runs are reproducible.
fn mix(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th generated envelope: what an orch of a ~50-strong fleet would send.
fn envelope(i: usize, ts: i64) -> String {
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
fn rows_like_ingest(bodies: &[Bytes], n: usize, anonymizer: &Anonymizer) -> Vec<NewRecord> {
    let now = now_unix();
    let envelopes: Vec<_> = bodies
        .iter()
        .flat_map(|b| parse_body(b, BodyFormat::Ndjson).expect("generated envelopes are valid"))
        .collect();
    envelopes
        .iter()
        .cycle()
        .take(n)
        .map(|e| NewRecord {
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
                .map(|t| serde_json::to_string(t).expect("strings serialize")),
            payload_json: e.payload.get().to_owned(),
        })
        .collect()
}

/// Inserts `rows` in one transaction into a fresh database opened as the store opens its
/// writer connection; only the inserts and the commit are timed.
fn storage_ceiling(path: &Path, rows: &[NewRecord]) -> Result<StorageFigures, Error> {
    let mut conn = open_like_store(path)?;
    store::migrate(&mut conn)?;
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(insert_statement())?;
        for r in rows {
            stmt.execute(params![
                r.id,
                r.ts_unix,
                r.received_unix,
                r.kind,
                r.level,
                r.orch_hash,
                r.agent_path,
                r.tags_json,
                r.payload_json
            ])?;
        }
    }
    tx.commit()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    Ok(StorageFigures {
        rows: rows.len(),
        seconds,
        rows_per_sec: rows.len() as f64 / seconds,
    })
}

/// The pragmas of the store's writer connection (`store::sqlite::open_connection`, default
/// `SyncMode::Normal`); keep the two in step or the ceiling measures a different engine.
fn open_like_store(path: &Path) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Io {
            what: format!("storage ceiling at {}", path.display()),
            source: std::io::Error::other(format!("cannot enable WAL (journal_mode is {mode})")),
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    // The writer leaves checkpoints to a background thread (store::checkpoint).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Makes sure the store holds at least [`ANALYZE_RECORDS`] rows, whatever the load phases
/// managed to write (a very short `--duration` may not reach it).
async fn top_up(store: &Arc<dyn TelemetryStore>, rows: &Arc<Vec<NewRecord>>) -> Result<(), Error> {
    let s = store.clone();
    let count = tokio::task::spawn_blocking(move || s.count())
        .await
        .map_err(|e| Error::Store(store::Error::Corrupt(e.to_string())))??;
    let missing = ANALYZE_RECORDS.saturating_sub(count as usize);
    if missing > 0 {
        let extra: Vec<_> = rows.iter().cycle().take(missing).cloned().collect();
        store.submit(extra)?.wait().await?;
    }
    Ok(())
}

/// A request each connection of a scenario sends over and over, its bodies pre-built.
struct Template {
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bodies: Vec<Bytes>,
    events_per_request: usize,
}

impl Template {
    fn new(
        addr: SocketAddr,
        method: Method,
        path: &'static str,
        content_type: Option<&'static str>,
        events_per_request: usize,
        bodies: Vec<Bytes>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        headers.insert(header::HOST, host);
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        Template {
            addr,
            method,
            uri: Uri::from_static(path),
            headers,
            bodies,
            events_per_request,
        }
    }

    /// The `i`-th request: cloning `Bytes` and a small header map is all it costs.
    fn request(&self, i: usize) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.bodies[i % self.bodies.len()].clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;
type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<(Sender, Conn), Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Connect {
        addr,
        message: e.to_string(),
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| failed(&e))?;
    stream.set_nodelay(true).map_err(|e| failed(&e))?;
    http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))
}

/// How one exchange ended.
enum Answer {
    Ok(Bytes),
    Failed(String),
}

/// Sends one request and reads the whole answer; `keep` says whether a 2xx body is needed.
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    keep: bool,
) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status.is_success() && !keep {
        // Drain without buffering: the generator should cost as little as possible.
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(Answer::Ok(Bytes::new()));
    }
    let bytes = body.collect().await?.to_bytes();
    if status.is_success() {
        Ok(Answer::Ok(bytes))
    } else {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        Ok(Answer::Failed(format!("{status}: {text}")))
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn note(&mut self, failure: String) {
        self.first_failure.get_or_insert(failure);
    }
}

/// Runs `template` on `connections` keep-alive connections for warm-up plus duration and
/// counts the 2xx answers that complete inside the measured window.
async fn load(
    template: &Arc<Template>,
    connections: usize,
    opts: &BenchOptions,
    metrics: &Metrics,
) -> Result<LoadFigures, Error> {
    // Connect everything first so the window measures steady state, not the handshakes.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(template.addr).await?);
    }
    let start = Instant::now() + opts.warmup;
    let end = start + opts.duration;
    let mut tasks = JoinSet::new();
    for (n, conn) in conns.into_iter().enumerate() {
        let template = template.clone();
        // Offsets spread the connections over different bodies.
        let first = n * 7919;
        tasks.spawn(drive(template, conn, first, start, end));
    }
    tokio::time::sleep_until(start.into()).await;
    let before = WriterTotals::read(metrics);
    let cpu_before = cpu::CpuTicks::now();
    tokio::time::sleep_until(end.into()).await;
    let after = WriterTotals::read(metrics);
    let cpu_after = cpu::CpuTicks::now();
    let mut total = Tally::default();
    while let Some(done) = tasks.join_next().await {
        let t = done.map_err(|e| Error::Io {
            what: "running a load connection".to_owned(),
            source: std::io::Error::other(e),
        })?;
        total.ok += t.ok;
        total.non_2xx += t.non_2xx;
        total.errors += t.errors;
        if let Some(f) = t.first_failure {
            total.note(f);
        }
    }
    let seconds = opts.duration.as_secs_f64();
    let rps = total.ok as f64 / seconds;
    Ok(LoadFigures {
        connections,
        events_per_request: template.events_per_request,
        seconds,
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        requests_per_sec: rps,
        events_per_sec: rps * template.events_per_request as f64,
        first_failure: total.first_failure,
        writer: after.since(&before, seconds),
        cpu: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => a.since(&b, seconds, total.ok),
            _ => cpu::CpuUse::unknown(),
        },
    })
}

/// Running totals of the writer's commit histograms.
struct WriterTotals {
    commits: u64,
    records: f64,
    seconds: f64,
}

impl WriterTotals {
    /// Reads the totals from the Prometheus exposition: the histograms expose no getters.
    fn read(m: &Metrics) -> Self {
        let mut t = WriterTotals {
            commits: 0,
            records: 0.0,
            seconds: 0.0,
        };
        for line in m.encode().lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let value = value.trim().parse::<f64>().unwrap_or(0.0);
            match name {
                "phoenix_store_commit_seconds_count" => t.commits = value as u64,
                "phoenix_store_commit_seconds_sum" => t.seconds = value,
                "phoenix_store_group_records_sum" => t.records = value,
                _ => {}
            }
        }
        t
    }

    fn since(&self, before: &WriterTotals, window: f64) -> WriterActivity {
        let commits = self.commits - before.commits;
        WriterActivity {
            commits_per_sec: commits as f64 / window,
            records_per_commit: (self.records - before.records) / commits as f64,
            busy: (self.seconds - before.seconds) / window,
        }
    }
}

/// One connection's loop. The hyper connection is polled in the same task as the loop
/// (`join!`), which saves two cross-task wake-ups per request over spawning it.
async fn drive(
    template: Arc<Template>,
    (sender, conn): (Sender, Conn),
    mut next: usize,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut pair = Some((sender, conn));
    while Instant::now() < end {
        let (mut sender, conn) = match pair.take() {
            Some(p) => p,
            None => match connect(template.addr).await {
                Ok(p) => p,
                Err(e) => {
                    tally.errors += 1;
                    tally.note(format!("reconnecting: {e}"));
                    break;
                }
            },
        };
        let requests = async {
            while Instant::now() < end {
                let answer = exchange(&mut sender, template.request(next), false).await;
                next += 1;
                let now = Instant::now();
                match answer {
                    Ok(Answer::Ok(_)) => {
                        if now >= start && now < end {
                            tally.ok += 1;
                        }
                    }
                    Ok(Answer::Failed(f)) => {
                        tally.non_2xx += 1;
                        tally.note(f);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.note(format!("transport: {e}"));
                        // The connection is unusable; the outer loop opens another.
                        break;
                    }
                }
            }
            drop(sender);
        };
        let (_, ()) = tokio::join!(conn, requests);
    }
    tally
}

#[derive(Deserialize)]
struct AnalyzeAnswer {
    records_analyzed: usize,
    analysis_ms: f64,
}

/// Sequential `POST /analyze {"last_n":5000}` calls with the premium key, one connection.
async fn analyze(addr: SocketAddr, runs: usize) -> Result<AnalyzeFigures, Error> {
    let mut template = Template::new(
        addr,
        Method::POST,
        "/analyze",
        Some("application/json"),
        0,
        vec![Bytes::from(format!("{{\"last_n\":{ANALYZE_RECORDS}}}"))],
    );
    template
        .headers
        .insert("x402", HeaderValue::from_static(PREMIUM_KEY));
    let (mut sender, conn) = connect(addr).await?;
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(runs);
    let mut server_ms = Vec::with_capacity(runs);
    let mut records_analyzed = 0;
    let calls = async {
        // Call 0 is untimed: it fills the reader pool and the page cache once.
        for i in 0..=runs {
            let started = Instant::now();
            let answer = exchange(&mut sender, template.request(0), true).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let failure = match answer {
                Ok(Answer::Ok(body)) => match serde_json::from_slice::<AnalyzeAnswer>(&body) {
                    Ok(a) => {
                        records_analyzed = a.records_analyzed;
                        if i > 0 {
                            latencies.push(ms);
                            server_ms.push(a.analysis_ms);
                        }
                        if a.records_analyzed == ANALYZE_RECORDS {
                            continue;
                        }
                        format!("analysed {} records", a.records_analyzed)
                    }
                    Err(e) => format!("unreadable answer: {e}"),
                },
                Ok(Answer::Failed(f)) => f,
                Err(e) => {
                    tally.errors += 1;
                    tally.note(format!("transport: {e}"));
                    break;
                }
            };
            tally.non_2xx += 1;
            tally.note(failure);
        }
        drop(sender);
    };
    let (_, ()) = tokio::join!(conn, calls);
    Ok(AnalyzeFigures {
        runs: latencies.len(),
        records_analyzed,
        median_ms: median(&latencies),
        p95_ms: nearest_rank_percentile(&latencies, 0.95),
        max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
        server_analysis_median_ms: median(&server_ms),
        failures: tally.non_2xx + tally.errors,
        first_failure: tally.first_failure,
    })
}

#[cfg(test)]
mod tests;
