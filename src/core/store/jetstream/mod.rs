//! NATS JetStream as the collectors' durable ingest buffer, in front of a shared store
//! (PostgreSQL). [`BufferedStore`] is a [`TelemetryStore`]: a write is published to a
//! JetStream stream — one message per request, or per chunk of a large one, with a
//! `Nats-Msg-Id` derived from the record ids — and its commit resolves on the PubAck, so a
//! collector node may die at any moment without losing anything it acknowledged. Every node
//! also drains the stream ([`drain`]) through one durable consumer they share: whichever
//! node is alive moves records into the store in batches and acks the stream messages only
//! after the store's commit. A message delivered twice (a node died between commit and ack)
//! is stored once, by record id (`conversation_id` for conversations). Reads go straight to
//! the store.
//!
//! While the store is down nodes keep accepting into the stream; the drain retries and
//! catches up when it returns. The lag (stream messages not yet in the store) is in
//! [`BufferStatus`]. When the stream reaches its limits, JetStream refuses the publish and
//! ingest answers 429 with Retry-After ([`Error::BufferFull`]); when NATS cannot be reached,
//! 503 ([`Error::Backend`], transient) — never a silent drop.

mod drain;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conversations::{
    ConversationFilter, ConversationStore, ConversationStream, FilterCounts, ReadOrder,
};
use super::error::Error;
use super::telemetry::{Commit, InsightRecord, Page, TelemetryFilter, TelemetryStore};
use crate::core::shared::nats;
use crate::core::telemetry::NewRecord;
use crate::core::telemetry::conversation::NewConversation;

/// The durable consumer every node drains through.
pub const CONSUMER: &str = "store";
/// Room left in a message for its headers (`Nats-Msg-Id`) under the server's `max_payload`.
const HEADER_ROOM: usize = 512;
/// How often each node reads the stream's state for the lag figures.
const LAG_INTERVAL: Duration = Duration::from_millis(500);

/// How the buffer is set up.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// NATS server(s).
    pub url: String,
    /// First token of the subjects, and (made a valid name) of the stream's name.
    pub prefix: String,
    /// The stream's size limit in bytes; publishes beyond it are refused (429).
    pub max_bytes: i64,
    /// How long a delivered message may stay unacked before JetStream delivers it again
    /// (to any node): how soon a dead node's unfinished batch is taken over.
    pub ack_wait: Duration,
    /// How long a publish may wait for its PubAck before ingest answers 503.
    pub publish_timeout: Duration,
}

impl BufferOptions {
    /// Defaults for `url` and `prefix`: a 1 GiB stream, 30 s ack wait, 5 s PubAck timeout.
    pub fn new(url: &str, prefix: &str) -> Self {
        BufferOptions {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(5),
        }
    }

    /// The stream's name: the prefix with every character a stream name may not hold made `_`.
    pub fn stream_name(&self) -> String {
        let safe: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}_INGEST")
    }

    fn subject(&self, what: &str) -> String {
        format!("{}.ingest.{what}", self.prefix)
    }
}

/// The buffer's state, for `/health` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct BufferStatus {
    /// Stream name.
    pub stream: String,
    /// Stream messages not yet in the store (accepted, acknowledged, not yet drained).
    pub lag_messages: u64,
    /// Their bytes.
    pub lag_bytes: u64,
    /// The stream's byte limit.
    pub max_bytes: i64,
    /// Whether this node's last look at the stream succeeded.
    pub nats_reachable: bool,
    /// Whether this node's last write to the store succeeded.
    pub store_writable: bool,
}

/// Figures shared by the buffer's tasks.
#[derive(Debug)]
struct Shared {
    stream: String,
    max_bytes: i64,
    lag_messages: AtomicU64,
    lag_bytes: AtomicU64,
    nats_reachable: AtomicBool,
    store_writable: AtomicBool,
}

