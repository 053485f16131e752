//! The queen: runs N workers concurrently (at most `concurrency` at once), gives every
//! attempt its own deadline, retries failed workers a bounded number of times, survives
//! worker panics, honours cancellation, and returns the results in worker order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use super::dedup::{self, Duplicate};
use super::prompts::{self, Brief};
use super::proposal::{self, Proposal};
use super::{Call, ChatModel};
use crate::core::shared::llm::{self, ChatResponse};

/// How the queen runs her workers.
#[derive(Debug, Clone)]
pub struct HiveConfig {
    /// Number of workers (N).
    pub workers: usize,
    /// Most workers waiting on the LLM at the same time.
    pub concurrency: usize,
    /// Deadline of one attempt of one worker.
    pub timeout: Duration,
    /// Extra attempts for a worker whose attempt failed in a way worth retrying.
    pub retries: u32,
    /// Pause before a worker's retry (multiplied by the number of its failed attempts).
    pub retry_backoff: Duration,
    /// Similarity from which two proposals count as duplicates ([`dedup::DEFAULT_THRESHOLD`]).
    pub duplicate_threshold: f64,
}

impl HiveConfig {
    /// `workers` workers, all at once, 60 s per attempt, one retry.
    pub fn new(workers: usize) -> Self {
        HiveConfig {
            workers,
            concurrency: workers,
            timeout: Duration::from_secs(60),
            retries: 1,
            retry_backoff: Duration::from_millis(200),
            duplicate_threshold: dedup::DEFAULT_THRESHOLD,
        }
    }
}

/// Why one attempt of a worker (or of the ranking) failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The LLM call failed (after the client's own retries of 429/5xx).
    #[error("{0}")]
    Llm(#[from] llm::Error),
    /// The LLM answered, but not with something usable.
    #[error("unusable answer: {0}")]
    InvalidAnswer(String),
    /// The attempt did not finish before its deadline.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The worker panicked; the queen and the other workers carry on.
    #[error("worker panicked: {0}")]
    Panicked(String),
    /// The run was cancelled (Ctrl-C) before the attempt finished.
    #[error("cancelled")]
    Cancelled,
}

impl WorkerError {
    /// Whether another attempt may succeed. A rejected key, a missing model or a refused
    /// request fail the same way every time, so they are not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkerError::Llm(e) => {
                e.is_retryable() || matches!(e, llm::Error::Malformed { .. } | llm::Error::Empty)
            }
            WorkerError::InvalidAnswer(_) | WorkerError::TimedOut(_) | WorkerError::Panicked(_) => {
                true
            }
            WorkerError::Cancelled => false,
        }
    }

    /// Short stable code: `timeout`, `panic`, `invalid_answer`, `cancelled`, or `llm_<kind>`.
    pub fn kind(&self) -> String {
        match self {
            WorkerError::Llm(e) => format!("llm_{}", e.kind()),
            WorkerError::InvalidAnswer(_) => "invalid_answer".to_owned(),
            WorkerError::TimedOut(_) => "timeout".to_owned(),
            WorkerError::Panicked(_) => "panic".to_owned(),
            WorkerError::Cancelled => "cancelled".to_owned(),
        }
    }
}

/// Where a worker is, as reported while the hive runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a concurrency slot.
    Waiting,
    /// Asking the LLM.
    Running {
        /// Attempt number (1-based).
        attempt: u32,
    },
    /// An attempt failed; another follows.
    Retrying {
        /// The attempt that comes next.
        next_attempt: u32,
        /// Why the last one failed.
        error: String,
    },
    /// A proposal came back.
    Done {
        /// Time from the first attempt to the proposal.
        latency: Duration,
        /// Its title.
        title: String,
    },
    /// Every attempt failed.
    Failed {
        /// The last error.
        error: String,
    },
    /// Stopped by cancellation.
    Cancelled,
}

/// A progress event of one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Worker number (1-based).
    pub worker: usize,
    /// What it is doing now.
    pub phase: Phase,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// It returned a proposal the queen keeps.
    Ok,
    /// It returned a proposal that repeats an earlier worker's.
    Duplicate,
    /// Every attempt failed.
    Failed,
    /// The run was cancelled before it finished.
    Cancelled,
}

impl WorkerStatus {
    /// `ok`, `duplicate`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Ok => "ok",
            WorkerStatus::Duplicate => "duplicate",
            WorkerStatus::Failed => "failed",
            WorkerStatus::Cancelled => "cancelled",
        }
    }
}

