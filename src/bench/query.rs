//! The benchmark behind `phoenix bench query`: a store filled with millions of generated
//! events through its own writer, then filtered `GET /telemetry` pages read over HTTP from an
//! in-process collector, one request at a time, with the bytes each event takes on disk.
//!
//! Runs on SQLite in a scratch directory, or on PostgreSQL in a scratch database made on the
//! given server; either is removed at the end unless kept.

use std::collections::VecDeque;

use deadpool_postgres::Pool;

use super::ingest::mix;
use super::load::{Answer, Tally, connect, exchange};
use super::*;
use crate::core::store::Commit;

/// Records per fill batch: one group commit of the store's writer each.
pub(super) const FILL_BATCH: usize = 50_000;
/// Fill batches queued at the writer at once (within its queue's 200 000 records).
pub(super) const FILL_IN_FLIGHT: usize = 3;
/// Seconds of received time the generated events spread over, ending now (the current
/// and previous day's partitions on PostgreSQL hold them).
pub(super) const FILL_SPAN_SECS: i64 = 6 * 3600;
/// Distinct orch ids of the generated fleet.
pub(super) const FILL_ORCHS: usize = 200;
pub(super) const FILL_AGENT_PATHS: &[&str] = &[
    "support",
    "support/billing",
    "support/refunds",
    "support/triage",
    "sales/leads",
    "sales/outreach",
    "code-gen",
    "code-gen/rust",
    "code-gen/python",
    "review",
    "search/web",
    "search/docs",
    "ops/deploy",
    "ops/oncall",
    "research/papers",
    "root",
];
/// Untimed requests before each query's timed ones (connection, caches, plans).
const WARMUP_REQUESTS: usize = 5;
/// Records per page of every query.
const PAGE: usize = 100;
/// The p50 every query must stay under, ms.
pub const P50_TARGET_MS: f64 = 20.0;

/// What a query benchmark run does.
#[derive(Debug, Clone, Serialize)]
pub struct QueryOptions {
    /// Events the store is filled with.
    pub events: usize,
    /// Timed requests per query, at most.
    pub requests: usize,
    /// Time after which a query stops before `requests` (after one timed request at least),
    /// so a slow query ends the run in minutes, not hours.
    #[serde(serialize_with = "secs")]
    pub query_budget: Duration,
    /// A PostgreSQL server to run on (in a scratch database of its own) instead of SQLite.
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Leave the filled store behind instead of removing it.
    #[serde(skip)]
    pub keep: bool,
}

