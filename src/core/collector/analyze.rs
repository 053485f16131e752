//! `POST /analyze`: statistics over the last N records, then a summary from the LLM or,
//! failing that, from rules; every insight is stored before it is returned.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::AppState;
use super::metrics::AnalyzeLabels;
use super::query::{build_filter, parse_time};
use crate::core::collector::analysis::{self, AnalysisOptions};
use crate::core::collector::insight::{Insight, SummarySource};
use crate::core::collector::summary;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::json;
use crate::core::shared::tier::Tier;
use crate::core::telemetry::now_unix;

/// Largest `/analyze` body, before and after gzip: a request is a handful of filters.
const MAX_ANALYZE_BODY: usize = 64 * 1024;

/// The request body. Unknown fields are refused so a typo (`lastn`) is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// How many of the newest records to analyse; defaults to the tier's limit.
    pub last_n: Option<i64>,
    /// What to focus the summary on.
    pub focus: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this level.
    pub level: Option<String>,
    /// Only this agent path prefix.
    pub agent_prefix: Option<String>,
    /// Only this orch (raw id or hash).
    pub orch: Option<String>,
    /// Unix seconds or RFC 3339.
    pub since: Option<serde_json::Value>,
    /// Unix seconds or RFC 3339.
    pub until: Option<serde_json::Value>,
}

fn time_field(field: &str, v: Option<serde_json::Value>) -> Result<Option<i64>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("`{field}` must be whole Unix seconds"),
            )
        }),
        Some(serde_json::Value::String(s)) => parse_time(field, &s).map(Some),
        Some(_) => Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` must be Unix seconds or RFC 3339"),
        )),
    }
}

pub(super) async fn analyze(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Insight>, ApiError> {
    // Gzip is undone and other encodings refused (415), as on the ingest endpoints.
    let body = http::read_body(
        &headers,
        body,
        MAX_ANALYZE_BODY,
        MAX_ANALYZE_BODY,
        &state.config.server.decode_budget,
    )
    .await?;
    // The seed's curl examples omit Content-Type (curl then says form-urlencoded): the body is
    // JSON whatever the header claims, and an empty body means "all defaults".
    let req: AnalyzeRequest = match json::parse_object(&body) {
        Err(json::ObjectError::Empty) => AnalyzeRequest::default(),
        Err(e) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("analyze request: {e}"),
            ));
        }
        Ok(map) => serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("analyze request: {e}"))
        })?,
    };
    let presented = headers.get("x402").and_then(|v| v.to_str().ok());
    Ok(Json(run(&state, req, presented).await?))
}

/// Runs an analysis and stores its insight (`POST /analyze`, and the dashboard's "Analyze
/// now"); `x402` is the key the caller presented, which decides the tier.
pub async fn run(
    state: &AppState,
    req: AnalyzeRequest,
    x402: Option<&str>,
) -> Result<Insight, ApiError> {
    let tier = Tier::from_key(state.config.premium_key.as_deref(), x402);
    let limit = tier.limit();
    let requested = match req.last_n {
        None => limit,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`last_n` must be at least 1, got {n}"),
            ));
        }
    };
    let last_n = requested.min(limit);
    let focus = req
        .focus
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or("general")
        .to_owned();
    if focus.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`focus` is longer than 200 bytes",
        ));
    }
    let since = time_field("since", req.since)?;
    let until = time_field("until", req.until)?;
    let filter = build_filter(
        state,
        req.kind,
        req.level,
        req.agent_prefix,
        req.orch,
        since,
        until,
    )?;

    let started = Instant::now();
    let stale_after = state.config.stale_after.as_secs() as i64;
    let page = state.store.query(&filter, last_n, None).await?;
    let orchs: Vec<String> = page
        .records
        .iter()
        .filter_map(|r| r.orch_hash.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let heartbeats = state.store.last_heartbeats(&orchs).await?;
    // The analysis is CPU work over up to a tier's worth of records: off the async workers.
    let stats = tokio::task::spawn_blocking(move || {
        let opts = AnalysisOptions {
            now_unix: now_unix(),
            stale_after_secs: stale_after,
            ..AnalysisOptions::default()
        };
        (
            page.records.len(),
            analysis::analyze(&page.records, &heartbeats, &opts),
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    let (records_analyzed, stats) = stats;
    let analysis_ms = started.elapsed().as_secs_f64() * 1000.0;

    let (source, bullets, model, fallback_reason, llm_ms) = match &state.llm {
        Err(reason) => (
            SummarySource::Heuristic,
            summary::heuristic_bullets(&stats, &focus),
            None,
            Some(reason.clone()),
            None,
        ),
        Ok(llm) => {
            let (system, user) = summary::llm_prompt(&stats, &focus, tier.as_str());
            let asked = Instant::now();
            let answer = llm.complete(&system, &user).await;
            let llm_ms = Some(asked.elapsed().as_secs_f64() * 1000.0);
            match answer {
                Ok(resp) => {
                    let bullets = summary::parse_bullets(&resp.content);
                    if bullets.is_empty() {
                        let reason = "the LLM answer contained no bullet".to_owned();
                        (
                            SummarySource::Heuristic,
                            summary::heuristic_bullets(&stats, &focus),
                            None,
                            Some(reason),
                            llm_ms,
                        )
                    } else {
                        (SummarySource::Llm, bullets, Some(resp.model), None, llm_ms)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LLM summary failed; using the heuristic summary");
                    let reason = format!("LLM call failed ({}): {e}", e.kind());
                    (
                        SummarySource::Heuristic,
                        summary::heuristic_bullets(&stats, &focus),
                        None,
                        Some(reason),
                        llm_ms,
                    )
                }
            }
        }
    };

    let insight = Insight {
        id: uuid::Uuid::now_v7().to_string(),
        ts_unix: now_unix(),
        tier,
        focus,
        source,
        model,
        fallback_reason,
        summary: summary::render_summary(&bullets),
        bullets,
        requested_last_n: requested,
        last_n,
        tier_limit: limit,
        clamped: requested > limit,
        records_analyzed,
        filters: filter,
        stats,
        analysis_ms,
        llm_ms,
    };
    state
        .store
        .save_insight(insight.to_record()?)?
        .wait()
        .await?;
    state
        .metrics
        .analyze
        .get_or_create(&AnalyzeLabels {
            tier: tier.as_str(),
            source: source.as_str(),
        })
        .inc();
    Ok(insight)
}
