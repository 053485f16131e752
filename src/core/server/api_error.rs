//! The JSON error every Phoenix server answers with: `{"error": code, "detail": sentence}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response: status, machine code, human detail and optional extra fields.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code such as `invalid_record`.
    pub code: &'static str,
    /// One human sentence.
    pub detail: String,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after: Option<u64>,
    /// Extra JSON merged into the body (e.g. the list of bad records).
    pub extra: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    detail: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Value>,
}

impl ApiError {
    /// An error with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            extra: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds fields to the JSON body.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: self.code,
            detail: &self.detail,
            extra: self.extra.as_ref(),
        })
        .unwrap_or_else(|_| br#"{"error":"internal","detail":"cannot encode error"}"#.to_vec());
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::core::store::Error> for ApiError {
    fn from(e: crate::core::store::Error) -> Self {
        use crate::core::store::Error as E;
        match e {
            E::QueueFull { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("{e}; retry later"),
            )
            .retry_after(1),
            E::BufferFull(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
                    .retry_after(1)
            }
            E::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            E::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
            .retry_after(5),
            other => {
                tracing::error!(error = %other, "storage error");
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
