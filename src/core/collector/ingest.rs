//! `POST /ingest`: one envelope, a JSON array or NDJSON, optionally gzip-compressed.
//!
//! A batch is validated whole (any bad record rejects it, naming every bad record), then
//! anonymised and queued to the writer; the 200 goes out only after the commit.

use std::io::Read;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use super::AppState;
use crate::core::api_error::ApiError;
use crate::core::telemetry::{
    BodyFormat, MAX_REPORTED_ERRORS, NewRecord, ParseError, TelemetryEnvelope, now_unix, parse_body,
};

/// Bodies larger than this are parsed on the blocking pool, off the async workers.
const INLINE_PARSE_BYTES: usize = 256 * 1024;

/// The 200 answer.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Records committed.
    pub accepted: usize,
    /// Their ids, in request order.
    pub ids: Vec<String>,
}

pub(super) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let result = accept(&state, &headers, body).await;
    if let Err(e) = &result {
        // Record-level rejections are counted where the records are known.
        if e.code != "invalid_record" && e.code != "queue_full" {
            state.metrics.reject(e.code, 1);
        }
    }
    result.map(Json)
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, ApiError> {
    let limits = state.config.limits;
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
    let bytes = if gzip {
        gunzip(&bytes, limits.max_decoded_bytes)?
    } else {
        bytes
    };

    let envelopes = if bytes.len() > INLINE_PARSE_BYTES {
        tokio::task::spawn_blocking(move || parse_body(&bytes, format))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            })?
    } else {
        parse_body(&bytes, format)
    };
    let envelopes = envelopes.map_err(|e| parse_error(state, e))?;
    if envelopes.len() > limits.max_batch_records {
        return Err(too_large(format!(
            "batch has {} records; at most {} per request",
            envelopes.len(),
            limits.max_batch_records
        )));
    }

    let now = now_unix();
    let records: Vec<NewRecord> = envelopes
        .into_iter()
        .map(|e| to_record(state, e, now))
        .collect();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let n = records.len();
    let commit = state
        .store
        .submit(records)
        .inspect_err(|_| state.metrics.reject("queue_full", n))?;
    commit.wait().await?;
    state.metrics.ingested.inc_by(n as u64);
    state.metrics.batch_size.observe(n as f64);
    Ok(IngestResponse { accepted: n, ids })
}

fn to_record(state: &AppState, env: TelemetryEnvelope, now: i64) -> NewRecord {
    NewRecord {
        id: uuid::Uuid::now_v7().to_string(),
        ts_unix: env.ts_unix.unwrap_or(now),
        received_unix: now,
        kind: env.kind,
        level: env.level,
        // The raw id stops here: only its keyed hash goes any further.
        orch_hash: env
            .orch_id
            .as_deref()
            .map(|id| state.anonymizer.orch_hash(id)),
        agent_path: env.agent_path,
        tags_json: env
            .tags
            .filter(|t| !t.is_empty())
            .map(|t| serde_json::to_string(&t).expect("strings serialize")),
        payload_json: env.payload.get().to_owned(),
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

fn too_large(detail: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
}

fn parse_error(state: &AppState, e: ParseError) -> ApiError {
    match e {
        ParseError::Empty => {
            ApiError::bad_request("empty_body", "the body holds no telemetry record")
        }
        ParseError::Malformed(m) => ApiError::bad_request("invalid_json", m),
        ParseError::Records { errors, total } => {
            state.metrics.reject("invalid_record", errors.len());
            // The valid records of a refused batch are not stored either: count them too.
            if total > errors.len() {
                state.metrics.reject("batch_rejected", total - errors.len());
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
