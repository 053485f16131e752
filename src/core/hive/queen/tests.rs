use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Barrier;

use super::*;
use crate::core::shared::llm::ChatRequest;

type Answer = Pin<Box<dyn Future<Output = Result<ChatResponse, llm::Error>> + Send>>;

/// A model scripted per call: the closure decides what each worker's attempt gets.
struct Scripted<F>(F);

impl<F> ChatModel for Scripted<F>
where
    F: Fn(Call, ChatRequest) -> Answer + Send + Sync + 'static,
{
    fn ask(
        &self,
        call: Call,
        request: ChatRequest,
    ) -> impl Future<Output = Result<ChatResponse, llm::Error>> + Send {
        (self.0)(call, request)
    }
}

fn scripted(
    f: impl Fn(Call, ChatRequest) -> Answer + Send + Sync + 'static,
) -> Arc<Scripted<impl Fn(Call, ChatRequest) -> Answer + Send + Sync + 'static>> {
    Arc::new(Scripted(f))
}

fn answer(content: String) -> Answer {
    Box::pin(async move { Ok(reply(content)) })
}

fn reply(content: String) -> ChatResponse {
    ChatResponse {
        content,
        model: "scripted/model".into(),
        usage: None,
        attempts: 1,
    }
}

fn proposal_json(title: &str) -> String {
    serde_json::json!({"title": title, "rationale": format!("because {title}"), "update": null})
        .to_string()
}

fn brief() -> Brief {
    Brief {
        seed: "Improve memory retrieval speed".into(),
        ..Brief::default()
    }
}

fn config(n: usize) -> HiveConfig {
    HiveConfig {
        retry_backoff: Duration::ZERO,
        timeout: Duration::from_secs(10),
        ..HiveConfig::new(n)
    }
}

fn never_cancelled() -> watch::Receiver<bool> {
    watch::channel(false).1
}

async fn run_quiet<M: ChatModel>(model: Arc<M>, config: &HiveConfig) -> HiveReport {
    run(model, &brief(), config, never_cancelled(), &|_| {}).await
}

fn worker_of(call: Call) -> usize {
    call.worker.expect("a worker call")
}

#[tokio::test]
async fn all_workers_are_in_flight_at_once_and_come_back_in_order() {
    let n = 5;
    // Every call waits until all N are in flight: the run can only finish if the queen
    // really runs them concurrently (sequential calls would block on the barrier).
    let barrier = Arc::new(Barrier::new(n));
    let model = scripted(move |call, _| {
        let barrier = barrier.clone();
        Box::pin(async move {
            barrier.wait().await;
            Ok(reply(proposal_json(&format!(
                "idea number {}",
                worker_of(call)
            ))))
        })
    });
    let report = tokio::time::timeout(Duration::from_secs(10), run_quiet(model, &config(n)))
        .await
        .expect("the workers ran concurrently");
    assert_eq!(report.counts.ok, n);
    for (i, r) in report.results.iter().enumerate() {
        assert_eq!(r.worker, i + 1);
        assert_eq!(r.status, WorkerStatus::Ok);
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.proposal.as_ref().unwrap().title,
            format!("idea number {}", i + 1)
        );
        assert_eq!(r.perspective, prompts::perspective(i).role);
    }
}

#[tokio::test]
async fn concurrency_bounds_the_calls_in_flight() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (flight, top) = (in_flight.clone(), peak.clone());
    let model = scripted(move |call, _| {
        let (flight, top) = (flight.clone(), top.clone());
        Box::pin(async move {
            let now = flight.fetch_add(1, Ordering::SeqCst) + 1;
            top.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            flight.fetch_sub(1, Ordering::SeqCst);
            Ok(reply(proposal_json(&format!(
                "proposal {}",
                worker_of(call)
            ))))
        })
    });
    let report = run_quiet(
        model,
        &HiveConfig {
            concurrency: 2,
            ..config(6)
        },
    )
    .await;
    assert_eq!(report.counts.ok, 6);
    assert!(peak.load(Ordering::SeqCst) <= 2, "peak {peak:?}");
}

