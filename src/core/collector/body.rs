//! Request bodies of the ingest endpoints (`/ingest`, `/ingest/conversations`): content
//! type (415 for others), the shared body reading (`core::http::read_body`: limits, gzip),
//! and the 400 for a body whose records do not parse.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::Limits;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
pub(super) use crate::core::server::http::{off_the_workers, too_large};
use crate::core::server::inflate::DecodeBudget;
use crate::core::telemetry::{BodyFormat, MAX_REPORTED_ERRORS, ParseError};

/// Reads the whole body within the limits, gunzipping it when it says so; returns the bytes
/// and how they lay out their records.
pub(super) async fn read(
    limits: Limits,
    budget: &DecodeBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyFormat), ApiError> {
    let format = body_format(headers)?;
    let bytes = http::read_body(
        headers,
        body,
        limits.max_body_bytes,
        limits.max_decoded_bytes,
        budget,
    )
    .await?;
    Ok((bytes, format))
}

/// The 400 for a body that could not be split into valid records; `noun` names a record
/// ("telemetry record", "conversation") and `reject` counts refused records by reason.
pub(super) fn parse_error(
    e: ParseError,
    noun: &str,
    reject: impl Fn(&'static str, usize),
) -> ApiError {
    match e {
        ParseError::Empty => {
            ApiError::bad_request("empty_body", format!("the body holds no {noun}"))
        }
        ParseError::Malformed(m) => ApiError::bad_request("invalid_json", m),
        ParseError::Records { errors, total } => {
            reject("invalid_record", errors.len());
            // The valid records of a refused batch are not stored either: count them too.
            if total > errors.len() {
                reject("batch_rejected", total - errors.len());
            }
            let first = &errors[0];
            let more = match errors.len() {
                1 => String::new(),
                n => format!(
                    " (and {} more invalid record{})",
                    n - 1,
                    if n == 2 { "" } else { "s" }
                ),
            };
            let detail = format!("{first}{more}; nothing from this batch was stored");
            let listed: Vec<_> = errors.iter().take(MAX_REPORTED_ERRORS).collect();
            ApiError::bad_request("invalid_record", detail)
                .with_extra(serde_json::json!({ "invalid": errors.len(), "records": listed }))
        }
    }
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Auto);
    };
    let ct = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" | "text/json" => Ok(BodyFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        // curl -d sends form encoding by default; the seed's examples rely on it being JSON.
        "" | "text/plain" | "application/x-www-form-urlencoded" | "application/octet-stream" => {
            Ok(BodyFormat::Auto)
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {other:?} is not accepted; send application/json or application/x-ndjson"
            ),
        )),
    }
}
