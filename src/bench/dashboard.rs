//! The benchmark behind `phoenix bench dashboard`: a scratch store filled with millions of
//! generated events through its own writer (as `bench query` fills it), a scratch update log
//! with a few published updates and one stored insight, then the web dashboard served with
//! the collector in process: every page's latency over one keep-alive connection, the live
//! stream's time to its first event, and the process CPU each open live page costs.
//!
//! Runs on SQLite in a scratch directory, removed at the end unless kept.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::StatusCode;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::load::{Answer, Tally, connect, exchange};
use super::query::{FillFigures, fill, fill_orchs, fill_record};
use super::*;
use crate::core::collector::AnalyzeRequest;
use crate::core::dashboard::{self, Dashboard, LIVE_EVERY, Updates};
use crate::core::distributor::{self, DistributorConfig, LogOptions, SqliteUpdateLog};
use crate::core::updates::PublishRequest;

/// Untimed requests before each page's timed ones (connection, caches, statements).
const WARMUP_REQUESTS: usize = 3;
/// Updates published to the scratch log (the last one a rollback).
const UPDATES: usize = 20;
/// Records the last `analyze` looks at, so the Insights page has one.
const INSIGHT_RECORDS: i64 = 500;
/// The live page whose cost is measured.
const STREAM_PATH: &str = "/ui/stream?page=fleet";
/// One record is written this often while the stream cost is measured (with and without
/// streams alike), so every render has something new to send, as on a live fleet.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for a stream's first event.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The p95 every page must stay under, ms.
pub const P95_TARGET_MS: f64 = 200.0;
/// The process CPU one open live page may cost, percent of a core.
pub const STREAM_CPU_TARGET_PERCENT: f64 = 1.0;

/// What a dashboard benchmark run does.
#[derive(Debug, Clone, Serialize)]
pub struct DashboardOptions {
    /// Events the store is filled with.
    pub events: usize,
    /// Timed requests per page (after [`WARMUP_REQUESTS`] untimed ones), and stream
    /// connections timed to their first event.
    pub requests: usize,
    /// Live Fleet pages open at once while the stream cost is measured.
    pub streams: usize,
    /// Seconds of each CPU window: without streams, then with them.
    pub stream_seconds: u64,
    /// Leave the filled store behind instead of removing it.
    #[serde(skip)]
    pub keep: bool,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            events: 10_000_000,
            requests: 20,
            streams: 10,
            stream_seconds: 20,
            keep: false,
        }
    }
}

