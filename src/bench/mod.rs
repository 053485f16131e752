//! The load benchmark behind `phoenix bench ingest`: one in-process collector, a keep-alive
//! HTTP/1.1 load generator on the same runtime, and this machine's HTTP and storage ceilings
//! measured in the same run, so ingest rates are judged against what the machine can do.
//!
//! Outside the domain: uses `core` (collector, distributor, store, telemetry, updates, the PII
//! redactor) as a user of the library would; nothing in `core` uses `bench`.
//!
//! Speed targets live here and are checked by this benchmark, never by timed tests.

pub mod abuse;
pub mod cluster;
pub mod cpu;
pub mod dashboard;
pub mod fanout;
pub mod otlp;
pub mod pii_eval;

mod ingest;
mod load;
pub mod query;
mod scratch;

pub use ingest::run;
use scratch::{ScratchDatabase, ScratchDir};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize, Serializer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::core::collector::{self, AppState, CollectorConfig, Limits, Metrics};
use crate::core::shared::anonymize::Anonymizer;
pub use crate::core::shared::stats::median;
use crate::core::shared::stats::nearest_rank_percentile;
use crate::core::store::postgres::PgStore;
use crate::core::store::{self, OpenOptions, SqliteStore, StoreOptions, TelemetryStore};
use crate::core::telemetry::{BodyFormat, NewRecord, TelemetryEnvelope, now_unix, parse_body};

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
    /// A PostgreSQL server to run on (in a scratch database of its own) instead of SQLite.
    #[serde(skip)]
    pub database_url: Option<String>,
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
            database_url: None,
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
    #[error("storage ceiling: {0}")]
    Ceiling(store::Error),
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
    /// What the benchmark puts in place before measuring (updates, an insight) failed.
    #[error("{0}")]
    Setup(String),
    /// The collector did not stop cleanly.
    #[error("the collector did not shut down cleanly: {0}")]
    Shutdown(String),
}

/// A collector serving `state` in this process on `127.0.0.1:0`, until [`InProcess::stop`].
pub(crate) struct InProcess {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    /// Binds and starts serving.
    pub(crate) async fn start(state: AppState) -> Result<InProcess, Error> {
        Self::start_app(state, None).await
    }

    /// The same, with `extra` routes (the dashboard) beside the collector's.
    pub(crate) async fn start_app(
        state: AppState,
        extra: Option<collector::Extra>,
    ) -> Result<InProcess, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("binding 127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(collector::serve_app(listener, None, state, extra, async {
            let _ = stopped.await;
        }));
        Ok(InProcess { addr, stop, server })
    }

    /// Shuts it down and waits, at most [`SHUTDOWN_GRACE`], until everything accepted is
    /// committed.
    pub(crate) async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, self.server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Shutdown(e.to_string())),
            Ok(Err(e)) => Err(Error::Shutdown(e.to_string())),
            Err(_) => Err(Error::Shutdown(format!(
                "still draining after {}s",
                SHUTDOWN_GRACE.as_secs()
            ))),
        }
    }
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

impl LoadFigures {
    /// What went wrong in scenario `name` of round `round`, when anything did: a run with
    /// failed requests has no trustworthy figures.
    pub fn failure(&self, name: &str, round: usize) -> Option<String> {
        (self.non_2xx + self.errors > 0).then(|| {
            format!(
                "{name} (round {round}): {} non-2xx, {} errors; first: {}",
                self.non_2xx,
                self.errors,
                self.first_failure.as_deref().unwrap_or("-")
            )
        })
    }
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

/// The storage ceiling's outcome: raw SQLite inserts, or raw PostgreSQL binary COPY.
#[derive(Debug, Clone, Serialize)]
pub struct StorageFigures {
    /// Rows written (in one transaction on SQLite).
    pub rows: usize,
    /// Rows per COPY transaction (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_transaction: Option<usize>,
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
    /// Raw inserts (SQLite) or binary COPY (PostgreSQL) of the same rows: the storage ceiling.
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

/// The targets on SQLite.
pub const TARGETS: &[(Target, Bound, f64)] = &[
    (Target::IngestSingleRate, Bound::AtLeast, 20_000.0),
    (Target::IngestSingleVsHealth, Bound::AtLeast, 0.40),
    (Target::IngestBatchRate, Bound::AtLeast, 200_000.0),
    (Target::IngestBatchVsStorage, Bound::AtLeast, 0.50),
    (Target::AnalyzeMedian, Bound::Below, 50.0),
];

/// The targets on PostgreSQL: against the ceilings of the same run, as absolute rates
/// depend on where the server runs.
pub const POSTGRES_TARGETS: &[(Target, Bound, f64)] = &[
    (Target::IngestSingleVsHealth, Bound::AtLeast, 0.30),
    (Target::IngestBatchVsStorage, Bound::AtLeast, 0.50),
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

/// Checks every one of `targets` against the summary.
pub fn evaluate_targets(s: &Summary, targets: &[(Target, Bound, f64)]) -> Vec<TargetCheck> {
    targets
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

/// Where a PostgreSQL run kept its data.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresRun {
    /// The server's URL as given, password masked.
    pub server: String,
    /// The scratch database made for the run, dropped at its end.
    pub scratch_database: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// Set when the run was on PostgreSQL (else on SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRun>,
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

#[cfg(test)]
mod tests;
