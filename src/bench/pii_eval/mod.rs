//! The PII evaluation behind `phoenix bench pii`: redacts the generated corpus (one session
//! per conversation, as the pipeline runs), scores the replaced spans against the labels, and
//! measures single-threaded throughput.
//!
//! Depends only on `core::privacy::pii` (what it evaluates).
//!
//! Scoring: a predicted span is a true positive when it overlaps a labelled span of the same
//! type that no other prediction has matched (one-to-one, partial overlap counts — the MUC
//! "type" criterion; a detected street without its city still removes the street). Figures
//! are micro-averaged: per type, and over all types together. F2 weighs recall twice as much
//! as precision, since a missed name leaks while an extra pseudonym only costs readability.

pub mod corpus;
pub mod locales;
pub mod long_session;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{Bound, Machine, TargetCheck};
use crate::core::privacy::pii::{EntityType, Redactor, Report, Span};
pub use corpus::{Conversation, generate};

/// How an evaluation runs.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOptions {
    /// Seed of the corpus.
    pub seed: u64,
    /// Conversations in the corpus.
    pub conversations: usize,
    /// Least time spent redacting for the throughput figure (the corpus is redacted again
    /// until it is reached).
    #[serde(serialize_with = "secs")]
    pub min_time: Duration,
    /// Sizes of the long single-session runs, MB (none: not measured).
    pub session_mb: Vec<f64>,
    /// Conversations of the multi-locale corpus, per pool (0: not scored).
    pub locale_conversations: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seed: 2024,
            conversations: 3000,
            min_time: Duration::from_secs(2),
            session_mb: vec![1.0, 8.0, 64.0],
            locale_conversations: 2000,
        }
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Counts and scores of one entity type (or all of them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    /// Labelled spans.
    pub gold: usize,
    /// Predicted spans.
    pub predicted: usize,
    /// Predictions that matched a label.
    pub true_positives: usize,
    /// `tp / predicted` (1 when nothing was predicted).
    pub precision: f64,
    /// `tp / gold` (1 when nothing was labelled).
    pub recall: f64,
    /// `5PR / (4P + R)`.
    pub f2: f64,
}

impl Score {
    fn finish(&mut self) {
        let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        self.precision = ratio(self.true_positives, self.predicted);
        self.recall = ratio(self.true_positives, self.gold);
        let (p, r) = (self.precision, self.recall);
        self.f2 = if p + r == 0.0 {
            0.0
        } else {
            5.0 * p * r / (4.0 * p + r)
        };
    }
}

/// A figure the issue sets a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiTarget {
    /// F2 over all types.
    OverallF2,
    /// F2 on person names.
    PersonF2,
    /// Recall on emails.
    EmailRecall,
    /// Recall on payment cards.
    CardRecall,
    /// Recall on IBANs.
    IbanRecall,
    /// Recall on IP addresses.
    IpRecall,
    /// Recall on keys, tokens and passwords.
    SecretRecall,
    /// Held-out multi-locale corpus: recall on person names.
    HeldOutPersonRecall,
    /// Held-out: recall on phone numbers.
    HeldOutPhoneRecall,
    /// Held-out: recall on organisations.
    HeldOutOrganizationRecall,
    /// Held-out: recall on street addresses.
    HeldOutAddressRecall,
    /// Held-out: recall on e-mail addresses.
    HeldOutEmailRecall,
    /// Held-out: recall on IBANs.
    HeldOutIbanRecall,
    /// Held-out: messages without PII kept intact.
    HeldOutKept,
    /// Held-out: F2 over all types.
    HeldOutF2,
    /// Redaction throughput on one core, MB/s.
    Throughput,
    /// Throughput of one session over the longest text, MB/s.
    LongSessionThroughput,
    /// That throughput over the shortest session's: 1 when redaction is linear.
    LongSessionSteadiness,
}

/// Everything one evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: EvalOptions,
    /// Messages in the corpus.
    pub messages: usize,
    /// Bytes of text in the corpus.
    pub bytes: usize,
    /// Scores by type.
    pub by_type: BTreeMap<EntityType, Score>,
    /// Scores over all types.
    pub overall: Score,
    /// Single-threaded redaction throughput.
    pub throughput: Throughput,
    /// One session over long texts, shortest first.
    pub long_sessions: Vec<long_session::LongSession>,
    /// Targets, checked.
    pub targets: Vec<TargetCheck<PiiTarget>>,
    /// A few misses and false alarms per type, to see what fails.
    pub examples: Vec<Example>,
    /// The multi-locale corpus, tuning pool first (empty when not scored).
    pub locales: Vec<LocaleScores>,
    /// The Faker version its values were made with.
    pub faker: &'static str,
    /// Misses and false alarms on the tuning pool only: the held-out pool's are never shown.
    pub locale_examples: Vec<Example>,
}

