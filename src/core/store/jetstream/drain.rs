//! A node's drain: pulls batches from the shared durable consumer, writes each into the
//! store as one group, and acks its messages only after the store's commit. While the store
//! cannot take them it keeps the batch, tells JetStream the work is in progress (so no other
//! node takes it over meanwhile) and tries again with backoff; a node that dies mid-batch
//! leaves its messages unacked, and JetStream delivers them again after the ack wait — to
//! whichever node is alive. The store skips records it already has, so a batch written
//! twice is stored once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Shared, wire};
use crate::core::store::TelemetryStore;
use crate::core::telemetry::NewRecord;
use crate::core::telemetry::conversation::NewConversation;

/// Messages JetStream sends ahead to this node at once.
const PULL_BATCH: usize = 64;
/// Most records one store write takes.
const MAX_BATCH_RECORDS: usize = 20_000;
/// Store writes in flight at once (the PostgreSQL writer overlaps as many commits).
const IN_FLIGHT: usize = 2;
/// First and longest pause between attempts when the store or NATS refuses.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// One store write: the messages it came from and their decoded contents.
#[derive(Default)]
struct Batch {
    messages: Vec<jetstream::Message>,
    records: Vec<NewRecord>,
    conversations: Vec<NewConversation>,
}

impl Batch {
    fn len(&self) -> usize {
        self.records.len() + self.conversations.len()
    }

    /// Decodes the messages again: their records went to an attempt the store refused.
    fn decode_again(&mut self) {
        for m in &self.messages {
            if m.subject.as_str().ends_with(".telemetry") {
                self.records
                    .extend(wire::decode_telemetry(&m.payload).unwrap_or_default());
            } else {
                self.conversations
                    .extend(wire::decode_conversations(&m.payload).unwrap_or_default());
            }
        }
    }

    /// Adds a message, or ends it (`Term`) when it is not one this buffer wrote, so a stray
    /// message never blocks the queue.
    async fn add(&mut self, message: jetstream::Message) {
        let subject = message.subject.as_str();
        let decoded = if subject.ends_with(".telemetry") {
            wire::decode_telemetry(&message.payload).map(|r| self.records.extend(r))
        } else if subject.ends_with(".conversations") {
            wire::decode_conversations(&message.payload).map(|c| self.conversations.extend(c))
        } else {
            Ok(())
        };
        match decoded {
            Ok(()) => self.messages.push(message),
            Err(e) => {
                tracing::error!(
                    subject,
                    error = %e,
                    "an ingest stream message is not a batch of records; dropping it from the stream"
                );
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
    }
}

/// Drains until `stop`; then finishes the writes in flight (or hands their messages back).
pub(super) async fn run(
    consumer: PullConsumer,
    store: Arc<dyn TelemetryStore>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut writes = JoinSet::new();
    let mut pause = BACKOFF.0;
    'pull: while !*stop.borrow() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull from the ingest stream; retrying");
                if wait(&mut stop, &mut pause).await {
                    break;
                }
                continue;
            }
        };
        loop {
            while writes.len() >= IN_FLIGHT {
                writes.join_next().await;
            }
            let first = tokio::select! {
                next = messages.next() => next,
                _ = stop.wait_for(|s| *s) => break 'pull,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "ingest stream pull interrupted; pulling again");
                    if wait(&mut stop, &mut pause).await {
                        break 'pull;
                    }
                    continue 'pull;
                }
                None => continue 'pull,
            };
            pause = BACKOFF.0;
            let mut batch = Batch::default();
            batch.add(first).await;
            // Whatever JetStream has already sent joins this write.
            while batch.len() < MAX_BATCH_RECORDS {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => batch.add(m).await,
                    _ => break,
                }
            }
            if batch.messages.is_empty() {
                continue;
            }
            let (store, shared, stop) = (store.clone(), shared.clone(), stop.clone());
            writes.spawn(write(batch, store, shared, stop));
        }
    }
    while writes.join_next().await.is_some() {}
}

/// Sleeps for `pause` (doubling it for next time) unless stopped first; true when stopped.
async fn wait(stop: &mut watch::Receiver<bool>, pause: &mut Duration) -> bool {
    let this = *pause;
    *pause = (*pause * 2).min(BACKOFF.1);
    let stopped = tokio::select! {
        _ = tokio::time::sleep(this) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// Writes one batch until the store commits it, then acks its messages. Stopped while the
/// store refuses: hands the messages back (`Nak`) for another node to take at once.
async fn write(
    mut batch: Batch,
    store: Arc<dyn TelemetryStore>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = BACKOFF.0;
    loop {
        match store_batch(&*store, &mut batch).await {
            Ok(()) => break,
            Err(e) => {
                if shared.store_writable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "the store refuses the ingest buffer's records; they wait in the \
                         stream and are written when it is back"
                    );
                }
                for m in &batch.messages {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
                if wait(&mut stop, &mut pause).await {
                    for m in &batch.messages {
                        let _ = m.ack_with(AckKind::Nak(None)).await;
                    }
                    return;
                }
            }
        }
    }
    if !shared.store_writable.swap(true, Ordering::Relaxed) {
        tracing::info!("the store takes the ingest buffer's records again");
    }
    for m in &batch.messages {
        if let Err(e) = m.ack().await {
            // Unacked, the message comes back after the ack wait; stored once all the same.
            tracing::debug!(error = %e, "could not ack an ingest stream message");
        }
    }
}

/// Hands the batch's records to the store (moved, not copied: a retry decodes them again
/// from the messages it still holds) and waits for the commits.
async fn store_batch(
    store: &dyn TelemetryStore,
    batch: &mut Batch,
) -> Result<(), crate::core::store::Error> {
    if batch.len() == 0 {
        batch.decode_again();
    }
    let records = std::mem::take(&mut batch.records);
    let conversations = std::mem::take(&mut batch.conversations);
    let telemetry = (!records.is_empty())
        .then(|| store.submit(records))
        .transpose()?;
    let conversations = (!conversations.is_empty())
        .then(|| store.submit_conversations(conversations))
        .transpose()?;
    if let Some(c) = telemetry {
        c.wait().await?;
    }
    if let Some(c) = conversations {
        c.wait().await?;
    }
    Ok(())
}