/// Why the buffer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS did not answer.
    #[error(transparent)]
    Connect(#[from] nats::ConnectError),
    /// NATS answered but the stream or consumer could not be made (no JetStream, limits).
    #[error("NATS at {url}: {what}: {message}")]
    JetStream {
        /// Server.
        url: String,
        /// What was being done.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// A [`TelemetryStore`] whose writes go through JetStream into `inner`.
pub struct BufferedStore {
    inner: Arc<dyn TelemetryStore>,
    js: jetstream::Context,
    client: async_nats::Client,
    telemetry_subject: String,
    conversations_subject: String,
    max_message: usize,
    shared: Arc<Shared>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for BufferedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedStore")
            .field("stream", &self.shared.stream)
            .finish_non_exhaustive()
    }
}

impl BufferedStore {
    /// Connects to NATS, makes (or updates) the stream and the shared durable consumer, and
    /// starts this node's drain into `inner` and its lag watch.
    pub async fn start(
        inner: Arc<dyn TelemetryStore>,
        opts: &BufferOptions,
    ) -> Result<Arc<BufferedStore>, StartError> {
        let client = nats::connect(&opts.url, "phoenix collector").await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(opts.publish_timeout);
        let failed = |what: &str, e: &dyn std::fmt::Display| StartError::JetStream {
            url: opts.url.clone(),
            what: what.to_owned(),
            message: e.to_string(),
        };
        let name = opts.stream_name();
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![opts.subject("*")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: opts.max_bytes,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        // Two nodes starting at once may both try to create it: the second attempt finds it.
        let mut made = js.create_or_update_stream(config.clone()).await;
        if made.is_err() {
            made = js.create_or_update_stream(config).await;
        }
        made.map_err(|e| failed(&format!("making the stream {name}"), &e))?;
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|e| failed(&format!("opening the stream {name}"), &e))?;
        let consumer_config = consumer::pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: opts.ack_wait,
            max_ack_pending: 1024,
            ..Default::default()
        };
        let mut made = stream
            .get_or_create_consumer(CONSUMER, consumer_config.clone())
            .await;
        if made.is_err() {
            made = stream
                .get_or_create_consumer(CONSUMER, consumer_config)
                .await;
        }
        let consumer: consumer::PullConsumer =
            made.map_err(|e| failed(&format!("making the consumer {CONSUMER} on {name}"), &e))?;
        let max_message = client.server_info().max_payload.saturating_sub(HEADER_ROOM);
        let shared = Arc::new(Shared {
            stream: name,
            max_bytes: opts.max_bytes,
            lag_messages: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            nats_reachable: AtomicBool::new(true),
            store_writable: AtomicBool::new(true),
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(drain::run(
                consumer,
                inner.clone(),
                shared.clone(),
                stopped.clone(),
            )),
            tokio::spawn(watch_lag(stream, shared.clone(), stopped)),
        ];
        Ok(Arc::new(BufferedStore {
            inner,
            js,
            client,
            telemetry_subject: opts.subject("telemetry"),
            conversations_subject: opts.subject("conversations"),
            max_message,
            shared,
            closed: AtomicBool::new(false),
            stop,
            tasks: std::sync::Mutex::new(tasks),
        }))
    }

    /// The largest message this buffer publishes (the server's `max_payload`, less headers).
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Publishes `chunks` on `subject` and resolves `Commit` once every one is PubAck'd.
    fn publish<T: Send + 'static>(
        &self,
        subject: &str,
        chunks: Vec<wire::Chunk>,
        done: T,
    ) -> Result<Commit<T>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (tx, commit) = Commit::channel();
        let js = self.js.clone();
        let subject = subject.to_owned();
        // A task of its own: a client that goes away mid-publish changes nothing.
        tokio::spawn(async move {
            let _ = tx.send(publish_chunks(&js, subject, chunks).await.map(|()| done));
        });
        Ok(commit)
    }
}

/// Publishes every chunk, then waits for every PubAck.
async fn publish_chunks(
    js: &jetstream::Context,
    subject: String,
    chunks: Vec<wire::Chunk>,
) -> Result<(), Error> {
    let mut acks = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let publish = jetstream::context::Publish::build()
            .message_id(chunk.msg_id)
            .payload(chunk.body.into());
        acks.push(
            js.send_publish(subject.clone(), publish)
                .await
                .map_err(publish_error)?,
        );
    }
    for ack in acks {
        ack.await.map_err(publish_error)?;
    }
    Ok(())
}