#[tokio::test]
async fn failures_are_retried_and_isolated_in_their_slot() {
    let calls = Arc::new(Mutex::new(HashMap::<usize, u32>::new()));
    let seen = calls.clone();
    let model = scripted(move |call, _| {
        let w = worker_of(call);
        *seen.lock().unwrap().entry(w).or_default() += 1;
        match (w, call.attempt) {
            // Fails once, then succeeds.
            (2, 1) => Box::pin(async {
                Err(llm::Error::Server {
                    status: 502,
                    detail: "bad gateway".into(),
                    attempts: 1,
                })
            }),
            // Always fails.
            (3, _) => Box::pin(async {
                Err(llm::Error::Server {
                    status: 500,
                    detail: "boom".into(),
                    attempts: 1,
                })
            }),
            // Garbage first, then a proposal.
            (4, 1) => answer(r#"{"title": "#.into()),
            _ => answer(proposal_json(&format!("distinct idea {w}"))),
        }
    });
    let report = run_quiet(model, &config(4)).await;
    let r = &report.results;
    assert_eq!((r[0].status, r[0].attempts), (WorkerStatus::Ok, 1));
    assert_eq!((r[1].status, r[1].attempts), (WorkerStatus::Ok, 2));
    assert_eq!(r[1].attempt_errors.len(), 1);
    assert!(r[1].attempt_errors[0].contains("HTTP 502"));
    assert_eq!((r[2].status, r[2].attempts), (WorkerStatus::Failed, 2));
    assert!(
        r[2].text
            .starts_with("(failed) LLM endpoint failed with HTTP 500"),
        "{}",
        r[2].text
    );
    assert_eq!(r[2].error_kind.as_deref(), Some("llm_server"));
    assert_eq!((r[3].status, r[3].attempts), (WorkerStatus::Ok, 2));
    assert!(
        r[3].attempt_errors[0].contains("unusable answer"),
        "{:?}",
        r[3].attempt_errors
    );
    assert_eq!(
        report.counts,
        Counts {
            ok: 3,
            duplicates: 0,
            failed: 1,
            cancelled: 0
        }
    );
    assert_eq!(calls.lock().unwrap()[&3], 2, "retries are bounded");
}

#[tokio::test]
async fn errors_that_cannot_succeed_are_not_retried() {
    let model = scripted(|_, _| {
        Box::pin(async {
            Err(llm::Error::Unauthorized {
                detail: "bad key".into(),
            })
        })
    });
    let report = run_quiet(
        model,
        &HiveConfig {
            retries: 3,
            ..config(2)
        },
    )
    .await;
    for r in &report.results {
        assert_eq!((r.status, r.attempts), (WorkerStatus::Failed, 1));
        assert!(r.text.contains("rejected the API key"), "{}", r.text);
    }
}

#[tokio::test]
async fn a_hung_call_is_cut_by_the_deadline_and_retried() {
    let model = scripted(|call, _| match (worker_of(call), call.attempt) {
        (1, 1) | (2, _) => Box::pin(std::future::pending()),
        (w, _) => answer(proposal_json(&format!("answer from worker {w}"))),
    });
    let report = run_quiet(
        model,
        &HiveConfig {
            timeout: Duration::from_millis(50),
            ..config(3)
        },
    )
    .await;
    let r = &report.results;
    assert_eq!((r[0].status, r[0].attempts), (WorkerStatus::Ok, 2));
    assert_eq!(r[0].attempt_errors, vec!["attempt 1: timed out after 50ms"]);
    assert_eq!((r[1].status, r[1].attempts), (WorkerStatus::Failed, 2));
    assert_eq!(r[1].text, "(failed) timed out after 50ms");
    assert_eq!(r[1].error_kind.as_deref(), Some("timeout"));
    assert_eq!(r[2].status, WorkerStatus::Ok);
}

#[tokio::test]
async fn a_panicking_worker_is_reported_and_the_others_finish() {
    let model = scripted(|call, _| {
        let w = worker_of(call);
        Box::pin(async move {
            if w == 2 {
                panic!("worker 2 exploded");
            }
            Ok(reply(proposal_json(&format!("steady worker {w}"))))
        })
    });
    let report = run_quiet(model, &config(3)).await;
    let r = &report.results;
    assert_eq!(r[0].status, WorkerStatus::Ok);
    assert_eq!((r[1].status, r[1].attempts), (WorkerStatus::Failed, 2));
    assert_eq!(r[1].text, "(failed) worker panicked: worker 2 exploded");
    assert_eq!(r[1].error_kind.as_deref(), Some("panic"));
    assert_eq!(r[2].status, WorkerStatus::Ok);
}

#[tokio::test]
async fn cancellation_keeps_what_came_back() {
    let (cancel_tx, cancel) = watch::channel(false);
    let cancel_tx = Arc::new(cancel_tx);
    let trigger = cancel_tx.clone();
    let model = scripted(move |call, _| match worker_of(call) {
        1 => answer(proposal_json("the fast one")),
        _ => Box::pin(std::future::pending()),
    });
    let events = Mutex::new(Vec::new());
    let report = run(
        model,
        &brief(),
        &HiveConfig {
            concurrency: 2,
            ..config(3)
        },
        cancel,
        &|p: Progress| {
            // Cancel as soon as the first proposal is in: worker 2 is mid-call and
            // worker 3 still waits for a slot.
            if matches!(p.phase, Phase::Done { .. }) {
                let _ = trigger.send(true);
            }
            events.lock().unwrap().push(p);
        },
    )
    .await;
    assert!(report.cancelled);
    let r = &report.results;
    assert_eq!(r[0].status, WorkerStatus::Ok);
    assert_eq!((r[1].status, r[1].attempts), (WorkerStatus::Cancelled, 1));
    assert_eq!((r[2].status, r[2].attempts), (WorkerStatus::Cancelled, 0));
    assert_eq!(r[2].text, "(cancelled)");
    assert_eq!(report.counts.cancelled, 2);
    let events = events.into_inner().unwrap();
    assert!(events.contains(&Progress {
        worker: 3,
        phase: Phase::Cancelled
    }));
    drop(cancel_tx);
}

#[tokio::test]
async fn duplicates_are_marked_with_the_worker_they_repeat() {
    let model = scripted(|call, _| {
        let text = match worker_of(call) {
            1 | 3 => proposal_json("Add a caching layer"),
            2 => proposal_json("Use vector similarity search"),
            _ => proposal_json("add a CACHING layer!"),
        };
        answer(text)
    });
    let report = run_quiet(model, &config(4)).await;
    let r = &report.results;
    assert_eq!(r[0].status, WorkerStatus::Ok);
    assert_eq!(r[1].status, WorkerStatus::Ok);
    for dup in [&r[2], &r[3]] {
        assert_eq!(dup.status, WorkerStatus::Duplicate);
        assert_eq!(dup.duplicate.as_ref().unwrap().of, 1);
    }
    assert_eq!(report.counts.duplicates, 2);
    assert_eq!(report.kept().count(), 2);
    let json = serde_json::to_value(&r[2]).unwrap();
    assert_eq!(json["duplicate_of"], 1);
    assert_eq!(json["duplicate_kind"], "exact");
}

#[tokio::test]
async fn progress_walks_through_the_phases() {
    let model = scripted(|call, _| match call.attempt {
        1 => Box::pin(async { Err(llm::Error::Empty) }),
        _ => answer(proposal_json("second time lucky")),
    });
    let events = Mutex::new(Vec::new());
    run(model, &brief(), &config(1), never_cancelled(), &|p| {
        events.lock().unwrap().push(p.phase)
    })
    .await;
    let phases = events.into_inner().unwrap();
    assert!(
        matches!(
            phases.as_slice(),
            [
                Phase::Waiting,
                Phase::Running { attempt: 1 },
                Phase::Retrying {
                    next_attempt: 2,
                    ..
                },
                Phase::Running { attempt: 2 },
                Phase::Done { .. }
            ]
        ),
        "{phases:?}"
    );
}
