//! Reads of the update log: single updates, lists, counts, and the replays and catch-ups
//! that position a subscriber, each at the rollout percentage as of a given widening.

use rusqlite::params;

use super::{Shared, percent_from_sql};
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{
    AckError, Counts, Error, Keep, KnownSubscriber, Position, StoredUpdate, WideningRecord,
};
use crate::core::updates::UpdateEnvelope;

/// The rollout percentage of `u` as of widening `?{n}` (SQL expression).
fn percent_at(n: usize) -> String {
    format!(
        "COALESCE((SELECT w.to_percent FROM widenings w WHERE w.update_id = u.update_id AND w.widen_seq <= ?{n} \
         ORDER BY w.widen_seq DESC LIMIT 1), u.initial_percent)"
    )
}

/// Columns every update read selects, in this order (the percentage is appended by the caller).
const UPDATE_COLUMNS: &str = "u.envelope, u.initial_percent, u.target_orch_hash";

fn row_to_update(row: &rusqlite::Row<'_>) -> Result<StoredUpdate, Error> {
    let json: String = row.get(0)?;
    let mut envelope: UpdateEnvelope =
        serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("stored envelope: {e}")))?;
    envelope.rollout_percent = percent_from_sql(row.get(3)?);
    Ok(StoredUpdate {
        envelope,
        initial_percent: percent_from_sql(row.get(1)?),
        target_orch_hash: row.get(2)?,
    })
}

