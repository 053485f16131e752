//! The human-readable output of `phoenix propose`: the workers' table, the tally, the
//! ranking and what was published.

use std::time::Duration;

use serde::Serialize;

use crate::core::hive::{HiveReport, Ranking, WorkerReport, WorkerStatus};
use crate::core::updates::UpdateEnvelope;
use crate::output::{seconds, shorten, table};

/// Which insight grounded the proposals.
#[derive(Debug, Serialize)]
pub(super) struct ContextInfo {
    /// The insight's id.
    pub(super) insight_id: String,
    /// Its analysis focus.
    pub(super) focus: String,
    /// Records it summarised.
    pub(super) records_analyzed: usize,
    /// When it was produced.
    pub(super) ts_unix: i64,
}

/// The update published from a proposal.
#[derive(Debug, Serialize)]
pub(super) struct Published {
    /// Worker whose proposal it is.
    pub(super) worker: usize,
    /// The envelope the distributor stored.
    pub(super) update: UpdateEnvelope,
}

/// `--json` output: the hive report plus what the queen did with it.
#[derive(Debug, Serialize)]
pub(super) struct Output<'a> {
    /// The LLM model the workers asked.
    pub(super) model: &'a str,
    /// The insight in the prompts (`--context-from-insights`).
    pub(super) context: Option<ContextInfo>,
    /// Workers, their results and the tally.
    #[serde(flatten)]
    pub(super) hive: &'a HiveReport,
    /// The queen's ranked synthesis (`--rank`, `--publish-best`).
    pub(super) ranking: Option<Ranking>,
    /// Why the ranking failed.
    pub(super) ranking_error: Option<String>,
    /// The update published (`--publish-best`).
    pub(super) published: Option<Published>,
    /// Why nothing was published.
    pub(super) publish_error: Option<String>,
}

/// Title, rationale and update of a worker's proposal, or its `(failed) …` slot.
fn proposal_cell(w: &WorkerReport) -> String {
    let Some(p) = &w.proposal else {
        return shorten(&w.text, 300);
    };
    let mut cell = p.title.clone();
    if !p.rationale.is_empty() {
        cell.push('\n');
        cell.push_str(&shorten(&p.rationale, 300));
    }
    if let Some(u) = &p.update {
        cell.push_str("\n→ ");
        cell.push_str(&u.describe(80));
    }
    cell
}

/// Table width when stdout is not a terminal.
const PIPED_WIDTH: u16 = 120;

/// The run for people: header, one row per worker, the tally and the ranking.
pub(super) fn render_hive(out: &Output<'_>, stdout_tty: bool) {
    let r = out.hive;
    let retries = match r.retries {
        1 => "1 retry".to_owned(),
        n => format!("{n} retries"),
    };
    println!(
        "Queen ran {} worker{} on {:?} with {} (concurrency {}, timeout {}, {retries}).",
        r.workers,
        if r.workers == 1 { "" } else { "s" },
        r.seed,
        out.model,
        r.concurrency,
        humantime::format_duration(Duration::from_millis(r.timeout_ms)),
    );
    if let Some(c) = &out.context {
        println!(
            "Grounded in insight {} (focus {}, {} records).",
            c.insight_id, c.focus, c.records_analyzed
        );
    }
    let mut t = table(["#", "perspective", "status", "tries", "latency", "proposal"]);
    if !stdout_tty {
        // Piped output has no terminal width to wrap to; keep it readable anyway.
        t.set_width(PIPED_WIDTH);
    }
    for w in &r.results {
        let status = match (&w.status, &w.duplicate) {
            (WorkerStatus::Duplicate, Some(d)) => {
                format!("duplicate of #{} ({})", d.of, d.kind.as_str())
            }
            (s, _) => s.as_str().to_owned(),
        };
        let latency = if w.attempts == 0 {
            "-".to_owned()
        } else {
            seconds(w.latency_ms)
        };
        t.add_row([
            w.worker.to_string(),
            w.perspective.clone(),
            status,
            w.attempts.to_string(),
            latency,
            proposal_cell(w),
        ]);
    }
    println!("{t}");
    let c = &r.counts;
    let mut tally = vec![format!(
        "{} distinct proposal{}",
        c.ok,
        if c.ok == 1 { "" } else { "s" }
    )];
    if c.duplicates > 0 {
        let which: Vec<String> = r
            .results
            .iter()
            .filter_map(|w| {
                w.duplicate
                    .as_ref()
                    .map(|d| format!("#{} repeats #{}", w.worker, d.of))
            })
            .collect();
        tally.push(format!(
            "{} duplicate{} dropped ({})",
            c.duplicates,
            if c.duplicates == 1 { "" } else { "s" },
            which.join(", ")
        ));
    }
    if c.failed > 0 {
        tally.push(format!("{} failed", c.failed));
    }
    if c.cancelled > 0 {
        tally.push(format!("{} cancelled", c.cancelled));
    }
    println!(
        "{} in {}: {}.",
        if r.cancelled { "Cancelled" } else { "Done" },
        seconds(r.elapsed_ms),
        tally.join(", ")
    );

    if let Some(ranking) = &out.ranking {
        println!("\nRanking by {}:", ranking.model);
        for place in &ranking.order {
            let title = r
                .worker(place.worker)
                .and_then(|w| w.proposal.as_ref())
                .map(|p| p.title.as_str())
                .unwrap_or("?");
            let reason = if place.reason.is_empty() {
                String::new()
            } else {
                format!(" — {}", place.reason)
            };
            println!("  {}. #{} {}{reason}", place.rank, place.worker, title);
        }
        if !ranking.summary.is_empty() {
            println!("  Synthesis: {}", ranking.summary);
        }
    }
    if let Some(e) = &out.ranking_error {
        println!("\nRanking failed: {e}");
    }
}

/// What was published, or that nothing was.
pub(super) fn render_publish(out: &Output<'_>, declined: bool) {
    if let Some(p) = &out.published {
        let u = &p.update;
        println!(
            "\nPublished worker #{}'s proposal as {} {} (seq {}) to {} ({} tier{}).",
            p.worker,
            u.update_type.as_str(),
            u.update_id,
            u.seq,
            crate::cmd::audience(u),
            u.tier_required.as_str(),
            u.rollout_percent
                .map(|p| format!(", rollout {p}%"))
                .unwrap_or_default()
        );
        println!("Follow it with `phoenix publish status {}`.", u.update_id);
    } else if declined {
        println!("\nNot published.");
    }
}
