//! Per-minute aggregates of the telemetry, kept by every backend next to the rows so the
//! dashboard reads a few hundred cells instead of millions of records.
//!
//! A [`Rollup`] is computed from a batch where the batch is submitted (on the caller's
//! thread, not the writer's), travels with the batch to the writer and is merged into the
//! stored cells in the same transaction as the rows: a committed record is counted once, a
//! refused batch not at all. Cells are keyed by minute, agent path, kind and model; each
//! holds counts, token and cost sums and a latency histogram with fixed log-spaced buckets
//! (so cells merge by adding, across batches, processes and minutes).
//!
//! Alongside, [`OrchSeen`]: per ORCH its latest agent path, last record and last heartbeat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::telemetry::{ERROR_LEVELS, HEARTBEAT_KIND, NewRecord};

pub mod codec;

/// Seconds per rollup cell.
pub const MINUTE: i64 = 60;

/// Buckets of the latency histogram: bucket `i < LAST` holds latencies in
/// `(bound(i-1), bound(i)]` ms with `bound(i) = 2^(i/2)`; the last holds everything above
/// `bound(LAST - 1)` (about 185 s).
pub const LATENCY_BUCKETS: usize = 36;

/// Upper bound in ms of latency bucket `i` (infinite for the last).
pub fn bucket_bound(i: usize) -> f64 {
    if i + 1 >= LATENCY_BUCKETS {
        f64::INFINITY
    } else {
        2f64.powf(i as f64 / 2.0)
    }
}

/// The bucket a latency in ms falls in.
pub fn bucket_of(ms: f64) -> usize {
    if ms <= 1.0 {
        return 0;
    }
    // bound(i) >= ms  <=>  i >= 2 * log2(ms)
    let i = (2.0 * ms.log2()).ceil() as usize;
    i.min(LATENCY_BUCKETS - 1)
}

/// A latency distribution in fixed buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram(pub Vec<u64>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(vec![0; LATENCY_BUCKETS])
    }
}

impl Histogram {
    /// Counts one latency.
    pub fn observe(&mut self, ms: f64) {
        self.0[bucket_of(ms)] += 1;
    }

    /// Adds another histogram's counts (a shorter or longer one is padded or cut).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q`-quantile (0..=1), interpolated geometrically inside its bucket; `None` when
    /// empty. Within a factor of √2 of the true value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.0.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.5 } else { bucket_bound(i - 1) };
                let hi = if i + 1 >= LATENCY_BUCKETS {
                    lo * 2.0
                } else {
                    bucket_bound(i)
                };
                let frac = (rank - seen as f64) / n as f64;
                return Some(lo * (hi / lo).powf(frac));
            }
            seen += n;
        }
        None
    }

    /// The counts as a compact text (`n,n,…`), the form SQLite stores.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 2);
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&n.to_string());
        }
        s
    }

    /// Parses [`Histogram::to_text`]; an unreadable entry counts as zero.
    pub fn from_text(text: &str) -> Histogram {
        let mut h = Histogram::default();
        for (slot, n) in h.0.iter_mut().zip(text.split(',')) {
            *slot = n.trim().parse().unwrap_or(0);
        }
        h
    }
}

/// Where a cell sits: a minute, an agent path, a kind and a model (`""` when absent).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    /// Start of the minute, Unix seconds.
    pub minute: i64,
    /// Agent path, `""` for none.
    pub agent_path: String,
    /// Record kind.
    pub kind: String,
    /// `payload.model`, `""` for none.
    pub model: String,
}

/// What a cell counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Records.
    pub records: u64,
    /// Records at an error level.
    pub errors: u64,
    /// `payload.response_time` (ms) of the records that carry one.
    pub latency: Histogram,
    /// Sum of those latencies, ms.
    pub latency_sum_ms: f64,
    /// Sum of `payload.tokens.input` (or `prompt`).
    pub tokens_in: u64,
    /// Sum of `payload.tokens.output` (or `completion`).
    pub tokens_out: u64,
    /// Sum of `payload.cost`.
    pub cost: f64,
}

impl Cell {
    /// Adds another cell's counts.
    pub fn merge(&mut self, other: &Cell) {
        self.records += other.records;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.latency_sum_ms += other.latency_sum_ms;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.cost += other.cost;
    }
}

/// One stored cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRow {
    /// Where.
    pub key: CellKey,
    /// What.
    pub cell: Cell,
}

/// An ORCH's newest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchSeen {
    /// Anonymised ORCH.
    pub orch_hash: String,
    /// Agent path its newest heartbeat carried.
    pub agent_path: Option<String>,
    /// Event time of its newest heartbeat.
    pub last_heartbeat_ts: i64,
}