/// Scores on one pool of the multi-locale corpus.
#[derive(Debug, Clone, Serialize)]
pub struct LocaleScores {
    /// Which values.
    pub pool: locales::Pool,
    /// Conversations scored.
    pub conversations: usize,
    /// Messages in them.
    pub messages: usize,
    /// Scores by type.
    pub by_type: BTreeMap<EntityType, Score>,
    /// Scores over all types.
    pub overall: Score,
    /// Messages without PII that came out unchanged, over all such messages.
    pub kept: f64,
    /// Messages without PII.
    pub negatives: usize,
    /// Scores over all types, per locale.
    pub by_locale: BTreeMap<&'static str, Score>,
}

/// Redaction speed.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Times the corpus was redacted.
    pub passes: usize,
    /// Seconds spent.
    pub seconds: f64,
    /// Megabytes (10^6 bytes) of text per second, one thread: the corpus's size over the
    /// median pass's time, so that a pass slowed by other work on the machine does not
    /// move it.
    pub mb_per_sec: f64,
    /// The same over all passes together.
    pub mean_mb_per_sec: f64,
}

/// One miss or false alarm.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// `missed` or `false_positive`.
    pub kind: &'static str,
    /// Type of the span.
    pub entity: EntityType,
    /// The span's text.
    pub span: String,
    /// The whole message.
    pub message: String,
}

/// Runs the evaluation; fails only if the long sessions' scratch files cannot be written.
pub fn run(opts: &EvalOptions) -> std::io::Result<EvalReport> {
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    let machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        load_before,
    };
    let corpus = generate(opts.seed, opts.conversations);
    let messages = corpus.iter().map(|c| c.messages.len()).sum();
    let bytes = corpus
        .iter()
        .flat_map(|c| &c.messages)
        .map(|m| m.text.len())
        .sum();
    let (by_type, overall, examples) = score(&corpus);
    let throughput = measure(&corpus, bytes, opts.min_time);
    let long_sessions = long_session::measure(opts.seed, &opts.session_mb)?;
    let mut targets = targets(&by_type, &overall, &throughput);
    targets.extend(long_session_targets(&long_sessions));
    let mut locale_scores = Vec::new();
    let mut locale_examples = Vec::new();
    if opts.locale_conversations > 0 {
        for pool in [locales::Pool::Tuning, locales::Pool::HeldOut] {
            let (scores, examples) = score_locales(pool, opts.seed, opts.locale_conversations);
            if pool == locales::Pool::Tuning {
                locale_examples = examples;
            } else {
                targets.extend(held_out_targets(&scores));
            }
            locale_scores.push(scores);
        }
    }
    Ok(EvalReport {
        machine,
        options: opts.clone(),
        messages,
        bytes,
        by_type,
        overall,
        throughput,
        long_sessions,
        targets,
        examples,
        locales: locale_scores,
        faker: locales::faker_version(),
        locale_examples,
    })
}

/// Scores one pool of the multi-locale corpus: per type, overall, per locale, and the share
/// of messages without PII that come out unchanged.
fn score_locales(
    pool: locales::Pool,
    seed: u64,
    conversations: usize,
) -> (LocaleScores, Vec<Example>) {
    let corpus = locales::generate(pool, seed, conversations);
    // Each conversation is redacted once; every figure below reads these predictions.
    let predicted: Vec<Vec<Vec<Span>>> = corpus.iter().map(|c| predict(&c.conversation)).collect();
    let pairs = || {
        corpus
            .iter()
            .zip(&predicted)
            .map(|(c, p)| (c, &c.conversation, p))
    };
    let mut by_locale = BTreeMap::new();
    for locale in locales::LOCALES {
        let part = pairs()
            .filter(|(c, ..)| c.locale == locale)
            .map(|(_, c, p)| (c, p));
        by_locale.insert(locale, score_predicted(part).1);
    }
    let (by_type, overall, examples) = score_predicted(pairs().map(|(_, c, p)| (c, p)));
    let (mut negatives, mut kept) = (0usize, 0usize);
    for (_, c, predictions) in pairs() {
        for (m, p) in c.messages.iter().zip(predictions) {
            if m.spans.is_empty() {
                negatives += 1;
                kept += usize::from(p.is_empty());
            }
        }
    }
    let scores = LocaleScores {
        pool,
        conversations: corpus.len(),
        messages: corpus.iter().map(|c| c.conversation.messages.len()).sum(),
        by_type,
        overall,
        kept: if negatives == 0 {
            1.0
        } else {
            kept as f64 / negatives as f64
        },
        negatives,
        by_locale,
    };
    (scores, examples)
}

