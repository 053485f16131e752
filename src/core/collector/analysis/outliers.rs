//! Agents that stand out from the rest of the fleet: on a numeric field's mean or range, and on
//! the error rate.

use super::*;

pub(super) fn field_outliers(
    field: &str,
    moments: &[(usize, Moments)],
    overall: &Moments,
    agent_names: &[&str],
    opts: &AnalysisOptions,
    outliers: &mut Vec<Outlier>,
) {
    if moments.len() < 2 {
        return;
    }
    // The two smallest minima and two largest maxima tell each agent, in constant time,
    // whether the rest of the fleet is constant: subtracting moments cannot give an exact 0.
    let (min1, min2) = two_best(moments, |m| m.min, |a, b| a < b);
    let (max1, max2) = two_best(moments, |m| m.max, |a, b| a > b);
    for &(agent, ref m) in moments {
        if agent_names[agent] == NO_AGENT_PATH || m.n < opts.min_samples.max(1) {
            continue;
        }
        let rest_n = overall.n - m.n;
        if rest_n < opts.min_samples.max(1) {
            continue;
        }
        let rest_min = if min1.0 == agent { min2.1 } else { min1.1 };
        let rest_max = if max1.0 == agent { max2.1 } else { max1.1 };
        let rest_sum = overall.mean * overall.n as f64 - m.mean * m.n as f64;
        let rest_mean = if rest_min == rest_max {
            rest_min
        } else {
            rest_sum / rest_n as f64
        };
        let diff = m.mean - rest_mean;
        if diff == 0.0 || !diff.is_finite() {
            continue;
        }
        let relative = if rest_mean == 0.0 {
            f64::INFINITY
        } else {
            diff.abs() / rest_mean.abs()
        };
        if relative < opts.outlier_ratio {
            continue;
        }
        let z = if rest_min == rest_max || rest_n < 2 {
            None
        } else {
            // Chan et al.'s pairwise update run backwards: total = agent ⊕ rest.
            let delta = rest_mean - m.mean;
            let rest_m2 = overall.m2
                - m.m2
                - delta * delta * (m.n as f64) * (rest_n as f64) / overall.n as f64;
            let std = (rest_m2.max(0.0) / (rest_n - 1) as f64).sqrt();
            if std > 0.0 { Some(diff / std) } else { None }
        };
        if let Some(z) = z
            && (z.abs() < opts.outlier_z || !z.is_finite())
        {
            continue;
        }
        outliers.push(Outlier {
            field: field.to_owned(),
            agent_path: agent_names[agent].to_owned(),
            agent_mean: m.mean,
            fleet_mean: rest_mean,
            ratio: ratio(m.mean, rest_mean),
            z,
            direction: if diff > 0.0 {
                Direction::Higher
            } else {
                Direction::Lower
            },
            samples: m.n,
        });
    }
}

/// The best and second-best `(agent, value)` by `better`; the second is the best's value
/// again when only one agent has samples (never read then, as outliers need two agents).
pub(super) fn two_best(
    moments: &[(usize, Moments)],
    value: impl Fn(&Moments) -> f64,
    better: impl Fn(f64, f64) -> bool,
) -> ((usize, f64), (usize, f64)) {
    let mut best = (moments[0].0, value(&moments[0].1));
    let mut second: Option<(usize, f64)> = None;
    for &(agent, ref m) in &moments[1..] {
        let v = value(m);
        if better(v, best.1) {
            second = Some(best);
            best = (agent, v);
        } else if second.is_none_or(|s| better(v, s.1)) {
            second = Some((agent, v));
        }
    }
    (best, second.unwrap_or(best))
}

pub(super) fn ratio(agent_mean: f64, fleet_mean: f64) -> Option<f64> {
    if fleet_mean == 0.0 {
        return None;
    }
    Some(agent_mean / fleet_mean).filter(|r| r.is_finite())
}

pub(super) fn error_rate_outliers(
    agents: &[AgentStats],
    records: usize,
    errors: usize,
    opts: &AnalysisOptions,
    outliers: &mut Vec<Outlier>,
) {
    for agent in agents {
        if agent.agent_path == NO_AGENT_PATH || agent.records < opts.min_samples.max(1) {
            continue;
        }
        let rest_records = records - agent.records;
        if rest_records == 0 {
            continue;
        }
        let rest_rate = rate(errors - agent.errors, rest_records);
        if agent.error_rate < ERROR_RATE_OUTLIER_MIN
            || agent.error_rate < ERROR_RATE_OUTLIER_FACTOR * rest_rate
            || agent.error_rate <= rest_rate
        {
            continue;
        }
        // Each record is a 0/1 sample, so the rest's sample deviation follows from its rate.
        let z = (rest_records >= 2 && rest_rate > 0.0 && rest_rate < 1.0).then(|| {
            let n = rest_records as f64;
            let std = (n / (n - 1.0) * rest_rate * (1.0 - rest_rate)).sqrt();
            (agent.error_rate - rest_rate) / std
        });
        outliers.push(Outlier {
            field: ERROR_RATE_FIELD.to_owned(),
            agent_path: agent.agent_path.clone(),
            agent_mean: agent.error_rate,
            fleet_mean: rest_rate,
            ratio: ratio(agent.error_rate, rest_rate),
            z,
            direction: Direction::Higher,
            samples: agent.records,
        });
    }
}
