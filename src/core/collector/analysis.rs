//! Statistics over a window of telemetry records: counts, error rates, heartbeat freshness,
//! numeric payload fields and the agents that stand out from the rest of the fleet.
//!
//! Everything here is pure: the collector selects the records and the heartbeat times, this
//! module only computes. The result, [`Stats`], is part of the `POST /analyze` response and
//! is stored with the insight, so its field names are a stable interface.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::core::telemetry::{ERROR_LEVELS, StoredTelemetry, now_unix};

/// Level name under which records without a level are counted.
pub const NO_LEVEL: &str = "none";
/// Agent path under which records without an agent path are counted.
pub const NO_AGENT_PATH: &str = "(none)";
/// `Outlier::field` of the error-rate rule, which is not a payload field.
pub const ERROR_RATE_FIELD: &str = "error_rate";
/// An agent's error rate must reach this to be flagged, however calm the rest of the fleet.
pub const ERROR_RATE_OUTLIER_MIN: f64 = 0.10;
/// An agent's error rate must be at least this multiple of the rest of the fleet's.
pub const ERROR_RATE_OUTLIER_FACTOR: f64 = 2.0;

/// Thresholds of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisOptions {
    /// "Now" in Unix seconds, against which heartbeat ages are measured.
    pub now_unix: i64,
    /// An ORCH whose last heartbeat is older than this many seconds is stale.
    pub stale_after_secs: i64,
    /// Fewest samples an agent, and separately the rest of the fleet, must have for a
    /// comparison between them to mean anything.
    pub min_samples: usize,
    /// Smallest |z| (agent mean against the rest of the fleet, in the fleet's standard
    /// deviations) that makes an outlier.
    pub outlier_z: f64,
    /// Smallest relative difference |agent − rest| / |rest| that makes an outlier.
    pub outlier_ratio: f64,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            now_unix: now_unix(),
            stale_after_secs: 900,
            min_samples: 5,
            outlier_z: 2.0,
            outlier_ratio: 0.25,
        }
    }
}

/// Everything the analysis learnt from one window of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Records in the window.
    pub records: usize,
    /// Earliest `ts_unix` in the window.
    pub from_ts: Option<i64>,
    /// Latest `ts_unix` in the window.
    pub to_ts: Option<i64>,
    /// Records per kind, most frequent first.
    pub by_kind: Vec<Count>,
    /// Records per level (`none` when absent), most frequent first.
    pub by_level: Vec<Count>,
    /// Records per agent path (`(none)` when absent), most frequent first.
    pub by_agent_path: Vec<Count>,
    /// Records whose level is one of [`ERROR_LEVELS`].
    pub errors: usize,
    /// `errors / records`, 0 for an empty window.
    pub error_rate: f64,
    /// Kinds of the error records, most frequent first.
    pub error_kinds: Vec<Count>,
    /// Heartbeat freshness of the ORCHs seen in the window.
    pub orchs: OrchStats,
    /// Numeric payload fields, sorted by name.
    pub fields: Vec<FieldStats>,
    /// Per-agent record and error counts, sorted by agent path.
    pub agents: Vec<AgentStats>,
    /// Agents that differ markedly from the rest of the fleet, largest |z| first.
    pub outliers: Vec<Outlier>,
}

/// How many records share a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The kind, level or agent path.
    pub name: String,
    /// How many records carry it.
    pub count: usize,
}

/// Heartbeat freshness of the ORCHs that appear in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchStats {
    /// Distinct `orch_hash` values in the window.
    pub distinct: usize,
    /// Of those, how many have ever sent an `orch_heartbeat`.
    pub with_heartbeat: usize,
    /// Of those, how many never have.
    pub never_heartbeat: usize,
    /// ORCHs whose last heartbeat is older than `stale_after_secs`, oldest first.
    pub stale: Vec<StaleOrch>,
    /// ORCHs whose last heartbeat is recent enough.
    pub fresh: usize,
    /// The staleness threshold used, in seconds.
    pub stale_after_secs: i64,
}

