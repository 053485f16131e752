//! Statistics over a window of telemetry records: counts, error rates, heartbeat freshness,
//! numeric payload fields and the agents that stand out from the rest of the fleet.
//!
//! Pure functions over records: depends only on `telemetry` and `shared::stats`.
//!
//! Everything here is pure: the collector selects the records and the heartbeat times, this
//! module only computes. The result, [`Stats`], is part of the `POST /analyze` response and
//! is stored with the insight, so its field names are a stable interface.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::core::shared::stats::linear_percentile_sorted;
use crate::core::telemetry::{ERROR_LEVELS, StoredTelemetry, now_unix};

mod outliers;

use outliers::{error_rate_outliers, field_outliers};

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
    /// Per model (the payload's `model`, as OTLP spans carry it), most records first.
    #[serde(default)]
    pub models: Vec<ModelStats>,
}

/// Latency, tokens, cost and errors of the records that name one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// The payload's `model`.
    pub model: String,
    /// Records naming it.
    pub records: usize,
    /// Of those, error records.
    pub errors: usize,
    /// `errors / records`.
    pub error_rate: f64,
    /// Agent paths that used it, sorted.
    pub agents: Vec<String>,
    /// `response_time` (ms), when the records carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time: Option<Summary>,
    /// `tokens.input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Summary>,
    /// `tokens.output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Summary>,
    /// `tokens.total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<Summary>,
    /// `cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Summary>,
}

/// Samples of one model, gathered while walking the records.
#[derive(Default)]
struct ModelSamples<'a> {
    records: usize,
    errors: usize,
    agents: Vec<&'a str>,
    response_time: Vec<f64>,
    input_tokens: Vec<f64>,
    output_tokens: Vec<f64>,
    total_tokens: Vec<f64>,
    cost: Vec<f64>,
}

impl<'a> ModelSamples<'a> {
    fn add(&mut self, record: &'a StoredTelemetry, agent: &'a str) {
        let number = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_f64);
        let p = &record.payload;
        self.records += 1;
        self.errors += usize::from(is_error(record));
        self.agents.push(agent);
        let tokens = p.get("tokens");
        for (samples, value) in [
            (&mut self.response_time, number(p.get("response_time"))),
            (
                &mut self.input_tokens,
                number(tokens.and_then(|t| t.get("input"))),
            ),
            (
                &mut self.output_tokens,
                number(tokens.and_then(|t| t.get("output"))),
            ),
            (
                &mut self.total_tokens,
                number(tokens.and_then(|t| t.get("total"))),
            ),
            (&mut self.cost, number(p.get("cost"))),
        ] {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                samples.push(v);
            }
        }
    }

    fn finish(mut self, model: &str) -> ModelStats {
        let summary = |samples: &mut Vec<f64>| {
            (!samples.is_empty()).then(|| {
                samples.sort_unstable_by(f64::total_cmp);
                summarize_sorted(samples)
            })
        };
        self.agents.sort_unstable();
        self.agents.dedup();
        ModelStats {
            model: model.to_owned(),
            records: self.records,
            errors: self.errors,
            error_rate: rate(self.errors, self.records),
            agents: self.agents.iter().map(|a| (*a).to_owned()).collect(),
            response_time: summary(&mut self.response_time),
            input_tokens: summary(&mut self.input_tokens),
            output_tokens: summary(&mut self.output_tokens),
            total_tokens: summary(&mut self.total_tokens),
            cost: summary(&mut self.cost),
        }
    }
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
    let mut models: HashMap<&str, ModelSamples<'_>> = HashMap::new();
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
        if let Some(model) = record.payload.get("model").and_then(|m| m.as_str()) {
            models
                .entry(model)
                .or_default()
                .add(record, agent_label(record));
        }
    }
    let mut models: Vec<ModelStats> = models
        .into_iter()
        .map(|(model, samples)| samples.finish(model))
        .collect();
    models.sort_by(|a, b| {
        b.records
            .cmp(&a.records)
            .then_with(|| a.model.cmp(&b.model))
    });

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
        models,
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
        p50: linear_percentile_sorted(sorted, 0.50),
        p95: linear_percentile_sorted(sorted, 0.95),
        p99: linear_percentile_sorted(sorted, 0.99),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

#[cfg(test)]
mod tests;
