//! What the queen tells each worker and what she asks when ranking: a distinct perspective
//! and temperature per worker, the JSON shape of an answer, and the fleet context.

use std::fmt::Write as _;

use serde_json::json;

use crate::core::collector::insight::Insight;
use crate::core::shared::llm::{ChatRequest, Message};
use crate::core::updates::UpdateType;

use super::proposal::Proposal;

/// One angle a worker takes on the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perspective {
    /// Short role name shown in the output.
    pub role: &'static str,
    /// What this role looks at first.
    pub focus: &'static str,
    /// Sampling temperature: cautious roles sample colder, exploratory ones hotter.
    pub temperature: f32,
}

/// The roles handed out in order; worker N+1 starts the list again, hotter.
pub const PERSPECTIVES: [Perspective; 8] = [
    Perspective {
        role: "performance engineer",
        focus: "latency, throughput, caching and doing less work per request",
        temperature: 0.3,
    },
    Perspective {
        role: "reliability engineer",
        focus: "failure modes, error rates, retries, fallbacks and graceful degradation",
        temperature: 0.45,
    },
    Perspective {
        role: "cost optimiser",
        focus: "tokens, model choice and spending less for the same quality",
        temperature: 0.55,
    },
    Perspective {
        role: "quality reviewer",
        focus: "answer quality, prompts and how users experience the agents",
        temperature: 0.65,
    },
    Perspective {
        role: "data specialist",
        focus: "indexing, retrieval, memory layout and what the telemetry says about data",
        temperature: 0.75,
    },
    Perspective {
        role: "simplifier",
        focus: "removing steps, configuration and moving parts that do not pay for themselves",
        temperature: 0.85,
    },
    Perspective {
        role: "experimenter",
        focus: "measurable experiments, staged rollouts and what to observe to decide",
        temperature: 0.95,
    },
    Perspective {
        role: "contrarian",
        focus: "the unconventional option the others will not suggest",
        temperature: 1.05,
    },
];

/// Highest temperature handed out, however many workers there are.
const MAX_TEMPERATURE: f32 = 1.3;

/// The perspective of worker `index` (0-based).
pub fn perspective(index: usize) -> Perspective {
    let base = PERSPECTIVES[index % PERSPECTIVES.len()];
    let round = (index / PERSPECTIVES.len()) as f32;
    Perspective {
        temperature: (base.temperature + 0.1 * round).min(MAX_TEMPERATURE),
        ..base
    }
}

/// What every worker is asked about.
#[derive(Debug, Clone, Default)]
pub struct Brief {
    /// The improvement seed, e.g. "Improve memory retrieval speed".
    pub seed: String,
    /// Fleet context (see [`insight_context`]) added to the prompt.
    pub context: Option<String>,
    /// The update type the operator intends to publish; workers are asked to carry one.
    pub publish_as: Option<UpdateType>,
}

const ANSWER_SHAPE: &str = r#"Answer with one JSON object and nothing else:
{"title": "<what to change, one line, at most 100 characters>",
 "rationale": "<2 to 4 sentences: the change, why it helps, and which figure should move>",
 "update": <null, or the hot update that carries the change out>}
A hot update is pushed to every agent without a restart. Two kinds exist:
 {"type": "model_tweak", "model": "<provider/model id, e.g. anthropic/claude-3-haiku>"}
 {"type": "prompt_tweak", "prompt": "<the complete new default system prompt>"}"#;

/// The chat request of worker `index` (0-based) of `n`.
pub fn worker_request(brief: &Brief, index: usize, n: usize) -> ChatRequest {
    let me = perspective(index);
    let others: Vec<&str> = (0..n.min(PERSPECTIVES.len()))
        .filter(|&j| j != index % PERSPECTIVES.len())
        .map(|j| PERSPECTIVES[j].role)
        .collect();
    let mut system = format!(
        "You are worker {k} of {n} in Phoenix's hive. Phoenix operates a fleet of LLM agents \
         (ORCHs) that improve together from shared telemetry. The queen gave every worker the \
         same seed and wants distinct, concrete proposals from them, not copies.\n\n\
         Your perspective: {role}. Look first at {focus}.\n",
        k = index + 1,
        role = me.role,
        focus = me.focus,
    );
    if !others.is_empty() {
        let _ = writeln!(
            system,
            "Other workers take these perspectives: {}. Propose what they would not.",
            others.join(", ")
        );
    }
    if index >= PERSPECTIVES.len() {
        let _ = writeln!(
            system,
            "Another worker already has your perspective: take a different idea from it than the obvious one."
        );
    }
    let _ = write!(system, "\n{ANSWER_SHAPE}\n");
    match brief.publish_as {
        Some(t @ (UpdateType::ModelTweak | UpdateType::PromptTweak)) => {
            let _ = writeln!(
                system,
                "The operator will publish the best proposal as a {t}, so \"update\" must be a {t} \
                 with a concrete value.",
                t = t.as_str()
            );
        }
        _ => {
            let _ = writeln!(
                system,
                "Give an update only when one of the two kinds really carries out your proposal."
            );
        }
    }
    let mut user = format!("Seed: {}\n", brief.seed.trim());
    if let Some(context) = &brief.context {
        let _ = write!(user, "\n{context}\n");
    }
    ChatRequest::new(vec![Message::system(system), Message::user(user)])
        .with_temperature(me.temperature)
        .with_max_tokens(800)
}