/// An ORCH that has gone quiet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleOrch {
    /// Anonymised ORCH id.
    pub orch_hash: String,
    /// `ts_unix` of its latest heartbeat.
    pub last_heartbeat_ts: i64,
    /// Seconds between that heartbeat and the analysis time.
    pub age_secs: i64,
}

/// Distribution of one numeric payload field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    /// Field name; a number nested one level down is named `outer.inner`.
    pub field: String,
    /// Over every record of the window.
    pub overall: Summary,
    /// Per agent path (`(none)` included), sorted by agent path.
    pub per_agent: Vec<AgentSummary>,
}

/// One field's distribution for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// Agent path, or `(none)`.
    pub agent_path: String,
    /// The agent's samples.
    pub summary: Summary,
}

/// Summary of a sample of finite numbers.
///
/// Percentiles interpolate linearly between the closest ranks, as numpy's default (Hyndman
/// and Fan's "type 7"): over the sorted sample `v` of `n` values, the rank of percentile `p`
/// is `h = p·(n−1)` and the value `v[⌊h⌋] + (h−⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋])`. So for
/// `[1, 2, 3, 4]`, p50 is 2.5 and p95 is 3.85.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// Record and error counts of one agent path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Agent path, or `(none)`.
    pub agent_path: String,
    /// Records of this agent in the window.
    pub records: usize,
    /// Of those, error records.
    pub errors: usize,
    /// `errors / records`.
    pub error_rate: f64,
    /// Distinct ORCHs that sent this agent's records.
    pub orchs: usize,
    /// Kinds of this agent's error records, most frequent first.
    pub error_kinds: Vec<Count>,
}

/// Which side of the fleet an outlier sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The agent's mean is above the rest of the fleet's.
    Higher,
    /// The agent's mean is below the rest of the fleet's.
    Lower,
}

impl Direction {
    /// `higher` or `lower`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Higher => "higher",
            Direction::Lower => "lower",
        }
    }
}

/// An agent whose mean for a field differs markedly from the rest of the fleet.
///
/// For a payload field it is flagged when the agent and the rest of the fleet both have at
/// least `min_samples` samples, `|z| ≥ outlier_z` and `|agent_mean − fleet_mean| /
/// |fleet_mean| ≥ outlier_ratio`; when the rest of the fleet has no spread at all the z test
/// is skipped and `z` is absent. For [`ERROR_RATE_FIELD`] the agent's error rate (samples:
/// its records) must reach [`ERROR_RATE_OUTLIER_MIN`] and [`ERROR_RATE_OUTLIER_FACTOR`] times
/// the rest of the fleet's; `z` then treats each record as a 0/1 sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    /// Payload field, or [`ERROR_RATE_FIELD`].
    pub field: String,
    /// The agent that stands out.
    pub agent_path: String,
    /// The agent's mean.
    pub agent_mean: f64,
    /// Mean of every OTHER agent's samples (the agent itself excluded).
    pub fleet_mean: f64,
    /// `agent_mean / fleet_mean`; absent when `fleet_mean` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// `(agent_mean − fleet_mean) / fleet_std` (sample standard deviation of the other
    /// agents' samples); absent when that deviation is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// Whether the agent is above or below the rest.
    pub direction: Direction,
    /// The agent's sample count.
    pub samples: usize,
}

