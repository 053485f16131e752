//! Rule-based insight bullets: findings from [`Stats`] ranked by topic and severity, and the
//! number formatting they are written with.

use super::*;

/// What a bullet is about; a `focus` moves one topic to the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Topic {
    Errors,
    Performance,
    Quality,
    Fleet,
    Other,
}

impl Topic {
    pub(super) fn from_focus(focus: &str) -> Option<Topic> {
        let focus = focus.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| focus.contains(w));
        if has(&["error", "reliab", "stabil", "failure", "robust"]) {
            Some(Topic::Errors)
        } else if has(&[
            "perf",
            "latency",
            "speed",
            "cost",
            "token",
            "efficien",
            "throughput",
        ]) {
            Some(Topic::Performance)
        } else if has(&[
            "emotion",
            "resonance",
            "quality",
            "love",
            "score",
            "utility",
            "satisf",
        ]) {
            Some(Topic::Quality)
        } else if has(&["fleet", "heartbeat", "liveness", "health", "orch"]) {
            Some(Topic::Fleet)
        } else {
            None
        }
    }
}

/// What a numeric field measures, guessed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Metric {
    Latency,
    Tokens,
    Cost,
    Failure,
    Score,
    Throughput,
    Neutral,
}

impl Metric {
    pub(super) fn of(field: &str) -> Metric {
        let name = field.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        // Order matters: `tokens_per_sec` is a throughput, `timeout_count` a failure, and a
        // timestamp is no duration.
        if has(&["per_sec", "per_s", "throughput", "qps", "rps"]) {
            Metric::Throughput
        } else if has(&["timestamp", "_ts", "ts_"]) || name == "ts" {
            Metric::Neutral
        } else if has(&["token"]) {
            Metric::Tokens
        } else if has(&["cost", "price", "usd", "spend"]) {
            Metric::Cost
        } else if has(&[
            "error",
            "fail",
            "retry",
            "retries",
            "timeout",
            "exception",
            "crash",
        ]) {
            Metric::Failure
        } else if has(&[
            "score",
            "love",
            "utility",
            "accuracy",
            "success",
            "quality",
            "rating",
            "satisf",
            "resonance",
            "reward",
            "uptime",
        ]) {
            Metric::Score
        } else if has(&["latency", "time", "duration", "elapsed", "wait"])
            || ["_ms", "_us", "_secs", "_seconds"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            Metric::Latency
        } else {
            Metric::Neutral
        }
    }

    /// The direction in which this metric gets worse, if the name tells.
    pub(super) fn worse(self) -> Option<Direction> {
        match self {
            Metric::Latency | Metric::Tokens | Metric::Cost | Metric::Failure => {
                Some(Direction::Higher)
            }
            Metric::Score | Metric::Throughput => Some(Direction::Lower),
            Metric::Neutral => None,
        }
    }

    pub(super) fn topic(self) -> Topic {
        match self {
            Metric::Latency | Metric::Tokens | Metric::Cost | Metric::Throughput => {
                Topic::Performance
            }
            Metric::Failure => Topic::Errors,
            Metric::Score => Topic::Quality,
            Metric::Neutral => Topic::Other,
        }
    }
}

/// One candidate bullet.
pub(super) struct Finding {
    topic: Topic,
    severity: f64,
    text: String,
}

/// Rule-based bullets for `stats`, at most [`MAX_BULLETS`] and never none.
///
/// Bullets of the topic `focus` names come first (`performance`: latency, tokens and cost;
/// `quality` or `emotional_resonance`: scores; `errors` or `reliability`: errors; `fleet`:
/// heartbeats); within a topic, and for an unknown focus, the most severe come first.
pub fn heuristic_bullets(stats: &Stats, focus: &str) -> Vec<String> {
    if stats.records == 0 {
        return vec![
            "No telemetry in the selected window: check that ORCHs reach the collector \
             (TELEMETRIST_URL, POST /ingest) and widen last_n or the filters before publishing \
             any update."
                .to_owned(),
        ];
    }
    let mut findings = Vec::new();
    error_findings(stats, &mut findings);
    outlier_findings(stats, &mut findings);
    for field in &stats.fields {
        low_score_finding(stats, field, &mut findings);
        tail_finding(field, &mut findings);
    }
    fleet_findings(stats, &mut findings);
    model_findings(stats, &mut findings);

    if findings.is_empty() {
        return vec![format!(
            "No actionable anomaly in {} records (error rate {}, no outlier agent, {} of {} ORCHs \
             with a fresh heartbeat): keep the current prompts and models, and re-run with a \
             larger last_n to confirm.",
            stats.records,
            pct(stats.error_rate),
            stats.orchs.fresh,
            stats.orchs.distinct
        )];
    }
    let focus = Topic::from_focus(focus);
    let rank = |t: Topic| if Some(t) == focus { 0 } else { 1 };
    findings.sort_by(|a, b| {
        rank(a.topic)
            .cmp(&rank(b.topic))
            .then_with(|| b.severity.total_cmp(&a.severity))
            .then_with(|| a.text.cmp(&b.text))
    });
    findings
        .into_iter()
        .take(MAX_BULLETS)
        .map(|f| f.text)
        .collect()
}

