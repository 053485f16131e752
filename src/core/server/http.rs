//! HTTP pieces the collector and the distributor share: request spans, bearer tokens,
//! request bodies within limits (gzip, 413, 415), the OpenMetrics answer and the JSON
//! answers for unknown routes and methods.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::core::server;
use crate::core::server::api_error::ApiError;
use crate::core::server::inflate::{self, DecodeBudget};

/// Middleware: one span per request, keyed by the matched route rather than the raw path.
pub async fn request_span(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::debug_span!("request", method = %req.method(), route = %route);
    let started = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "done"
        );
    });
    resp
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// A Prometheus/OpenMetrics text exposition.
pub fn openmetrics(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// 404 naming what the service does serve.
pub fn not_found(service: &str, routes: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint; the {service} serves {routes}"),
    )
}

/// Fallback for a known path asked with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Reads a whole request body of at most `max_body` bytes, gunzipping it as it arrives (to
/// at most `max_decoded` bytes, within the process's `budget`) when its `Content-Encoding`
/// says gzip: 413 past a limit, 503 past the budget, 415 for another encoding, 408 for a body
/// that does not arrive in time, 400 for a body that cannot be read or is not gzip.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
    max_decoded: usize,
    budget: &DecodeBudget,
) -> Result<Bytes, ApiError> {
    let gzip = is_gzip(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > max_body
    {
        return Err(too_large(format!(
            "body is {len} bytes; the limit is {max_body} bytes"
        )));
    }
    if gzip {
        // A few KiB of gzip can inflate to the decoded limit: inflated off the async workers,
        // as it arrives, so the compressed body is never held whole either.
        return inflate::gunzip_body(body, max_body, max_decoded, budget, unreadable).await;
    }
    axum::body::to_bytes(body, max_body).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large(format!("body exceeds the limit of {max_body} bytes"))
        } else {
            unreadable(e)
        }
    })
}

/// The answer to a body that could not be read: 408 when it was too slow, else 400.
fn unreadable(e: axum::Error) -> ApiError {
    if server::is_body_timeout(&e) {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("{e}; send the body faster or in smaller requests"),
        )
    } else {
        ApiError::bad_request(
            "invalid_body",
            format!("could not read the request body: {e}"),
        )
    }
}

/// Runs `work` here when `inline`, else on the blocking pool so that parsing or scanning a
/// large body does not stall the async workers.
pub async fn off_the_workers<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if inline {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })
}

/// The 413 answer.
pub fn too_large(detail: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
}

fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(enc) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match enc
        .to_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "gzip" | "x-gzip" => Ok(true),
        "identity" | "" => Ok(false),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not accepted; send gzip or no encoding"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "bEaReR  s3cret ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("s3cret"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