/// One worker's slot in the result.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// Worker number (1-based).
    pub worker: usize,
    /// Its perspective.
    pub perspective: String,
    /// Its sampling temperature.
    pub temperature: f32,
    /// How it ended.
    pub status: WorkerStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Time from its first attempt to its end, in milliseconds (0 if it never started).
    pub latency_ms: f64,
    /// The slot as the seed returns it: the proposal's text, or `(failed) <error>`.
    pub text: String,
    /// The proposal, when one came back.
    pub proposal: Option<Proposal>,
    /// The model that answered.
    pub model: Option<String>,
    /// HTTP requests the successful attempt took (more than 1 after 429/5xx retries).
    pub llm_requests: Option<u32>,
    /// The error that ended it.
    pub error: Option<String>,
    /// Short code of that error ([`WorkerError::kind`]).
    pub error_kind: Option<String>,
    /// Every failed attempt, in order (`attempt 1: …`).
    pub attempt_errors: Vec<String>,
    /// The earlier worker this proposal repeats.
    #[serde(flatten)]
    pub duplicate: Option<Duplicate>,
}

/// Tally of the workers by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct proposals.
    pub ok: usize,
    /// Proposals dropped as duplicates.
    pub duplicates: usize,
    /// Workers whose every attempt failed.
    pub failed: usize,
    /// Workers stopped by cancellation.
    pub cancelled: usize,
}

/// What the queen brings back.
#[derive(Debug, Clone, Serialize)]
pub struct HiveReport {
    /// The seed.
    pub seed: String,
    /// Workers run.
    pub workers: usize,
    /// Concurrency bound used.
    pub concurrency: usize,
    /// Per-attempt deadline, milliseconds.
    pub timeout_ms: u64,
    /// Retries allowed per worker.
    pub retries: u32,
    /// Wall time of the whole run, milliseconds.
    pub elapsed_ms: f64,
    /// Whether the run was cancelled.
    pub cancelled: bool,
    /// Tally by status.
    pub counts: Counts,
    /// One slot per worker, in worker order.
    pub results: Vec<WorkerReport>,
}

impl HiveReport {
    /// Workers that succeeded (kept or duplicate).
    pub fn succeeded(&self) -> usize {
        self.counts.ok + self.counts.duplicates
    }

    /// The proposals the queen keeps, in worker order.
    pub fn kept(&self) -> impl Iterator<Item = (&WorkerReport, &Proposal)> {
        self.results
            .iter()
            .filter(|r| r.status == WorkerStatus::Ok)
            .filter_map(|r| r.proposal.as_ref().map(|p| (r, p)))
    }

    /// Slot of worker `worker` (1-based).
    pub fn worker(&self, worker: usize) -> Option<&WorkerReport> {
        worker.checked_sub(1).and_then(|i| self.results.get(i))
    }
}