pub(super) fn error_findings(stats: &Stats, out: &mut Vec<Finding>) {
    if stats.error_rate >= HIGH_ERROR_RATE {
        out.push(Finding {
            topic: Topic::Errors,
            severity: 60.0 + stats.error_rate * 100.0,
            text: format!(
                "Error rate is {} ({} of {} records){}: publish a fleet-wide json_patch raising \
                 retry/timeout budgets, or a prompt_tweak for the step that fails.",
                pct(stats.error_rate),
                stats.errors,
                stats.records,
                top_kinds(&stats.error_kinds, "; top error kinds: ")
            ),
        });
    }

    let mut noisy: Vec<&AgentStats> = stats
        .agents
        .iter()
        .filter(|a| {
            a.agent_path != NO_AGENT_PATH
                && a.records >= MIN_AGENT_SAMPLES
                && a.records < stats.records
                && a.error_rate >= HIGH_ERROR_RATE
                // An agent merely as bad as everyone is covered by the fleet-wide bullet.
                && {
                    let rest = (stats.errors - a.errors) as f64 / (stats.records - a.records) as f64;
                    a.error_rate >= AGENT_ERROR_FACTOR * rest
                }
        })
        .collect();
    noisy.sort_by(|a, b| {
        b.error_rate
            .total_cmp(&a.error_rate)
            .then_with(|| b.errors.cmp(&a.errors))
            .then_with(|| a.agent_path.cmp(&b.agent_path))
    });
    for agent in noisy.iter().take(MAX_AGENT_ERROR_BULLETS) {
        let rest_rate =
            (stats.errors - agent.errors) as f64 / (stats.records - agent.records) as f64;
        let flagged = stats
            .outliers
            .iter()
            .any(|o| o.field == ERROR_RATE_FIELD && o.agent_path == agent.agent_path);
        let versus = if rest_rate > 0.0 {
            format!(
                "{}x the rest of the fleet's {}",
                ratio(agent.error_rate / rest_rate),
                pct(rest_rate)
            )
        } else {
            "the rest of the fleet has none".to_owned()
        };
        out.push(Finding {
            topic: Topic::Errors,
            severity: 50.0 + agent.error_rate * 100.0 + if flagged { 10.0 } else { 0.0 },
            text: format!(
                "Publish a json_patch (retry/timeout settings) or a prompt_tweak targeted at agent \
                 prefix `{}`: {} of its {} records are errors ({}; {}){}.",
                agent.agent_path,
                agent.errors,
                agent.records,
                pct(agent.error_rate),
                versus,
                top_kinds(&agent.error_kinds, ", mostly ")
            ),
        });
    }
    if noisy.len() > MAX_AGENT_ERROR_BULLETS {
        let rest = &noisy[MAX_AGENT_ERROR_BULLETS..];
        let names: Vec<String> = rest
            .iter()
            .take(5)
            .map(|a| format!("`{}`", a.agent_path))
            .collect();
        out.push(Finding {
            topic: Topic::Errors,
            severity: 45.0,
            text: format!(
                "{} more agents exceed a {} error rate ({}{}): review them after the agents above.",
                rest.len(),
                pct(HIGH_ERROR_RATE),
                names.join(", "),
                if rest.len() > 5 { ", ..." } else { "" }
            ),
        });
    }
}

