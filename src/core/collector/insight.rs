//! Insights: what `POST /analyze` produces and `GET /insights` serves back.

use serde::{Deserialize, Serialize};

use crate::core::collector::analysis::Stats;
pub use crate::core::shared::tier::{FREE_LIMIT, PREMIUM_LIMIT, Tier};
use crate::core::store::{self, InsightRecord, TelemetryFilter};

/// Who wrote the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SummarySource {
    /// The configured LLM.
    Llm,
    /// Phoenix's rules, from the same statistics.
    Heuristic,
}

impl SummarySource {
    /// `llm` or `heuristic`.
    pub fn as_str(self) -> &'static str {
        match self {
            SummarySource::Llm => "llm",
            SummarySource::Heuristic => "heuristic",
        }
    }
}

/// One analysis result, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// Identifier (UUID v7).
    pub id: String,
    /// When it was produced, Unix seconds.
    pub ts_unix: i64,
    /// Tier the request was served at.
    pub tier: Tier,
    /// Analysis focus (`performance`, `emotional_resonance`, ...).
    pub focus: String,
    /// Who wrote the summary.
    pub source: SummarySource,
    /// The LLM model, when the LLM wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why the heuristic summary was used instead of the LLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The bullets as one text block (`- ...` lines).
    pub summary: String,
    /// At most 12 actionable bullets.
    pub bullets: Vec<String>,
    /// `last_n` as requested.
    pub requested_last_n: usize,
    /// `last_n` after clamping to the tier's limit.
    pub last_n: usize,
    /// The tier's limit.
    pub tier_limit: usize,
    /// Whether `requested_last_n` exceeded the tier's limit.
    pub clamped: bool,
    /// Records actually analysed (fewer than `last_n` when the store holds fewer).
    pub records_analyzed: usize,
    /// Filters applied before taking the last N.
    #[serde(default)]
    pub filters: TelemetryFilter,
    /// The statistics the summary is based on.
    pub stats: Stats,
    /// Milliseconds spent reading and analysing the records.
    pub analysis_ms: f64,
    /// Milliseconds spent waiting for the LLM, when one was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_ms: Option<f64>,
}

impl Insight {
    /// The insight as a store keeps it.
    pub fn to_record(&self) -> Result<InsightRecord, store::Error> {
        let body = serde_json::to_string(self)
            .map_err(|e| store::Error::Corrupt(format!("insight: {e}")))?;
        Ok(InsightRecord {
            id: self.id.clone(),
            ts_unix: self.ts_unix,
            tier: self.tier.as_str().to_owned(),
            focus: self.focus.clone(),
            source: self.source.as_str().to_owned(),
            body,
        })
    }

    /// The insight a store gave back.
    pub fn from_record(record: &InsightRecord) -> Result<Insight, store::Error> {
        serde_json::from_str(&record.body)
            .map_err(|e| store::Error::Corrupt(format!("insight: {e}")))
    }
}

/// The body of `GET /insights`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InsightList {
    /// Number of insights returned.
    pub count: usize,
    /// Newest first.
    pub insights: Vec<Insight>,
    /// Premium insights left out: the caller sent neither the X402 key nor the admin token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub withheld: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