impl QueryOptions {
    fn validate(&self) -> Result<(), Error> {
        if self.events == 0 || self.requests == 0 {
            return Err(Error::Options(
                "events and requests must be at least 1".to_owned(),
            ));
        }
        if self.query_budget.is_zero() {
            return Err(Error::Options(
                "the query time budget must be longer than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// How the store was filled.
#[derive(Debug, Clone, Serialize)]
pub struct FillFigures {
    /// Events written.
    pub events: usize,
    /// Seconds from the first batch to the last commit.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
}

/// What the filled store takes on disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskFigures {
    /// What `bytes` counts.
    pub measured: &'static str,
    /// Bytes of the telemetry data and its indexes.
    pub bytes: u64,
    /// `bytes / events`.
    pub bytes_per_event: f64,
    /// The whole scratch database (SQLite: the same files).
    pub database_bytes: u64,
}

/// One query's latencies over HTTP, one request at a time on one keep-alive connection.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    /// Short name.
    pub name: &'static str,
    /// The first timed request's path and query string.
    pub example: String,
    /// Timed requests that succeeded.
    pub requests: usize,
    /// Whether the query stopped before `requests` because its time budget ran out.
    pub budget_exhausted: bool,
    /// Median round trip, ms.
    pub p50_ms: f64,
    /// 99th percentile round trip (nearest rank), ms.
    pub p99_ms: f64,
    /// Slowest round trip, ms.
    pub max_ms: f64,
    /// Mean records per page.
    pub mean_records: f64,
    /// Mean response body, bytes.
    pub mean_response_bytes: f64,
    /// Failed requests, warm-up included.
    pub failures: u64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// Everything one query benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    /// Where it ran.
    pub machine: Machine,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// How it ran.
    pub options: QueryOptions,
    /// Set when the run was on PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRun>,
    /// Where the filled store was left (`--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// Filling the store.
    pub fill: FillFigures,
    /// Its size on disk.
    pub disk: DiskFigures,
    /// Each query's latencies.
    pub queries: Vec<QueryFigures>,
    /// `p50 < 20 ms` for each query.
    pub targets: Vec<TargetCheck<String>>,
    /// Queries that failed or matched nothing; a run with any is not trustworthy.
    pub failures: Vec<String>,
}

/// Fills a scratch store and measures the queries; `progress` hears what happens.
pub async fn run(
    opts: &QueryOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<QueryReport, Error> {
    opts.validate()?;
    let machine = Machine::current();
    let metrics = Arc::new(Metrics::default());
    let Some(url) = &opts.database_url else {
        let scratch = ScratchDir::create()?;
        let path = scratch.0.join("collector.db");
        let store = SqliteStore::open(&StoreOptions::new(&path), metrics.store.clone())?;
        let disk = Disk::Sqlite(&path);
        let mut report = measure(opts, machine, Arc::new(store), disk, metrics, progress).await?;
        if opts.keep {
            scratch.keep();
            report.kept = Some(path.display().to_string());
        }
        return Ok(report);
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
        let store = PgStore::start(pool.clone(), queue, metrics.store.clone());
        let disk = Disk::Postgres(&pool);
        measure(opts, machine, Arc::new(store), disk, metrics, progress).await
    }
    .await;
    let mut report = if opts.keep {
        let mut report = measured?;
        report.kept = Some(store::postgres::mask_password(&database.url));
        report
    } else {
        let dropped = database.drop_now().await;
        let report = measured?;
        dropped?;
        report
    };
    report.postgres = Some(postgres);
    Ok(report)
}

/// Where the bytes on disk are read from.
#[derive(Clone, Copy)]
enum Disk<'a> {
    /// The database file and its WAL.
    Sqlite(&'a Path),
    /// The telemetry partitions of this database.
    Postgres(&'a Pool),
}

async fn measure(
    opts: &QueryOptions,
    machine: Machine,
    store: Arc<dyn TelemetryStore>,
    disk: Disk<'_>,
    metrics: Arc<Metrics>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<QueryReport, Error> {
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let orchs = fill_orchs(&anonymizer);
    let fill = fill(&store, opts.events, orchs.clone(), progress).await?;
    if let Disk::Postgres(pool) = disk {
        // A live database's autovacuum would have analysed the new rows by now.
        progress("ANALYZE telemetry");
        analyze_telemetry(pool).await?;
    }
    let backend = match disk {
        Disk::Sqlite(_) => "sqlite",
        Disk::Postgres(_) => "postgres",
    };
    let disk = disk_use(disk, opts.events).await?;

    let state = AppState::new(
        store,
        anonymizer,
        CollectorConfig::default(),
        metrics.clone(),
    )?;
    let collector = InProcess::start(state).await?;
    let addr = collector.addr;
    let specs = [
        ("kind", format!("kind=llm_call&limit={PAGE}"), false),
        (
            "agent_prefix_level",
            format!("agent_prefix=support&level=error&limit={PAGE}"),
            false,
        ),
        ("orch", format!("orch={}&limit={PAGE}", orchs[7]), false),
        ("cursor_paging", format!("limit={PAGE}"), true),
    ];
    let mut queries = Vec::with_capacity(specs.len());
    let mut measured = Ok(());
    for (name, query, follow) in specs {
        progress(&format!(
            "GET /telemetry?{query}{}, {} requests",
            if follow { " then next_cursor" } else { "" },
            opts.requests
        ));
        match time_query(addr, name, &query, follow, opts).await {
            Ok(q) => queries.push(q),
            Err(e) => {
                measured = Err(e);
                break;
            }
        }
    }
    let stopped = collector.stop().await;
    measured?;
    stopped?;

    let mut failures = Vec::new();
    for q in &queries {
        if q.failures > 0 {
            failures.push(format!(
                "{}: {} failed requests; first: {}",
                q.name,
                q.failures,
                q.first_failure.as_deref().unwrap_or("-")
            ));
        } else if q.mean_records == 0.0 {
            failures.push(format!("{}: no record matched {}", q.name, q.example));
        }
    }
    Ok(QueryReport {
        machine,
        backend,
        options: opts.clone(),
        postgres: None,
        kept: None,
        targets: queries
            .iter()
            .map(|q| {
                TargetCheck::new(
                    format!("{}_p50_ms", q.name),
                    q.p50_ms,
                    Bound::Below,
                    P50_TARGET_MS,
                )
            })
            .collect(),
        fill,
        disk,
        queries,
        failures,
    })
}

/// The hashes of the [`FILL_ORCHS`] generated ORCHs, as `anonymizer` makes them.
pub(super) fn fill_orchs(anonymizer: &Anonymizer) -> Arc<Vec<String>> {
    Arc::new(
        (0..FILL_ORCHS)
            .map(|i| anonymizer.orch_hash(&format!("orch-bench-{i:03}")))
            .collect(),
    )
}

/// Writes `events` generated records through the store's writer, a few big batches queued
/// at a time, generated on a thread of their own meanwhile.
pub(super) async fn fill(
    store: &Arc<dyn TelemetryStore>,
    events: usize,
    orchs: Arc<Vec<String>>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FillFigures, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewRecord>>(2);
    let now = now_unix();
    let generator = tokio::task::spawn_blocking(move || {
        for start in (0..events).step_by(FILL_BATCH) {
            let end = (start + FILL_BATCH).min(events);
            let batch = (start..end)
                .map(|i| fill_record(i, events, now, &orchs))
                .collect();
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut last_said = started;
    let mut in_flight: VecDeque<Commit<()>> = VecDeque::new();
    let mut written = 0;
    progress(&format!("filling the store with {events} events"));
    while let Some(batch) = rx.recv().await {
        let n = batch.len();
        // At most FILL_IN_FLIGHT batches wait, within the writer's queue: never QueueFull.
        if in_flight.len() >= FILL_IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.wait().await?;
        }
        in_flight.push_back(store.submit(batch)?);
        written += n;
        if last_said.elapsed() >= Duration::from_secs(2) {
            last_said = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            progress(&format!(
                "filled {written}/{events} events ({:.0}/s)",
                written as f64 / secs
            ));
        }
    }
    for commit in in_flight {
        commit.wait().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    generator.await.map_err(|e| Error::Io {
        what: "generating events".to_owned(),
        source: std::io::Error::other(e),
    })?;
    progress(&format!(
        "filled {events} events in {seconds:.1}s ({:.0}/s)",
        events as f64 / seconds
    ));
    Ok(FillFigures {
        events,
        seconds,
        events_per_sec: events as f64 / seconds,
    })
}

/// The `i`-th of `n` generated events: a mix of kinds, levels, agent paths and orchs as a
/// fleet of [`FILL_ORCHS`] would send, received over the last [`FILL_SPAN_SECS`].
pub(super) fn fill_record(i: usize, n: usize, now: i64, orchs: &[String]) -> NewRecord {
    let h = mix(i);
    let received = now - FILL_SPAN_SECS + (i as i128 * FILL_SPAN_SECS as i128 / n as i128) as i64;
    let (kind, payload) = match h % 100 {
        0..35 => (
            "llm_call",
            format!(
                r#"{{"model":"{}","response_time":{:.1},"prompt_tokens":{},"completion_tokens":{},"love_score":{:.3}}}"#,
                ["gpt-4o-mini", "claude-haiku", "llama-3-8b"][(h >> 40) as usize % 3],
                20.0 + ((h >> 20) % 4000) as f64 / 10.0,
                50 + (h >> 32) % 4000,
                10 + (h >> 44) % 800,
                ((h >> 50) % 1000) as f64 / 1000.0,
            ),
        ),
        35..65 => (
            "tool_call",
            format!(
                r#"{{"tool":"{}","duration_ms":{},"ok":{}}}"#,
                ["http_get", "sql_query", "search", "send_email"][(h >> 40) as usize % 4],
                1 + (h >> 20) % 900,
                !(h >> 30).is_multiple_of(10),
            ),
        ),
        65..85 => (
            "skill_execution",
            format!(
                r#"{{"skill":"{}","duration_ms":{},"steps":{}}}"#,
                ["summarise", "triage", "refund", "draft_reply"][(h >> 40) as usize % 4],
                5 + (h >> 20) % 5000,
                1 + (h >> 30) % 12,
            ),
        ),
        85..95 => (
            "orch_heartbeat",
            format!(
                r#"{{"uptime_s":{},"agents":{}}}"#,
                (h >> 20) % 1_000_000,
                1 + (h >> 40) % 30
            ),
        ),
        _ => (
            "agent_spawn",
            format!(
                r#"{{"reason":"{}"}}"#,
                ["overflow", "schedule"][(h >> 40) as usize % 2]
            ),
        ),
    };
    let level = match (h >> 8) % 100 {
        0..3 => "error",
        3..10 => "warn",
        10..15 => "debug",
        _ => "info",
    };
    NewRecord {
        id: uuid::Uuid::now_v7().to_string(),
        ts_unix: received - ((h >> 16) % 5) as i64,
        received_unix: received,
        kind: kind.to_owned(),
        level: Some(level.to_owned()),
        orch_hash: Some(orchs[(h >> 24) as usize % orchs.len()].clone()),
        agent_path: Some(FILL_AGENT_PATHS[(h >> 12) as usize % FILL_AGENT_PATHS.len()].to_owned()),
        tags_json: match (h >> 36) % 4 {
            0 => None,
            r => Some(format!(r#"["bench","region-{r}"]"#)),
        },
        payload_json: payload,
    }
}

async fn analyze_telemetry(pool: &Pool) -> Result<(), Error> {
    let client = pool
        .get()
        .await
        .map_err(|e| Error::Store(store::postgres::Error::from(e).into()))?;
    client
        .batch_execute("ANALYZE telemetry")
        .await
        .map_err(|e| Error::Store(store::postgres::Error::from_pg(&e).into()))
}

async fn disk_use(disk: Disk<'_>, events: usize) -> Result<DiskFigures, Error> {
    let (measured, bytes, database_bytes) = match disk {
        Disk::Sqlite(path) => {
            let bytes = ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    std::fs::metadata(p).map_or(0, |m| m.len())
                })
                .sum();
            ("database file + WAL + shared memory", bytes, bytes)
        }
        Disk::Postgres(pool) => {
            let pg =
                |e: tokio_postgres::Error| Error::Store(store::postgres::Error::from_pg(&e).into());
            let client = pool
                .get()
                .await
                .map_err(|e| Error::Store(store::postgres::Error::from(e).into()))?;
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint, \
                     pg_database_size(current_database()) \
                     FROM pg_inherits WHERE inhparent = 'telemetry'::regclass",
                    &[],
                )
                .await
                .map_err(pg)?;
            let (telemetry, database): (i64, i64) = (row.get(0), row.get(1));
            (
                "telemetry partitions with their indexes and TOAST (pg_total_relation_size)",
                telemetry as u64,
                database as u64,
            )
        }
    };
    Ok(DiskFigures {
        measured,
        bytes,
        bytes_per_event: bytes as f64 / events as f64,
        database_bytes,
    })
}

#[derive(Deserialize)]
struct PageAnswer {
    count: usize,
    next_cursor: Option<i64>,
}

/// `requests` timed `GET /telemetry?{query}` (after untimed warm-ups) on one connection;
/// with `follow`, each request asks for the page after the previous one (back to the
/// newest page at the end).
async fn time_query(
    addr: SocketAddr,
    name: &'static str,
    query: &str,
    follow: bool,
    opts: &QueryOptions,
) -> Result<QueryFigures, Error> {
    let requests = opts.requests;
    let (mut sender, conn) = connect(addr).await?;
    let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(requests);
    let (mut records, mut bytes) = (0usize, 0usize);
    let mut example = String::new();
    let mut budget_exhausted = false;
    let calls = async {
        let mut cursor: Option<i64> = None;
        let mut timed_since = Instant::now();
        for i in 0..WARMUP_REQUESTS + requests {
            if i == WARMUP_REQUESTS {
                timed_since = Instant::now();
            } else if i > WARMUP_REQUESTS && timed_since.elapsed() >= opts.query_budget {
                budget_exhausted = true;
                break;
            }
            let path = match cursor {
                Some(c) if follow => format!("/telemetry?{query}&cursor={c}"),
                _ => format!("/telemetry?{query}"),
            };
            if i == WARMUP_REQUESTS {
                example = if follow {
                    format!("/telemetry?{query}&cursor=<next_cursor>")
                } else {
                    path.clone()
                };
            }
            let mut req = Request::new(Full::new(Bytes::new()));
            *req.uri_mut() = path.parse().expect("generated paths are valid");
            req.headers_mut().insert(header::HOST, host.clone());
            let started = Instant::now();
            let answer = exchange(&mut sender, req, true).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let failure = match answer {
                Ok(Answer::Ok(body)) => match serde_json::from_slice::<PageAnswer>(&body) {
                    Ok(page) => {
                        if i >= WARMUP_REQUESTS {
                            latencies.push(ms);
                            records += page.count;
                            bytes += body.len();
                            cursor = page.next_cursor;
                        }
                        continue;
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
    let n = latencies.len();
    Ok(QueryFigures {
        name,
        example,
        requests: n,
        budget_exhausted,
        p50_ms: median(&latencies),
        p99_ms: nearest_rank_percentile(&latencies, 0.99),
        max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
        mean_records: records as f64 / n as f64,
        mean_response_bytes: bytes as f64 / n as f64,
        failures: tally.non_2xx + tally.errors,
        first_failure: tally.first_failure,
    })
}
