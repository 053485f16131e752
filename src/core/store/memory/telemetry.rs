//! Telemetry and insights in memory.

use std::collections::HashMap;

use super::{Job, MemoryStore, State, commit};
use crate::core::store::rollup::{Batch, CellRange, CellRow, OrchHealth, OrchSeen};
use crate::core::store::{Commit, Error, InsightRecord, Page, TelemetryFilter, TelemetryStore};
use crate::core::telemetry::{HEARTBEAT_KIND, NewRecord, StoredTelemetry};

impl State {
    /// Stores a batch whole, or nothing if a record does not decode.
    pub(super) fn insert_records(&mut self, batch: Batch) -> Result<(), Error> {
        let decoded = batch
            .records
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        for record in decoded {
            self.last_seq += 1;
            self.records.push((self.last_seq, record));
        }
        self.rollup.merge(&batch.rollup);
        Ok(())
    }
}

fn decode(r: NewRecord) -> Result<StoredTelemetry, Error> {
    Ok(StoredTelemetry {
        id: r.id,
        ts_unix: r.ts_unix,
        received_unix: r.received_unix,
        kind: r.kind,
        level: r.level,
        orch_hash: r.orch_hash,
        agent_path: r.agent_path,
        tags: match r.tags_json {
            Some(t) => {
                serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("tags: {e}")))?
            }
            None => Vec::new(),
        },
        payload: serde_json::from_str(&r.payload_json)
            .map_err(|e| Error::Corrupt(format!("payload: {e}")))?,
    })
}

#[async_trait::async_trait]
impl TelemetryStore for MemoryStore {
    fn submit(&self, records: Vec<NewRecord>) -> Result<Commit<()>, Error> {
        let (reply, done) = commit();
        self.enqueue(Job::Telemetry(Batch::new(records), reply))?;
        Ok(done)
    }

    fn save_insight(&self, insight: InsightRecord) -> Result<Commit<()>, Error> {
        let (reply, done) = commit();
        self.enqueue(Job::Insight(insight, reply))?;
        Ok(done)
    }

    fn purge_before(&self, cutoff: i64, limit: usize) -> Result<Commit<usize>, Error> {
        let (reply, done) = commit();
        self.enqueue(Job::Purge {
            conversations: false,
            cutoff,
            limit,
            reply,
        })?;
        Ok(done)
    }

    async fn query(
        &self,
        filter: &TelemetryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page, Error> {
        let state = self.lock();
        let mut matching = state
            .records
            .iter()
            .rev()
            .filter(|(seq, _)| cursor.is_none_or(|c| *seq < c))
            .filter(|(_, r)| filter.matches(r));
        let mut records = Vec::with_capacity(limit.min(10_000));
        let mut last_seq = None;
        for (seq, r) in matching.by_ref().take(limit) {
            last_seq = Some(*seq);
            records.push(r.clone());
        }
        let more = matching.next().is_some();
        Ok(Page {
            records,
            next_cursor: if more { last_seq } else { None },
        })
    }

    async fn last_heartbeats(&self, orch_hashes: &[String]) -> Result<HashMap<String, i64>, Error> {
        let state = self.lock();
        let mut out: HashMap<String, i64> = HashMap::with_capacity(orch_hashes.len());
        for (_, r) in &state.records {
            if r.kind != HEARTBEAT_KIND {
                continue;
            }
            if let Some(orch) = r.orch_hash.as_ref().filter(|o| orch_hashes.contains(o)) {
                let latest = out.entry(orch.clone()).or_insert(r.ts_unix);
                *latest = (*latest).max(r.ts_unix);
            }
        }
        Ok(out)
    }

    async fn insights(&self, limit: usize) -> Result<Vec<InsightRecord>, Error> {
        let state = self.lock();
        Ok(state.insights.iter().rev().take(limit).cloned().collect())
    }

    async fn cells(&self, range: CellRange) -> Result<Vec<CellRow>, Error> {
        let state = self.lock();
        Ok(state
            .rollup
            .cells
            .iter()
            .filter(|(k, _)| range.contains(k.minute))
            .map(|(key, cell)| CellRow {
                key: key.clone(),
                cell: cell.clone(),
            })
            .collect())
    }

    async fn orchs_seen(&self, limit: usize) -> Result<Vec<OrchSeen>, Error> {
        let state = self.lock();
        let mut orchs: Vec<OrchSeen> = state.rollup.orchs.values().cloned().collect();
        orchs.sort_by_key(|o| std::cmp::Reverse(o.last_heartbeat_ts));
        orchs.truncate(limit);
        Ok(orchs)
    }

    async fn orch_health(&self, healthy_since: i64) -> Result<Vec<OrchHealth>, Error> {
        let state = self.lock();
        let orchs: Vec<OrchSeen> = state.rollup.orchs.values().cloned().collect();
        Ok(OrchHealth::of(&orchs, healthy_since))
    }

    fn queue_depth(&self) -> usize {
        self.queued()
    }

    async fn count(&self) -> Result<u64, Error> {
        Ok(self.lock().records.len() as u64)
    }

    async fn shutdown(&self) {
        self.close();
    }
}
