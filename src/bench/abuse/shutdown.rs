//! `shutdown`: `serve all` with slow clients on both listeners, then SIGTERM.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{AbuseOptions, Error, REQUEST_TIMEOUT, ServerProcess, authority};

/// How long past the deadline the child may run before it is killed (and the run fails).
const KILL_AFTER: Duration = Duration::from_secs(30);

/// What SIGTERM did.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownFigures {
    /// Slow clients connected when SIGTERM was sent.
    pub slow_clients: usize,
    /// Of those: headers without the blank line / an unfinished chunked body / idle after a
    /// complete request.
    pub half_sent_headers: usize,
    /// See `half_sent_headers`.
    pub unfinished_bodies: usize,
    /// See `half_sent_headers`.
    pub idle_keep_alive: usize,
    /// Seconds from SIGTERM to the process's exit.
    pub exit_seconds: f64,
    /// Its exit code (`None`: killed after the deadline plus a grace, or by a signal).
    pub exit_code: Option<i32>,
}

pub(super) async fn run(opts: &AbuseOptions, dir: &Path) -> Result<ShutdownFigures, Error> {
    let timeout = humantime::format_duration(opts.shutdown_timeout).to_string();
    let args: Vec<OsString> = vec![
        "all".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--distributor-bind".into(),
        "127.0.0.1:0".into(),
        "--db".into(),
        dir.join("collector.db").into(),
        "--distributor-db".into(),
        dir.join("distributor.db").into(),
        "--shutdown-timeout".into(),
        timeout.into(),
    ];
    let server = ServerProcess::start_serve(dir, &args, &[], 2).await?;
    let targets: Vec<String> = server
        .http_urls
        .iter()
        .map(|u| authority(u).to_owned())
        .collect();
    let mut clients = Vec::with_capacity(opts.slow_clients);
    let mut figures = ShutdownFigures {
        slow_clients: opts.slow_clients,
        half_sent_headers: 0,
        unfinished_bodies: 0,
        idle_keep_alive: 0,
        exit_seconds: f64::NAN,
        exit_code: None,
    };
    for i in 0..opts.slow_clients {
        let server_index = i % targets.len();
        let addr = &targets[server_index];
        // The collector reads bodies on /ingest, the distributor on /publish.
        let route = if server_index == 0 {
            "/ingest"
        } else {
            "/publish"
        };
        let (how, kind) = match (i / targets.len()) % 3 {
            0 => ("half", &mut figures.half_sent_headers),
            1 => ("body", &mut figures.unfinished_bodies),
            _ => ("idle", &mut figures.idle_keep_alive),
        };
        *kind += 1;
        clients.push(slow_client(addr, route, how).await?);
    }
    // Everyone else is still served.
    let health = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::Request(e.to_string()))?
        .get(format!("{}/health", server.http_url))
        .send()
        .await
        .map_err(|e| Error::Request(format!("GET /health before SIGTERM: {e}")))?;
    if !health.status().is_success() {
        return Err(Error::Request(format!(
            "GET /health before SIGTERM answered {}",
            health.status()
        )));
    }
    let (took, status) = server.terminate(opts.shutdown_timeout + KILL_AFTER).await?;
    figures.exit_seconds = took.as_secs_f64();
    figures.exit_code = status.and_then(|s| s.code());
    drop(clients);
    Ok(figures)
}

/// A client that sent part of a request (`half`, `body`) or a whole one and then went quiet
/// on a kept-alive connection (`idle`).
async fn slow_client(addr: &str, route: &str, how: &str) -> Result<TcpStream, Error> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| Error::Request(format!("connecting to {addr}: {e}")))?;
    let bytes = match how {
        "half" => format!("POST {route} HTTP/1.1\r\nHost: bench\r\nContent-Type: applic"),
        "body" => format!(
            "POST {route} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n8\r\n{{\"kind\":\r\n"
        ),
        _ => "GET /health HTTP/1.1\r\nHost: bench\r\n\r\n".to_owned(),
    };
    s.write_all(bytes.as_bytes())
        .await
        .map_err(|e| Error::Request(format!("writing to {addr}: {e}")))?;
    Ok(s)
}
