//! `POST /v1/traces` and `POST /v1/logs`: OTLP/HTTP from any OpenTelemetry SDK, protobuf or
//! JSON, optionally gzip-compressed.
//!
//! Each span / log record becomes a telemetry record through `telemetry::otlp::map`; message
//! content that fails the PII guard is left out of its record (the metrics are kept), counted
//! in `/metrics` and reported in `partial_success`. The accepted records of a request are one
//! batch for the writer, answered after the commit exactly like `POST /ingest`. Errors follow
//! the OTLP/HTTP spec: a `google.rpc.Status` body in the request's encoding (see
//! [`status_bodies`], which also rewrites the authentication layer's answers).

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::AgentBearer;
use super::{AppState, ingest};
use crate::core::privacy::pii::contains_pii;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::telemetry::now_unix;
use crate::core::telemetry::otlp::{self, Encoding, Mapped, RpcStatus};

/// Bodies larger than this are decoded and mapped on the blocking pool: the PII guard over
/// content costs far more per byte than decoding does.
const INLINE_BYTES: usize = 64 * 1024;

/// Which OTLP signal a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `POST /v1/traces`.
    Traces,
    /// `POST /v1/logs`.
    Logs,
}

impl Signal {
    fn noun(self) -> &'static str {
        match self {
            Signal::Traces => "span",
            Signal::Logs => "log record",
        }
    }
}

pub(super) async fn traces(
    State(state): State<AppState>,
    agent: Option<Extension<AgentBearer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    export(state, agent, headers, body, Signal::Traces).await
}

pub(super) async fn logs(
    State(state): State<AppState>,
    agent: Option<Extension<AgentBearer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    export(state, agent, headers, body, Signal::Logs).await
}

async fn export(
    state: AppState,
    agent: Option<Extension<AgentBearer>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Result<Response, ApiError> {
    let encoding = encoding(&headers)
        .inspect_err(|_| state.metrics.reject_otlp("unsupported_media_type", 1))?;
    let limits = state.config.limits;
    let bytes = http::read_body(
        &headers,
        body,
        limits.max_body_bytes,
        limits.max_decoded_bytes,
        &state.config.server.decode_budget,
    )
    .await
    .inspect_err(|e| state.metrics.reject_otlp(e.code, 1))?;
    let inline = bytes.len() <= INLINE_BYTES;
    let mapped = http::off_the_workers(inline, move || decode_and_map(&bytes, encoding, signal))
        .await?
        .map_err(|e| {
            state.metrics.reject_otlp("invalid_otlp", 1);
            ApiError::bad_request("invalid_otlp", e.0)
        })?;
    let Mapped {
        envelopes,
        rejected,
        content_dropped,
        ..
    } = &mapped;
    state.metrics.reject_otlp("invalid_span", *rejected);
    state
        .metrics
        .otlp_content_dropped
        .inc_by(*content_dropped as u64);
    let accepted = envelopes.len();
    let message = mapped.message(signal.noun());
    let rejected = mapped.rejected;
    if accepted > 0 {
        let agent = agent.map(|Extension(AgentBearer(token))| token);
        ingest::accept(&state, agent.as_deref(), mapped.envelopes).await?;
    }
    state
        .metrics
        .otlp_accepted
        .get_or_create(&super::metrics::SignalLabel {
            signal: signal.noun(),
        })
        .inc_by(accepted as u64);
    let body = match signal {
        Signal::Traces => otlp::encode(&otlp::trace_response(rejected, message), encoding),
        Signal::Logs => otlp::encode(&otlp::logs_response(rejected, message), encoding),
    };
    Ok(encoded(StatusCode::OK, encoding, body))
}

fn decode_and_map(
    bytes: &[u8],
    encoding: Encoding,
    signal: Signal,
) -> Result<Mapped, otlp::DecodeError> {
    let now = now_unix();
    let clean = |text: &str| contains_pii(text).is_empty();
    Ok(match signal {
        Signal::Traces => otlp::map_traces(&otlp::decode_traces(bytes, encoding)?, now, &clean),
        Signal::Logs => otlp::map_logs(&otlp::decode_logs(bytes, encoding)?, now, &clean),
    })
}

/// The request's encoding; 415 for a missing or other `Content-Type`.
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Encoding::from_content_type(ct).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {:?} is not accepted on OTLP/HTTP; send {} or {}",
                ct,
                otlp::PROTOBUF,
                otlp::JSON
            ),
        )
    })
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

/// Middleware of the OTLP routes: every error answer (from the handlers, the authentication
/// layer, the router) gets a `google.rpc.Status` body in the request's encoding (JSON when
/// the request's is not one of OTLP's), keeping its status and headers (`Retry-After`,
/// `WWW-Authenticate`).
pub(super) async fn status_bodies(req: Request, next: Next) -> Response {
    let encoding = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::from_content_type)
        .unwrap_or(Encoding::Json);
    let response = next.run(req).await;
    if response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let status = RpcStatus {
        code: otlp::rpc_code(parts.status.as_u16()),
        message,
        details: Vec::new(),
    };
    let body = otlp::encode(&status, encoding);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
