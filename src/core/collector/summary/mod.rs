//! Insight summaries: rule-based bullets from [`Stats`], the LLM prompt that asks for the same
//! thing, and parsing an LLM's answer back into bullets.
//!
//! Depends only on `analysis` and `telemetry`; the LLM call itself is the caller's.
//!
//! Every bullet proposes a non-binary update (`prompt_tweak`, `model_tweak`, `json_patch`,
//! `yaml_graft`) or an operational check, with the figures that justify it, so an operator can
//! act on an insight without re-reading the telemetry.

use std::fmt::Write as _;

use crate::core::collector::analysis::{
    AgentStats, Direction, ERROR_RATE_FIELD, FieldStats, ModelStats, NO_AGENT_PATH, Outlier, Stats,
    Summary,
};

/// Most bullets an insight summary holds.
pub const MAX_BULLETS: usize = 12;
/// Overall error rate, and per-agent error rate, from which a bullet is written.
pub const HIGH_ERROR_RATE: f64 = 0.05;
/// An agent gets its own error bullet only when its rate is this many times the rest's.
pub const AGENT_ERROR_FACTOR: f64 = 1.5;
/// Mean below which a 0..1 score such as `love_score` asks for a prompt tweak.
pub const LOW_SCORE: f64 = 0.8;
/// `p99 / p50` above which a latency-like field has a tail worth a timeout.
pub const TAIL_FACTOR: f64 = 3.0;
/// Approximate size, in bytes, above which the statistics JSON of a prompt is trimmed.
pub const PROMPT_STATS_BUDGET: usize = 24 * 1024;
/// How many agents (by record count) keep their per-agent field summaries in a trimmed prompt.
pub const PROMPT_TOP_AGENTS: usize = 20;

/// Fewest records or samples an agent needs before rules single it out.
const MIN_AGENT_SAMPLES: usize = 5;
/// Per-agent error bullets beyond this many are folded into one.
const MAX_AGENT_ERROR_BULLETS: usize = 4;

mod heuristic;
mod parse;
mod prompt;

pub use heuristic::heuristic_bullets;
pub use parse::{parse_bullets, render_summary};
pub use prompt::llm_prompt;

#[cfg(test)]
mod tests;
