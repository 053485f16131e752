//! The Synaptic Pulse distributor: a durable log of hot updates, fanned out over WebSocket to
//! the subscribed ORCHs that each update targets.
//!
//! [`router`] builds the routes over an [`AppState`]; [`serve`] runs them on a listener the
//! caller bound (tests bind `127.0.0.1:0`) until the shutdown future resolves, then closes
//! every subscriber with a close frame and commits every queued delivery and ack.
//!
//! The protocol is in [`crate::core::updates::protocol`]; targeting, tiers and rollout buckets in
//! [`crate::core::updates`]. An update is committed to the [`UpdateLog`] before it is
//! announced on the [`bus::Bus`] (today the in-process [`fanout::Hub`]), so a subscriber
//! either reads it from the log (replay, catch-up) or receives it live, never neither and
//! never both. Publish, widen and rollback live in the transport-free [`service`]; the HTTP
//! handlers and the WebSocket connections are adapters over it, the log trait and the bus.
//!
//! Depends on `core::store::update_log` (the log trait, never a backend's types),
//! `core::updates`, `core::server` and `core::shared` (and the NATS client, in
//! [`doorbell`]); the SQLite log is only re-exported for the callers that open one.

pub mod bus;
pub mod client;
pub mod doorbell;
pub mod fanout;
pub mod metrics;
mod publish;
mod query;
pub mod service;
mod subscribe;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use tokio::sync::{Notify, Semaphore, watch};

use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::server::{self, Listener, ServerLimits};
use crate::core::shared::agent_token::AgentKeys;
use crate::core::shared::anonymize::Anonymizer;

pub use crate::core::store::sqlite::update_log::{LogOptions, SqliteUpdateLog};
pub use crate::core::store::update_log::{Error, Position, StoredUpdate, UpdateLog};
pub use bus::Bus;
pub use fanout::Hub;
pub use metrics::Metrics;
pub use publish::{WidenRequest, Widened};
pub use query::{UpdateList, UpdateStatus, UpdateSummary, update_list, update_status};
pub use service::{Service, ServiceError};

/// How the distributor behaves, independent of where it listens.
#[derive(Debug, Clone)]
pub struct DistributorConfig {
    /// `X402` value (header or `x402` in hello) that unlocks premium updates.
    pub premium_key: Option<String>,
    /// Bearer token required by `POST /publish` and `POST /updates/{id}/widen`; `None`: open.
    /// It also shows every read in full (premium payloads included).
    pub admin_token: Option<String>,
    /// Whether `GET /updates*` and `GET /metrics` need the admin token (set off loopback).
    pub reads_need_token: bool,
    /// Checks the agent tokens that subscribers present in hello; `None`: a presented token
    /// cannot be checked and is refused.
    pub agent_keys: Option<AgentKeys>,
    /// Whether a hello without a valid agent token is refused (set off loopback).
    pub require_agent_tokens: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Live items the broadcast channel holds; a subscriber further behind is caught up from
    /// the log.
    pub live_capacity: usize,
    /// How long a new connection may take to send its hello.
    pub hello_timeout: Duration,
    /// Ping a connection after this long without hearing from it.
    pub ping_interval: Duration,
    /// Close a connection that has not answered a ping after this long.
    pub pong_timeout: Duration,
    /// Close a connection when one frame cannot be sent within this long (it resumes from its
    /// `last_seq` when it reconnects).
    pub send_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// Per-connection WebSocket read buffer (small: most frames are acks).
    pub read_buffer_bytes: usize,
    /// Log reads for replays and catch-ups that may run at once (a reconnect storm queues).
    pub replay_concurrency: usize,
    /// Control frames (pings, pongs) a subscriber may send per `control_window`; a peer
    /// sending more is flooding and is closed (1008).
    pub max_control_frames: u32,
    /// The window `max_control_frames` is counted over.
    pub control_window: Duration,
    /// Timeouts, connection cap, shutdown deadline and decompression budget of the server.
    pub server: ServerLimits,
    /// How often to look for what other processes sharing the log committed, and announce
    /// it to this process's subscribers (`None`: the log is this process's alone).
    pub follow_interval: Option<Duration>,
    /// The NATS doorbell the nodes sharing the log ring after each commit, so the others
    /// look at once instead of at their next `follow_interval`.
    pub doorbell: Option<doorbell::Doorbell>,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        DistributorConfig {
            premium_key: None,
            admin_token: None,
            reads_need_token: false,
            agent_keys: None,
            require_agent_tokens: false,
            max_body_bytes: 1024 * 1024,
            live_capacity: 1024,
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            read_buffer_bytes: 4 * 1024,
            replay_concurrency: 4,
            max_control_frames: 100,
            control_window: Duration::from_secs(10),
            server: ServerLimits::default(),
            follow_interval: None,
            doorbell: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Error::NotWider { .. } => {
                ApiError::bad_request("invalid_request", format!("field `rollout_percent`: {e}"))
            }
            Error::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the distributor is shutting down",
            )
            .retry_after(5),
            other => {
                tracing::error!(error = %other, "update log error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    other.to_string(),
                )
                .retry_after(5)
            }
        }
    }
}