pub(super) fn outlier_findings(stats: &Stats, out: &mut Vec<Finding>) {
    for outlier in stats
        .outliers
        .iter()
        .filter(|o| o.field != ERROR_RATE_FIELD)
    {
        let metric = Metric::of(&outlier.field);
        let evidence = outlier_evidence(outlier);
        let target = &outlier.agent_path;
        let strength = outlier.z.map_or(10.0, |z| z.abs().min(10.0));
        let relative = match outlier.ratio {
            Some(r) => (r - 1.0).abs().min(5.0),
            None => 5.0,
        };
        let worse = metric.worse();
        let (severity, text) = if worse == Some(outlier.direction) {
            let action = match metric {
                Metric::Latency => format!(
                    "Publish a model_tweak targeted at agent prefix `{target}` (a faster model), or \
                     a prompt_tweak shortening its prompt"
                ),
                Metric::Tokens => format!(
                    "Publish a json_patch targeted at agent prefix `{target}` lowering max_tokens, \
                     with a prompt_tweak trimming its prompt"
                ),
                Metric::Cost => format!(
                    "Publish a model_tweak targeted at agent prefix `{target}` (a cheaper model), \
                     or a json_patch lowering max_tokens"
                ),
                Metric::Failure => format!(
                    "Publish a json_patch targeted at agent prefix `{target}` adjusting its \
                     retry/timeout settings, or a prompt_tweak for the step that fails"
                ),
                Metric::Score => format!(
                    "Publish a prompt_tweak targeted at agent prefix `{target}` (a model_tweak if \
                     it does not help)"
                ),
                Metric::Throughput => format!(
                    "Publish a model_tweak targeted at agent prefix `{target}` (a faster model), \
                     or a json_patch raising its concurrency"
                ),
                Metric::Neutral => unreachable!("neutral metrics have no worse direction"),
            };
            (
                40.0 + strength * 2.0 + relative * 4.0,
                format!("{action}: {evidence}."),
            )
        } else if worse.is_some() {
            // Doing better than the fleet is worth copying, but less urgent than any problem.
            let update = match metric {
                Metric::Latency | Metric::Cost | Metric::Throughput => "model_tweak or json_patch",
                Metric::Tokens => "json_patch (max_tokens) or prompt_tweak",
                _ => "prompt_tweak or yaml_graft",
            };
            (
                10.0 + strength,
                format!(
                    "Agent prefix `{target}` does better than the fleet: {evidence}; graft its \
                     settings onto the other agents with a {update} once you know what differs."
                ),
            )
        } else {
            (
                20.0 + strength,
                format!(
                    "Review agent prefix `{target}`: {evidence}; if a configuration difference \
                     explains it, align it with a json_patch."
                ),
            )
        };
        out.push(Finding {
            topic: metric.topic(),
            severity,
            text,
        });
    }
}

/// A model at least this many times slower (p50) than the fastest is worth a `model_tweak`.
pub const SLOW_MODEL_FACTOR: f64 = 1.5;

/// Who uses a model, as an update target: the one agent prefix, or the first few.
fn model_target(m: &ModelStats) -> String {
    match m.agents.as_slice() {
        [one] => format!("agent prefix `{one}`"),
        many => {
            let named: Vec<String> = many.iter().take(3).map(|a| format!("`{a}`")).collect();
            let more = if many.len() > 3 {
                format!(" and {} more", many.len() - 3)
            } else {
                String::new()
            };
            format!("agent prefixes {}{more}", named.join(", "))
        }
    }
}

