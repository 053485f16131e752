//! The LLM prompt asking for insight bullets, with the statistics trimmed to a budget.

use super::*;

pub(super) const SYSTEM_PROMPT: &str = "\
You are Phoenix's telemetry analyst. Phoenix operates a fleet of LLM agents (ORCHs) and \
improves them without shipping new binaries, by publishing non-binary updates: prompt_tweak \
(prompt overrides), model_tweak (model selection), json_patch (an RFC 6902 patch of the agent \
configuration) and yaml_graft (a YAML fragment merged into the configuration).

Answer with at most 12 bullet points, one per line, each starting with \"- \". Each bullet is \
one actionable update: name its update type, its target agent prefix when it concerns specific \
agents, what to change, and the figures from the statistics that justify it. Use only agents, \
fields and figures present in the statistics; do not invent any. Put the most important update \
first. No preamble, no headings, no closing remarks.";

/// The system and user prompts asking an LLM for the bullets of `stats`.
///
/// The user prompt carries the focus, the tier and the statistics as compact JSON. When that
/// JSON would exceed [`PROMPT_STATS_BUDGET`], per-agent field summaries are kept only for the
/// [`PROMPT_TOP_AGENTS`] agents with the most records (and, if still too large, long lists are
/// cut), and the prompt says so.
pub fn llm_prompt(stats: &Stats, focus: &str, tier: &str) -> (String, String) {
    let (json, note) = stats_json(stats);
    let mut user = String::new();
    let focus = if focus.trim().is_empty() {
        "general"
    } else {
        focus.trim()
    };
    let _ = writeln!(user, "Focus: {focus}");
    let _ = writeln!(user, "Tier: {tier}");
    match tier {
        "free" => {
            let _ = writeln!(
                user,
                "Free tier: basic insights; prefer the few fleet-wide updates with the most impact."
            );
        }
        "premium" => {
            let _ = writeln!(
                user,
                "Premium tier: advanced insights; per-agent targeting and precise config patches are welcome."
            );
        }
        _ => {}
    }
    let _ = writeln!(
        user,
        "\nHow to read the statistics: counts are over the last {} records (ts_unix {} to {}). \
         `fields` summarises numeric payload fields (percentiles by linear interpolation); \
         `outliers[].fleet_mean` is the mean of all OTHER agents and `z` is in their standard \
         deviations; agent `{}` means records without an agent path; `orchs.stale` lists ORCHs \
         whose last heartbeat is older than `orchs.stale_after_secs`.",
        stats.records,
        stats
            .from_ts
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        stats
            .to_ts
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        NO_AGENT_PATH,
    );
    if let Some(note) = note {
        let _ = writeln!(user, "\nNote: {note}");
    }
    let _ = writeln!(user, "\nStatistics (JSON):\n{json}");
    let _ = writeln!(
        user,
        "\nFindings of fixed rules over the same statistics (may be incomplete):"
    );
    for bullet in heuristic_bullets(stats, focus) {
        let _ = writeln!(user, "- {bullet}");
    }
    let _ = write!(
        user,
        "\nWrite at most {MAX_BULLETS} bullets, focused on {focus}."
    );
    (SYSTEM_PROMPT.to_owned(), user)
}

/// The statistics as compact JSON within the prompt budget, and what was left out.
pub(super) fn stats_json(stats: &Stats) -> (String, Option<String>) {
    let encode = |s: &Stats| {
        let mut value = serde_json::to_value(s).unwrap_or_default();
        round_floats(&mut value);
        value.to_string()
    };
    let full = encode(stats);
    if full.len() <= PROMPT_STATS_BUDGET {
        return (full, None);
    }
    let mut largest: Vec<&AgentStats> = stats.agents.iter().collect();
    largest.sort_by(|a, b| {
        b.records
            .cmp(&a.records)
            .then_with(|| a.agent_path.cmp(&b.agent_path))
    });
    let kept: std::collections::HashSet<&str> = largest
        .iter()
        .take(PROMPT_TOP_AGENTS)
        .map(|a| a.agent_path.as_str())
        .collect();
    let mut trimmed = stats.clone();
    for field in &mut trimmed.fields {
        field
            .per_agent
            .retain(|a| kept.contains(a.agent_path.as_str()));
    }
    let mut note = format!(
        "per-agent field summaries are kept only for the {} agents with the most records; {} \
         other agents are left out of `fields[].per_agent` to fit the prompt.",
        kept.len(),
        stats.agents.len().saturating_sub(kept.len())
    );
    let json = encode(&trimmed);
    if json.len() <= PROMPT_STATS_BUDGET {
        return (json, Some(note));
    }
    // Still too large: drop per-agent summaries altogether and cut the long lists.
    for field in &mut trimmed.fields {
        field.per_agent.clear();
    }
    trimmed.fields.truncate(50);
    trimmed.by_kind.truncate(50);
    trimmed.by_agent_path.truncate(50);
    trimmed.error_kinds.truncate(20);
    trimmed.agents.sort_by(|a, b| {
        b.records
            .cmp(&a.records)
            .then_with(|| a.agent_path.cmp(&b.agent_path))
    });
    trimmed.agents.truncate(50);
    trimmed.outliers.truncate(50);
    trimmed.orchs.stale.truncate(20);
    note = format!(
        "{note} Even so the statistics were too large: every per-agent field summary is left out, \
         and lists are cut to their first entries (fields 50, kinds 50, agents 50 by record \
         count, outliers 50, stale ORCHs 20); counts such as `records`, `errors` and `orchs` \
         still cover the whole window."
    );
    (encode(&trimmed), Some(note))
}

/// Rounds every non-integer number to four significant digits: float noise such as
/// `0.010000000000000007` costs prompt tokens and invites the model to quote it.
pub(super) fn round_floats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(x) = n.as_f64().filter(|x| *x != 0.0) {
                // Powers of ten above 1 are exact; dividing by them avoids 0.1-style noise.
                let digits = 3 - x.abs().log10().floor() as i32;
                let rounded = if digits >= 0 {
                    let scale = 10f64.powi(digits);
                    (x * scale).round() / scale
                } else {
                    let scale = 10f64.powi(-digits);
                    (x / scale).round() * scale
                };
                if let Some(r) =
                    serde_json::Number::from_f64(rounded).filter(|_| rounded.is_finite())
                {
                    *n = r;
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(round_floats),
        serde_json::Value::Object(map) => map.values_mut().for_each(round_floats),
        _ => {}
    }
}