/// Runs the hive: `config.workers` workers on `brief`, reporting progress as it goes.
///
/// Never fails as a whole: each worker's failure, timeout or panic ends up in its own slot.
/// When `cancel` turns true, waiting workers stop, running attempts are aborted, and the
/// report holds what came back until then.
pub async fn run<M: ChatModel>(
    model: Arc<M>,
    brief: &Brief,
    config: &HiveConfig,
    cancel: watch::Receiver<bool>,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> HiveReport {
    let started = Instant::now();
    let slots = Semaphore::new(config.concurrency.max(1));
    let workers = (0..config.workers).map(|index| {
        run_worker(
            &model,
            brief,
            config,
            index,
            &slots,
            cancel.clone(),
            on_progress,
        )
    });
    let mut results = futures_util::future::join_all(workers).await;

    let texts: Vec<Option<String>> = results
        .iter()
        .map(|r| r.proposal.as_ref().map(Proposal::text))
        .collect();
    for (report, duplicate) in results
        .iter_mut()
        .zip(dedup::find_duplicates(&texts, config.duplicate_threshold))
    {
        if duplicate.is_some() {
            report.status = WorkerStatus::Duplicate;
            report.duplicate = duplicate;
        }
    }
    let mut counts = Counts::default();
    for r in &results {
        match r.status {
            WorkerStatus::Ok => counts.ok += 1,
            WorkerStatus::Duplicate => counts.duplicates += 1,
            WorkerStatus::Failed => counts.failed += 1,
            WorkerStatus::Cancelled => counts.cancelled += 1,
        }
    }
    HiveReport {
        seed: brief.seed.clone(),
        workers: config.workers,
        concurrency: config.concurrency.max(1),
        timeout_ms: config.timeout.as_millis() as u64,
        retries: config.retries,
        elapsed_ms: millis(started.elapsed()),
        cancelled: *cancel.borrow(),
        counts,
        results,
    }
}

async fn run_worker<M: ChatModel>(
    model: &Arc<M>,
    brief: &Brief,
    config: &HiveConfig,
    index: usize,
    slots: &Semaphore,
    mut cancel: watch::Receiver<bool>,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> WorkerReport {
    let worker = index + 1;
    let perspective = prompts::perspective(index);
    let request = prompts::worker_request(brief, index, config.workers);
    let progress = |phase| on_progress(Progress { worker, phase });
    let mut report = WorkerReport {
        worker,
        perspective: perspective.role.to_owned(),
        temperature: perspective.temperature,
        status: WorkerStatus::Cancelled,
        attempts: 0,
        latency_ms: 0.0,
        text: "(cancelled)".to_owned(),
        proposal: None,
        model: None,
        llm_requests: None,
        error: None,
        error_kind: None,
        attempt_errors: Vec::new(),
        duplicate: None,
    };

    progress(Phase::Waiting);
    let _slot = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => {
            progress(Phase::Cancelled);
            return report;
        }
        slot = slots.acquire() => match slot {
            Ok(slot) => slot,
            // The semaphore is never closed; treat it like cancellation if it ever is.
            Err(_) => return report,
        },
    };

    let started = Instant::now();
    let max_attempts = config.retries.saturating_add(1);
    loop {
        // A slot or a retry pause may end in the same instant as a cancellation; never start
        // a new attempt once the run is cancelled.
        if *cancel.borrow() {
            progress(Phase::Cancelled);
            return report;
        }
        report.attempts += 1;
        let attempt = report.attempts;
        progress(Phase::Running { attempt });
        let call = Call {
            worker: Some(worker),
            attempt,
        };
        let outcome = supervise(
            model,
            call,
            request.clone(),
            config.timeout,
            &mut cancel,
            proposal::parse,
        )
        .await;
        report.latency_ms = millis(started.elapsed());
        let error = match outcome {
            Ok((proposal, response)) => {
                progress(Phase::Done {
                    latency: started.elapsed(),
                    title: proposal.title.clone(),
                });
                report.status = WorkerStatus::Ok;
                report.text = proposal.text();
                report.proposal = Some(proposal);
                report.model = Some(response.model);
                report.llm_requests = Some(response.attempts);
                return report;
            }
            Err(WorkerError::Cancelled) => {
                progress(Phase::Cancelled);
                return report;
            }
            Err(error) => error,
        };
        tracing::info!(worker, attempt, error = %error, "worker attempt failed");
        report
            .attempt_errors
            .push(format!("attempt {attempt}: {error}"));
        if attempt < max_attempts && error.is_retryable() {
            progress(Phase::Retrying {
                next_attempt: attempt + 1,
                error: error.to_string(),
            });
            let pause = config.retry_backoff.saturating_mul(attempt);
            tokio::select! {
                biased;
                () = cancelled(&mut cancel) => {
                    progress(Phase::Cancelled);
                    return report;
                }
                () = tokio::time::sleep(pause) => continue,
            }
        }
        progress(Phase::Failed {
            error: error.to_string(),
        });
        report.status = WorkerStatus::Failed;
        report.text = format!("(failed) {error}");
        report.error_kind = Some(error.kind());
        report.error = Some(error.to_string());
        return report;
    }
}

/// One supervised attempt: the LLM call and the parsing of its answer run on their own task,
/// so a panic there is caught (as a `JoinError`) instead of unwinding through the queen, and
/// the task is aborted when the deadline passes or the run is cancelled.
pub(crate) async fn supervise<M, T, F>(
    model: &Arc<M>,
    call: Call,
    request: llm::ChatRequest,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
    parse: F,
) -> Result<(T, ChatResponse), WorkerError>
where
    M: ChatModel,
    T: Send + 'static,
    F: FnOnce(&str) -> Result<T, String> + Send + 'static,
{
    let model = Arc::clone(model);
    let mut task = tokio::spawn(async move {
        let response = model.ask(call, request).await?;
        let value = parse(&response.content).map_err(WorkerError::InvalidAnswer)?;
        Ok::<_, WorkerError>((value, response))
    });
    tokio::select! {
        biased;
        joined = &mut task => match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(WorkerError::Panicked(panic_message(e.into_panic()))),
            Err(_) => Err(WorkerError::Cancelled),
        },
        () = cancelled(cancel) => {
            task.abort();
            Err(WorkerError::Cancelled)
        }
        () = tokio::time::sleep(timeout) => {
            task.abort();
            Err(WorkerError::TimedOut(timeout))
        }
    }
}

/// Resolves once `cancel` is true; never, if nobody can cancel any more.
pub(crate) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
