//! Request bodies of the ingest endpoints (`/ingest`, `/ingest/conversations`): content
//! type, `Content-Encoding: gzip`, the size limits (413), unsupported types and encodings
//! (415), moving heavy work off the async workers, and the 400 for a body whose records do
//! not parse.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::Limits;
use crate::core::api_error::ApiError;
use crate::core::telemetry::{BodyFormat, MAX_REPORTED_ERRORS, ParseError};

/// Reads the whole body within the limits, gunzipping it when it says so; returns the bytes
/// and how they lay out their records.
pub(super) async fn read(
    limits: Limits,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyFormat), ApiError> {
    let format = body_format(headers)?;
    let gzip = is_gzip(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limits.max_body_bytes {
            return Err(too_large(format!(
                "body is {len} bytes; the limit is {} bytes",
                limits.max_body_bytes
            )));
        }
    }
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large(format!(
                    "body exceeds the limit of {} bytes",
                    limits.max_body_bytes
                ))
            } else {
                ApiError::bad_request(
                    "invalid_body",
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
    if !gzip {
        return Ok((bytes, format));
    }
    // A few KiB of gzip can inflate to the decoded limit: never on an async worker.
    let limit = limits.max_decoded_bytes;
    let bytes = off_the_workers(false, move || gunzip(&bytes, limit)).await??;
    Ok((bytes, format))
}

/// Runs `work` here when `inline`, else on the blocking pool so that parsing or scanning a
/// large body does not stall the async workers.
pub(super) async fn off_the_workers<T: Send + 'static>(
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

/// The 413 answer.
pub(super) fn too_large(detail: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
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

fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity((bytes.len() * 4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("body is not valid gzip: {e}"))
    })?;
    if out.len() > limit {
        return Err(too_large(format!(
            "decompressed body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(Bytes::from(out))
}
