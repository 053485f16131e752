//! The update log in memory: the same contract as the SQLite log (gap-free seqs, widenings
//! with their own sequence, percentages as of a widening, the ack rules), nothing on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{
    AckError, BoxFuture, Counts, Error, Keep, KnownSubscriber, Position, StoredUpdate, UpdateLog,
    WidenedFrom, Widening, WideningRecord,
};
use crate::core::updates::UpdateEnvelope;
use crate::core::updates::protocol::AckStatus;

/// One logged update.
struct Entry {
    envelope: UpdateEnvelope,
    initial_percent: Option<u8>,
    rollout_percent: Option<u8>,
    target_orch_hash: Option<String>,
    /// `widen_seq`s of its widenings, in order.
    widenings: Vec<u64>,
}

/// One raise of a rollout.
struct WideningRow {
    update_seq: u64,
    from_percent: Option<u8>,
    to_percent: u8,
    ts_unix: i64,
}

/// The latest ack of an (update, orch) pair.
struct AckRow {
    status: AckStatus,
    error: Option<String>,
    ts_unix: i64,
}

#[derive(Default)]
struct State {
    /// Index `seq - 1`.
    updates: Vec<Entry>,
    by_id: HashMap<String, u64>,
    /// Index `widen_seq - 1`.
    widenings: Vec<WideningRow>,
    deliveries: HashMap<String, HashMap<String, i64>>,
    acks: HashMap<String, BTreeMap<String, AckRow>>,
    /// (orch hash, agent path) → (tier, last seen).
    subscribers: BTreeMap<(String, String), (Tier, i64)>,
}

impl State {
    fn entry(&self, seq: u64) -> &Entry {
        &self.updates[(seq - 1) as usize]
    }

    /// The entry's percentage as of widening `at_gen`.
    fn percent_at(&self, e: &Entry, at_gen: u64) -> Option<u8> {
        e.widenings
            .iter()
            .rev()
            .find(|&&w| w <= at_gen)
            .map(|&w| Some(self.widenings[(w - 1) as usize].to_percent))
            .unwrap_or(e.initial_percent)
    }

    fn stored(&self, e: &Entry, percent: Option<u8>) -> StoredUpdate {
        let mut envelope = e.envelope.clone();
        envelope.rollout_percent = percent;
        StoredUpdate {
            envelope,
            initial_percent: e.initial_percent,
            target_orch_hash: e.target_orch_hash.clone(),
        }
    }

    fn current(&self, e: &Entry) -> StoredUpdate {
        self.stored(e, e.rollout_percent)
    }

    fn range(&self, upto: u64) -> impl Iterator<Item = &Entry> {
        let upto = (upto as usize).min(self.updates.len());
        self.updates[..upto].iter()
    }
}

/// The update log in memory.
#[derive(Default)]
pub struct MemoryUpdateLog {
    state: Mutex<State>,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for MemoryUpdateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryUpdateLog").finish_non_exhaustive()
    }
}

impl MemoryUpdateLog {
    /// An empty log.
    pub fn new() -> MemoryUpdateLog {
        MemoryUpdateLog::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a bulk write unless the log is closed (then it is dropped and counted).
    fn bulk(&self, f: impl FnOnce(&mut State)) {
        if self.closed.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        f(&mut self.lock());
    }

    fn writable(&self) -> Result<MutexGuard<'_, State>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(self.lock())
    }

    fn append_now(
        &self,
        mut envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
    ) -> Result<UpdateEnvelope, Error> {
        let mut s = self.writable()?;
        if s.by_id.contains_key(&envelope.update_id) {
            return Err(Error::Backend {
                backend: "memory",
                message: format!("update id {:?} is already in the log", envelope.update_id),
            });
        }
        envelope.seq = s.updates.len() as u64 + 1;
        s.by_id.insert(envelope.update_id.clone(), envelope.seq);
        s.updates.push(Entry {
            initial_percent: envelope.rollout_percent,
            rollout_percent: envelope.rollout_percent,
            target_orch_hash,
            widenings: Vec::new(),
            envelope: envelope.clone(),
        });
        Ok(envelope)
    }