impl OrchSeen {
    /// Keeps the newer heartbeat (and its agent path, or the older one's when it has none).
    pub fn merge(&mut self, other: &OrchSeen) {
        if other.last_heartbeat_ts >= self.last_heartbeat_ts {
            self.last_heartbeat_ts = other.last_heartbeat_ts;
            if other.agent_path.is_some() {
                self.agent_path.clone_from(&other.agent_path);
            }
        } else if self.agent_path.is_none() {
            self.agent_path.clone_from(&other.agent_path);
        }
    }
}

/// ORCHs of one agent path by heartbeat age ([`super::TelemetryStore::orch_health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchHealth {
    /// Agent path of their newest heartbeat, `""` for none.
    pub agent_path: String,
    /// ORCHs that sent a heartbeat.
    pub seen: u64,
    /// Those whose newest heartbeat is recent enough.
    pub healthy: u64,
}

impl OrchHealth {
    /// The same counts from a list of ORCHs (backends that hold them in memory).
    pub fn of(orchs: &[OrchSeen], healthy_since: i64) -> Vec<OrchHealth> {
        let mut by_path: BTreeMap<&str, OrchHealth> = BTreeMap::new();
        for o in orchs {
            let path = o.agent_path.as_deref().unwrap_or("");
            let g = by_path.entry(path).or_insert_with(|| OrchHealth {
                agent_path: path.to_owned(),
                ..OrchHealth::default()
            });
            g.seen += 1;
            if o.last_heartbeat_ts >= healthy_since {
                g.healthy += 1;
            }
        }
        by_path.into_values().collect()
    }
}

/// The aggregates of one batch (or of several, merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Cells touched.
    pub cells: BTreeMap<CellKey, Cell>,
    /// ORCHs seen.
    pub orchs: BTreeMap<String, OrchSeen>,
}

/// The payload fields a cell counts; everything else is skipped unread.
#[derive(Deserialize)]
struct Facts {
    #[serde(default)]
    response_time: Option<serde_json::Value>,
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    tokens: Option<serde_json::Value>,
    #[serde(default)]
    cost: Option<serde_json::Value>,
}

fn number(v: Option<&serde_json::Value>) -> Option<f64> {
    v.and_then(serde_json::Value::as_f64)
        .filter(|n| n.is_finite() && *n >= 0.0)
}

impl Rollup {
    /// The aggregates of `records`.
    pub fn of(records: &[NewRecord]) -> Rollup {
        let mut rollup = Rollup::default();
        for r in records {
            rollup.add(r);
        }
        rollup
    }

    /// Counts one record.
    pub fn add(&mut self, r: &NewRecord) {
        let facts: Option<Facts> = serde_json::from_str(&r.payload_json).ok();
        let model = facts
            .as_ref()
            .and_then(|f| f.model.as_ref())
            .and_then(|m| m.as_str())
            .map(|m| truncate(m, 200))
            .unwrap_or_default();
        let key = CellKey {
            minute: r.ts_unix.div_euclid(MINUTE) * MINUTE,
            agent_path: r.agent_path.clone().unwrap_or_default(),
            kind: r.kind.clone(),
            model,
        };
        let cell = self.cells.entry(key).or_default();
        cell.records += 1;
        if r.level
            .as_deref()
            .is_some_and(|l| ERROR_LEVELS.contains(&l))
        {
            cell.errors += 1;
        }
        if let Some(f) = &facts {
            if let Some(ms) = number(f.response_time.as_ref()) {
                cell.latency.observe(ms);
                cell.latency_sum_ms += ms;
            }
            if let Some(t) = &f.tokens {
                let get = |a: &str, b: &str| number(t.get(a).or_else(|| t.get(b)));
                cell.tokens_in += get("input", "prompt").unwrap_or(0.0) as u64;
                cell.tokens_out += get("output", "completion").unwrap_or(0.0) as u64;
            }
            if let Some(c) = number(f.cost.as_ref()) {
                cell.cost += c;
            }
        }
        if let (Some(orch), true) = (&r.orch_hash, r.kind == HEARTBEAT_KIND) {
            let seen = OrchSeen {
                orch_hash: orch.clone(),
                agent_path: r.agent_path.clone(),
                last_heartbeat_ts: r.ts_unix,
            };
            match self.orchs.get_mut(orch) {
                Some(old) => old.merge(&seen),
                None => {
                    self.orchs.insert(orch.clone(), seen);
                }
            }
        }
    }

