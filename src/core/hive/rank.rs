//! The queen's ranked synthesis of the kept proposals, and the choice of the proposal to
//! publish as a hot update.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::prompts::{self, Brief, Candidate};
use super::proposal::extract_json_object;
use super::queen::{HiveConfig, HiveReport, WorkerError, WorkerReport, supervise};
use super::{Call, ChatModel};
use crate::core::updates::UpdateType;

/// The proposals in the queen's order of preference, with her reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// The model that ranked them (`none` when there was a single proposal to rank).
    pub model: String,
    /// Best first.
    pub order: Vec<Ranked>,
    /// The best combination to carry out, in the model's words.
    pub summary: String,
    /// Attempts the ranking took.
    pub attempts: u32,
}

/// One place in the ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// 1 for the best.
    pub rank: usize,
    /// Worker number (1-based).
    pub worker: usize,
    /// Why it sits there.
    pub reason: String,
}

/// Asks the LLM to rank the kept proposals of `report` (with the same deadline and retries
/// as a worker). A single proposal is ranked first without asking.
pub async fn rank<M: ChatModel>(
    model: Arc<M>,
    brief: &Brief,
    report: &HiveReport,
    config: &HiveConfig,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ranking, WorkerError> {
    let candidates: Vec<Candidate<'_>> = report
        .kept()
        .map(|(r, p)| Candidate {
            worker: r.worker,
            role: &r.perspective,
            proposal: p,
        })
        .collect();
    match candidates.as_slice() {
        [] => {
            return Err(WorkerError::InvalidAnswer(
                "no proposal came back to rank".to_owned(),
            ));
        }
        [only] => {
            return Ok(Ranking {
                model: "none".to_owned(),
                order: vec![Ranked {
                    rank: 1,
                    worker: only.worker,
                    reason: "the only distinct proposal".to_owned(),
                }],
                summary: String::new(),
                attempts: 0,
            });
        }
        _ => {}
    }
    let request = prompts::rank_request(brief, &candidates);
    let workers: Vec<usize> = candidates.iter().map(|c| c.worker).collect();
    let max_attempts = config.retries.saturating_add(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let valid = workers.clone();
        let call = Call {
            worker: None,
            attempt,
        };
        let outcome = supervise(
            &model,
            call,
            request.clone(),
            config.timeout,
            &mut cancel,
            move |answer: &str| parse_ranking(answer, &valid),
        )
        .await;
        match outcome {
            Ok(((order, summary), response)) => {
                return Ok(Ranking {
                    model: response.model,
                    order,
                    summary,
                    attempts: attempt,
                });
            }
            Err(e) if attempt < max_attempts && e.is_retryable() => {
                tracing::warn!(attempt, error = %e, "ranking failed; retrying");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads `{"ranking": [{"worker", "reason"}], "summary"}`. Unknown and repeated workers are
/// ignored; proposals the model left out are appended, unranked, in worker order.
pub fn parse_ranking(answer: &str, workers: &[usize]) -> Result<(Vec<Ranked>, String), String> {
    let object = match extract_json_object(answer) {
        Some(Ok(o)) => o,
        Some(Err(e)) => return Err(format!("the ranking is not valid JSON: {e}")),
        None => return Err("the ranking is not a JSON object".to_owned()),
    };
    let entries = object
        .get("ranking")
        .and_then(Value::as_array)
        .ok_or("`ranking` is missing or not an array")?;
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for entry in entries {
        let worker = entry
            .get("worker")
            .and_then(|w| {
                w.as_u64().or_else(|| {
                    w.as_str()
                        .and_then(|s| s.trim_start_matches('#').parse().ok())
                })
            })
            .map(|w| w as usize);
        let Some(worker) = worker.filter(|w| workers.contains(w)) else {
            continue;
        };
        if !seen.insert(worker) {
            continue;
        }
        let reason = entry
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        order.push(Ranked {
            rank: order.len() + 1,
            worker,
            reason,
        });
    }
    if order.is_empty() {
        return Err(format!(
            "the ranking names none of the proposals (workers {workers:?})"
        ));
    }
    for &worker in workers {
        if seen.insert(worker) {
            order.push(Ranked {
                rank: order.len() + 1,
                worker,
                reason: "not ranked by the model".to_owned(),
            });
        }
    }
    let summary = object
        .get("summary")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok((order, summary))
}

/// The proposal to publish as `update_type`: worker `pick` if given, else the best-ranked
/// kept proposal that carries an update of that type.
pub fn choose_for_publishing<'a>(
    report: &'a HiveReport,
    ranking: Option<&Ranking>,
    update_type: UpdateType,
    pick: Option<usize>,
) -> Result<&'a WorkerReport, String> {
    let carries = |r: &WorkerReport| {
        r.proposal
            .as_ref()
            .and_then(|p| p.update.as_ref())
            .is_some_and(|u| u.update_type() == update_type)
    };
    if let Some(worker) = pick {
        let slot = report
            .worker(worker)
            .ok_or_else(|| format!("there is no worker {worker} (1 to {})", report.workers))?;
        if slot.proposal.is_none() {
            return Err(format!("worker {worker} brought back no proposal"));
        }
        if !carries(slot) {
            return Err(format!(
                "worker {worker}'s proposal carries no {}",
                update_type.as_str()
            ));
        }
        return Ok(slot);
    }
    let ranking = ranking.ok_or("no ranking to choose the best proposal from")?;
    ranking
        .order
        .iter()
        .filter_map(|r| report.worker(r.worker))
        .find(|slot| carries(slot))
        .ok_or_else(|| {
            format!(
                "none of the {} distinct proposal(s) carries a {}",
                ranking.order.len(),
                update_type.as_str()
            )
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::hive::proposal::{Proposal, ProposedUpdate};
    use crate::core::hive::queen::{Counts, WorkerStatus};
    use crate::core::shared::llm::{self, ChatRequest, ChatResponse};

    #[test]
    fn rankings_are_read_leniently_but_must_name_a_proposal() {
        let (order, summary) = parse_ranking(
            r##"```json
{"ranking": [{"worker": 3, "reason": "biggest  win"}, {"worker": "#1", "reason": "cheap"},
             {"worker": 9, "reason": "no such worker"}, {"worker": 3, "reason": "again"}],
 "summary": "Do 3 then 1."}
```"##,
            &[1, 3, 4],
        )
        .unwrap();
        let got: Vec<(usize, usize, &str)> = order
            .iter()
            .map(|r| (r.rank, r.worker, r.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 3, "biggest win"),
                (2, 1, "cheap"),
                (3, 4, "not ranked by the model")
            ]
        );
        assert_eq!(summary, "Do 3 then 1.");
        assert!(parse_ranking(r#"{"ranking": [{"worker": 7}]}"#, &[1, 2]).is_err());
        assert!(parse_ranking("1. worker 2", &[1, 2]).is_err());
        assert!(parse_ranking(r#"{"order": []}"#, &[1, 2]).is_err());
    }

    fn slot(worker: usize, update: Option<ProposedUpdate>, status: WorkerStatus) -> WorkerReport {
        WorkerReport {
            worker,
            perspective: "p".into(),
            temperature: 0.5,
            status,
            attempts: 1,
            latency_ms: 1.0,
            text: format!("idea {worker}"),
            proposal: Some(Proposal {
                title: format!("idea {worker}"),
                rationale: String::new(),
                update,
            }),
            model: Some("m".into()),
            llm_requests: Some(1),
            error: None,
            error_kind: None,
            attempt_errors: Vec::new(),
            duplicate: None,
        }
    }

    fn report(results: Vec<WorkerReport>) -> HiveReport {
        HiveReport {
            seed: "s".into(),
            workers: results.len(),
            concurrency: results.len(),
            timeout_ms: 1000,
            retries: 1,
            elapsed_ms: 1.0,
            cancelled: false,
            counts: Counts::default(),
            results,
        }
    }

    #[test]
    fn the_best_ranked_proposal_of_the_right_type_is_chosen() {
        let model = |m: &str| Some(ProposedUpdate::ModelTweak { model: m.into() });
        let prompt = Some(ProposedUpdate::PromptTweak {
            prompt: "Be warm".into(),
        });
        let r = report(vec![
            slot(1, model("a/fast"), WorkerStatus::Ok),
            slot(2, prompt, WorkerStatus::Ok),
            slot(3, model("b/faster"), WorkerStatus::Ok),
        ]);
        let ranking = Ranking {
            model: "m".into(),
            order: [2, 3, 1]
                .iter()
                .enumerate()
                .map(|(i, &w)| Ranked {
                    rank: i + 1,
                    worker: w,
                    reason: String::new(),
                })
                .collect(),
            summary: String::new(),
            attempts: 1,
        };
        let best = choose_for_publishing(&r, Some(&ranking), UpdateType::ModelTweak, None);
        assert_eq!(best.unwrap().worker, 3);
        let best = choose_for_publishing(&r, Some(&ranking), UpdateType::PromptTweak, None);
        assert_eq!(best.unwrap().worker, 2);
        let picked = choose_for_publishing(&r, None, UpdateType::ModelTweak, Some(1));
        assert_eq!(picked.unwrap().worker, 1);
        let wrong = choose_for_publishing(&r, None, UpdateType::PromptTweak, Some(1));
        assert!(wrong.unwrap_err().contains("carries no prompt_tweak"));
        assert!(choose_for_publishing(&r, None, UpdateType::ModelTweak, Some(9)).is_err());
        assert!(choose_for_publishing(&r, None, UpdateType::ModelTweak, None).is_err());
    }

    struct Fixed(String);

    impl ChatModel for Fixed {
        fn ask(
            &self,
            call: Call,
            _request: ChatRequest,
        ) -> impl Future<Output = Result<ChatResponse, llm::Error>> + Send {
            assert_eq!(call.worker, None, "the ranking is the queen's own call");
            let content = self.0.clone();
            async move {
                Ok(ChatResponse {
                    content,
                    model: "ranker".into(),
                    usage: None,
                    attempts: 1,
                })
            }
        }
    }

    #[tokio::test]
    async fn rank_asks_once_for_several_proposals_and_not_at_all_for_one() {
        let mut config = HiveConfig::new(2);
        config.timeout = Duration::from_secs(5);
        let brief = Brief::default();
        let two = report(vec![
            slot(1, None, WorkerStatus::Ok),
            slot(2, None, WorkerStatus::Ok),
        ]);
        let model = Arc::new(Fixed(
            r#"{"ranking":[{"worker":2,"reason":"better"},{"worker":1,"reason":"ok"}],"summary":"2 first"}"#.into(),
        ));
        let cancel = watch::channel(false).1;
        let ranking = rank(model.clone(), &brief, &two, &config, cancel.clone())
            .await
            .unwrap();
        assert_eq!(ranking.model, "ranker");
        assert_eq!(ranking.order[0].worker, 2);
        assert_eq!(ranking.summary, "2 first");

        let one = report(vec![
            slot(1, None, WorkerStatus::Ok),
            slot(2, None, WorkerStatus::Duplicate),
        ]);
        let ranking = rank(model, &brief, &one, &config, cancel).await.unwrap();
        assert_eq!((ranking.model.as_str(), ranking.attempts), ("none", 0));
        assert_eq!(ranking.order.len(), 1);
    }
}
