//! Read endpoints: `GET /telemetry`, `GET /insights`, `GET /health`, `GET /metrics`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::core::collector::insight::{Insight, InsightList};
use crate::core::server::access::ReadPolicy;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::anonymize::is_orch_hash;
use crate::core::shared::tier::Tier;
use crate::core::store::TelemetryFilter;
use crate::core::telemetry::{StoredTelemetry, normalize_level, validate_agent_path};

/// Most records one `GET /telemetry` page returns.
pub const MAX_QUERY_LIMIT: usize = 5000;

/// Query string of `GET /telemetry`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryParams {
    kind: Option<String>,
    level: Option<String>,
    agent_prefix: Option<String>,
    /// Raw orch id or its `orch_` hash.
    orch: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<i64>,
}

#[derive(Serialize)]
struct TelemetryPage {
    count: usize,
    records: Vec<StoredTelemetry>,
    next_cursor: Option<i64>,
}

/// Parses a time given as Unix seconds or RFC 3339.
pub fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("`{field}`: {value:?} is neither Unix seconds nor an RFC 3339 time"),
            )
        })
}

/// Builds a filter from loosely-typed parts, validating each; shared with `/analyze`.
pub(crate) fn build_filter(
    state: &AppState,
    kind: Option<String>,
    level: Option<String>,
    agent_prefix: Option<String>,
    orch: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<TelemetryFilter, ApiError> {
    let level = match level {
        Some(l) => Some(normalize_level(&l).ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("`level`: unknown level {l:?}"))
        })?),
        None => None,
    };
    if let Some(p) = &agent_prefix {
        validate_agent_path(p.trim_end_matches('/')).map_err(|m| {
            ApiError::bad_request("invalid_request", format!("`agent_prefix`: {m}"))
        })?;
    }
    let orch_hash = orch.map(|o| {
        if is_orch_hash(&o) {
            o
        } else {
            state.anonymizer.orch_hash(&o)
        }
    });
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`since` must be earlier than `until`",
        ));
    }
    Ok(TelemetryFilter {
        kind,
        level,
        agent_prefix,
        orch_hash,
        since,
        until,
    })
}

pub(super) async fn telemetry(
    State(state): State<AppState>,
    params: Result<Query<TelemetryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_QUERY_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`limit` must be 1..={MAX_QUERY_LIMIT}"),
        ));
    }
    let since = p
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let until = p
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?;
    let filter = build_filter(
        &state,
        p.kind,
        p.level,
        p.agent_prefix,
        p.orch,
        since,
        until,
    )?;
    let page = state.store.query(&filter, limit, p.cursor).await?;
    Ok(Json(TelemetryPage {
        count: page.records.len(),
        records: page.records,
        next_cursor: page.next_cursor,
    }))
}

/// Query string of `GET /insights`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsightParams {
    limit: Option<usize>,
}

pub(super) async fn insights(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<InsightParams>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // The auth layer has admitted the bearer; this only decides what the caller may see.
    let viewer = ReadPolicy {
        admin_token: state.config.admin_token.clone(),
        premium_key: state.config.premium_key.clone(),
        need_admin: false,
    }
    .viewer(&headers, true)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let limit = p.limit.unwrap_or(10);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`limit` must be 1..=1000",
        ));
    }
    let insights = state
        .store
        .insights(limit)
        .await?
        .iter()
        .map(Insight::from_record)
        .collect::<Result<Vec<_>, _>>()?;
    let total = insights.len();
    let insights: Vec<_> = insights
        .into_iter()
        .filter(|i| viewer.premium || i.tier != Tier::Premium)
        .collect();
    Ok(Json(InsightList {
        count: insights.len(),
        withheld: total - insights.len(),
        insights,
    }))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
    uptime_secs: u64,
    queue_depth: usize,
    /// The JetStream ingest buffer (with `--nats-url`): its lag and what this node can reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest_buffer: Option<crate::core::store::BufferStatus>,
}

/// Liveness: cheap on purpose (no database round trip), it is polled often.
pub(super) async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(Health {
        status: "ok",
        service: "collector",
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        queue_depth: state.store.queue_depth(),
        ingest_buffer: state.store.buffer_status(),
    })
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .queue_depth
        .set(state.store.queue_depth() as i64);
    if let Some(buffer) = state.store.buffer_status() {
        let m = &state.metrics;
        m.buffer_lag_messages.set(buffer.lag_messages as i64);
        m.buffer_lag_bytes.set(buffer.lag_bytes as i64);
    }
    http::openmetrics(state.metrics.encode())
}

pub(super) async fn not_found() -> ApiError {
    http::not_found(
        "collector",
        "POST /ingest, POST /ingest/conversations, POST /analyze, GET /insights, GET /telemetry, \
         GET /health, GET /metrics",
    )
}