/// Computes the statistics of `records`.
///
/// `last_heartbeats` maps `orch_hash` to the `ts_unix` of its most recent `orch_heartbeat`
/// anywhere in the store; ORCHs of the window missing from it have never sent one.
pub fn analyze(
    records: &[StoredTelemetry],
    last_heartbeats: &HashMap<String, i64>,
    opts: &AnalysisOptions,
) -> Stats {
    // Agents get dense indices in path order so every per-agent list comes out sorted
    // without re-sorting strings.
    let mut agent_names: Vec<&str> = records.iter().map(agent_label).collect();
    agent_names.sort_unstable();
    agent_names.dedup();
    let agent_index: HashMap<&str, usize> = agent_names
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, i))
        .collect();

    let mut by_kind: HashMap<&str, usize> = HashMap::new();
    let mut by_level: HashMap<&str, usize> = HashMap::new();
    let mut error_kinds: HashMap<&str, usize> = HashMap::new();
    let mut agent_records = vec![0usize; agent_names.len()];
    let mut agent_errors = vec![0usize; agent_names.len()];
    let mut agent_error_kinds: Vec<HashMap<&str, usize>> = vec![HashMap::new(); agent_names.len()];
    let mut orch_index: HashMap<&str, u32> = HashMap::new();
    let mut agent_orch_pairs: Vec<(u32, u32)> = Vec::new();
    let mut fields = FieldCollector::default();
    let mut errors = 0usize;
    let mut from_ts: Option<i64> = None;
    let mut to_ts: Option<i64> = None;

    for record in records {
        let agent = agent_index[agent_label(record)];
        *by_kind.entry(record.kind.as_str()).or_default() += 1;
        *by_level
            .entry(record.level.as_deref().unwrap_or(NO_LEVEL))
            .or_default() += 1;
        agent_records[agent] += 1;
        from_ts = Some(from_ts.map_or(record.ts_unix, |t| t.min(record.ts_unix)));
        to_ts = Some(to_ts.map_or(record.ts_unix, |t| t.max(record.ts_unix)));

        if is_error(record) {
            errors += 1;
            agent_errors[agent] += 1;
            *error_kinds.entry(record.kind.as_str()).or_default() += 1;
            *agent_error_kinds[agent]
                .entry(record.kind.as_str())
                .or_default() += 1;
        }
        if let Some(orch) = record.orch_hash.as_deref() {
            let next = orch_index.len() as u32;
            let orch = *orch_index.entry(orch).or_insert(next);
            agent_orch_pairs.push((agent as u32, orch));
        }
        fields.collect(&record.payload, agent);
    }

    agent_orch_pairs.sort_unstable();
    agent_orch_pairs.dedup();
    let mut agent_orchs = vec![0usize; agent_names.len()];
    for (agent, _) in &agent_orch_pairs {
        agent_orchs[*agent as usize] += 1;
    }

    let agents: Vec<AgentStats> = agent_names
        .iter()
        .enumerate()
        .map(|(i, name)| AgentStats {
            agent_path: (*name).to_owned(),
            records: agent_records[i],
            errors: agent_errors[i],
            error_rate: rate(agent_errors[i], agent_records[i]),
            orchs: agent_orchs[i],
            error_kinds: sorted_counts(&agent_error_kinds[i]),
        })
        .collect();

    let mut outliers = Vec::new();
    let field_stats = fields.finish(&agent_names, opts, &mut outliers);
    error_rate_outliers(&agents, records.len(), errors, opts, &mut outliers);
    outliers.sort_by(|a, b| {
        let key = |o: &Outlier| o.z.map(f64::abs);
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.field.cmp(&b.field))
        .then_with(|| a.agent_path.cmp(&b.agent_path))
    });

    let by_agent_path: HashMap<&str, usize> = agent_names
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, agent_records[i]))
        .collect();

    Stats {
        records: records.len(),
        from_ts,
        to_ts,
        by_kind: sorted_counts(&by_kind),
        by_level: sorted_counts(&by_level),
        by_agent_path: sorted_counts(&by_agent_path),
        errors,
        error_rate: rate(errors, records.len()),
        error_kinds: sorted_counts(&error_kinds),
        orchs: orch_stats(orch_index.keys().copied(), last_heartbeats, opts),
        fields: field_stats,
        agents,
        outliers,
    }
}

/// Whether a record's level counts as an error.
pub fn is_error(record: &StoredTelemetry) -> bool {
    record
        .level
        .as_deref()
        .is_some_and(|level| ERROR_LEVELS.contains(&level))
}

fn agent_label(record: &StoredTelemetry) -> &str {
    record.agent_path.as_deref().unwrap_or(NO_AGENT_PATH)
}

fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn sorted_counts(counts: &HashMap<&str, usize>) -> Vec<Count> {
    let mut out: Vec<Count> = counts
        .iter()
        .map(|(name, count)| Count {
            name: (*name).to_owned(),
            count: *count,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out
}

fn orch_stats<'a>(
    orchs: impl Iterator<Item = &'a str>,
    last_heartbeats: &HashMap<String, i64>,
    opts: &AnalysisOptions,
) -> OrchStats {
    let mut stats = OrchStats {
        distinct: 0,
        with_heartbeat: 0,
        never_heartbeat: 0,
        stale: Vec::new(),
        fresh: 0,
        stale_after_secs: opts.stale_after_secs,
    };
    for orch in orchs {
        stats.distinct += 1;
        let Some(&last) = last_heartbeats.get(orch) else {
            stats.never_heartbeat += 1;
            continue;
        };
        stats.with_heartbeat += 1;
        let age_secs = opts.now_unix.saturating_sub(last);
        if age_secs > opts.stale_after_secs {
            stats.stale.push(StaleOrch {
                orch_hash: orch.to_owned(),
                last_heartbeat_ts: last,
                age_secs,
            });
        } else {
            stats.fresh += 1;
        }
    }
    stats.stale.sort_by(|a, b| {
        b.age_secs
            .cmp(&a.age_secs)
            .then_with(|| a.orch_hash.cmp(&b.orch_hash))
    });
    stats
}

/// Samples of every numeric payload field, bucketed by agent index.
#[derive(Default)]
struct FieldCollector {
    index: HashMap<String, usize>,
    fields: Vec<(String, Vec<Vec<f64>>)>,
    // Reused to build `outer.inner` names without allocating per record.
    name_buf: String,
}

impl FieldCollector {
    fn collect(&mut self, payload: &serde_json::Value, agent: usize) {
        let Some(object) = payload.as_object() else {
            return;
        };
        for (key, value) in object {
            match value {
                serde_json::Value::Number(n) => self.push(key, n, agent),
                serde_json::Value::Object(inner) => {
                    for (inner_key, inner_value) in inner {
                        if let serde_json::Value::Number(n) = inner_value {
                            let mut name = std::mem::take(&mut self.name_buf);
                            name.clear();
                            name.push_str(key);
                            name.push('.');
                            name.push_str(inner_key);
                            self.push(&name, n, agent);
                            self.name_buf = name;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, name: &str, number: &serde_json::Number, agent: usize) {
        let Some(value) = number.as_f64().filter(|v| v.is_finite()) else {
            return;
        };
        let slot = match self.index.get(name) {
            Some(&slot) => slot,
            None => {
                self.index.insert(name.to_owned(), self.fields.len());
                self.fields.push((name.to_owned(), Vec::new()));
                self.fields.len() - 1
            }
        };
        let per_agent = &mut self.fields[slot].1;
        if per_agent.len() <= agent {
            per_agent.resize_with(agent + 1, Vec::new);
        }
        per_agent[agent].push(value);
    }

    fn finish(
        mut self,
        agent_names: &[&str],
        opts: &AnalysisOptions,
        outliers: &mut Vec<Outlier>,
    ) -> Vec<FieldStats> {
        self.fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(self.fields.len());
        for (field, mut per_agent) in self.fields {
            let total: usize = per_agent.iter().map(Vec::len).sum();
            let mut all = Vec::with_capacity(total);
            let mut moments = Vec::new();
            let mut summaries = Vec::new();
            for (agent, samples) in per_agent.iter_mut().enumerate() {
                if samples.is_empty() {
                    continue;
                }
                samples.sort_unstable_by(f64::total_cmp);
                all.extend_from_slice(samples);
                moments.push((agent, Moments::of(samples)));
                summaries.push(AgentSummary {
                    agent_path: agent_names[agent].to_owned(),
                    summary: summarize_sorted(samples),
                });
            }
            all.sort_unstable_by(f64::total_cmp);
            let overall = Moments::of(&all);
            field_outliers(&field, &moments, &overall, agent_names, opts, outliers);
            out.push(FieldStats {
                field,
                overall: summarize_sorted(&all),
                per_agent: summaries,
            });
        }
        out
    }
}

/// Count, sum, second central moment and range of a sample.
#[derive(Debug, Clone, Copy)]
struct Moments {
    n: usize,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    /// Of a sorted, non-empty sample.
    fn of(sorted: &[f64]) -> Self {
        let mean = mean(sorted);
        let m2 = sorted.iter().map(|v| (v - mean) * (v - mean)).sum();
        Moments {
            n: sorted.len(),
            mean,
            m2,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    if sum.is_finite() {
        sum / n
    } else {
        // Huge values overflow the plain sum; dividing first keeps the mean finite.
        values.iter().map(|v| v / n).sum()
    }
}

/// Summary of a sorted, non-empty sample.
fn summarize_sorted(sorted: &[f64]) -> Summary {
    Summary {
        count: sorted.len(),
        mean: mean(sorted),
        p50: percentile_sorted(sorted, 0.50),
        p95: percentile_sorted(sorted, 0.95),
        p99: percentile_sorted(sorted, 0.99),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

/// Percentile `p` (0..=1) of a sorted, non-empty sample by linear interpolation between the
/// closest ranks (numpy's default, "type 7").
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let value = a + frac * (b - a);
    if value.is_finite() {
        value
    } else {
        a * (1.0 - frac) + b * frac
    }
}

fn field_outliers(
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
fn two_best(
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

fn ratio(agent_mean: f64, fleet_mean: f64) -> Option<f64> {
    if fleet_mean == 0.0 {
        return None;
    }
    Some(agent_mean / fleet_mean).filter(|r| r.is_finite())
}

fn error_rate_outliers(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(
        kind: &str,
        level: Option<&str>,
        orch: Option<&str>,
        agent: Option<&str>,
        ts: i64,
        payload: serde_json::Value,
    ) -> StoredTelemetry {
        StoredTelemetry {
            id: format!("id-{ts}"),
            ts_unix: ts,
            received_unix: ts,
            kind: kind.to_owned(),
            level: level.map(str::to_owned),
            orch_hash: orch.map(str::to_owned),
            agent_path: agent.map(str::to_owned),
            tags: Vec::new(),
            payload,
        }
    }

    fn opts() -> AnalysisOptions {
        AnalysisOptions {
            now_unix: 10_000,
            ..AnalysisOptions::default()
        }
    }

    fn field<'a>(stats: &'a Stats, name: &str) -> &'a FieldStats {
        stats
            .fields
            .iter()
            .find(|f| f.field == name)
            .unwrap_or_else(|| panic!("no field {name}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_follow_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], [50, 95, 99]) = [2.5, 3.85, 3.97]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile_sorted(&v, 0.5), 2.5));
        assert!(close(percentile_sorted(&v, 0.95), 3.85));
        assert!(close(percentile_sorted(&v, 0.99), 3.97));
        assert_eq!(percentile_sorted(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn summary_of_a_small_field_matches_hand_computation() {
        let values = [10.0, 20.0, 30.0, 40.0, 100.0];
        let records: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                rec(
                    "skill_execution",
                    Some("info"),
                    None,
                    Some("a"),
                    i as i64,
                    json!({"latency_ms": v}),
                )
            })
            .collect();
        let stats = analyze(&records, &HashMap::new(), &opts());
        let s = &field(&stats, "latency_ms").overall;
        assert_eq!(s.count, 5);
        assert!(close(s.mean, 40.0));
        assert!(close(s.p50, 30.0));
        // rank 0.95·4 = 3.8 → 40 + 0.8·60 = 88; rank 0.99·4 = 3.96 → 40 + 0.96·60 = 97.6
        assert!(close(s.p95, 88.0));
        assert!(close(s.p99, 97.6));
        assert_eq!((s.min, s.max), (10.0, 100.0));
        assert_eq!(stats.from_ts, Some(0));
        assert_eq!(stats.to_ts, Some(4));
    }

    #[test]
    fn nested_numbers_count_but_booleans_strings_and_deeper_levels_do_not() {
        let records = vec![
            rec(
                "k",
                None,
                None,
                Some("a"),
                1,
                json!({
                    "tokens": {"prompt": 100, "completion": 50, "deep": {"x": 1}},
                    "ok": true, "latency": "12", "list": [1, 2], "score": 0.5
                }),
            ),
            rec(
                "k",
                None,
                None,
                Some("b"),
                2,
                json!({"tokens": {"prompt": 300}, "score": null}),
            ),
            rec("k", None, None, Some("b"), 3, json!(42)),
        ];
        let stats = analyze(&records, &HashMap::new(), &opts());
        let names: Vec<&str> = stats.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["score", "tokens.completion", "tokens.prompt"]);
        let prompt = field(&stats, "tokens.prompt");
        assert!(close(prompt.overall.mean, 200.0));
        let agents: Vec<&str> = prompt
            .per_agent
            .iter()
            .map(|a| a.agent_path.as_str())
            .collect();
        assert_eq!(agents, ["a", "b"]);
        assert!(close(prompt.per_agent[1].summary.mean, 300.0));
    }

    #[test]
    fn counts_are_sorted_by_count_then_name_with_placeholders() {
        let records = vec![
            rec("b_kind", Some("info"), None, Some("x"), 1, json!({})),
            rec("a_kind", Some("error"), None, None, 2, json!({})),
            rec("a_kind", None, None, Some("x"), 3, json!({})),
            rec("c_kind", Some("fatal"), None, Some("y"), 4, json!({})),
        ];
        let stats = analyze(&records, &HashMap::new(), &opts());
        let pairs = |c: &[Count]| {
            c.iter()
                .map(|c| (c.name.clone(), c.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(&stats.by_kind),
            [
                ("a_kind".into(), 2),
                ("b_kind".into(), 1),
                ("c_kind".into(), 1)
            ]
        );
        assert_eq!(
            pairs(&stats.by_level),
            [
                ("error".into(), 1),
                ("fatal".into(), 1),
                ("info".into(), 1),
                ("none".into(), 1)
            ]
        );
        assert_eq!(
            pairs(&stats.by_agent_path),
            [("x".into(), 2), ("(none)".into(), 1), ("y".into(), 1)]
        );
        assert_eq!(stats.errors, 2);
        assert!(close(stats.error_rate, 0.5));
        assert_eq!(
            pairs(&stats.error_kinds),
            [("a_kind".into(), 1), ("c_kind".into(), 1)]
        );
        let y = stats.agents.iter().find(|a| a.agent_path == "y").unwrap();
        assert_eq!((y.records, y.errors), (1, 1));
        assert!(close(y.error_rate, 1.0));
    }

    #[test]
    fn empty_window_is_all_zero() {
        let stats = analyze(&[], &HashMap::new(), &opts());
        assert_eq!(stats.records, 0);
        assert_eq!(stats.error_rate, 0.0);
        assert_eq!(stats.from_ts, None);
        assert!(stats.fields.is_empty() && stats.outliers.is_empty() && stats.agents.is_empty());
    }

    #[test]
    fn heartbeats_split_fresh_stale_and_never() {
        let records = vec![
            rec("k", None, Some("orch_fresh"), Some("a"), 1, json!({})),
            rec("k", None, Some("orch_old"), Some("a"), 2, json!({})),
            rec("k", None, Some("orch_older"), Some("b"), 3, json!({})),
            rec("k", None, Some("orch_silent"), Some("b"), 4, json!({})),
            rec("k", None, Some("orch_silent"), Some("b"), 5, json!({})),
            rec("k", None, None, Some("b"), 6, json!({})),
        ];
        let heartbeats: HashMap<String, i64> = [
            ("orch_fresh".to_owned(), 9_500),
            ("orch_old".to_owned(), 8_000),
            ("orch_older".to_owned(), 1_000),
            ("orch_elsewhere".to_owned(), 1),
        ]
        .into();
        let stats = analyze(&records, &heartbeats, &opts());
        let o = &stats.orchs;
        assert_eq!(
            (o.distinct, o.with_heartbeat, o.never_heartbeat, o.fresh),
            (4, 3, 1, 1)
        );
        let stale: Vec<(&str, i64)> = o
            .stale
            .iter()
            .map(|s| (s.orch_hash.as_str(), s.age_secs))
            .collect();
        assert_eq!(stale, [("orch_older", 9_000), ("orch_old", 2_000)]);
        let b = stats.agents.iter().find(|a| a.agent_path == "b").unwrap();
        assert_eq!(b.orchs, 2);
    }

    /// Five agents of `n` samples each around 100, with small deterministic jitter.
    fn fleet(n: usize) -> Vec<StoredTelemetry> {
        let mut out = Vec::new();
        for (a, agent) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            for i in 0..n {
                let jitter = ((i * 7 + a * 3) % 11) as f64 - 5.0;
                out.push(rec(
                    "skill_execution",
                    Some("info"),
                    Some("orch_1"),
                    Some(agent),
                    i as i64,
                    json!({"response_time": 100.0 + jitter, "love_score": 0.9 + jitter / 100.0}),
                ));
            }
        }
        out
    }

    #[test]
    fn a_normal_fleet_has_no_outliers() {
        let stats = analyze(&fleet(40), &HashMap::new(), &opts());
        assert!(stats.outliers.is_empty(), "{:?}", stats.outliers);
    }

    #[test]
    fn an_injected_slow_and_unloved_agent_is_flagged_with_its_direction() {
        let mut records = fleet(40);
        for i in 0..40 {
            let jitter = (i % 5) as f64;
            records.push(rec(
                "skill_execution",
                Some("info"),
                Some("orch_2"),
                Some("code-gen/rust"),
                i,
                json!({"response_time": 300.0 + jitter, "love_score": 0.4}),
            ));
        }
        let stats = analyze(&records, &HashMap::new(), &opts());
        assert_eq!(stats.outliers.len(), 2, "{:?}", stats.outliers);
        let slow = stats
            .outliers
            .iter()
            .find(|o| o.field == "response_time")
            .unwrap();
        assert_eq!(slow.agent_path, "code-gen/rust");
        assert_eq!(slow.direction, Direction::Higher);
        assert_eq!(slow.samples, 40);
        assert!(close(
            slow.fleet_mean,
            rest_mean_of(&records, "code-gen/rust")
        ));
        assert!(slow.ratio.unwrap() > 2.9 && slow.z.unwrap() > 2.0);
        let unloved = stats
            .outliers
            .iter()
            .find(|o| o.field == "love_score")
            .unwrap();
        assert_eq!(unloved.direction, Direction::Lower);
        assert!(unloved.z.unwrap() < -2.0);
        // Outliers come largest |z| first.
        let zs: Vec<f64> = stats.outliers.iter().map(|o| o.z.unwrap().abs()).collect();
        assert!(zs.windows(2).all(|w| w[0] >= w[1]));
        let json = serde_json::to_string(&stats).unwrap();
        assert!(json.contains(r#""direction":"higher""#));
        let back: Stats = serde_json::from_str(&json).unwrap();
        assert_eq!(back.outliers.len(), 2);
    }

    fn rest_mean_of(records: &[StoredTelemetry], agent: &str) -> f64 {
        let rest: Vec<f64> = records
            .iter()
            .filter(|r| r.agent_path.as_deref() != Some(agent))
            .map(|r| r.payload["response_time"].as_f64().unwrap())
            .collect();
        rest.iter().sum::<f64>() / rest.len() as f64
    }

    #[test]
    fn z_uses_the_sample_deviation_of_the_other_agents() {
        // Rest: 1..=6 (mean 3.5, sample std √3.5); agent: six tens.
        let mut records = Vec::new();
        for v in 1..=6 {
            records.push(rec("k", None, None, Some("rest"), v, json!({"x": v})));
        }
        for i in 0..6 {
            records.push(rec("k", None, None, Some("odd"), i, json!({"x": 10})));
        }
        let stats = analyze(&records, &HashMap::new(), &opts());
        let o = stats
            .outliers
            .iter()
            .find(|o| o.agent_path == "odd")
            .unwrap();
        assert!(close(o.fleet_mean, 3.5));
        assert!(close(o.z.unwrap(), 6.5 / 3.5f64.sqrt()));
        assert!(close(o.ratio.unwrap(), 10.0 / 3.5));
    }

    #[test]
    fn constant_rest_of_fleet_reports_no_z_but_still_flags() {
        let mut records = Vec::new();
        for i in 0..6 {
            records.push(rec(
                "k",
                None,
                None,
                Some("steady"),
                i,
                json!({"retries": 1}),
            ));
            records.push(rec(
                "k",
                None,
                None,
                Some("flaky"),
                i,
                json!({"retries": 3 + i % 2}),
            ));
        }
        let stats = analyze(&records, &HashMap::new(), &opts());
        let flaky = stats
            .outliers
            .iter()
            .find(|o| o.agent_path == "flaky")
            .unwrap();
        assert_eq!(flaky.z, None);
        assert!(close(flaky.fleet_mean, 1.0));
        assert!(!serde_json::to_string(flaky).unwrap().contains("\"z\""));
    }

    #[test]
    fn too_few_samples_are_never_outliers() {
        let mut records = fleet(40);
        for i in 0..4 {
            records.push(rec(
                "k",
                None,
                None,
                Some("tiny"),
                i,
                json!({"response_time": 5000}),
            ));
        }
        let stats = analyze(&records, &HashMap::new(), &opts());
        assert!(stats.outliers.iter().all(|o| o.agent_path != "tiny"));
    }

    #[test]
    fn error_prone_agent_gets_an_error_rate_outlier() {
        let mut records = fleet(20);
        for i in 0..10 {
            let level = if i < 4 { "error" } else { "info" };
            records.push(rec(
                "tool_call",
                Some(level),
                None,
                Some("flaky"),
                i,
                json!({}),
            ));
        }
        records[0].level = Some("critical".into());
        let stats = analyze(&records, &HashMap::new(), &opts());
        let o = stats
            .outliers
            .iter()
            .find(|o| o.field == ERROR_RATE_FIELD)
            .unwrap();
        assert_eq!(o.agent_path, "flaky");
        assert!(close(o.agent_mean, 0.4));
        assert!(close(o.fleet_mean, 0.01));
        assert_eq!(o.samples, 10);
        let flaky = stats
            .agents
            .iter()
            .find(|a| a.agent_path == "flaky")
            .unwrap();
        assert_eq!(
            flaky.error_kinds,
            [Count {
                name: "tool_call".into(),
                count: 4
            }]
        );
        assert!(
            stats
                .outliers
                .iter()
                .filter(|o| o.field == ERROR_RATE_FIELD)
                .count()
                == 1
        );
    }

    #[test]
    fn non_finite_and_records_without_agent_are_handled() {
        let records = vec![
            rec("k", None, None, None, 1, json!({"x": 1e308})),
            rec("k", None, None, None, 2, json!({"x": 1e308})),
        ];
        let stats = analyze(&records, &HashMap::new(), &opts());
        let x = field(&stats, "x");
        assert!(x.overall.mean.is_finite());
        assert_eq!(x.per_agent[0].agent_path, NO_AGENT_PATH);
        assert!(serde_json::from_str::<Stats>(&serde_json::to_string(&stats).unwrap()).is_ok());
    }

    #[test]
    fn five_thousand_records_analyse_quickly() {
        let agents = [
            "root",
            "code-gen",
            "code-gen/rust",
            "search",
            "writer",
            "critic",
        ];
        let records: Vec<_> = (0..5000)
            .map(|i| {
                let v = (i * 37 % 101) as f64;
                rec(
                    "skill_execution",
                    Some(if i % 23 == 0 { "error" } else { "info" }),
                    Some(["orch_a", "orch_b", "orch_c"][i % 3]),
                    Some(agents[i % agents.len()]),
                    i as i64,
                    json!({"response_time": 100.0 + v, "love_score": v / 101.0, "tokens": {"prompt": v * 10.0, "completion": v}, "cost": v / 1000.0}),
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let stats = analyze(&records, &HashMap::new(), &opts());
        let elapsed = started.elapsed();
        assert_eq!(stats.fields.len(), 5);
        // Generous for debug builds; release runs in about a millisecond.
        assert!(
            elapsed < std::time::Duration::from_millis(500),
            "{elapsed:?}"
        );
    }
}