/// The fleet context from an insight: its bullets and the figures they rest on.
pub fn insight_context(insight: &Insight) -> String {
    let stats = &insight.stats;
    let mut text = format!(
        "Fleet telemetry: latest insight {} (focus {}, {} records, {} tier, summary by {}):\n",
        insight.id,
        insight.focus,
        insight.records_analyzed,
        insight.tier.as_str(),
        insight.model.as_deref().unwrap_or("Phoenix's rules"),
    );
    for bullet in &insight.bullets {
        let _ = writeln!(text, "- {bullet}");
    }
    let _ = writeln!(
        text,
        "Errors: {} of {} records ({:.1}%).",
        stats.errors,
        stats.records,
        stats.error_rate * 100.0
    );
    let fields: Vec<_> = stats
        .fields
        .iter()
        .take(8)
        .map(|f| {
            json!({
                "field": f.field,
                "count": f.overall.count,
                "mean": round(f.overall.mean),
                "p50": round(f.overall.p50),
                "p95": round(f.overall.p95),
                "max": round(f.overall.max),
            })
        })
        .collect();
    if !fields.is_empty() {
        let _ = writeln!(text, "Numeric fields: {}", json!(fields));
    }
    let outliers: Vec<_> = stats
        .outliers
        .iter()
        .take(8)
        .map(|o| {
            json!({
                "agent_path": o.agent_path,
                "field": o.field,
                "agent_mean": round(o.agent_mean),
                "fleet_mean": round(o.fleet_mean),
                "direction": o.direction.as_str(),
            })
        })
        .collect();
    if !outliers.is_empty() {
        let _ = writeln!(text, "Outliers against the fleet: {}", json!(outliers));
    }
    text.trim_end().to_owned()
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A proposal the queen asks to have ranked.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Worker number (1-based).
    pub worker: usize,
    /// The worker's perspective.
    pub role: &'a str,
    /// The proposal.
    pub proposal: &'a Proposal,
}

/// The request for a ranked synthesis of `candidates`.
pub fn rank_request(brief: &Brief, candidates: &[Candidate<'_>]) -> ChatRequest {
    let mut system = String::from(
        "You are the queen of Phoenix's hive. Workers with different perspectives answered the \
         same improvement seed. Rank their proposals from best to worst for the fleet: expected \
         impact on the seed's goal, evidence in the telemetry, risk, and effort.\n\n\
         Answer with one JSON object and nothing else:\n\
         {\"ranking\": [{\"worker\": <worker number>, \"reason\": \"<one sentence>\"}, ...],\n \
         \"summary\": \"<2 to 3 sentences: the best combination to carry out first>\"}\n\
         Rank every proposal exactly once, by its worker number.\n",
    );
    if let Some(t) = brief.publish_as {
        let _ = writeln!(
            system,
            "The operator will publish the top proposal that carries a {t} update; rank a \
             concrete, safe {t} higher than one that is vague.",
            t = t.as_str()
        );
    }
    let mut user = format!("Seed: {}\n", brief.seed.trim());
    if let Some(context) = &brief.context {
        let _ = write!(user, "\n{context}\n");
    }
    let list: Vec<_> = candidates
        .iter()
        .map(|c| {
            json!({
                "worker": c.worker,
                "perspective": c.role,
                "title": c.proposal.title,
                "rationale": c.proposal.rationale,
                "update": c.proposal.update,
            })
        })
        .collect();
    let _ = write!(
        user,
        "\nProposals (JSON):\n{}\n",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    ChatRequest::new(vec![Message::system(system), Message::user(user)])
        .with_temperature(0.2)
        .with_max_tokens(1200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_its_own_perspective_and_temperature() {
        let brief = Brief {
            seed: "Improve memory retrieval speed".into(),
            ..Brief::default()
        };
        let n = 12;
        let requests: Vec<_> = (0..n).map(|i| worker_request(&brief, i, n)).collect();
        let systems: Vec<&str> = requests
            .iter()
            .map(|r| r.messages[0].content.as_str())
            .collect();
        for (i, s) in systems.iter().enumerate() {
            assert!(s.contains(&format!("worker {} of {n}", i + 1)), "{s}");
            assert!(s.contains(perspective(i).role));
        }
        let distinct: std::collections::BTreeSet<&str> = systems.iter().copied().collect();
        assert_eq!(distinct.len(), n, "every system prompt differs");
        let temps: Vec<f32> = requests.iter().map(|r| r.temperature.unwrap()).collect();
        let mut first_round = temps[..PERSPECTIVES.len()].to_vec();
        first_round.sort_by(f32::total_cmp);
        first_round.dedup();
        assert_eq!(first_round.len(), PERSPECTIVES.len(), "{temps:?}");
        assert!(
            temps[PERSPECTIVES.len()] > temps[0],
            "a second round samples hotter"
        );
        assert!(temps.iter().all(|t| (0.0..=MAX_TEMPERATURE).contains(t)));
        assert!(
            requests[0].messages[1]
                .content
                .contains("Improve memory retrieval speed")
        );
    }

    #[test]
    fn the_publish_type_is_required_of_workers_and_preferred_by_the_ranker() {
        let brief = Brief {
            seed: "s".into(),
            context: Some("Fleet telemetry: slow".into()),
            publish_as: Some(UpdateType::ModelTweak),
        };
        let r = worker_request(&brief, 0, 3);
        assert!(
            r.messages[0]
                .content
                .contains("\"update\" must be a model_tweak")
        );
        assert!(r.messages[1].content.contains("Fleet telemetry: slow"));
        let p = Proposal {
            title: "t".into(),
            rationale: "r".into(),
            update: None,
        };
        let rank = rank_request(
            &brief,
            &[Candidate {
                worker: 2,
                role: "cost optimiser",
                proposal: &p,
            }],
        );
        assert!(rank.messages[0].content.contains("carries a model_tweak"));
        assert!(rank.messages[1].content.contains("\"worker\": 2"));
    }
}
