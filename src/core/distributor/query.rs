//! Read endpoints: `GET /updates`, `GET /updates/{id}`, `GET /health`, `GET /metrics`.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::core::server::access::{ReadPolicy, Viewer};
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{
    AckError, Counts, KnownSubscriber, StoredUpdate, WideningRecord,
};
use crate::core::updates::UpdateEnvelope;

/// Most updates one `GET /updates` returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most ack errors `GET /updates/{id}` lists.
pub const MAX_ERRORS: usize = 100;

/// One row of `GET /updates`: the envelope (current rollout) and its delivery counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateSummary {
    /// The update, `rollout_percent` as of now.
    #[serde(flatten)]
    pub update: UpdateEnvelope,
    /// True when `payload` is withheld (`null`): a premium update read without the X402 key
    /// or the admin token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_withheld: bool,
    /// Known subscribers (distinct orchs seen in a hello) the update now goes to.
    pub targeted: u64,
    /// Delivered / applied / rejected / skipped.
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /updates`: the newest updates, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateList {
    /// Number of updates listed.
    pub count: usize,
    /// Highest seq in the log.
    pub server_seq: u64,
    /// The updates, newest first.
    pub updates: Vec<UpdateSummary>,
}

/// `GET /updates/{id}`: the envelope, counts, rollout history and ack errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The update, `rollout_percent` as of now.
    #[serde(flatten)]
    pub update: UpdateEnvelope,
    /// True when `payload` is withheld (`null`): a premium update read without the X402 key
    /// or the admin token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_withheld: bool,
    /// Known subscribers (distinct orchs seen in a hello) the update now goes to.
    pub targeted: u64,
    /// Delivered / applied / rejected / skipped.
    #[serde(flatten)]
    pub counts: Counts,
    /// The percentage it was published with.
    pub initial_rollout_percent: Option<u8>,
    /// Each raise of the rollout, oldest first.
    pub widenings: Vec<WideningRecord>,
    /// Acks that carried an error, rejections first (at most 100).
    pub errors: Vec<AckError>,
}

/// Query string of `GET /updates`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<usize>,
}

/// Whether `update`, at its current percentage, goes to a known subscriber.
pub fn delivers_to_known(update: &StoredUpdate, sub: &KnownSubscriber) -> bool {
    let who = update.audience(&sub.orch_hash, &sub.agent_path, sub.tier);
    update
        .envelope
        .delivers_to(&who, update.envelope.rollout_percent)
}

/// The envelope as `viewer` may see it, and whether its payload was withheld.
fn shown(mut update: UpdateEnvelope, viewer: Viewer) -> (UpdateEnvelope, bool) {
    let withhold = update.tier_required == Tier::Premium && !viewer.premium;
    if withhold {
        update.payload = serde_json::Value::Null;
    }
    (update, withhold)
}

/// The caller of a read endpoint, under the read policy (README "Security").
pub(super) fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let cfg = &state.config;
    let policy = ReadPolicy {
        admin_token: cfg.admin_token.clone(),
        premium_key: cfg.premium_key.clone(),
        need_admin: cfg.reads_need_token,
    };
    let v = policy.viewer(headers, false);
    if let Err(e) = &v {
        state.metrics.reject(e.code);
    }
    v
}

fn targeted(update: &StoredUpdate, subscribers: &[KnownSubscriber]) -> u64 {
    subscribers
        .iter()
        .filter(|s| delivers_to_known(update, s))
        .map(|s| s.orch_hash.as_str())
        .collect::<HashSet<_>>()
        .len() as u64
}

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UpdateList>, ApiError> {
    let viewer = viewer(&state, &headers)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let limit = p.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`limit` must be 1..={MAX_LIST_LIMIT}"),
        ));
    }
    Ok(Json(update_list(&state, viewer, limit).await?))
}

/// The newest `limit` updates with their counts, as `viewer` may see them (`GET /updates`;
/// the dashboard reads it directly when it runs in the same process).
pub async fn update_list(
    state: &AppState,
    viewer: Viewer,
    limit: usize,
) -> Result<UpdateList, ApiError> {
    let server_seq = state.bus.position().seq;
    let updates = {
        let _slot = state.read_slot().await?;
        let log = &*state.log;
        let listed = log.list(limit).await?;
        let subscribers = log.subscribers().await?;
        let ids = listed
            .iter()
            .map(|u| u.envelope.update_id.clone())
            .collect();
        let counts = log.counts_of(ids).await?;
        let mut updates = Vec::with_capacity(listed.len());
        for (u, counts) in listed.into_iter().zip(counts) {
            let targeted = targeted(&u, &subscribers);
            let (update, payload_withheld) = shown(u.envelope, viewer);
            updates.push(UpdateSummary {
                targeted,
                counts,
                update,
                payload_withheld,
            });
        }
        updates
    };
    Ok(UpdateList {
        count: updates.len(),
        server_seq,
        updates,
    })
}

pub(super) async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<UpdateStatus>, ApiError> {
    let viewer = viewer(&state, &headers)?;
    match update_status(&state, viewer, &id).await? {
        Some(status) => Ok(Json(status)),
        None => Err(super::Error::NotFound(id).into()),
    }
}

/// One update (by id or seq) with its counts, history and errors, as `viewer` may see it
/// (`GET /updates/{id}`); `None` when there is no such update.
pub async fn update_status(
    state: &AppState,
    viewer: Viewer,
    id: &str,
) -> Result<Option<UpdateStatus>, ApiError> {
    let _slot = state.read_slot().await?;
    let log = &*state.log;
    let Some(u) = log.find(id).await? else {
        return Ok(None);
    };
    let update_id = u.envelope.update_id.clone();
    let subscribers = log.subscribers().await?;
    let targeted = targeted(&u, &subscribers);
    let counts = log.counts(&update_id).await?;
    let widenings = log.widenings(&update_id).await?;
    let errors = log.errors(&update_id, MAX_ERRORS).await?;
    let (update, payload_withheld) = shown(u.envelope, viewer);
    Ok(Some(UpdateStatus {
        targeted,
        counts,
        initial_rollout_percent: u.initial_percent,
        widenings,
        errors,
        update,
        payload_withheld,
    }))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
    uptime_secs: u64,
    subscribers: usize,
    server_seq: u64,
    write_queue: usize,
}

pub(super) async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(Health {
        status: "ok",
        service: "distributor",
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        subscribers: state.connected(),
        server_seq: state.bus.position().seq,
        write_queue: state.log.queue_depth(),
    })
}

pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    viewer(&state, &headers)?;
    state
        .metrics
        .write_queue
        .set(state.log.queue_depth() as i64);
    state.metrics.write_dropped.set(state.log.dropped() as i64);
    Ok(http::openmetrics(state.metrics.encode()))
}

pub(super) async fn not_found() -> ApiError {
    http::not_found(
        "distributor",
        "POST /publish, GET /subscribe (WebSocket), \
         GET /updates, GET /updates/{id}, POST /updates/{id}/widen, GET /health, GET /metrics",
    )
}
