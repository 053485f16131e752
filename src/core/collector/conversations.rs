//! `POST /ingest/conversations`: de-identified conversations from the edge, one object, a
//! JSON array or NDJSON, optionally gzip-compressed (the same body rules as `/ingest`).
//!
//! A batch is validated whole, then scanned for personal data the edge failed to redact:
//! any finding refuses the whole batch with a 422 that names record, field and kinds of
//! data — never the data itself, in the answer or in the logs. An accepted batch is stored
//! by `conversation_id` (a resend stores nothing new and is counted as a duplicate, not an
//! error) and the 200 goes out only after the commit.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::{AppState, body};
use crate::core::privacy::dataset::prompt_key;
use crate::core::privacy::pii::{EntityType, scan_messages, scan_text};
use crate::core::server::api_error::ApiError;
use crate::core::telemetry::conversation::{Conversation, NewConversation, parse_conversations};
use crate::core::telemetry::{MAX_REPORTED_ERRORS, now_unix};

/// Bodies larger than this are parsed and scanned on the blocking pool: the PII scan costs
/// far more per byte than parsing does.
const INLINE_SCAN_BYTES: usize = 16 * 1024;

/// The 200 answer.
#[derive(Debug, Serialize)]
pub struct ConversationsResponse {
    /// Conversations newly stored.
    pub accepted: usize,
    /// Conversations whose `conversation_id` was already stored (nothing stored for them).
    pub duplicates: usize,
    /// The `conversation_id`s newly stored, in request order.
    pub ids: Vec<String>,
}

/// One field of one record that still holds personal data.
#[derive(Debug, Clone, Serialize)]
pub struct PiiRecord {
    /// Zero-based position in the batch.
    pub index: usize,
    /// The record's id; left out when the id itself holds personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Where: `conversation_id`, `agent_path`, `messages[1].content`,
    /// `messages[2].tool_calls[0].function.arguments`, ..., `messages[0].(key)` for a key.
    pub field: String,
    /// What kinds of data.
    pub types: Vec<EntityType>,
}

pub(super) async fn ingest_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConversationsResponse>, ApiError> {
    let (conversations, inline) = read_conversations(&state, &headers, body)
        .await
        .inspect_err(|e| count_refusal(&state, e))?;
    accept_conversations(&state, conversations, inline)
        .await
        .map(Json)
}

/// Record-level rejections are counted where the records are known; the rest once here.
fn count_refusal(state: &AppState, e: &ApiError) {
    if !matches!(e.code, "invalid_record" | "queue_full" | "pii_detected") {
        state.metrics.reject_conversations(e.code, 1);
    }
}

/// A conversation that passed every check, with what the writer needs precomputed.
struct Checked {
    conversation: Conversation,
    messages_json: String,
    prompt_key: Option<String>,
}

/// Why a parsed batch is refused.
enum Refused {
    Pii {
        findings: Vec<PiiRecord>,
        total: usize,
    },
}

/// Reads, decodes and parses a body of conversations (the HTTP part of
/// `/ingest/conversations`); also says whether the body is small enough to scan inline.
async fn read_conversations(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<Conversation>, bool), ApiError> {
    let limits = state.config.limits;
    let (bytes, format) =
        body::read(limits, &state.config.server.decode_budget, headers, body).await?;
    let inline = bytes.len() <= INLINE_SCAN_BYTES;
    let parsed = body::off_the_workers(inline, move || parse_conversations(&bytes, format)).await?;
    let conversations = parsed.map_err(|e| {
        body::parse_error(e, "conversation", |reason, n| {
            state.metrics.reject_conversations(reason, n)
        })
    })?;
    Ok((conversations, inline))
}

/// Accepts parsed conversations, whatever transport brought them: checks the batch size,
/// refuses the batch if any conversation still holds personal data (scanned on the blocking
/// pool unless `scan_inline`), stores the new ones by `conversation_id` and answers once
/// they are committed. Counts what it accepts and refuses.
pub async fn accept_conversations(
    state: &AppState,
    conversations: Vec<Conversation>,
    scan_inline: bool,
) -> Result<ConversationsResponse, ApiError> {
    accept_checked(state, conversations, scan_inline)
        .await
        .inspect_err(|e| count_refusal(state, e))
}

