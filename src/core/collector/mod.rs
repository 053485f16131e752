//! The Vital Pulse collector: HTTP ingest of telemetry, storage, analysis and insights.
//!
//! Depends on `store` (the traits, never a backend), `server`, `shared`, `telemetry` and the
//! PII guard of `privacy::pii`; used by `cmd`, `bench` and, for insights, `hive`.
//!
//! [`router`] builds the routes over an [`AppState`]; [`serve`] runs them on a listener the
//! caller bound (tests bind `127.0.0.1:0`) until the shutdown future resolves, then commits
//! everything already accepted before returning.

pub mod analysis;
mod analyze;
mod auth;
mod body;
pub mod client;
mod conversations;
mod ingest;
pub mod insight;
pub mod metrics;
mod otlp;
pub(crate) mod query;
mod retention;
pub mod summary;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::core::server::http;
use crate::core::server::{self, Listener, ServerLimits};
use crate::core::shared::agent_token::AgentKeys;
use crate::core::shared::anonymize::Anonymizer;
use crate::core::shared::llm::{LlmClient, LlmSettings};
use crate::core::store::TelemetryStore;

pub use analyze::{AnalyzeRequest, run as run_analysis};
pub use conversations::{ConversationsResponse, PiiRecord, accept_conversations};
pub use ingest::{IngestResponse, accept};
pub use metrics::Metrics;
pub use retention::{purge_expired, purge_expired_conversations};

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body on the wire.
    pub max_body_bytes: usize,
    /// Largest body after gzip decoding.
    pub max_decoded_bytes: usize,
    /// Most records per request.
    pub max_batch_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_decoded_bytes: 64 * 1024 * 1024,
            max_batch_records: 10_000,
        }
    }
}

/// How the collector behaves, independent of where it listens.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Request limits.
    pub limits: Limits,
    /// `X402` value that unlocks the premium tier.
    pub premium_key: Option<String>,
    /// Bearer tokens accepted; empty means no authentication.
    pub ingest_tokens: Vec<String>,
    /// The admin token: accepted as a bearer everywhere, and shows premium insights.
    pub admin_token: Option<String>,
    /// Checks agent tokens presented on `POST /ingest` (heartbeats); `None`: refused.
    pub agent_keys: Option<AgentKeys>,
    /// The LLM for summaries, or why there is none.
    pub llm: Result<LlmSettings, String>,
    /// An orch whose last heartbeat is older than this is stale.
    pub stale_after: Duration,
    /// Delete records and conversations older than this many days.
    pub retention_days: Option<u32>,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Timeouts, connection cap, shutdown deadline and decompression budget of the server.
    pub server: ServerLimits,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            limits: Limits::default(),
            premium_key: None,
            ingest_tokens: Vec::new(),
            admin_token: None,
            agent_keys: None,
            llm: Err("no LLM configured".to_owned()),
            stale_after: Duration::from_secs(900),
            retention_days: None,
            retention_interval: Duration::from_secs(300),
            server: ServerLimits::default(),
        }
    }
}

/// Why the collector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The LLM settings are unusable.
    #[error("LLM client: {0}")]
    Llm(#[from] crate::core::shared::llm::Error),
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// Storage.
    pub store: Arc<dyn TelemetryStore>,
    /// Orch-id anonymiser.
    pub anonymizer: Anonymizer,
    /// Configuration.
    pub config: CollectorConfig,
    /// LLM client, or why there is none.
    pub llm: Result<LlmClient, String>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State over a store; `metrics` must be the registry whose `store` metrics the store feeds.
    pub fn new(
        store: Arc<dyn TelemetryStore>,
        anonymizer: Anonymizer,
        config: CollectorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let llm = match &config.llm {
            Ok(settings) => Ok(LlmClient::new(settings.clone())?),
            Err(reason) => Err(reason.clone()),
        };
        Ok(AppState(Arc::new(Inner {
            store,
            anonymizer,
            config,
            llm,
            metrics,
            started: Instant::now(),
        })))
    }
}

