//! Connecting to NATS, the same way for every component that uses it (the distributors'
//! doorbell, the collectors' JetStream ingest buffer): a bounded first connect that names the
//! server on failure, then reconnects by themselves.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Event;
use tokio::sync::Notify;

/// How long connecting to NATS may take at start before the server gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why NATS could not be reached at start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot reach NATS at {url}: {message}")]
pub struct ConnectError {
    /// The server URL (no credentials are ever in it: NATS URLs carry none here).
    pub url: String,
    /// What went wrong.
    pub message: String,
}

/// Connects to the NATS server(s) at `url` (comma-separated for several) as `name`; the
/// client reconnects by itself after the connection drops.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    connect_watched(url, name, None).await
}

/// [`connect`], and `connected` (if any) is notified each time the connection is made, the
/// first time and after every reconnect: what a listener missed while NATS was away can be
/// caught up at once.
pub async fn connect_watched(
    url: &str,
    name: &str,
    connected: Option<Arc<Notify>>,
) -> Result<async_nats::Client, ConnectError> {
    let who = name.to_owned();
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback(move |event| {
            let (who, connected) = (who.clone(), connected.clone());
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("{who}: connected to NATS");
                        if let Some(connected) = connected {
                            connected.notify_one();
                        }
                    }
                    Event::Disconnected => {
                        tracing::warn!("{who}: lost the NATS connection; reconnecting")
                    }
                    Event::SlowConsumer(_) | Event::ServerError(_) | Event::ClientError(_) => {
                        tracing::warn!("{who}: NATS {event}")
                    }
                    other => tracing::info!("{who}: NATS {other}"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| ConnectError {
            url: url.to_owned(),
            message: e.to_string(),
        })
}
