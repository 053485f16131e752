//! `slowloris`: connections that send a request's headers a byte at a time, reconnecting
//! when the server cuts them, while `GET /health` is timed on fresh connections.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{AbuseOptions, CONNECT_PARALLELISM, Error, REQUEST_TIMEOUT, authority, mb, stop};
use crate::core::shared::stats::nearest_rank_percentile;

/// A slowloris connection sends one more header byte this often.
const TRICKLE: Duration = Duration::from_secs(1);
/// Pause between two timed `/health` requests.
const HEALTH_INTERVAL: Duration = Duration::from_millis(20);

/// What the slowloris did to `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct SlowlorisFigures {
    /// Slowloris connections kept up (reopened when cut).
    pub connections: usize,
    /// Of them, open when `/health` timing started.
    pub connected: usize,
    /// Times the server cut a slowloris connection (the header timeout).
    pub cut_by_server: u64,
    /// `/health` requests timed.
    pub health_requests: usize,
    /// `/health` requests that failed (refused, reset, timed out or non-2xx).
    pub health_failures: usize,
    /// `/health` p50, ms (a fresh connection each: connect + request + answer).
    pub health_p50_ms: f64,
    /// `/health` p99, ms.
    pub health_p99_ms: f64,
    /// Slowest `/health`, ms.
    pub health_max_ms: f64,
    /// The collector's RSS at the end, MB.
    pub rss_mb: f64,
}

pub(super) async fn run(
    opts: &AbuseOptions,
    dir: &Path,
    failures: &mut Vec<String>,
) -> Result<SlowlorisFigures, Error> {
    let server = super::start_collector(dir).await?;
    let addr = authority(&server.http_url).to_owned();
    let stopping = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut lorises = JoinSet::new();
    for i in 0..opts.slowloris {
        lorises.spawn(slowloris(
            addr.clone(),
            i,
            slots.clone(),
            stopping.clone(),
            cut.clone(),
            connected.clone(),
        ));
    }
    // Let every connection open before timing.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while (connected.load(Ordering::Acquire) as usize) < opts.slowloris && Instant::now() < ready_by
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_at_start = connected.load(Ordering::Acquire) as usize;
    if open_at_start < opts.slowloris {
        failures.push(format!(
            "slowloris: only {open_at_start} of {} connections opened within 30s",
            opts.slowloris
        ));
    }

    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Request(e.to_string()))?;
    let url = format!("{}/health", server.http_url);
    let (mut latencies, mut failed, mut first_failure) = (Vec::new(), 0, None);
    let until = Instant::now() + opts.slowloris_duration;
    while Instant::now() < until {
        let started = Instant::now();
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(r) => {
                failed += 1;
                first_failure.get_or_insert(format!("HTTP {}", r.status()));
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e.to_string());
            }
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
    if let Some(why) = first_failure {
        failures.push(format!(
            "slowloris: {failed} /health requests failed; first: {why}"
        ));
    }
    stopping.store(true, Ordering::Release);
    lorises.shutdown().await;
    let rss_mb = mb(server.rss_kib()?);
    stop(server).await?;
    Ok(SlowlorisFigures {
        connections: opts.slowloris,
        connected: open_at_start,
        cut_by_server: cut.load(Ordering::Acquire),
        health_requests: latencies.len() + failed,
        health_failures: failed,
        health_p50_ms: nearest_rank_percentile(&latencies, 0.50),
        health_p99_ms: nearest_rank_percentile(&latencies, 0.99),
        health_max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
        rss_mb,
    })
}

/// One slowloris: open, send a request line and a header name, then a byte per
/// [`TRICKLE`]; when the server closes, count it and start over.
async fn slowloris(
    addr: String,
    i: usize,
    slots: Arc<Semaphore>,
    stopping: Arc<AtomicBool>,
    cut: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
) {
    let mut first = true;
    while !stopping.load(Ordering::Acquire) {
        let stream = {
            let _slot = slots.acquire().await;
            TcpStream::connect(&addr).await
        };
        let Ok(mut stream) = stream else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if first {
            connected.fetch_add(1, Ordering::AcqRel);
            first = false;
        }
        let head = format!("GET /health HTTP/1.1\r\nHost: bench\r\nX-Slowloris-{i}: ");
        if stream.write_all(head.as_bytes()).await.is_err() {
            cut.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        let mut sink = [0u8; 1024];
        loop {
            tokio::select! {
                r = stream.read(&mut sink) => {
                    // Anything back (a 408, EOF, a reset) means the server let go.
                    let _ = r;
                    cut.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                () = tokio::time::sleep(TRICKLE) => {
                    if stream.write_all(b"a").await.is_err() {
                        cut.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                }
            }
        }
    }
}