/// Shared state of every handler and connection.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The durable update log.
    pub log: Arc<dyn UpdateLog>,
    /// Orch-id anonymiser (the collector's key, so hashes match telemetry).
    pub anonymizer: Anonymizer,
    /// Configuration.
    pub config: DistributorConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The live channel.
    pub bus: Arc<dyn Bus>,
    /// Publish, widen and rollback over the log and the bus.
    pub service: Service,
    replay_slots: Semaphore,
    connections: Connections,
    stop: watch::Sender<bool>,
    /// Set when the shutdown deadline has passed: connections drop without a close handshake.
    abort: watch::Sender<bool>,
    started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State over an open log, fanning out through an in-process [`Hub`] that starts where
    /// the log stands.
    pub async fn new(
        log: impl UpdateLog,
        anonymizer: Anonymizer,
        config: DistributorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        Self::over(Arc::new(log), anonymizer, config, metrics).await
    }

    /// [`AppState::new`] over a log already shared behind an `Arc`.
    pub async fn over(
        log: Arc<dyn UpdateLog>,
        anonymizer: Anonymizer,
        config: DistributorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let position = log.position().await?;
        let min_widened = log.min_widened_seq().await?;
        let bus = Arc::new(Hub::new(position, min_widened, config.live_capacity));
        Ok(Self::with_bus(log, bus, anonymizer, config, metrics))
    }

    /// State over an open log and a bus that already stands where the log does (another
    /// [`Bus`] than the in-process hub, e.g. one shared by several distributor processes).
    pub fn with_bus(
        log: Arc<dyn UpdateLog>,
        bus: Arc<dyn Bus>,
        anonymizer: Anonymizer,
        config: DistributorConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut service = Service::new(
            log.clone(),
            bus.clone(),
            anonymizer.clone(),
            metrics.clone(),
        );
        if let Some(bell) = &config.doorbell {
            service = service.ringing(bell.clone());
        }
        let (stop, _) = watch::channel(false);
        let (abort, _) = watch::channel(false);
        AppState(Arc::new(Inner {
            log,
            anonymizer,
            replay_slots: Semaphore::new(config.replay_concurrency.max(1)),
            config,
            metrics,
            bus,
            service,
            connections: Connections::default(),
            stop,
            abort,
            started: Instant::now(),
        }))
    }

    /// Subscribers connected now (including upgrades in progress).
    pub fn connected(&self) -> usize {
        self.connections.count.load(Ordering::Acquire)
    }

    /// Asks every subscriber connection to close.
    fn begin_shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once no subscriber connection is left.
    async fn connections_closed(&self) {
        loop {
            let idle = self.connections.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.connected() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Counts a connection until the guard is dropped.
    fn track_connection(&self) -> ConnectionGuard {
        self.connections.count.fetch_add(1, Ordering::AcqRel);
        self.metrics.subscribers.inc();
        ConnectionGuard(self.clone())
    }

    /// A slot for log reads: replays and catch-ups run a few at a time (a reconnect storm
    /// queues here). Hold it across the reads.
    async fn read_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        self.replay_slots.acquire().await.map_err(|_| Error::Closed)
    }
}