/// The targets, on the held-out pool.
fn held_out_targets(s: &LocaleScores) -> Vec<TargetCheck<PiiTarget>> {
    let recall = |e: EntityType| s.by_type.get(&e).map_or(f64::NAN, |s| s.recall);
    [
        (
            PiiTarget::HeldOutPersonRecall,
            recall(EntityType::Person),
            0.95,
        ),
        (
            PiiTarget::HeldOutPhoneRecall,
            recall(EntityType::Phone),
            0.95,
        ),
        (
            PiiTarget::HeldOutOrganizationRecall,
            recall(EntityType::Organization),
            0.90,
        ),
        (
            PiiTarget::HeldOutAddressRecall,
            recall(EntityType::Address),
            0.90,
        ),
        (
            PiiTarget::HeldOutEmailRecall,
            recall(EntityType::Email),
            0.99,
        ),
        (PiiTarget::HeldOutIbanRecall, recall(EntityType::Iban), 0.99),
        (PiiTarget::HeldOutKept, s.kept, 0.97),
        (PiiTarget::HeldOutF2, s.overall.f2, 0.95),
    ]
    .into_iter()
    .map(|(target, value, goal)| TargetCheck::new(target, value, Bound::AtLeast, goal))
    .collect()
}

/// The long-session targets, when two sizes or more were measured: ≥ 10 MB/s on the
/// longest, and within 20% of the shortest.
fn long_session_targets(runs: &[long_session::LongSession]) -> Vec<TargetCheck<PiiTarget>> {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return Vec::new();
    };
    if runs.len() < 2 {
        return Vec::new();
    }
    vec![
        TargetCheck::new(
            PiiTarget::LongSessionThroughput,
            last.mb_per_sec,
            Bound::AtLeast,
            10.0,
        ),
        TargetCheck::new(
            PiiTarget::LongSessionSteadiness,
            last.mb_per_sec / first.mb_per_sec,
            Bound::AtLeast,
            0.8,
        ),
    ]
}

/// Predicted spans of every message, one redaction session per conversation.
fn predict(conversation: &Conversation) -> Vec<Vec<Span>> {
    let mut r = Redactor::new();
    let mut report = Report::default();
    conversation
        .messages
        .iter()
        .map(|m| r.redact_with_spans(&m.text, &mut report).1)
        .collect()
}

type Scores = (BTreeMap<EntityType, Score>, Score, Vec<Example>);

fn score(corpus: &[Conversation]) -> Scores {
    let predicted: Vec<Vec<Vec<Span>>> = corpus.iter().map(predict).collect();
    score_predicted(corpus.iter().zip(&predicted))
}

/// [`score`] of conversations already redacted: each with its predicted spans per message.
fn score_predicted<'a>(
    corpus: impl IntoIterator<Item = (&'a Conversation, &'a Vec<Vec<Span>>)>,
) -> Scores {
    let mut by_type: BTreeMap<EntityType, Score> = BTreeMap::new();
    let mut examples: Vec<Example> = Vec::new();
    let mut shown: BTreeMap<(EntityType, &'static str), usize> = BTreeMap::new();
    let mut example = |kind: &'static str, entity: EntityType, span: &str, message: &str| {
        let n = shown.entry((entity, kind)).or_default();
        if *n < 5 {
            *n += 1;
            examples.push(Example {
                kind,
                entity,
                span: span.to_owned(),
                message: message.to_owned(),
            });
        }
    };
    for (conversation, predictions) in corpus {
        for (m, predicted) in conversation.messages.iter().zip(predictions) {
            let mut gold_used = vec![false; m.spans.len()];
            for g in &m.spans {
                by_type.entry(g.entity).or_default().gold += 1;
            }
            for p in predicted {
                let s = by_type.entry(p.entity).or_default();
                s.predicted += 1;
                let hit = m.spans.iter().enumerate().find(|(i, g)| {
                    !gold_used[*i] && g.entity == p.entity && g.start < p.end && p.start < g.end
                });
                match hit {
                    Some((i, _)) => {
                        gold_used[i] = true;
                        s.true_positives += 1;
                    }
                    None => example("false_positive", p.entity, &m.text[p.start..p.end], &m.text),
                }
            }
            for (g, used) in m.spans.iter().zip(&gold_used) {
                if !used {
                    example("missed", g.entity, &m.text[g.start..g.end], &m.text);
                }
            }
        }
    }
    let mut overall = Score::default();
    for s in by_type.values_mut() {
        s.finish();
        overall.gold += s.gold;
        overall.predicted += s.predicted;
        overall.true_positives += s.true_positives;
    }
    overall.finish();
    (by_type, overall, examples)
}

