//! `ping-flood`: a subscriber says hello, then sends 125-byte pings as fast as it can and
//! never reads; the distributor's RSS before and after, and whether it closed the peer.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::{AbuseOptions, Error, mb};
use crate::bench::fanout::process::Distributor;

/// Pings written before each flush.
const FLUSH_EVERY: u64 = 1000;
/// How long the flood may go on at most, whatever the count.
const FLOOD_LIMIT: Duration = Duration::from_secs(300);
/// How long reading may take, after the flood, to see the server's close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What the flood did.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    /// Pings the peer was to send.
    pub pings_planned: u64,
    /// Pings it wrote before its connection failed (or all of them).
    pub pings_sent: u64,
    /// Seconds the flood lasted.
    pub seconds: f64,
    /// Whether the distributor closed the connection.
    pub peer_closed: bool,
    /// The close code it sent, if the peer read one.
    pub close_code: Option<u16>,
    /// `phoenix_distributor_control_floods_total` afterwards.
    pub floods_counted: f64,
    /// The distributor's RSS with the subscriber connected, before the flood, MB.
    pub rss_before_mb: f64,
    /// Its RSS after the flood, MB.
    pub rss_after_mb: f64,
    /// `rss_after_mb - rss_before_mb`.
    pub rss_growth_mb: f64,
    /// Its peak RSS over the whole run (`VmHWM`), MB.
    pub peak_rss_mb: f64,
}

pub(super) async fn run(opts: &AbuseOptions, dir: &Path) -> Result<FloodFigures, Error> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let server = Distributor::start(dir, &token).await?;
    let ws_err =
        |e: tokio_tungstenite::tungstenite::Error| Error::Request(format!("WebSocket: {e}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url.as_str())
        .await
        .map_err(ws_err)?;
    let hello = serde_json::json!({"type": "hello", "orch_id": "bench-flooder", "agent_path": "root", "last_seq": 0});
    ws.send(Message::text(hello.to_string()))
        .await
        .map_err(ws_err)?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => {}
        other => return Err(Error::Request(format!("no hello_ack: {other:?}"))),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = server.rss_kib()?;

    let payload = axum::body::Bytes::from(vec![0x5a; 125]);
    let started = Instant::now();
    let mut sent = 0;
    let mut write_failed = false;
    while sent < opts.pings && started.elapsed() < FLOOD_LIMIT {
        if ws.feed(Message::Ping(payload.clone())).await.is_err() {
            write_failed = true;
            break;
        }
        sent += 1;
        if sent % FLUSH_EVERY == 0 && ws.flush().await.is_err() {
            write_failed = true;
            break;
        }
    }
    let _ = ws.flush().await;
    let seconds = started.elapsed().as_secs_f64();

    // Now read: the pongs that were sent, then the close (or the reset) if the server let go.
    let mut close_code = None;
    let mut ended = write_failed;
    let read_until = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match tokio::time::timeout_at(read_until, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Close(frame)))) => {
                close_code = frame.map(|f| u16::from(f.code));
                ended = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => {
                ended = true;
                break;
            }
        }
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib()?;
    let peak = server.peak_rss_kib()?;
    let metrics = reqwest::get(format!("{}/metrics", server.http_url))
        .await
        .map_err(|e| Error::Request(format!("GET /metrics: {e}")))?
        .text()
        .await
        .map_err(|e| Error::Request(format!("GET /metrics: {e}")))?;
    let floods_counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("phoenix_distributor_control_floods_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    super::stop(server).await?;
    Ok(FloodFigures {
        pings_planned: opts.pings,
        pings_sent: sent,
        seconds,
        peer_closed: ended,
        close_code,
        floods_counted,
        rss_before_mb: mb(rss_before),
        rss_after_mb: mb(rss_after),
        rss_growth_mb: mb(rss_after) - mb(rss_before),
        peak_rss_mb: mb(peak),
    })
}