#[derive(Default)]
struct Connections {
    count: AtomicUsize,
    idle: Notify,
}

/// Keeps a connection counted (and the server's drain waiting) while alive.
struct ConnectionGuard(AppState);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.subscribers.dec();
        if self.0.connections.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.connections.idle.notify_waiters();
        }
    }
}

/// All distributor routes. Publishing and widening need the admin token when one is set.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/publish", post(publish::publish))
        .route("/updates/{id}/widen", post(publish::widen))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            publish::require_admin,
        ));
    Router::new()
        .route("/subscribe", get(subscribe::subscribe))
        .route("/updates", get(query::list))
        .route("/updates/{id}", get(query::status))
        .route("/health", get(query::health))
        .route("/metrics", get(query::metrics))
        .merge(admin)
        .fallback(query::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::request_span))
        .with_state(state)
}

/// Serves the distributor until `shutdown` resolves; then stops accepting, finishes complete
/// in-flight requests, sends every subscriber a close frame and waits for the connections to
/// end, all within the shutdown deadline (what remains after it is dropped), and commits every
/// queued delivery and ack.
pub async fn serve(
    listener: impl Into<Listener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopper = state.clone();
    let signalled = Arc::new(std::sync::OnceLock::new());
    let signalled_at = signalled.clone();
    let signal = async move {
        shutdown.await;
        let _ = signalled_at.set(tokio::time::Instant::now());
        // WebSocket connections outlive the HTTP drain (they are upgraded), so tell them now.
        stopper.begin_shutdown();
    };
    let limits = state.config.server.clone();
    let follower = state
        .config
        .follow_interval
        .map(|every| tokio::spawn(follow_log(state.clone(), every)));
    let result = server::serve(listener.into(), router(state.clone()), limits, signal).await;
    if let Some(f) = follower {
        f.abort();
    }
    if let Some(bell) = &state.config.doorbell {
        bell.close().await;
    }
    state.begin_shutdown();
    let since = signalled
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    let deadline = since + state.config.server.shutdown_timeout;
    if tokio::time::timeout_at(deadline, state.connections_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            left = state.connected(),
            "shutdown deadline reached; dropping the subscribers still connected"
        );
        state.abort.send_replace(true);
        let _ = tokio::time::timeout(ABORT_GRACE, state.connections_closed()).await;
    }
    state.log.close().await;
    tracing::info!("distributor stopped; deliveries and acks are committed");
    result
}

/// Announces what other distributor processes committed to the shared log: at each ring of
/// the doorbell, and every `every` whatever it hears (a ring lost while NATS was away). A
/// failed look (the database restarting) is logged once per outage and tried again.
async fn follow_log(state: AppState, every: Duration) {
    let rung = Arc::new(Notify::new());
    // Aborted with this task (a JoinSet aborts what it holds when dropped).
    let mut listener = tokio::task::JoinSet::new();
    if let Some(bell) = state.config.doorbell.clone() {
        let rung = rung.clone();
        listener.spawn(async move {
            if let Err(e) = bell.listen(|| rung.notify_one()).await {
                tracing::warn!(error = %e, "cannot listen to the distributor doorbell; polling the log only");
            }
        });
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = rung.notified() => {}
        }
        match state.service.follow_log().await {
            Ok(n) => {
                if failing {
                    tracing::info!("reading the shared update log again");
                    failing = false;
                }
                if n > 0 {
                    tracing::debug!(
                        announced = n,
                        "announced updates committed by other processes"
                    );
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the shared update log; trying again");
                    failing = true;
                }
            }
        }
    }
}

/// How long aborted connections may take to let go of their sockets.
const ABORT_GRACE: Duration = Duration::from_secs(1);
