//! Bearer-token authentication, active when ingest tokens are configured.
//!
//! Besides the ingest tokens, the admin token is accepted everywhere, and an ORCH's agent
//! token (`phx_agent_…`) on `POST /ingest` alone: the ingest handler then checks that every
//! record's `orch_id` is the ORCH the token was issued to.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::agent_token;
use crate::core::shared::tier::secrets_equal;

/// An agent token presented on `POST /ingest`, for the handler to check against the records.
#[derive(Debug, Clone)]
pub(super) struct AgentBearer(pub String);

/// Rejects requests without a configured bearer token; passes everything when none is set.
pub(super) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = http::bearer_token(req.headers()).map(str::to_owned);
    if let Some(token) = presented
        .as_deref()
        .filter(|t| agent_token::looks_like_token(t))
    {
        if !matches!(req.uri().path(), "/ingest" | "/v1/traces" | "/v1/logs") {
            state.metrics.reject("forbidden", 1);
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an agent token only authorises its own ORCH's telemetry on POST /ingest, /v1/traces and /v1/logs",
            )
            .into_response();
        }
        // Checked against every record's orch_id by the handler, which has parsed them.
        req.extensions_mut().insert(AgentBearer(token.to_owned()));
        return next.run(req).await;
    }
    let tokens = &state.config.ingest_tokens;
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = presented.as_deref();
    let Some(presented) = presented else {
        state.metrics.reject("unauthorized", 1);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>` header",
        )
        .into_response();
    };
    // Check every token so timing does not reveal which one matched.
    let admin = state
        .config
        .admin_token
        .as_deref()
        .is_some_and(|t| secrets_equal(presented, t));
    let ok = tokens
        .iter()
        .fold(admin, |acc, t| acc | secrets_equal(presented, t));
    if !ok {
        state.metrics.reject("forbidden", 1);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token is not accepted by this collector",
        )
        .into_response();
    }
    next.run(req).await
}
