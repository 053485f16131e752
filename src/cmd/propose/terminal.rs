//! What `phoenix propose` shows and asks on a terminal: a live line per worker, the
//! ranking spinner, and the confirmation before publishing.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::cmd::Targeting;
use crate::core::hive::{self, Phase, Progress, WorkerReport};
use crate::output::{seconds, shorten};

/// The confirmation question for publishing `chosen`.
pub(super) fn question(chosen: &WorkerReport, target: &Targeting) -> String {
    let proposal = chosen.proposal.as_ref().expect("a chosen proposal");
    let update = proposal.update.as_ref().expect("a chosen update");
    let audience = match (&target.target_prefix, &target.target_orch) {
        (None, None) => "every agent".to_owned(),
        (Some(p), None) => format!("agents under {p}"),
        (None, Some(o)) => format!("orch {o}"),
        (Some(p), Some(o)) => format!("agents under {p} of orch {o}"),
    };
    format!(
        "\nPublish worker #{}'s proposal to {audience}?\n  {}\n  update: {}\nPublish? [y/N] ",
        chosen.worker,
        proposal.title,
        update.describe(200)
    )
}

/// Asks on the terminal; Ctrl-C counts as no. The read runs on its own thread so a
/// cancelled prompt does not keep the process alive.
pub(super) async fn confirm(
    question: &str,
    cancel: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let question = question.to_owned();
    std::thread::spawn(move || {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{question}");
        let _ = stderr.flush();
        let mut line = String::new();
        let _ = tx.send(std::io::stdin().read_line(&mut line).map(|_| line));
    });
    tokio::select! {
        answer = rx => {
            let line = answer
                .context("reading the answer")?
                .context("reading the answer from stdin")?;
            Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
        }
        () = hive::queen::cancelled(cancel) => Ok(false),
    }
}

/// One live line per worker on stderr (TTY only).
pub(super) struct LiveProgress {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
}

impl LiveProgress {
    pub(super) fn new(n: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:.bold} {spinner} {wide_msg}")
            .expect("valid template");
        let bars = (0..n)
            .map(|i| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(format!(
                    "#{:<2} {:<20}",
                    i + 1,
                    hive::prompts::perspective(i).role
                ));
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .collect();
        LiveProgress { multi, bars }
    }

    pub(super) fn show(&self, p: &Progress) {
        let Some(bar) = p.worker.checked_sub(1).and_then(|i| self.bars.get(i)) else {
            return;
        };
        match &p.phase {
            Phase::Waiting => bar.set_message("waiting"),
            Phase::Running { attempt: 1 } => bar.set_message("running"),
            Phase::Running { attempt } => bar.set_message(format!("running (try {attempt})")),
            Phase::Retrying {
                next_attempt,
                error,
            } => bar.set_message(format!("try {next_attempt} after: {}", shorten(error, 80))),
            Phase::Done { latency, title } => bar.finish_with_message(format!(
                "done in {}: {}",
                seconds(latency.as_secs_f64() * 1000.0),
                shorten(title, 80)
            )),
            Phase::Failed { error } => {
                bar.finish_with_message(format!("failed: {}", shorten(error, 100)))
            }
            Phase::Cancelled => bar.finish_with_message("cancelled"),
        }
    }

    pub(super) fn clear(self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// A spinner on stderr while the queen ranks.
pub(super) fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Without a terminal, progress goes to the log (`-v` shows it).
pub(super) fn log_progress(p: &Progress) {
    match &p.phase {
        Phase::Retrying {
            next_attempt,
            error,
        } => tracing::info!(worker = p.worker, next_attempt, %error, "worker retrying"),
        Phase::Failed { error } => tracing::info!(worker = p.worker, %error, "worker failed"),
        Phase::Done { latency, .. } => {
            tracing::info!(
                worker = p.worker,
                latency_ms = latency.as_millis() as u64,
                "worker done"
            )
        }
        Phase::Waiting | Phase::Running { .. } | Phase::Cancelled => {}
    }
}