/// Per-model findings: a model much slower than another, or failing more than the others.
pub(super) fn model_findings(stats: &Stats, out: &mut Vec<Finding>) {
    let timed: Vec<(&ModelStats, &Summary)> = stats
        .models
        .iter()
        .filter_map(|m| {
            m.response_time
                .as_ref()
                .filter(|s| s.count >= MIN_AGENT_SAMPLES)
                .map(|s| (m, s))
        })
        .collect();
    let fastest = timed.iter().min_by(|a, b| a.1.p50.total_cmp(&b.1.p50));
    let slowest = timed.iter().max_by(|a, b| a.1.p50.total_cmp(&b.1.p50));
    if let (Some((fast, f)), Some((slow, s))) = (fastest, slowest)
        && f.p50 > 0.0
        && s.p50 >= SLOW_MODEL_FACTOR * f.p50
    {
        let factor = s.p50 / f.p50;
        out.push(Finding {
            topic: Topic::Performance,
            severity: 40.0 + factor.min(5.0) * 5.0,
            text: format!(
                "Model `{}` answers in p50 {} ms (p95 {} ms, {} calls), {}x `{}`'s p50 {} ms: \
                 publish a model_tweak targeted at {} switching it to `{}` where its answers \
                 are good enough.",
                slow.model,
                num(s.p50),
                num(s.p95),
                s.count,
                ratio(factor),
                fast.model,
                num(f.p50),
                model_target(slow),
                fast.model
            ),
        });
    }
    let counted: Vec<&ModelStats> = stats
        .models
        .iter()
        .filter(|m| m.records >= MIN_AGENT_SAMPLES)
        .collect();
    if counted.len() < 2 {
        return;
    }
    for m in &counted {
        let (rest_errors, rest_records) = counted
            .iter()
            .filter(|o| o.model != m.model)
            .fold((0, 0), |(e, r), o| (e + o.errors, r + o.records));
        let rest_rate = rest_errors as f64 / rest_records.max(1) as f64;
        if m.error_rate >= HIGH_ERROR_RATE * 2.0
            && m.error_rate >= AGENT_ERROR_FACTOR * 2.0 * rest_rate
        {
            let best = counted
                .iter()
                .filter(|o| o.model != m.model)
                .min_by(|a, b| a.error_rate.total_cmp(&b.error_rate))
                .expect("at least two models");
            out.push(Finding {
                topic: Topic::Errors,
                severity: 50.0 + m.error_rate * 50.0,
                text: format!(
                    "Model `{}` fails {} of its calls ({} of {}) against {} for the other models: \
                     publish a model_tweak targeted at {} switching it to `{}` ({} errors).",
                    m.model,
                    pct(m.error_rate),
                    m.errors,
                    m.records,
                    pct(rest_rate),
                    model_target(m),
                    best.model,
                    pct(best.error_rate)
                ),
            });
        }
    }
}

/// "its response_time mean 2400 is 3.0x the rest of the fleet's 800 (z=4.1, 40 samples)"
pub(super) fn outlier_evidence(o: &Outlier) -> String {
    let comparison = match o.ratio {
        Some(r) => format!(
            "{}x the rest of the fleet's {}",
            ratio(r),
            num(o.fleet_mean)
        ),
        None => format!(
            "{} the rest of the fleet's {}",
            o.direction.as_str(),
            num(o.fleet_mean)
        ),
    };
    let spread = match o.z {
        Some(z) => format!("z={}", fixed1(z)),
        None => "the rest of the fleet is constant".to_owned(),
    };
    format!(
        "its {} mean {} is {} ({}, {} samples)",
        o.field,
        num(o.agent_mean),
        comparison,
        spread,
        o.samples
    )
}

pub(super) fn low_score_finding(stats: &Stats, field: &FieldStats, out: &mut Vec<Finding>) {
    let s = &field.overall;
    // The 0.8 bar only means something on a 0..1 scale.
    if Metric::of(&field.field) != Metric::Score
        || s.min < 0.0
        || s.max > 1.0
        || s.mean >= LOW_SCORE
    {
        return;
    }
    let lowest = field
        .per_agent
        .iter()
        .filter(|a| a.agent_path != NO_AGENT_PATH && a.summary.count >= MIN_AGENT_SAMPLES)
        .min_by(|a, b| {
            a.summary
                .mean
                .total_cmp(&b.summary.mean)
                .then_with(|| a.agent_path.cmp(&b.agent_path))
        });
    let already_flagged = |agent: &str| {
        stats
            .outliers
            .iter()
            .any(|o| o.field == field.field && o.agent_path == agent)
    };
    let action = match lowest {
        Some(a) if field.per_agent.len() > 1 && !already_flagged(&a.agent_path) => format!(
            "publish a prompt_tweak targeted at agent prefix `{}` first (mean {} over {} samples), \
             then fleet-wide if it helps",
            a.agent_path,
            num(a.summary.mean),
            a.summary.count
        ),
        Some(a) if field.per_agent.len() == 1 => {
            format!(
                "publish a prompt_tweak targeted at agent prefix `{}`",
                a.agent_path
            )
        }
        _ => "publish a fleet-wide prompt_tweak".to_owned(),
    };
    out.push(Finding {
        topic: Topic::Quality,
        severity: 35.0 + (LOW_SCORE - s.mean) * 100.0,
        text: format!(
            "{} averages {} (below {}; p50 {}, {} samples): {}.",
            field.field,
            num(s.mean),
            num(LOW_SCORE),
            num(s.p50),
            s.count,
            action
        ),
    });
}