    /// Adds another rollup.
    pub fn merge(&mut self, other: &Rollup) {
        for (k, c) in &other.cells {
            match self.cells.get_mut(k) {
                Some(old) => old.merge(c),
                None => {
                    self.cells.insert(k.clone(), c.clone());
                }
            }
        }
        for (k, o) in &other.orchs {
            match self.orchs.get_mut(k) {
                Some(old) => old.merge(o),
                None => {
                    self.orchs.insert(k.clone(), o.clone());
                }
            }
        }
    }

    /// True when it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.orchs.is_empty()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Records on their way to a writer, with their aggregates computed where they were
/// submitted.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records.
    pub records: Vec<NewRecord>,
    /// Their cells and ORCHs.
    pub rollup: Rollup,
}

impl Batch {
    /// A batch of `records`, aggregated here (the caller's thread).
    pub fn new(records: Vec<NewRecord>) -> Batch {
        let rollup = Rollup::of(&records);
        Batch { records, rollup }
    }
}

impl std::ops::Deref for Batch {
    type Target = [NewRecord];
    fn deref(&self) -> &[NewRecord] {
        &self.records
    }
}

/// Cells of a time range from a backend: those with `since <= minute < until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRange {
    /// First minute (inclusive), Unix seconds.
    pub since: i64,
    /// End (exclusive), Unix seconds.
    pub until: i64,
}

impl CellRange {
    /// Whether a cell's minute is inside.
    pub fn contains(&self, minute: i64) -> bool {
        minute >= self.since && minute < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: i64, kind: &str, level: Option<&str>, payload: &str) -> NewRecord {
        NewRecord {
            id: format!("{ts}-{kind}"),
            ts_unix: ts,
            received_unix: ts,
            kind: kind.to_owned(),
            level: level.map(str::to_owned),
            orch_hash: Some("o1".to_owned()),
            agent_path: Some("support/triage".to_owned()),
            tags_json: None,
            payload_json: payload.to_owned(),
        }
    }

    #[test]
    fn buckets_are_monotonic_and_cover_every_latency() {
        for ms in [0.0, 0.3, 1.0, 1.01, 1.5, 2.0, 99.0, 100.0, 1e5, 1e9] {
            let b = bucket_of(ms);
            assert!(ms <= bucket_bound(b), "{ms} in {b}");
            if b > 0 {
                assert!(ms > bucket_bound(b - 1), "{ms} above {b}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_the_bucket_factor() {
        let mut h = Histogram::default();
        for ms in 1..=1000 {
            h.observe(ms as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p95 = h.quantile(0.95).unwrap();
        assert!((500.0 / 1.42..=500.0 * 1.42).contains(&p50), "{p50}");
        assert!((950.0 / 1.42..=950.0 * 1.42).contains(&p95), "{p95}");
        assert!(p50 < p95);
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(Histogram::from_text(&h.to_text()), h);
    }

    #[test]
    fn a_batch_is_counted_per_minute_agent_kind_and_model() {
        let records = [
            record(
                120,
                "llm_call",
                None,
                r#"{"model":"m1","response_time":100,"tokens":{"input":10,"output":5},"cost":0.5}"#,
            ),
            record(
                150,
                "llm_call",
                Some("error"),
                r#"{"model":"m1","response_time":"slow","tokens":{"prompt":3,"completion":1}}"#,
            ),
            record(181, "llm_call", None, r#"{"model":"m2"}"#),
            record(182, "orch_heartbeat", None, "not json"),
        ];
        let r = Rollup::of(&records);
        assert_eq!(r.cells.len(), 3);
        let m1 = &r.cells[&CellKey {
            minute: 120,
            agent_path: "support/triage".into(),
            kind: "llm_call".into(),
            model: "m1".into(),
        }];
        assert_eq!((m1.records, m1.errors), (2, 1));
        assert_eq!(m1.latency.count(), 1);
        assert_eq!((m1.tokens_in, m1.tokens_out), (13, 6));
        assert_eq!(m1.cost, 0.5);
        let o = &r.orchs["o1"];
        assert_eq!(o.last_heartbeat_ts, 182);

        let mut twice = r.clone();
        twice.merge(&r);
        assert_eq!(twice.cells.values().map(|c| c.records).sum::<u64>(), 8);
        assert_eq!(twice.orchs["o1"], r.orchs["o1"]);
    }

    #[test]
    fn an_older_heartbeat_does_not_move_an_orch_back() {
        let mut a = OrchSeen {
            orch_hash: "o".into(),
            agent_path: Some("new".into()),
            last_heartbeat_ts: 100,
        };
        a.merge(&OrchSeen {
            orch_hash: "o".into(),
            agent_path: Some("old".into()),
            last_heartbeat_ts: 50,
        });
        assert_eq!(a.agent_path.as_deref(), Some("new"));
        assert_eq!(a.last_heartbeat_ts, 100);
    }
}
