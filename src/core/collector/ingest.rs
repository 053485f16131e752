//! `POST /ingest`: one envelope, a JSON array or NDJSON, optionally gzip-compressed.
//!
//! A batch is validated whole (any bad record rejects it, naming every bad record), then
//! anonymised and queued to the writer; the 200 goes out only after the commit. The HTTP
//! handler only reads and parses the body; [`accept`] does the rest for any transport.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::auth::AgentBearer;
use super::{AppState, body};
use crate::core::server::api_error::ApiError;
use crate::core::telemetry::{NewRecord, TelemetryEnvelope, now_unix, parse_body};

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
    agent: Option<Extension<AgentBearer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let agent = agent.map(|Extension(AgentBearer(token))| token);
    let envelopes = read_envelopes(&state, &headers, body)
        .await
        .inspect_err(|e| count_refusal(&state, e))?;
    accept(&state, agent.as_deref(), envelopes).await.map(Json)
}

/// Record-level rejections are counted where the records are known; the rest once here.
fn count_refusal(state: &AppState, e: &ApiError) {
    if e.code != "invalid_record" && e.code != "queue_full" {
        state.metrics.reject(e.code, 1);
    }
}

/// Reads, decodes and parses an ingest body into envelopes (the HTTP part of `/ingest`).
async fn read_envelopes(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<TelemetryEnvelope>, ApiError> {
    let limits = state.config.limits;
    let (bytes, format) =
        body::read(limits, &state.config.server.decode_budget, headers, body).await?;
    let inline = bytes.len() <= INLINE_PARSE_BYTES;
    let envelopes = body::off_the_workers(inline, move || parse_body(&bytes, format)).await?;
    envelopes.map_err(|e| {
        body::parse_error(e, "telemetry record", |reason, n| {
            state.metrics.reject(reason, n)
        })
    })
}

/// Accepts parsed envelopes, whatever transport brought them (`POST /ingest`, the bench,
/// OTLP next): checks the batch size and the agent token, anonymises, queues the records and
/// answers once they are committed. Counts what it accepts and refuses.
pub async fn accept(
    state: &AppState,
    agent_token: Option<&str>,
    envelopes: Vec<TelemetryEnvelope>,
) -> Result<IngestResponse, ApiError> {
    accept_checked(state, agent_token, envelopes)
        .await
        .inspect_err(|e| count_refusal(state, e))
}

async fn accept_checked(
    state: &AppState,
    agent_token: Option<&str>,
    envelopes: Vec<TelemetryEnvelope>,
) -> Result<IngestResponse, ApiError> {
    let limits = state.config.limits;
    if envelopes.len() > limits.max_batch_records {
        return Err(body::too_large(format!(
            "batch has {} records; at most {} per request",
            envelopes.len(),
            limits.max_batch_records
        )));
    }
    if let Some(token) = agent_token {
        check_agent_token(state, token, &envelopes)?;
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

/// An agent token speaks for one ORCH: every record must carry that ORCH's `orch_id`.
fn check_agent_token(
    state: &AppState,
    token: &str,
    envelopes: &[TelemetryEnvelope],
) -> Result<(), ApiError> {
    let keys = state.config.agent_keys.as_ref();
    let bad = envelopes
        .iter()
        .position(|e| match (keys, e.orch_id.as_deref()) {
            (Some(keys), Some(orch_id)) => !keys.verify(orch_id, token),
            _ => true,
        });
    match bad {
        None => Ok(()),
        Some(i) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "record {i}: the agent token is not the token of this record's orch_id \
                 (an agent token only authorises its own ORCH's records); nothing was stored"
            ),
        )),
    }
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