pub(super) fn tail_finding(field: &FieldStats, out: &mut Vec<Finding>) {
    let s = &field.overall;
    if Metric::of(&field.field) != Metric::Latency
        || s.count < MIN_AGENT_SAMPLES
        || s.p50 <= 0.0
        || s.p99 <= TAIL_FACTOR * s.p50
    {
        return;
    }
    let slowest = field
        .per_agent
        .iter()
        .filter(|a| a.agent_path != NO_AGENT_PATH && a.summary.count >= MIN_AGENT_SAMPLES)
        .max_by(|a, b| {
            a.summary
                .p99
                .total_cmp(&b.summary.p99)
                .then_with(|| b.agent_path.cmp(&a.agent_path))
        });
    let check = match slowest {
        Some(a) if field.per_agent.len() > 1 => format!(
            ", starting with agent prefix `{}` (p99 {})",
            a.agent_path,
            num(a.summary.p99)
        ),
        _ => String::new(),
    };
    let factor = s.p99 / s.p50;
    out.push(Finding {
        topic: Topic::Performance,
        severity: 30.0 + factor.min(20.0),
        text: format!(
            "{} has a long tail: p99 {} is {}x p50 {} (p95 {}, {} samples); publish a json_patch \
             setting a request timeout near p95 with one retry{}.",
            field.field,
            num(s.p99),
            ratio(factor),
            num(s.p50),
            num(s.p95),
            s.count,
            check
        ),
    });
}

pub(super) fn fleet_findings(stats: &Stats, out: &mut Vec<Finding>) {
    let orchs = &stats.orchs;
    if let Some(oldest) = orchs.stale.first() {
        let count = orchs.stale.len();
        out.push(Finding {
            topic: Topic::Fleet,
            severity: 25.0 + count.min(20) as f64,
            text: format!(
                "{} of {} ORCHs have sent no orch_heartbeat for over {} (oldest: {}, {} ago): \
                 check their update subscription (phoenix subscribe) and heartbeat interval \
                 (ORCH_SLAVE_SYNC_INTERVAL); updates published now will not reach them.",
                count,
                orchs.distinct,
                duration(orchs.stale_after_secs),
                oldest.orch_hash,
                duration(oldest.age_secs)
            ),
        });
    }
    if orchs.never_heartbeat > 0 {
        out.push(Finding {
            topic: Topic::Fleet,
            severity: 20.0 + orchs.never_heartbeat.min(20) as f64,
            text: format!(
                "{} of {} ORCHs in the window never sent an orch_heartbeat: confirm their learning \
                 pipeline runs (phoenix subscribe), otherwise no prompt_tweak or model_tweak \
                 reaches them.",
                orchs.never_heartbeat, orchs.distinct
            ),
        });
    }
}

/// "; top error kinds: tool_call ×15, llm_request ×10" (at most three), or nothing.
pub(super) fn top_kinds(kinds: &[crate::core::collector::analysis::Count], lead: &str) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = kinds
        .iter()
        .take(3)
        .map(|k| format!("{} ×{}", k.name, k.count))
        .collect();
    format!("{lead}{}", listed.join(", "))
}

/// A figure with at most three decimals and no trailing zeros; fewer decimals as it grows.
pub(super) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let abs = x.abs();
    let decimals = if abs >= 100.0 || abs == 0.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{x:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A ratio with one decimal: "3.0".
pub(super) fn ratio(x: f64) -> String {
    if !x.is_finite() {
        "n/a".to_owned()
    } else if x.abs() < 1.0 {
        // "0.7x" hides whether an agent is at 65% or 74% of the fleet.
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

pub(super) fn fixed1(x: f64) -> String {
    format!("{x:.1}")
}

/// A rate as a percentage with at most one decimal: "12.5%", "5%".
pub(super) fn pct(rate: f64) -> String {
    let text = format!("{:.1}", rate * 100.0);
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// A duration for humans: "45s", "15m", "2h 30m", "3d 4h".
pub(super) fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