impl Shared {
    /// The last seq and the last widening.
    pub(super) fn position(&self) -> Result<Position, Error> {
        self.with_reader(|c| {
            let (seq, widen_seq): (i64, i64) = c.query_row(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM updates), (SELECT COALESCE(MAX(widen_seq), 0) FROM widenings)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Position {
                seq: seq as u64,
                widen_seq: widen_seq as u64,
            })
        })
    }

    /// The lowest seq of an update whose rollout was ever widened.
    pub(super) fn min_widened_seq(&self) -> Result<Option<u64>, Error> {
        self.with_reader(|c| {
            let v: Option<i64> = c.query_row(
                "SELECT MIN(u.seq) FROM updates u WHERE EXISTS (SELECT 1 FROM widenings w WHERE w.update_id = u.update_id)",
                [],
                |r| r.get(0),
            )?;
            Ok(v.map(|s| s as u64))
        })
    }

    /// An update by id, or by seq when `key` is all digits, at its current percentage.
    pub(super) fn find(&self, key: &str) -> Result<Option<StoredUpdate>, Error> {
        let by_seq = key.parse::<u64>().ok();
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {UPDATE_COLUMNS}, u.rollout_percent FROM updates u WHERE {}",
                if by_seq.is_some() {
                    "u.seq = ?1"
                } else {
                    "u.update_id = ?1"
                }
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = match by_seq {
                Some(seq) => stmt.query([seq as i64])?,
                None => stmt.query([key])?,
            };
            match rows.next()? {
                Some(row) => Ok(Some(row_to_update(row)?)),
                None => Ok(None),
            }
        })
    }

    /// The newest `limit` updates, newest first, at their current percentage.
    pub(super) fn list(&self, limit: usize) -> Result<Vec<StoredUpdate>, Error> {
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {UPDATE_COLUMNS}, u.rollout_percent FROM updates u ORDER BY u.seq DESC LIMIT ?1"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query([limit as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(row_to_update(row)?);
            }
            Ok(out)
        })
    }

    /// Delivery and ack counts of an update.
    pub(super) fn counts(&self, update_id: &str) -> Result<Counts, Error> {
        self.with_reader(|c| {
            let delivered: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE update_id = ?1")?
                .query_row([update_id], |r| r.get(0))?;
            let mut counts = Counts {
                delivered: delivered as u64,
                ..Counts::default()
            };
            let mut stmt = c.prepare_cached(
                "SELECT status, COUNT(*) FROM acks WHERE update_id = ?1 GROUP BY status",
            )?;
            let mut rows = stmt.query([update_id])?;
            while let Some(row) = rows.next()? {
                let status: String = row.get(0)?;
                let n = row.get::<_, i64>(1)? as u64;
                match status.as_str() {
                    "applied" => counts.applied = n,
                    "rejected" => counts.rejected = n,
                    "skipped" => counts.skipped = n,
                    _ => {}
                }
            }
            Ok(counts)
        })
    }

    /// Acks of an update that carry an error, rejections first, at most `limit`.
    pub(super) fn errors(&self, update_id: &str, limit: usize) -> Result<Vec<AckError>, Error> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT orch_hash, status, error, ts_unix FROM acks
                 WHERE update_id = ?1 AND error IS NOT NULL AND error <> ''
                 ORDER BY status = 'rejected' DESC, ts_unix DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![update_id, limit as i64], |r| {
                Ok(AckError {
                    orch_hash: r.get(0)?,
                    status: r.get(1)?,
                    error: r.get(2)?,
                    ts_unix: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The widenings of an update, oldest first.
    pub(super) fn widenings(&self, update_id: &str) -> Result<Vec<WideningRecord>, Error> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT from_percent, to_percent, ts_unix FROM widenings WHERE update_id = ?1 ORDER BY widen_seq",
            )?;
            let rows = stmt.query_map([update_id], |r| {
                Ok(WideningRecord {
                    from_percent: percent_from_sql(r.get(0)?),
                    to_percent: percent_from_sql(Some(r.get(1)?)).unwrap_or(100),
                    ts_unix: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every subscriber ever seen in a hello.
    pub(super) fn subscribers(&self) -> Result<Vec<KnownSubscriber>, Error> {
        self.with_reader(|c| {
            let mut stmt =
                c.prepare_cached("SELECT orch_hash, agent_path, tier, last_seen FROM subscribers ORDER BY orch_hash, agent_path")?;
            let rows = stmt.query_map([], |r| {
                let tier: String = r.get(2)?;
                Ok(KnownSubscriber {
                    orch_hash: r.get(0)?,
                    agent_path: r.get(1)?,
                    tier: Tier::parse(&tier).unwrap_or_default(),
                    last_seen: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Updates with `after < seq <= upto`, in seq order, at their percentage as of widening
    /// `at_gen`, keeping those `keep` accepts.
    pub(super) fn updates_between(
        &self,
        after: u64,
        upto: u64,
        at_gen: u64,
        mut keep: Keep,
    ) -> Result<Vec<StoredUpdate>, Error> {
        if upto <= after {
            return Ok(Vec::new());
        }
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {UPDATE_COLUMNS}, {} FROM updates u WHERE u.seq > ?1 AND u.seq <= ?2 ORDER BY u.seq",
                percent_at(3)
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![after as i64, upto as i64, at_gen as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let u = row_to_update(row)?;
                if keep(&u) {
                    out.push(u);
                }
            }
            Ok(out)
        })
    }

    /// Updates with `seq <= upto` widened at or before widening `at_gen` that `orch_hash` has
    /// not acked, in seq order, at their percentage as of `at_gen`: what a reconnecting orch
    /// may have missed while it was away during a widening.
    pub(super) fn widened_unacked(
        &self,
        upto: u64,
        at_gen: u64,
        orch_hash: &str,
    ) -> Result<Vec<StoredUpdate>, Error> {
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {UPDATE_COLUMNS}, {} FROM updates u
                 WHERE u.seq <= ?1
                   AND EXISTS (SELECT 1 FROM widenings w WHERE w.update_id = u.update_id AND w.widen_seq <= ?2)
                   AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.update_id = u.update_id AND a.orch_hash = ?3)
                 ORDER BY u.seq",
                percent_at(2)
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![upto as i64, at_gen as i64, orch_hash])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(row_to_update(row)?);
            }
            Ok(out)
        })
    }

    /// Updates with `seq <= upto` widened by a widening in `(from_gen, to_gen]`, in seq
    /// order: each at its percentage as of `to_gen`, with its percentage as of `from_gen`.
    pub(super) fn widened_between(
        &self,
        upto: u64,
        from_gen: u64,
        to_gen: u64,
    ) -> Result<Vec<(StoredUpdate, Option<u8>)>, Error> {
        if to_gen <= from_gen {
            return Ok(Vec::new());
        }
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {UPDATE_COLUMNS}, {}, {} FROM updates u
                 WHERE u.seq <= ?1
                   AND EXISTS (SELECT 1 FROM widenings w WHERE w.update_id = u.update_id AND w.widen_seq > ?2 AND w.widen_seq <= ?3)
                 ORDER BY u.seq",
                percent_at(3),
                percent_at(2)
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![upto as i64, from_gen as i64, to_gen as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let before = percent_from_sql(row.get(4)?);
                out.push((row_to_update(row)?, before));
            }
            Ok(out)
        })
    }
}