/// The OTLP/HTTP routes (`/v1/traces`, `/v1/logs`) behind authentication, every error
/// answered with a `google.rpc.Status`.
fn otlp_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/logs", post(otlp::logs))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
        .route_layer(middleware::from_fn(otlp::status_bodies))
}

/// The routes of `--otlp-bind`: OTLP/HTTP and `/health` only.
pub fn otlp_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(query::health))
        .merge(otlp_routes(state.clone()))
        .fallback(query::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::request_span))
        .with_state(state)
}

/// All collector routes. `/health` is never behind authentication.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/ingest", post(ingest::ingest))
        .route(
            "/ingest/conversations",
            post(conversations::ingest_conversations),
        )
        .route("/analyze", post(analyze::analyze))
        .route("/insights", get(query::insights))
        .route("/telemetry", get(query::telemetry))
        .route("/metrics", get(query::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(query::health))
        .merge(protected)
        .merge(otlp_routes(state.clone()))
        .fallback(query::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::request_span))
        .with_state(state)
}

/// True when `addr` only accepts connections from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves the collector until `shutdown` resolves; then stops accepting, finishes complete
/// in-flight requests within the shutdown deadline (closing idle and half-sent ones at once)
/// and commits everything already accepted.
pub async fn serve(
    listener: impl Into<Listener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_otlp(listener, None, state, shutdown).await
}

/// [`serve`], plus an optional second listener (`--otlp-bind`, the standard port 4318) that
/// answers only OTLP/HTTP and `/health` over the same state. Both stop on `shutdown`, or when
/// either fails; the store is committed and closed once both have finished.
pub async fn serve_with_otlp(
    listener: impl Into<Listener>,
    otlp: Option<Listener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, otlp, state, None, shutdown).await
}

/// Routes served beside the collector's on its main listener (the dashboard), and what to
/// do the moment shutdown begins (end its live streams, so they do not hold it up).
pub struct Extra {
    /// The routes; they must not overlap the collector's.
    pub routes: Router,
    /// Called once when shutdown starts.
    pub on_shutdown: Box<dyn FnOnce() + Send>,
}

/// [`serve_with_otlp`], with `extra` routes on the main listener.
pub async fn serve_app(
    listener: impl Into<Listener>,
    otlp: Option<Listener>,
    state: AppState,
    extra: Option<Extra>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (main_router, on_shutdown) = match extra {
        Some(extra) => (
            router(state.clone()).merge(extra.routes),
            Some(extra.on_shutdown),
        ),
        None => (router(state.clone()), None),
    };
    let shutdown = async move {
        shutdown.await;
        if let Some(f) = on_shutdown {
            f();
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let retention = state.config.retention_days.map(|days| {
        tokio::spawn(retention::run(
            state.clone(),
            days,
            state.config.retention_interval,
            stop_rx,
        ))
    });
    let limits = state.config.server.clone();
    let result = match otlp {
        None => server::serve(listener.into(), main_router, limits, shutdown).await,
        Some(otlp) => {
            let stop = server::app::Stop::new();
            let _on_signal = stop.on(shutdown);
            let serve_then_stop = |listener: Listener, router: Router| {
                let stop = stop.clone();
                let limits = limits.clone();
                async move {
                    let result = server::serve(listener, router, limits, stop.stopped()).await;
                    stop.stop();
                    result
                }
            };
            let (main, side) = tokio::join!(
                serve_then_stop(listener.into(), main_router),
                serve_then_stop(otlp, otlp_router(state.clone())),
            );
            main.and(side)
        }
    };
    let _ = stop_tx.send(true);
    if let Some(task) = retention {
        let _ = task.await;
    }
    state.store.shutdown().await;
    tracing::info!("collector stopped; every accepted record is committed");
    result
}
