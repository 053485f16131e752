//! Bearer-token authentication, active when ingest tokens are configured.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::core::api_error::ApiError;
use crate::core::http;
use crate::core::tier::secrets_equal;

/// Rejects requests without a configured bearer token; passes everything when none is set.
pub(super) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let tokens = &state.config.ingest_tokens;
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = http::bearer_token(req.headers());
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
    let ok = tokens
        .iter()
        .fold(false, |acc, t| acc | secrets_equal(presented, t));
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
