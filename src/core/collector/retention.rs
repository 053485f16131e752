//! Retention: delete records older than N days in small batches, interleaved with ingest.

use std::time::Duration;

use super::AppState;
use crate::core::store::{Error, TelemetryStore};
use crate::core::telemetry::now_unix;

/// Rows deleted per writer job: small enough that ingest commits slot in between.
const PURGE_BATCH: usize = 2_000;

/// Deletes every record older than `days` days, one small batch at a time.
pub async fn purge_expired(
    store: &dyn TelemetryStore,
    days: u32,
    now: i64,
) -> Result<usize, Error> {
    let cutoff = now - i64::from(days) * 86_400;
    let mut total = 0;
    loop {
        let deleted = store.purge_before(cutoff, PURGE_BATCH)?.wait().await?;
        total += deleted;
        if deleted < PURGE_BATCH {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs retention now and then every `interval`, until `stop` turns true.
pub(super) async fn run(
    state: AppState,
    days: u32,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match purge_expired(state.store.as_ref(), days, now_unix()).await {
            Ok(0) => {}
            Ok(n) => {
                state.metrics.retention_deleted.inc_by(n as u64);
                tracing::info!(deleted = n, days, "retention removed old records");
            }
            Err(Error::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
