//! The seed's heartbeat: an `orch_heartbeat` event POSTed to the collector's `/ingest` every
//! `ORCH_SLAVE_SYNC_INTERVAL` seconds, on its own task so a slow or absent collector never
//! delays update handling.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::shared::client::ApiClient;

/// What the heartbeat says about the subscriber.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Client of the collector; its timeout bounds one attempt.
    pub client: ApiClient,
    /// Raw orch id (the collector keeps only its hash).
    pub orch_id: String,
    /// Agent path.
    pub agent_path: String,
    /// Whether this ORCH runs in master mode.
    pub master_mode: bool,
    /// Version of the agent template the ORCH runs.
    pub template_version: String,
    /// Time between heartbeats.
    pub interval: Duration,
}

/// The subscriber's progress, as the update loop last published it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest seq seen.
    pub last_seq: u64,
    /// Last applied update.
    pub last_update_id: Option<String>,
}

/// The `/ingest` body of one heartbeat.
pub fn heartbeat_event(cfg: &HeartbeatConfig, progress: &Progress) -> Value {
    json!({
        "orch_id": cfg.orch_id,
        "agent_path": cfg.agent_path,
        "kind": "orch_heartbeat",
        "level": "info",
        "payload": {
            "master_mode": cfg.master_mode,
            "template_version": cfg.template_version,
            "interval_secs": cfg.interval.as_secs(),
            "last_seq": progress.last_seq,
            "last_update_id": progress.last_update_id,
        },
    })
}

/// Sends a heartbeat now and then every `interval` until the task is aborted. Failures are
/// logged and the next tick tries again; ticks missed while a request hangs are not
/// replayed in a burst.
pub fn spawn(cfg: HeartbeatConfig, progress: watch::Receiver<Progress>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(cfg.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let body = heartbeat_event(&cfg, &progress.borrow());
            match cfg.client.post_json::<Value>("/ingest", &body, &[]).await {
                Ok(_) => tracing::debug!(collector = cfg.client.base_url(), "heartbeat sent"),
                Err(e) => {
                    tracing::warn!(collector = cfg.client.base_url(), error = %e, "heartbeat not delivered; retrying at the next tick")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shared::client::ClientOptions;

    #[test]
    fn the_event_is_the_seed_heartbeat() {
        let client = ApiClient::new(&ClientOptions {
            base_url: "http://127.0.0.1:1".into(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let cfg = HeartbeatConfig {
            client,
            orch_id: "orch-1".into(),
            agent_path: "root".into(),
            master_mode: true,
            template_version: "1".into(),
            interval: Duration::from_secs(300),
        };
        let body = heartbeat_event(
            &cfg,
            &Progress {
                last_seq: 4,
                last_update_id: Some("u4".into()),
            },
        );
        assert_eq!(
            body,
            json!({"orch_id": "orch-1", "agent_path": "root", "kind": "orch_heartbeat", "level": "info",
                   "payload": {"master_mode": true, "template_version": "1", "interval_secs": 300, "last_seq": 4, "last_update_id": "u4"}})
        );
        let text = serde_json::to_string(&body).unwrap();
        crate::core::telemetry::decode_envelope(&text, 0, None).expect("the collector accepts it");
    }
}