impl DashboardOptions {
    pub(super) fn validate(&self) -> Result<(), Error> {
        if [
            self.events,
            self.requests,
            self.streams,
            self.stream_seconds as usize,
        ]
        .contains(&0)
        {
            return Err(Error::Options(
                "events, requests, streams and stream seconds must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What the pages have to show besides the telemetry.
#[derive(Debug, Clone, Serialize)]
pub struct Content {
    /// Updates published to the scratch log.
    pub updates: usize,
    /// The one whose page is timed.
    pub update_id: String,
    /// The stored insight.
    pub insight_id: String,
    /// Records it analysed.
    pub insight_records: usize,
}

/// One page's latencies, one request at a time on one keep-alive connection.
#[derive(Debug, Clone, Serialize)]
pub struct PageFigures {
    /// Short name (the live stream's `page=`, or `privacy`).
    pub name: &'static str,
    /// Path and query string.
    pub path: String,
    /// What a body must contain to count as the page.
    pub marker: String,
    /// Timed requests that succeeded.
    pub requests: usize,
    /// Median round trip, ms.
    pub p50_ms: f64,
    /// 95th percentile round trip (nearest rank), ms.
    pub p95_ms: f64,
    /// Slowest round trip, ms.
    pub max_ms: f64,
    /// Mean body, bytes.
    pub mean_bytes: f64,
    /// Failed requests (not 200, no marker, transport), warm-up included.
    pub failures: u64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// Connect → first `fragments` event of a live page, a new connection each time.
#[derive(Debug, Clone, Serialize)]
pub struct FirstEventFigures {
    /// The stream's path.
    pub path: &'static str,
    /// Connections that got their first event.
    pub samples: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile (nearest rank), ms.
    pub p95_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Connections that got no first event.
    pub failures: u64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// What open live pages cost the process: CPU over a window without streams, then over one
/// as long with `streams` open and read.
#[derive(Debug, Clone, Serialize)]
pub struct StreamCost {
    /// The stream's path.
    pub path: &'static str,
    /// Streams open during the second window.
    pub streams: usize,
    /// Length of each window, s (measured).
    pub baseline_seconds: f64,
    /// Length of the window with streams, s (measured).
    pub with_streams_seconds: f64,
    /// How often the dashboard renders a live page again, s.
    pub live_every_secs: f64,
    /// Records written per second during both windows (so renders have news to send).
    pub trickle_per_sec: f64,
    /// Cores the process used without streams (the trickle, timers, the runtime).
    pub baseline_cores: f64,
    /// Cores it used with the streams open (this process reads them too).
    pub with_streams_cores: f64,
    /// `(with − baseline) / streams × 100`: percent of a core per open page.
    pub cpu_percent_per_page: f64,
    /// Renders each stream could have had in the window (`seconds / live_every`).
    pub renders_per_stream: f64,
    /// `fragments` events received per stream in the window: fewest.
    pub events_per_stream_min: u64,
    /// Mean.
    pub events_per_stream_mean: f64,
    /// Most.
    pub events_per_stream_max: u64,
    /// Mean `fragments` data per event, bytes.
    pub mean_event_bytes: f64,
    /// Streams that could not be opened, ended early or sent a `problem`, and trickle
    /// writes that failed.
    pub failures: u64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// Everything one dashboard benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct DashboardReport {
    /// Where it ran.
    pub machine: Machine,
    /// `sqlite`.
    pub backend: &'static str,
    /// How it ran.
    pub options: DashboardOptions,
    /// Where the filled store was left (`--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// Filling the store.
    pub fill: FillFigures,
    /// The updates and insight the pages show.
    pub content: Content,
    /// Each page's latencies.
    pub pages: Vec<PageFigures>,
    /// The Fleet stream's first event.
    pub first_event: FirstEventFigures,
    /// What open Fleet pages cost.
    pub stream: StreamCost,
    /// `p95 < 200 ms` for each page, and `< 1 %` of a core per open page.
    pub targets: Vec<TargetCheck<String>>,
    /// Requests or streams that failed; a run with any is not trustworthy.
    pub failures: Vec<String>,
}

/// Fills a scratch store, publishes updates, stores an insight, and measures the dashboard
/// over it; `progress` hears what happens.
pub async fn run(
    opts: &DashboardOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DashboardReport, Error> {
    opts.validate()?;
    let machine = Machine::current();
    let scratch = ScratchDir::create()?;
    let path = scratch.0.join("collector.db");
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn TelemetryStore> = Arc::new(SqliteStore::open(
        &StoreOptions::new(&path),
        metrics.store.clone(),
    )?);
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let orchs = fill_orchs(&anonymizer);
    let fill = fill(&store, opts.events, orchs.clone(), progress).await?;

    progress(&format!(
        "publishing {UPDATES} updates to a scratch update log"
    ));
    let (updates, update_ids) = publish_updates(&scratch.0, anonymizer.clone()).await?;
    let state = AppState::new(
        store.clone(),
        anonymizer,
        CollectorConfig::default(),
        metrics,
    )?;
    progress(&format!(
        "storing an insight over the last {INSIGHT_RECORDS} records"
    ));
    let insight = collector::run_analysis(
        &state,
        AnalyzeRequest {
            last_n: Some(INSIGHT_RECORDS),
            ..AnalyzeRequest::default()
        },
        None,
    )
    .await
    .map_err(|e| Error::Setup(format!("storing an insight: {}", e.detail)))?;
    // The one in the middle: neither the newest nor the rolled-back one.
    let update_id = update_ids[UPDATES / 2].clone();
    let content = Content {
        updates: update_ids.len(),
        update_id: update_id.clone(),
        insight_id: insight.id.clone(),
        insight_records: insight.records_analyzed,
    };

    let d = Dashboard::new(state.clone(), Updates::Local(updates), false);
    let extra = collector::Extra {
        routes: dashboard::router(d.clone()),
        on_shutdown: Box::new(move || d.stop_streams()),
    };
    let server = InProcess::start_app(state, Some(extra)).await?;
    let addr = server.addr;
    let specs = [
        ("fleet", "/".to_owned(), r#"id="events-hour""#.to_owned()),
        (
            "insights",
            "/ui/insights".to_owned(),
            format!(r#"id="insight-{}""#, insight.id),
        ),
        (
            "updates",
            "/ui/updates".to_owned(),
            r#"id="updates-table""#.to_owned(),
        ),
        (
            "update",
            format!("/ui/updates/{update_id}"),
            r#"id="count-targeted""#.to_owned(),
        ),
        (
            "privacy",
            "/ui/privacy".to_owned(),
            r#"id="pii-types""#.to_owned(),
        ),
    ];
    let measured = async {
        progress(&format!(
            "GET {}, {} requests each after {WARMUP_REQUESTS} warm-ups",
            specs
                .iter()
                .map(|s| s.1.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            opts.requests
        ));
        let pages = time_pages(addr, &specs, opts.requests).await?;
        progress(&format!(
            "GET {STREAM_PATH}: connect → first event, {} connections",
            opts.requests
        ));
        let first_event = time_first_events(addr, opts.requests).await;
        let stream = stream_cost(addr, &store, &orchs, opts, progress).await;
        Ok::<_, Error>((pages, first_event, stream))
    }
    .await;
    let stopped = server.stop().await;
    let (pages, first_event, stream) = measured?;
    stopped?;

    let mut failures = Vec::new();
    for p in &pages {
        if p.failures > 0 {
            failures.push(format!(
                "{} ({}): {} failed requests; first: {}",
                p.name,
                p.path,
                p.failures,
                p.first_failure.as_deref().unwrap_or("-")
            ));
        }
    }
    if first_event.failures > 0 {
        failures.push(format!(
            "{STREAM_PATH}: {} connections without a first event; first: {}",
            first_event.failures,
            first_event.first_failure.as_deref().unwrap_or("-")
        ));
    }
    if stream.failures > 0 {
        failures.push(format!(
            "stream cost: {} failed streams or writes; first: {}",
            stream.failures,
            stream.first_failure.as_deref().unwrap_or("-")
        ));
    }
    let mut targets: Vec<_> = pages
        .iter()
        .map(|p| {
            TargetCheck::new(
                format!("{}_p95_ms", p.name),
                p.p95_ms,
                Bound::Below,
                P95_TARGET_MS,
            )
        })
        .collect();
    targets.push(TargetCheck::new(
        "stream_cpu_percent_per_page".to_owned(),
        stream.cpu_percent_per_page,
        Bound::Below,
        STREAM_CPU_TARGET_PERCENT,
    ));
    let kept = opts.keep.then(|| {
        scratch.keep();
        path.display().to_string()
    });
    Ok(DashboardReport {
        machine,
        backend: "sqlite",
        options: opts.clone(),
        kept,
        fill,
        content,
        pages,
        first_event,
        stream,
        targets,
        failures,
    })
}

/// A scratch distributor over an update log in `dir`, with [`UPDATES`] published through
/// its service: prompt, model and patch tweaks, fleet-wide and targeted, some partly rolled
/// out, the last one a rollback. Returns it and the updates' ids, oldest first.
async fn publish_updates(
    dir: &Path,
    anonymizer: Anonymizer,
) -> Result<(distributor::AppState, Vec<String>), Error> {
    let setup = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| Error::Setup(format!("{what}: {e}"))
    };
    let log = SqliteUpdateLog::open(&LogOptions::new(dir.join("distributor.db")))
        .map_err(|e| setup("opening the scratch update log")(&e))?;
    let state = distributor::AppState::over(
        Arc::new(log),
        anonymizer,
        DistributorConfig::default(),
        Arc::new(distributor::Metrics::default()),
    )
    .await
    .map_err(|e| setup("setting up the scratch distributor")(&e))?;
    let mut ids: Vec<String> = Vec::with_capacity(UPDATES);
    for i in 0..UPDATES {
        let req = update_request(i, &ids);
        let published = state
            .service
            .publish(req)
            .await
            .map_err(|e| setup(&format!("publishing update {i}"))(&e))?;
        ids.push(published.update_id);
    }
    Ok((state, ids))
}

/// The `i`-th update published; `earlier` are the ids of those before it.
pub(super) fn update_request(i: usize, earlier: &[String]) -> PublishRequest {
    let (update_type, payload) = if i + 1 == UPDATES && !earlier.is_empty() {
        (
            "rollback",
            serde_json::json!({ "update_id": earlier[earlier.len() / 4] }),
        )
    } else {
        match i % 3 {
            0 => (
                "prompt_tweak",
                serde_json::json!({ "default_prompt": format!("Be brief (bench prompt {i}).") }),
            ),
            1 => (
                "model_tweak",
                serde_json::json!({ "default_model": (["gpt-4o-mini", "claude-haiku"][i % 2]) }),
            ),
            _ => (
                "json_patch",
                serde_json::json!({ "patch": [{
                    "op": "replace",
                    "path": "/overrides/default_prompt",
                    "value": format!("Patched prompt {i}"),
                }] }),
            ),
        }
    };
    PublishRequest {
        target_agent_prefix: (i % 4 == 1).then(|| "code-gen".to_owned()),
        update_type: Some(update_type.to_owned()),
        payload: Some(payload),
        rollout_percent: (i % 5 == 2).then(|| serde_json::json!(25)),
        ..PublishRequest::default()
    }
}

/// Each page of `specs` (`(name, path, marker)`), one after the other on one keep-alive
/// connection.
async fn time_pages(
    addr: SocketAddr,
    specs: &[(&'static str, String, String)],
    requests: usize,
) -> Result<Vec<PageFigures>, Error> {
    let (mut sender, conn) = connect(addr).await?;
    let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
    let mut pages = Vec::with_capacity(specs.len());
    let calls = async {
        for (name, path, marker) in specs {
            let mut tally = Tally::default();
            let mut latencies = Vec::with_capacity(requests);
            let mut bytes = 0usize;
            for i in 0..WARMUP_REQUESTS + requests {
                let mut req = Request::new(Full::new(Bytes::new()));
                *req.uri_mut() = path.parse().expect("generated paths are valid");
                req.headers_mut().insert(header::HOST, host.clone());
                let started = Instant::now();
                let answer = exchange(&mut sender, req, true).await;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let failure = match answer {
                    Ok(Answer::Ok(body)) => {
                        let text = String::from_utf8_lossy(&body);
                        if text.contains(marker.as_str()) {
                            if i >= WARMUP_REQUESTS {
                                latencies.push(ms);
                                bytes += body.len();
                            }
                            continue;
                        }
                        let start: String = text.chars().take(200).collect();
                        format!("the answer has no {marker}: {start}")
                    }
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
            let n = latencies.len();
            pages.push(PageFigures {
                name,
                path: path.clone(),
                marker: marker.clone(),
                requests: n,
                p50_ms: median(&latencies),
                p95_ms: nearest_rank_percentile(&latencies, 0.95),
                max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
                mean_bytes: bytes as f64 / n as f64,
                failures: tally.non_2xx + tally.errors,
                first_failure: tally.first_failure,
            });
        }
        drop(sender);
    };
    let (_, ()) = tokio::join!(conn, calls);
    Ok(pages)
}

/// `samples` connections to the Fleet stream one after the other, each timed from connect
/// to its first `fragments` event, then closed.
async fn time_first_events(addr: SocketAddr, samples: usize) -> FirstEventFigures {
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        match tokio::time::timeout(FIRST_EVENT_TIMEOUT, LiveStream::open(addr, STREAM_PATH)).await {
            Ok(Ok((_stream, ms))) => latencies.push(ms),
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.note(e);
            }
            Err(_) => {
                tally.errors += 1;
                tally.note(format!(
                    "no first event in {}s",
                    FIRST_EVENT_TIMEOUT.as_secs()
                ));
            }
        }
    }
    FirstEventFigures {
        path: STREAM_PATH,
        samples: latencies.len(),
        p50_ms: median(&latencies),
        p95_ms: nearest_rank_percentile(&latencies, 0.95),
        max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
        failures: tally.errors,
        first_failure: tally.first_failure,
    }
}

/// What one open stream received, counted as it goes.
#[derive(Default)]
struct StreamCounters {
    events: AtomicU64,
    bytes: AtomicU64,
}

/// The process CPU over `stream_seconds` without streams, then over as long with
/// `opts.streams` Fleet streams open and drained, a record written every
/// [`TRICKLE_EVERY`] throughout.
async fn stream_cost(
    addr: SocketAddr,
    store: &Arc<dyn TelemetryStore>,
    orchs: &Arc<Vec<String>>,
    opts: &DashboardOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> StreamCost {
    let window = Duration::from_secs(opts.stream_seconds);
    let (stop, stopped) = watch::channel(false);
    let trickle = tokio::spawn(trickle(
        store.clone(),
        orchs.clone(),
        opts.events,
        stopped.clone(),
    ));
    let mut tally = Tally::default();

    progress(&format!(
        "process CPU for {}s with no stream open",
        opts.stream_seconds
    ));
    let (baseline_cores, baseline_seconds) = cpu_window(window).await;

    progress(&format!(
        "opening {} streams of {STREAM_PATH}",
        opts.streams
    ));
    let mut streams = Vec::with_capacity(opts.streams);
    for _ in 0..opts.streams {
        match tokio::time::timeout(FIRST_EVENT_TIMEOUT, LiveStream::open(addr, STREAM_PATH)).await {
            Ok(Ok((stream, _))) => {
                let counters = Arc::new(StreamCounters::default());
                let task = tokio::spawn(stream.drain(counters.clone(), stopped.clone()));
                streams.push((counters, task));
            }
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.note(format!("opening a stream: {e}"));
            }
            Err(_) => {
                tally.errors += 1;
                tally.note(format!(
                    "opening a stream: no first event in {}s",
                    FIRST_EVENT_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let counts = |streams: &[(Arc<StreamCounters>, _)]| -> Vec<(u64, u64)> {
        streams
            .iter()
            .map(|(c, _)| {
                (
                    c.events.load(Ordering::Relaxed),
                    c.bytes.load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    progress(&format!(
        "process CPU for {}s with {} streams open",
        opts.stream_seconds,
        streams.len()
    ));
    let before = counts(&streams);
    let (with_streams_cores, with_streams_seconds) = cpu_window(window).await;
    let after = counts(&streams);
    let _ = stop.send(true);
    for (_, task) in streams {
        match task.await {
            Ok(None) => {}
            Ok(Some(why)) => {
                tally.errors += 1;
                tally.note(why);
            }
            Err(e) => {
                tally.errors += 1;
                tally.note(format!("a stream reader failed: {e}"));
            }
        }
    }
    let (written, trickle_failure) = match trickle.await {
        Ok(t) => t,
        Err(e) => (0, Some(format!("the trickle writer failed: {e}"))),
    };
    if let Some(f) = trickle_failure {
        tally.errors += 1;
        tally.note(f);
    }
    let per_stream: Vec<(u64, u64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
        .collect();
    let events: u64 = per_stream.iter().map(|p| p.0).sum();
    let bytes: u64 = per_stream.iter().map(|p| p.1).sum();
    let live_every = LIVE_EVERY.as_secs_f64();
    StreamCost {
        path: STREAM_PATH,
        streams: per_stream.len(),
        baseline_seconds,
        with_streams_seconds,
        live_every_secs: live_every,
        trickle_per_sec: written as f64 / (baseline_seconds + with_streams_seconds),
        baseline_cores,
        with_streams_cores,
        cpu_percent_per_page: cpu_percent_per_page(
            baseline_cores,
            with_streams_cores,
            per_stream.len(),
        ),
        renders_per_stream: with_streams_seconds / live_every,
        events_per_stream_min: per_stream.iter().map(|p| p.0).min().unwrap_or(0),
        events_per_stream_mean: events as f64 / per_stream.len() as f64,
        events_per_stream_max: per_stream.iter().map(|p| p.0).max().unwrap_or(0),
        mean_event_bytes: bytes as f64 / events as f64,
        failures: tally.errors,
        first_failure: tally.first_failure,
    }
}

/// Percent of a core each of `streams` open pages costs: the cores used with them open
/// over those used without, shared out. NaN without streams or CPU figures.
pub(super) fn cpu_percent_per_page(baseline_cores: f64, with_cores: f64, streams: usize) -> f64 {
    if streams == 0 {
        return f64::NAN;
    }
    (with_cores - baseline_cores) / streams as f64 * 100.0
}

/// Cores this process used over `window` (NaN without `/proc`), and the window's measured
/// length in seconds.
async fn cpu_window(window: Duration) -> (f64, f64) {
    let before = cpu::CpuTicks::now();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = cpu::CpuTicks::now();
    let seconds = started.elapsed().as_secs_f64();
    let cores = match (before, after) {
        (Some(b), Some(a)) => a.since(&b, seconds, 0).cores,
        _ => f64::NAN,
    };
    (cores, seconds)
}

/// Writes one generated record, received now, every [`TRICKLE_EVERY`] until `stop`; returns
/// how many were written and the first failure.
async fn trickle(
    store: Arc<dyn TelemetryStore>,
    orchs: Arc<Vec<String>>,
    first: usize,
    mut stop: watch::Receiver<bool>,
) -> (u64, Option<String>) {
    let mut every = tokio::time::interval(TRICKLE_EVERY);
    let mut written = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return (written, None),
        }
        let now = now_unix();
        let i = first + written as usize;
        let record = NewRecord {
            received_unix: now,
            ts_unix: now,
            ..fill_record(i, i + 1, now, &orchs)
        };
        let committed = match store.submit(vec![record]) {
            Ok(commit) => commit.wait().await,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            return (written, Some(format!("writing a trickle record: {e}")));
        }
        written += 1;
    }
}

/// One open `text/event-stream` answer, read event by event.
struct LiveStream {
    body: Incoming,
    parser: SseParser,
    _sender: http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl LiveStream {
    /// Connects, asks for `path` and reads up to the first `fragments` event; returns the
    /// stream and the ms that took.
    async fn open(addr: SocketAddr, path: &str) -> Result<(LiveStream, f64), String> {
        let started = Instant::now();
        let (mut sender, conn) = connect(addr).await.map_err(|e| e.to_string())?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = path.parse().map_err(|e| format!("{path}: {e}"))?;
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        req.headers_mut().insert(header::HOST, host);
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        }
        .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                conn.abort();
                return Err(format!("transport: {e}"));
            }
        };
        let status = resp.status();
        let event_stream = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut stream = LiveStream {
            body: resp.into_body(),
            parser: SseParser::default(),
            _sender: sender,
            conn,
        };
        if status != StatusCode::OK || !event_stream {
            return Err(format!("{status}, not an event stream"));
        }
        match stream.next_event().await? {
            Some(e) if e.name == "fragments" => {
                Ok((stream, started.elapsed().as_secs_f64() * 1000.0))
            }
            Some(e) => Err(format!(
                "{} event before the first fragments: {}",
                e.name, e.data
            )),
            None => Err("the stream ended before its first event".to_owned()),
        }
    }

    /// The next event; `None` when the stream ended.
    async fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(e) = self.parser.next_event() {
                return Ok(Some(e));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("transport: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data);
                    }
                }
            }
        }
    }

    /// Reads and counts `fragments` events until `stop`; says why when it ended before, or
    /// what the first `problem` event said.
    async fn drain(
        mut self,
        counters: Arc<StreamCounters>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<String> {
        let mut problem = None;
        loop {
            tokio::select! {
                _ = stop.changed() => return problem,
                event = self.next_event() => match event {
                    Ok(Some(e)) if e.name == "fragments" => {
                        counters.events.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(e.data.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Some(e)) => {
                        problem.get_or_insert(format!("{} event: {}", e.name, e.data));
                    }
                    Ok(None) => return Some("a stream ended while open".to_owned()),
                    Err(e) => return Some(e),
                },
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SseEvent {
    /// `event:` (`message` when there is none).
    pub(super) name: String,
    /// The `data:` lines, joined by newlines.
    pub(super) data: String,
}

/// Cuts a `text/event-stream` body, fed in chunks as they arrive, into events; comments
/// (keep-alives) are skipped.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event in what was fed, if there is one.
    pub(super) fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block[..end]);
            let (mut name, mut data): (Option<String>, Option<String>) = (None, None);
            for line in block.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "event" => name = Some(value.to_owned()),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    // Comments (`:` lines), `retry`, `id`.
                    _ => {}
                }
            }
            if name.is_none() && data.is_none() {
                continue;
            }
            return Some(SseEvent {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data: data.unwrap_or_default(),
            });
        }
    }
}