fn measure(corpus: &[Conversation], bytes: usize, min_time: Duration) -> Throughput {
    let start = Instant::now();
    let mut times = Vec::new();
    loop {
        let pass = Instant::now();
        for c in corpus {
            let mut r = Redactor::new();
            for m in &c.messages {
                std::hint::black_box(r.redact(&m.text));
            }
        }
        times.push(pass.elapsed().as_secs_f64());
        if start.elapsed() >= min_time {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let passes = times.len();
    times.sort_by(f64::total_cmp);
    let median = match passes % 2 {
        1 => times[passes / 2],
        _ => (times[passes / 2 - 1] + times[passes / 2]) / 2.0,
    };
    Throughput {
        passes,
        seconds,
        mb_per_sec: bytes as f64 / 1e6 / median,
        mean_mb_per_sec: (bytes * passes) as f64 / 1e6 / seconds,
    }
}

fn targets(
    by_type: &BTreeMap<EntityType, Score>,
    overall: &Score,
    throughput: &Throughput,
) -> Vec<TargetCheck<PiiTarget>> {
    let recall = |e: EntityType| by_type.get(&e).map_or(f64::NAN, |s| s.recall);
    vec![
        TargetCheck::new(PiiTarget::OverallF2, overall.f2, Bound::AtLeast, 0.90),
        TargetCheck::new(
            PiiTarget::PersonF2,
            by_type.get(&EntityType::Person).map_or(f64::NAN, |s| s.f2),
            Bound::AtLeast,
            0.85,
        ),
        TargetCheck::new(
            PiiTarget::EmailRecall,
            recall(EntityType::Email),
            Bound::AtLeast,
            0.99,
        ),
        TargetCheck::new(
            PiiTarget::CardRecall,
            recall(EntityType::CreditCard),
            Bound::AtLeast,
            0.99,
        ),
        TargetCheck::new(
            PiiTarget::IbanRecall,
            recall(EntityType::Iban),
            Bound::AtLeast,
            0.99,
        ),
        TargetCheck::new(
            PiiTarget::IpRecall,
            recall(EntityType::IpAddress),
            Bound::AtLeast,
            0.99,
        ),
        TargetCheck::new(
            PiiTarget::SecretRecall,
            recall(EntityType::Secret),
            Bound::AtLeast,
            0.99,
        ),
        TargetCheck::new(
            PiiTarget::Throughput,
            throughput.mb_per_sec,
            Bound::AtLeast,
            10.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_counts_overlaps_once_per_label() {
        let m = corpus::Message {
            text: "Dan Johnson and 4111 1111 1111 1111".to_owned(),
            spans: vec![
                Span {
                    start: 0,
                    end: 11,
                    entity: EntityType::Person,
                },
                Span {
                    start: 16,
                    end: 35,
                    entity: EntityType::CreditCard,
                },
            ],
        };
        let (by_type, overall, _) = score(&[Conversation { messages: vec![m] }]);
        assert_eq!(by_type[&EntityType::Person].true_positives, 1);
        assert_eq!(by_type[&EntityType::CreditCard].recall, 1.0);
        assert_eq!(overall.f2, 1.0);
    }

    #[test]
    fn redacted_text_passes_the_collector_guard() {
        // Part 2's collector refuses payloads where `contains_pii` finds anything, so what the
        // redactor produces must come out clean, or every upload would be refused.
        for c in generate(99, 1000) {
            let mut r = Redactor::new();
            for m in &c.messages {
                let (out, _) = r.redact(&m.text);
                let left = crate::core::privacy::pii::detect(&out);
                assert!(
                    left.is_empty(),
                    "{out:?} still has {:?}",
                    left.iter()
                        .map(|s| &out[s.start..s.end])
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn small_corpus_meets_the_accuracy_targets() {
        // Accuracy (not speed) is deterministic, so it can be a test; speed is for the bench.
        let corpus = generate(2024, 400);
        let (by_type, overall, examples) = score(&corpus);
        let person = &by_type[&EntityType::Person];
        assert!(
            overall.f2 >= 0.90,
            "overall F2 {} {examples:#?}",
            overall.f2
        );
        assert!(person.f2 >= 0.85, "person F2 {}", person.f2);
    }
}
