//! The Fleet page's figures, computed from the store's per-minute cells and ORCH heartbeats
//! (never from rows, so a page costs the same on a store of any size).

use std::collections::BTreeMap;

use crate::core::store::rollup::{Cell, CellRow, MINUTE, OrchHealth};

/// Minutes the Fleet page covers.
pub const WINDOW_MINUTES: i64 = 60;
/// Minutes the "events/s" figure covers.
pub const RATE_MINUTES: usize = 5;

/// One minute of the chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinutePoint {
    /// Start of the minute, Unix seconds.
    pub minute: i64,
    /// Records.
    pub records: u64,
    /// Records at an error level.
    pub errors: u64,
}

impl MinutePoint {
    /// Records per second over the minute.
    pub fn per_second(&self) -> f64 {
        self.records as f64 / MINUTE as f64
    }

    /// Errors over records, 0 without records.
    pub fn error_rate(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.errors as f64 / self.records as f64
        }
    }
}

/// Figures of one agent path, model or kind over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The agent path, model or kind (`""`: none given).
    pub name: String,
    /// Everything the group's cells count.
    pub cell: Cell,
}

impl Group {
    /// Errors over records.
    pub fn error_rate(&self) -> f64 {
        if self.cell.records == 0 {
            0.0
        } else {
            self.cell.errors as f64 / self.cell.records as f64
        }
    }

    /// Latency quantile, ms.
    pub fn latency(&self, q: f64) -> Option<f64> {
        self.cell.latency.quantile(q)
    }
}

/// ORCHs of one agent path, by heartbeat age.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrchGroup {
    /// Agent path of their newest heartbeat (`""`: none).
    pub agent_path: String,
    /// ORCHs that ever sent a heartbeat.
    pub seen: u64,
    /// Whose newest heartbeat is at most the stale age old.
    pub healthy: u64,
    /// The others.
    pub stale: u64,
}

/// Everything the Fleet page shows but the last events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    /// When it was computed, Unix seconds.
    pub now: i64,
    /// The window's minutes, oldest first, one per minute (zeros included).
    pub minutes: Vec<MinutePoint>,
    /// Records in the window.
    pub records: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Kinds, most records first.
    pub kinds: Vec<Group>,
    /// Agent paths, most records first.
    pub agents: Vec<Group>,
    /// Models (records that name one), most records first.
    pub models: Vec<Group>,
    /// ORCHs by agent path, most first.
    pub orchs: Vec<OrchGroup>,
    /// All ORCHs.
    pub orch_total: OrchGroup,
}

impl Fleet {
    /// Errors over records in the window.
    pub fn error_rate(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.errors as f64 / self.records as f64
        }
    }

    /// Records per second over the last [`RATE_MINUTES`] minutes (the current one up to
    /// now included).
    pub fn recent_rate(&self) -> f64 {
        let recent = &self.minutes[self.minutes.len().saturating_sub(RATE_MINUTES)..];
        let Some(first) = recent.first() else {
            return 0.0;
        };
        let records: u64 = recent.iter().map(|m| m.records).sum();
        let seconds = (self.now - first.minute + 1).max(1);
        records as f64 / seconds as f64
    }

    /// The cells to read for a window ending at `now`: `(since, until)`.
    pub fn range(now: i64) -> (i64, i64) {
        let current = now.div_euclid(MINUTE) * MINUTE;
        (current - (WINDOW_MINUTES - 1) * MINUTE, current + MINUTE)
    }

    /// The figures of `cells` (the window's, from [`Fleet::range`]) and `orchs` (counted
    /// healthy since `now - stale_after`).
    pub fn compute(now: i64, cells: &[CellRow], orchs: &[OrchHealth]) -> Fleet {
        let (since, until) = Fleet::range(now);
        let mut minutes: Vec<MinutePoint> = (since..until)
            .step_by(MINUTE as usize)
            .map(|minute| MinutePoint {
                minute,
                records: 0,
                errors: 0,
            })
            .collect();
        let mut kinds: BTreeMap<&str, Cell> = BTreeMap::new();
        let mut agents: BTreeMap<&str, Cell> = BTreeMap::new();
        let mut models: BTreeMap<&str, Cell> = BTreeMap::new();
        let (mut records, mut errors) = (0, 0);
        for row in cells {
            let at = row.key.minute;
            if at < since || at >= until {
                continue;
            }
            let point = &mut minutes[((at - since) / MINUTE) as usize];
            point.records += row.cell.records;
            point.errors += row.cell.errors;
            records += row.cell.records;
            errors += row.cell.errors;
            kinds.entry(&row.key.kind).or_default().merge(&row.cell);
            agents
                .entry(&row.key.agent_path)
                .or_default()
                .merge(&row.cell);
            if !row.key.model.is_empty() {
                models.entry(&row.key.model).or_default().merge(&row.cell);
            }
        }
        let sorted = |m: BTreeMap<&str, Cell>| {
            let mut v: Vec<Group> = m
                .into_iter()
                .map(|(name, cell)| Group {
                    name: name.to_owned(),
                    cell,
                })
                .collect();
            v.sort_by(|a, b| {
                b.cell
                    .records
                    .cmp(&a.cell.records)
                    .then_with(|| a.name.cmp(&b.name))
            });
            v
        };
        let mut orch_total = OrchGroup::default();
        let mut orch_groups: Vec<OrchGroup> = orchs
            .iter()
            .map(|o| {
                let g = OrchGroup {
                    agent_path: o.agent_path.clone(),
                    seen: o.seen,
                    healthy: o.healthy.min(o.seen),
                    stale: o.seen - o.healthy.min(o.seen),
                };
                orch_total.seen += g.seen;
                orch_total.healthy += g.healthy;
                orch_total.stale += g.stale;
                g
            })
            .collect();
        orch_groups.sort_by(|a, b| {
            b.seen
                .cmp(&a.seen)
                .then_with(|| a.agent_path.cmp(&b.agent_path))
        });
        Fleet {
            now,
            minutes,
            records,
            errors,
            kinds: sorted(kinds),
            agents: sorted(agents),
            models: sorted(models),
            orchs: orch_groups,
            orch_total,
        }
    }
}

