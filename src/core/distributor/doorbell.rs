//! Cross-node push for distributors sharing one update log: after each commit a node rings a
//! NATS subject, and every node that hears it reads what it has not announced yet from the
//! log ([`super::service::Service::follow_log`]). The log stays the one source of truth — its
//! seq order, its gap-free offsets — so a ring that is lost, late or repeated changes nothing
//! but latency: a look at the log on every reconnect to NATS and a slow poll catch what no
//! ring announced (NATS unreachable, a node that started late), and an update reaches each
//! subscriber exactly once either way.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Notify;

pub use crate::core::shared::nats::ConnectError;

/// A node's handle on the doorbell subject.
#[derive(Debug, Clone)]
pub struct Doorbell {
    client: async_nats::Client,
    subject: String,
    /// Notified at every (re)connect to NATS.
    connected: Arc<Notify>,
}

impl Doorbell {
    /// Connects to NATS at `url`; rings and listens on `{prefix}.distributor.log`. Reconnects by
    /// itself after the connection drops.
    pub async fn connect(url: &str, prefix: &str) -> Result<Doorbell, ConnectError> {
        let connected = Arc::new(Notify::new());
        let client = crate::core::shared::nats::connect_watched(
            url,
            "phoenix distributor",
            Some(connected.clone()),
        )
        .await?;
        Ok(Doorbell {
            client,
            subject: format!("{prefix}.distributor.log"),
            connected,
        })
    }

    /// The subject it rings and listens on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Tells the other nodes the log moved (to `seq`, for the curious). Best effort: a ring
    /// that cannot be sent is caught up by their poll.
    pub async fn ring(&self, seq: u64) {
        let sent = self
            .client
            .publish(self.subject.clone(), seq.to_string().into())
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not ring the distributor doorbell");
        }
    }

    /// Calls `heard` at every ring (this node's own too), and each time the connection to
    /// NATS is made again: rings sent while it was away are lost, so what they announced is
    /// looked for at once instead of at the next poll. Returns when the subscription cannot be
    /// made or ends (the client closed).
    pub async fn listen(&self, mut heard: impl FnMut()) -> Result<(), async_nats::SubscribeError> {
        let mut sub = self.client.subscribe(self.subject.clone()).await?;
        loop {
            tokio::select! {
                ring = sub.next() => match ring {
                    Some(_) => heard(),
                    None => return Ok(()),
                },
                () = self.connected.notified() => heard(),
            }
        }
    }

    /// Sends what is buffered (a last ring) before the process exits.
    pub async fn close(&self) {
        let _ = self.client.flush().await;
    }
}