/// A refused publish as the storage error ingest answers with.
fn publish_error(e: jetstream::context::PublishError) -> Error {
    let refused = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(|js| (js.error_code(), js.to_string()));
    match (e.kind(), refused) {
        // "maximum bytes exceeded" / "maximum messages exceeded": the stream is full.
        (PublishErrorKind::Other, Some((code, detail)))
            if code == jetstream::ErrorCode::STREAM_STORE_FAILED
                || detail.contains("maximum bytes")
                || detail.contains("maximum messages") =>
        {
            Error::BufferFull(format!(
                "the ingest buffer (JetStream) is full: {detail}; retry later"
            ))
        }
        (kind, refused) => Error::Backend {
            backend: "nats",
            message: match refused {
                Some((_, detail)) => format!("JetStream refused the publish: {detail}"),
                None if kind == PublishErrorKind::StreamNotFound => {
                    "the ingest stream is gone (no stream takes its subject)".to_owned()
                }
                None => format!("publishing to JetStream: {e}"),
            },
            transient: true,
        },
    }
}

/// Reads the stream's state every [`LAG_INTERVAL`] until stopped.
async fn watch_lag(stream: stream::Stream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        match stream.get_info().await {
            Ok(info) => {
                shared
                    .lag_messages
                    .store(info.state.messages, Ordering::Relaxed);
                shared.lag_bytes.store(info.state.bytes, Ordering::Relaxed);
                shared.nats_reachable.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                if shared.nats_reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read the ingest stream's state");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[async_trait::async_trait]
impl TelemetryStore for BufferedStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error> {
        let chunks = wire::telemetry_chunks(&records, self.max_message)
            .map_err(|e| Error::TooLarge(e.to_string()))?;
        self.publish(&self.telemetry_subject, chunks, ())
    }

    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, Error> {
        self.inner.save_insight(insight)
    }

    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        self.inner.purge_before(cutoff, limit)
    }

    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error> {
        self.inner.query(filter, limit, cursor).await
    }

    async fn last_heartbeats(
        &self,
        orch_hashes: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, Error> {
        self.inner.last_heartbeats(orch_hashes).await
    }

    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, Error> {
        self.inner.insights(limit).await
    }

    async fn cells(
        &self,
        range: crate::core::store::rollup::CellRange,
    ) -> Result<Vec<crate::core::store::rollup::CellRow>, Error> {
        self.inner.cells(range).await
    }

    async fn orchs_seen(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::core::store::rollup::OrchSeen>, Error> {
        self.inner.orchs_seen(limit).await
    }

    async fn orch_health(
        &self,
        healthy_since: i64,
    ) -> Result<Vec<crate::core::store::rollup::OrchHealth>, Error> {
        self.inner.orch_health(healthy_since).await
    }

    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }

    async fn count(&self) -> Result<u64, Error> {
        self.inner.count().await
    }

    fn buffer_status(&self) -> Option<BufferStatus> {
        let s = &self.shared;
        Some(BufferStatus {
            stream: s.stream.clone(),
            lag_messages: s.lag_messages.load(Ordering::Relaxed),
            lag_bytes: s.lag_bytes.load(Ordering::Relaxed),
            max_bytes: s.max_bytes,
            nats_reachable: s.nats_reachable.load(Ordering::Relaxed),
            store_writable: s.store_writable.load(Ordering::Relaxed),
        })
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            let _ = task.await;
        }
        // The drain's last acks are buffered in the client: send them before the store goes.
        let _ = self.client.flush().await;
        self.inner.shutdown().await;
    }
}

#[async_trait::async_trait]
impl ConversationStore for BufferedStore {
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error> {
        let chunks = wire::conversation_chunks(&conversations, self.max_message)
            .map_err(|e| Error::TooLarge(e.to_string()))?;
        // Whether a conversation was stored before is the store's to say, after the drain;
        // here only a repeat within the batch is known. Either way it is stored once.
        let mut seen = std::collections::HashSet::new();
        let fresh = conversations
            .iter()
            .map(|c| seen.insert(c.conversation_id.as_str()))
            .collect();
        self.publish(&self.conversations_subject, chunks, fresh)
    }

    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, Error> {
        self.inner.purge_conversations_before(cutoff, limit)
    }

    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        self.inner.filter_counts(filter).await
    }

    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error> {
        self.inner.count_conversations(filter, order).await
    }

    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error> {
        self.inner.read_conversations(filter, order).await
    }
}