/// A latency for a table cell: `"120 ms"`, `"3.4 s"`, or `"–"`.
pub fn format_ms(ms: Option<f64>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::rollup::{CellKey, OrchSeen};

    fn row(
        minute: i64,
        agent: &str,
        kind: &str,
        model: &str,
        records: u64,
        errors: u64,
    ) -> CellRow {
        let mut cell = Cell {
            records,
            errors,
            ..Cell::default()
        };
        for _ in 0..records {
            cell.latency.observe(100.0);
        }
        CellRow {
            key: CellKey {
                minute,
                agent_path: agent.into(),
                kind: kind.into(),
                model: model.into(),
            },
            cell,
        }
    }

    #[test]
    fn the_window_is_sixty_minutes_zero_filled_and_grouped() {
        let now = 10_000 * 60 + 30;
        let (since, until) = Fleet::range(now);
        assert_eq!(until - since, 3600);
        let cells = [
            row(since - 60, "old", "x", "", 99, 0),
            row(since, "a", "llm_call", "m1", 10, 1),
            row(now - 30, "a", "llm_call", "m1", 5, 0),
            row(now - 30, "b", "tool", "", 3, 3),
        ];
        let orchs = [
            OrchSeen {
                orch_hash: "o1".into(),
                agent_path: Some("a".into()),
                last_heartbeat_ts: now - 10,
            },
            OrchSeen {
                orch_hash: "o2".into(),
                agent_path: Some("a".into()),
                last_heartbeat_ts: now - 1000,
            },
        ];
        let orchs = OrchHealth::of(&orchs, now - 900);
        let f = Fleet::compute(now, &cells, &orchs);
        assert_eq!(f.minutes.len(), 60);
        assert_eq!(f.minutes[0].records, 10);
        assert_eq!(f.minutes[59].records, 8);
        assert_eq!((f.records, f.errors), (18, 4));
        assert_eq!(f.kinds[0].name, "llm_call");
        assert_eq!(f.kinds[0].cell.records, 15);
        assert_eq!(f.models.len(), 1);
        assert_eq!(f.agents.len(), 2);
        assert!(f.agents.iter().all(|a| a.name != "old"));
        assert_eq!(
            (f.orch_total.seen, f.orch_total.healthy, f.orch_total.stale),
            (2, 1, 1)
        );
        assert_eq!(f.orchs[0].agent_path, "a");
        assert!(f.kinds[0].latency(0.5).is_some());
        assert_eq!(format_ms(Some(1500.0)), "1.5 s");
        // 8 records in the current minute (30 s in) and none in the 4 before: 8 / 271 s.
        assert!((f.recent_rate() - 8.0 / 271.0).abs() < 1e-9);
    }
}