    fn widen_now(&self, update_id: &str, percent: u8, ts_unix: i64) -> Result<Widening, Error> {
        let mut s = self.writable()?;
        let Some(&seq) = s.by_id.get(update_id) else {
            return Err(Error::NotFound(update_id.to_owned()));
        };
        let current = s.entry(seq).rollout_percent;
        match current {
            Some(c) if percent > c => {}
            _ => {
                return Err(Error::NotWider {
                    current,
                    requested: percent,
                });
            }
        }
        s.widenings.push(WideningRow {
            update_seq: seq,
            from_percent: current,
            to_percent: percent,
            ts_unix,
        });
        let widen_seq = s.widenings.len() as u64;
        let e = &mut s.updates[(seq - 1) as usize];
        e.rollout_percent = Some(percent);
        e.widenings.push(widen_seq);
        let update = s.current(s.entry(seq));
        Ok(Widening {
            update,
            from_percent: current,
            widen_seq,
        })
    }

    fn find_now(&self, key: &str) -> Option<StoredUpdate> {
        let s = self.lock();
        let seq = match key.parse::<u64>() {
            Ok(seq) => Some(seq).filter(|&q| q >= 1 && q <= s.updates.len() as u64),
            Err(_) => s.by_id.get(key).copied(),
        }?;
        Some(s.current(s.entry(seq)))
    }

    fn counts_now(&self, update_id: &str) -> Counts {
        let s = self.lock();
        let mut counts = Counts {
            delivered: s.deliveries.get(update_id).map_or(0, |d| d.len() as u64),
            ..Counts::default()
        };
        for a in s.acks.get(update_id).into_iter().flat_map(|a| a.values()) {
            match a.status {
                AckStatus::Applied => counts.applied += 1,
                AckStatus::Rejected => counts.rejected += 1,
                AckStatus::Skipped => counts.skipped += 1,
            }
        }
        counts
    }

    fn errors_now(&self, update_id: &str, limit: usize) -> Vec<AckError> {
        let s = self.lock();
        let mut out: Vec<AckError> = s
            .acks
            .get(update_id)
            .into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|(orch, a)| {
                let error = a.error.as_deref().filter(|e| !e.is_empty())?;
                Some(AckError {
                    orch_hash: orch.clone(),
                    status: a.status.as_str().to_owned(),
                    error: error.to_owned(),
                    ts_unix: a.ts_unix,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (b.status == "rejected")
                .cmp(&(a.status == "rejected"))
                .then(b.ts_unix.cmp(&a.ts_unix))
        });
        out.truncate(limit);
        out
    }

    fn widenings_now(&self, update_id: &str) -> Vec<WideningRecord> {
        let s = self.lock();
        let Some(&seq) = s.by_id.get(update_id) else {
            return Vec::new();
        };
        s.entry(seq)
            .widenings
            .iter()
            .map(|&w| {
                let row = &s.widenings[(w - 1) as usize];
                WideningRecord {
                    from_percent: row.from_percent,
                    to_percent: row.to_percent,
                    ts_unix: row.ts_unix,
                }
            })
            .collect()
    }

    fn widened_unacked_now(&self, upto: u64, at_gen: u64, orch_hash: &str) -> Vec<StoredUpdate> {
        let s = self.lock();
        s.range(upto)
            .filter(|e| e.widenings.first().is_some_and(|&w| w <= at_gen))
            .filter(|e| {
                !s.acks
                    .get(&e.envelope.update_id)
                    .is_some_and(|a| a.contains_key(orch_hash))
            })
            .map(|e| s.stored(e, s.percent_at(e, at_gen)))
            .collect()
    }

    fn widened_between_now(&self, upto: u64, from_gen: u64, to_gen: u64) -> Vec<WidenedFrom> {
        let s = self.lock();
        s.range(upto)
            .filter(|e| e.widenings.iter().any(|&w| w > from_gen && w <= to_gen))
            .map(|e| {
                (
                    s.stored(e, s.percent_at(e, to_gen)),
                    s.percent_at(e, from_gen),
                )
            })
            .collect()
    }
}

/// A finished future.
fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl UpdateLog for MemoryUpdateLog {
    fn append(
        &self,
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        _rolls_back: Option<String>,
    ) -> BoxFuture<'_, Result<UpdateEnvelope, Error>> {
        ready(self.append_now(envelope, target_orch_hash))
    }

