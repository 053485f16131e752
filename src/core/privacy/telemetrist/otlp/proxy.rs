//! The HTTP side of the edge OTLP proxy: `POST /v1/traces` and `POST /v1/logs`, protobuf or
//! JSON, optionally gzip-compressed, answered like the collector answers them: 200 with an
//! empty export response once the redacted request is in the spool; 415 for another
//! content type, 400 for a body that is not an export request, 413 over the body limits, 503
//! with `Retry-After` when the spool cannot take it. Every error has a `google.rpc.Status`
//! body in the request's encoding (JSON when that is not one of OTLP's).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{AdmitError, Export, OtlpEdge};
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::server::inflate::DecodeBudget;
use crate::core::telemetry::otlp::{self, Encoding, RpcStatus};

/// Seconds an SDK is asked to wait when the spool cannot take its request.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Clone)]
struct ProxyState {
    edge: Arc<OtlpEdge>,
    budget: DecodeBudget,
}

/// The proxy's routes; gzip bodies inflate within `budget`.
pub fn router(edge: Arc<OtlpEdge>, budget: DecodeBudget) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .fallback(not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::request_span))
        .with_state(ProxyState { edge, budget })
}

async fn traces(State(state): State<ProxyState>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, false).await
}

async fn logs(State(state): State<ProxyState>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, true).await
}

async fn not_found() -> ApiError {
    http::not_found("edge OTLP proxy", "POST /v1/traces and POST /v1/logs")
}

async fn export(state: ProxyState, headers: HeaderMap, body: Body, logs: bool) -> Response {
    let encoding = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::from_content_type);
    match accept(&state, &headers, body, encoding, logs).await {
        Ok(response) => response,
        Err(e) => status_response(e, encoding.unwrap_or(Encoding::Json)),
    }
}

async fn accept(
    state: &ProxyState,
    headers: &HeaderMap,
    body: Body,
    encoding: Option<Encoding>,
    logs: bool,
) -> Result<Response, ApiError> {
    let Some(encoding) = encoding else {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {ct:?} is not accepted on OTLP/HTTP; send {} or {}",
                otlp::PROTOBUF,
                otlp::JSON
            ),
        ));
    };
    let options = state.edge.options();
    let bytes = http::read_body(
        headers,
        body,
        options.max_body_bytes,
        options.max_decoded_bytes,
        &state.budget,
    )
    .await?;
    let edge = state.edge.clone();
    // Decoding, redaction and both commits block: the blocking pool does them. A stop
    // request does not cut this short, so the commit under way is finished.
    let admitted = tokio::task::spawn_blocking(move || {
        let export = if logs {
            Export::Logs(otlp::decode_logs(&bytes, encoding)?)
        } else {
            Export::Traces(otlp::decode_traces(&bytes, encoding)?)
        };
        Ok::<_, Refused>(edge.admit(export)?)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .retry_after(RETRY_AFTER_SECS)
    })?;
    match admitted {
        Ok(_) => {}
        Err(Refused::Decode(e)) => return Err(ApiError::bad_request("invalid_otlp", e.0)),
        Err(Refused::Admit(e)) => {
            let code = match &e {
                AdmitError::Full { .. } => "spool_full",
                AdmitError::Vault(_) => "vault_unavailable",
                AdmitError::Spool(_) => "spool_unavailable",
            };
            if !matches!(e, AdmitError::Full { .. }) {
                tracing::error!(error = %e, "OTLP request refused: the edge cannot keep it");
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                crate::core::shared::llm::error_chain(&e),
            )
            .retry_after(RETRY_AFTER_SECS));
        }
    }
    let body = if logs {
        otlp::encode(&otlp::logs_response(0, None), encoding)
    } else {
        otlp::encode(&otlp::trace_response(0, None), encoding)
    };
    Ok(encoded(StatusCode::OK, encoding, body))
}

/// Why the blocking part refused a request.
enum Refused {
    Decode(otlp::DecodeError),
    Admit(AdmitError),
}

impl From<otlp::DecodeError> for Refused {
    fn from(e: otlp::DecodeError) -> Self {
        Refused::Decode(e)
    }
}

impl From<AdmitError> for Refused {
    fn from(e: AdmitError) -> Self {
        Refused::Admit(e)
    }
}

/// An error as OTLP/HTTP answers it: the status, `Retry-After` if any, and a
/// `google.rpc.Status` saying why.
fn status_response(e: ApiError, encoding: Encoding) -> Response {
    let status = RpcStatus {
        code: otlp::rpc_code(e.status.as_u16()),
        message: e.detail,
        details: Vec::new(),
    };
    let mut response = encoded(e.status, encoding, otlp::encode(&status, encoding));
    if let Some(secs) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn encoded(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        )],
        body,
    )
        .into_response()
}
