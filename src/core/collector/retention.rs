//! Retention: delete records and conversations older than N days in small batches,
//! interleaved with ingest.

use std::time::Duration;

use super::AppState;
use crate::core::store::{Commit, Error, TelemetryStore};
use crate::core::telemetry::now_unix;

/// Rows deleted per writer job: small enough that ingest commits slot in between.
const PURGE_BATCH: usize = 2_000;

/// Deletes every telemetry record older than `days` days, one small batch at a time.
pub async fn purge_expired(
    store: &dyn TelemetryStore,
    days: u32,
    now: i64,
) -> Result<usize, Error> {
    let cutoff = cutoff(days, now);
    purge_in_batches(|limit| store.purge_before(cutoff, limit)).await
}

/// Deletes every conversation that completed more than `days` days ago, in small batches.
pub async fn purge_expired_conversations(
    store: &dyn TelemetryStore,
    days: u32,
    now: i64,
) -> Result<usize, Error> {
    let cutoff = cutoff(days, now);
    purge_in_batches(|limit| store.purge_conversations_before(cutoff, limit)).await
}

fn cutoff(days: u32, now: i64) -> i64 {
    now - i64::from(days) * 86_400
}

async fn purge_in_batches(
    purge: impl Fn(usize) -> Result<Commit<usize>, Error>,
) -> Result<usize, Error> {
    let mut total = 0;
    loop {
        let deleted = purge(PURGE_BATCH)?.wait().await?;
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
        let (store, metrics, now) = (state.store.as_ref(), &state.metrics, now_unix());
        let passes = [
            (
                "records",
                purge_expired(store, days, now).await,
                &metrics.retention_deleted,
            ),
            (
                "conversations",
                purge_expired_conversations(store, days, now).await,
                &metrics.retention_deleted_conversations,
            ),
        ];
        for (what, outcome, deleted) in passes {
            match outcome {
                Ok(0) => {}
                Ok(n) => {
                    deleted.inc_by(n as u64);
                    tracing::info!(deleted = n, days, "retention removed old {what}");
                }
                Err(Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass over {what} failed; will retry")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
