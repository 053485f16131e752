//! Connecting to NATS, the same way for every component that uses it (the distributors'
//! doorbell, the collectors' JetStream ingest buffer): a bounded first connect that names the
//! server on failure, then reconnects by themselves.

use std::time::Duration;

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
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| ConnectError {
            url: url.to_owned(),
            message: e.to_string(),
        })
}