    fn widen(
        &self,
        update_id: &str,
        percent: u8,
        ts_unix: i64,
    ) -> BoxFuture<'_, Result<Widening, Error>> {
        ready(self.widen_now(update_id, percent, ts_unix))
    }

    fn record_delivery(&self, update_id: Arc<str>, orch_hash: Arc<str>, ts_unix: i64) {
        self.bulk(|s| {
            s.deliveries
                .entry(update_id.to_string())
                .or_default()
                .entry(orch_hash.to_string())
                .or_insert(ts_unix);
        });
    }

    fn record_ack(
        &self,
        update_id: String,
        orch_hash: Arc<str>,
        status: AckStatus,
        error: Option<String>,
        ts_unix: i64,
    ) {
        self.bulk(|s| {
            if !s.by_id.contains_key(&update_id) {
                return;
            }
            let acks = s.acks.entry(update_id).or_default();
            match acks.get_mut(&*orch_hash) {
                Some(old) if status == AckStatus::Skipped && old.status != AckStatus::Skipped => {}
                Some(old) => {
                    *old = AckRow {
                        status,
                        error,
                        ts_unix,
                    };
                }
                None => {
                    acks.insert(
                        orch_hash.to_string(),
                        AckRow {
                            status,
                            error,
                            ts_unix,
                        },
                    );
                }
            }
        });
    }

    fn record_subscriber(
        &self,
        orch_hash: Arc<str>,
        agent_path: Arc<str>,
        tier: Tier,
        ts_unix: i64,
    ) {
        self.bulk(|s| {
            s.subscribers.insert(
                (orch_hash.to_string(), agent_path.to_string()),
                (tier, ts_unix),
            );
        });
    }

    fn position(&self) -> BoxFuture<'_, Result<Position, Error>> {
        let s = self.lock();
        ready(Ok(Position {
            seq: s.updates.len() as u64,
            widen_seq: s.widenings.len() as u64,
        }))
    }

    fn min_widened_seq(&self) -> BoxFuture<'_, Result<Option<u64>, Error>> {
        let s = self.lock();
        ready(Ok(s.widenings.iter().map(|w| w.update_seq).min()))
    }

    fn find(&self, key: &str) -> BoxFuture<'_, Result<Option<StoredUpdate>, Error>> {
        ready(Ok(self.find_now(key)))
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        let s = self.lock();
        let out = s
            .updates
            .iter()
            .rev()
            .take(limit)
            .map(|e| s.current(e))
            .collect();
        ready(Ok(out))
    }

    fn counts(&self, update_id: &str) -> BoxFuture<'_, Result<Counts, Error>> {
        ready(Ok(self.counts_now(update_id)))
    }

    fn errors(&self, update_id: &str, limit: usize) -> BoxFuture<'_, Result<Vec<AckError>, Error>> {
        ready(Ok(self.errors_now(update_id, limit)))
    }

    fn widenings(&self, update_id: &str) -> BoxFuture<'_, Result<Vec<WideningRecord>, Error>> {
        ready(Ok(self.widenings_now(update_id)))
    }

    fn subscribers(&self) -> BoxFuture<'_, Result<Vec<KnownSubscriber>, Error>> {
        let s = self.lock();
        let out = s
            .subscribers
            .iter()
            .map(
                |((orch_hash, agent_path), (tier, last_seen))| KnownSubscriber {
                    orch_hash: orch_hash.clone(),
                    agent_path: agent_path.clone(),
                    tier: *tier,
                    last_seen: *last_seen,
                },
            )
            .collect();
        ready(Ok(out))
    }

    fn updates_between(
        &self,
        after: u64,
        upto: u64,
        at_gen: u64,
        mut keep: Keep,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        let s = self.lock();
        let out = s
            .range(upto)
            .skip(after.min(usize::MAX as u64) as usize)
            .map(|e| s.stored(e, s.percent_at(e, at_gen)))
            .filter(|u| keep(u))
            .collect();
        ready(Ok(out))
    }

    fn widened_unacked(
        &self,
        upto: u64,
        at_gen: u64,
        orch_hash: &str,
    ) -> BoxFuture<'_, Result<Vec<StoredUpdate>, Error>> {
        ready(Ok(self.widened_unacked_now(upto, at_gen, orch_hash)))
    }

    fn widened_between(
        &self,
        upto: u64,
        from_gen: u64,
        to_gen: u64,
    ) -> BoxFuture<'_, Result<Vec<WidenedFrom>, Error>> {
        ready(Ok(self.widened_between_now(upto, from_gen, to_gen)))
    }

    fn queue_depth(&self) -> usize {
        0
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        ready(())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        ready(())
    }
}