async fn accept_checked(
    state: &AppState,
    conversations: Vec<Conversation>,
    scan_inline: bool,
) -> Result<ConversationsResponse, ApiError> {
    let max = state.config.limits.max_batch_records;
    if conversations.len() > max {
        return Err(body::too_large(format!(
            "batch has {} conversations; at most {max} per request",
            conversations.len()
        )));
    }
    let checked = body::off_the_workers(scan_inline, move || check(conversations)).await?;
    let metrics = &state.metrics;
    let checked = checked.map_err(|refused| match refused {
        Refused::Pii { findings, total } => pii_refusal(state, findings, total),
    })?;

    let now = now_unix();
    let rows: Vec<NewConversation> = checked.into_iter().map(|c| to_row(state, c, now)).collect();
    let ids: Vec<String> = rows.iter().map(|r| r.conversation_id.clone()).collect();
    let n = rows.len();
    let commit = state
        .store
        .submit_conversations(rows)
        .inspect_err(|_| metrics.reject_conversations("queue_full", n))?;
    let stored = commit.wait().await?;
    let ids: Vec<String> = ids
        .into_iter()
        .zip(&stored)
        .filter_map(|(id, &new)| new.then_some(id))
        .collect();
    let duplicates = n - ids.len();
    metrics.conversations_ingested.inc_by(ids.len() as u64);
    metrics.conversations_duplicate.inc_by(duplicates as u64);
    if duplicates > 0 {
        tracing::info!(duplicates, "conversations resent; already stored");
    }
    Ok(ConversationsResponse {
        accepted: ids.len(),
        duplicates,
        ids,
    })
}

/// Scans every conversation; any personal data refuses the batch.
fn check(conversations: Vec<Conversation>) -> Result<Vec<Checked>, Refused> {
    let total = conversations.len();
    let mut findings = Vec::new();
    for (index, c) in conversations.iter().enumerate() {
        let in_id = scan_text("conversation_id", &c.conversation_id);
        // The id names the record in the answer, unless it is what must not be repeated.
        let conversation_id = in_id.is_none().then(|| c.conversation_id.clone());
        // Everything stored is scanned; `orch_id` is not stored, only its keyed hash, and
        // `feedback` is stored as one of three words.
        let found = in_id
            .into_iter()
            .chain(
                c.agent_path
                    .as_deref()
                    .and_then(|p| scan_text("agent_path", p)),
            )
            .chain(scan_messages(&c.messages));
        for f in found {
            findings.push(PiiRecord {
                index,
                conversation_id: conversation_id.clone(),
                field: f.field,
                types: f.types,
            });
        }
    }
    if !findings.is_empty() {
        return Err(Refused::Pii { findings, total });
    }
    Ok(conversations
        .into_iter()
        .map(|conversation| Checked {
            messages_json: serde_json::to_string(&conversation.messages)
                .expect("JSON values serialize"),
            prompt_key: prompt_key(&conversation.messages),
            conversation,
        })
        .collect())
}

fn pii_refusal(state: &AppState, findings: Vec<PiiRecord>, total: usize) -> ApiError {
    let mut records: Vec<usize> = findings.iter().map(|f| f.index).collect();
    records.dedup();
    let refused = records.len();
    state.metrics.reject_conversations("pii_detected", refused);
    if total > refused {
        state
            .metrics
            .reject_conversations("batch_rejected", total - refused);
    }
    for t in findings.iter().flat_map(|f| &f.types) {
        state
            .metrics
            .pii_findings
            .get_or_create(&super::metrics::PiiTypeLabel { kind: t.as_str() })
            .inc();
    }
    let mut kinds: Vec<EntityType> = findings.iter().flat_map(|f| f.types.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    // Where and what kind only: the values must not reach the logs either.
    tracing::warn!(
        records = refused,
        fields = findings.len(),
        types = %kinds.join(","),
        "refused conversations that still contain personal data"
    );
    let first = &findings[0];
    let detail = format!(
        "{refused} conversation{} still contain{} personal data ({}), first in record {} field `{}`; \
         redact at the edge and resend; nothing from this batch was stored",
        if refused == 1 { "" } else { "s" },
        if refused == 1 { "s" } else { "" },
        kinds.join(", "),
        first.index,
        first.field,
    );
    let listed: Vec<&PiiRecord> = findings.iter().take(MAX_REPORTED_ERRORS).collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "pii_detected", detail).with_extra(
        serde_json::json!({"rejected": refused, "fields": findings.len(), "records": listed}),
    )
}

fn to_row(state: &AppState, checked: Checked, now: i64) -> NewConversation {
    let c = checked.conversation;
    NewConversation {
        conversation_id: c.conversation_id,
        ts_unix: c.ts_unix.unwrap_or(now),
        received_unix: now,
        // The raw id stops here: only its keyed hash goes any further.
        orch_hash: c
            .orch_id
            .as_deref()
            .map(|id| state.anonymizer.orch_hash(id)),
        agent_path: c.agent_path,
        feedback: c.feedback,
        score: c.score,
        messages_json: checked.messages_json,
        prompt_key: checked.prompt_key,
    }
}
