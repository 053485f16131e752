//! Reads of the update log: single updates, lists, counts, and the replays and catch-ups
//! that position a subscriber, each at the rollout percentage as of a given widening. Every
//! read asks the database, so what other distributor processes wrote shows at once.

use tokio_postgres::{Client, Row};

use super::{percent_from_sql, pg};
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{
    AckError, Counts, Error, Keep, KnownSubscriber, Position, StoredUpdate, WidenedFrom,
    WideningRecord,
};
use crate::core::updates::UpdateEnvelope;

/// The rollout percentage of `u` as of widening `$n` (SQL expression).
fn percent_at(n: usize) -> String {
    format!(
        "coalesce((SELECT w.to_percent FROM widenings w WHERE w.update_id = u.update_id \
         AND w.widen_seq <= ${n} ORDER BY w.widen_seq DESC LIMIT 1), u.initial_percent)"
    )
}

/// Columns every update read selects, in this order (the percentage is appended by the caller).
const UPDATE_COLUMNS: &str = "u.envelope, u.initial_percent, u.target_orch_hash";

/// A count or position as PostgreSQL's `bigint`, saturating rather than wrapping.
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn row_to_update(row: &Row) -> Result<StoredUpdate, Error> {
    let json: String = row.try_get(0).map_err(pg)?;
    let mut envelope: UpdateEnvelope =
        serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("stored envelope: {e}")))?;
    envelope.rollout_percent = percent_from_sql(row.try_get(3).map_err(pg)?);
    Ok(StoredUpdate {
        envelope,
        initial_percent: percent_from_sql(row.try_get(1).map_err(pg)?),
        target_orch_hash: row.try_get(2).map_err(pg)?,
    })
}

fn rows_to_updates(rows: &[Row]) -> Result<Vec<StoredUpdate>, Error> {
    rows.iter().map(row_to_update).collect()
}

/// The last seq and the last widening, read in one snapshot.
pub(super) async fn position(c: &Client) -> Result<Position, Error> {
    let row = c
        .query_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM updates)::bigint, \
             (SELECT coalesce(max(widen_seq), 0) FROM widenings)::bigint",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(Position {
        seq: row.get::<_, i64>(0) as u64,
        widen_seq: row.get::<_, i64>(1) as u64,
    })
}

/// The lowest seq of an update whose rollout was ever widened.
pub(super) async fn min_widened_seq(c: &Client) -> Result<Option<u64>, Error> {
    let row = c
        .query_one(
            "SELECT min(u.seq) FROM updates u \
             WHERE EXISTS (SELECT 1 FROM widenings w WHERE w.update_id = u.update_id)",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(row.get::<_, Option<i64>>(0).map(|s| s as u64))
}

/// An update by id, or by seq when `key` is all digits, at its current percentage.
pub(super) async fn find(c: &Client, key: &str) -> Result<Option<StoredUpdate>, Error> {
    let select = format!("SELECT {UPDATE_COLUMNS}, u.rollout_percent FROM updates u");
    let row = match key.parse::<u64>() {
        Ok(seq) => {
            let Ok(seq) = i64::try_from(seq) else {
                return Ok(None);
            };
            c.query_opt(&format!("{select} WHERE u.seq = $1"), &[&seq])
                .await
        }
        Err(_) => {
            c.query_opt(&format!("{select} WHERE u.update_id = $1"), &[&key])
                .await
        }
    }
    .map_err(pg)?;
    row.as_ref().map(row_to_update).transpose()
}

/// The newest `limit` updates, newest first, at their current percentage.
pub(super) async fn list(c: &Client, limit: usize) -> Result<Vec<StoredUpdate>, Error> {
    let rows = c
        .query(
            &format!(
                "SELECT {UPDATE_COLUMNS}, u.rollout_percent FROM updates u \
                 ORDER BY u.seq DESC LIMIT $1"
            ),
            &[&big(limit as u64)],
        )
        .await
        .map_err(pg)?;
    rows_to_updates(&rows)
}

/// Delivery and ack counts of several updates in one round trip, in the order given.
pub(super) async fn counts_of(c: &Client, update_ids: &[String]) -> Result<Vec<Counts>, Error> {
    if update_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "SELECT \
               (SELECT count(*) FROM deliveries d WHERE d.update_id = i.id), \
               (SELECT count(*) FROM acks a WHERE a.update_id = i.id AND a.status = 'applied'), \
               (SELECT count(*) FROM acks a WHERE a.update_id = i.id AND a.status = 'rejected'), \
               (SELECT count(*) FROM acks a WHERE a.update_id = i.id AND a.status = 'skipped') \
             FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) ORDER BY i.n",
            &[&update_ids],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| Counts {
            delivered: r.get::<_, i64>(0) as u64,
            applied: r.get::<_, i64>(1) as u64,
            rejected: r.get::<_, i64>(2) as u64,
            skipped: r.get::<_, i64>(3) as u64,
        })
        .collect())
}

/// Acks of an update that carry an error, rejections first, then newest first; at most
/// `limit`.
pub(super) async fn errors(
    c: &Client,
    update_id: &str,
    limit: usize,
) -> Result<Vec<AckError>, Error> {
    let rows = c
        .query(
            "SELECT orch_hash, status, error, ts_unix FROM acks \
             WHERE update_id = $1 AND error IS NOT NULL AND error <> '' \
             ORDER BY status = 'rejected' DESC, ts_unix DESC LIMIT $2",
            &[&update_id, &big(limit as u64)],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| AckError {
            orch_hash: r.get(0),
            status: r.get(1),
            error: r.get(2),
            ts_unix: r.get(3),
        })
        .collect())
}

/// The widenings of an update, oldest first.
pub(super) async fn widenings(c: &Client, update_id: &str) -> Result<Vec<WideningRecord>, Error> {
    let rows = c
        .query(
            "SELECT from_percent, to_percent, ts_unix FROM widenings \
             WHERE update_id = $1 ORDER BY widen_seq",
            &[&update_id],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| WideningRecord {
            from_percent: percent_from_sql(r.get(0)),
            to_percent: percent_from_sql(Some(r.get(1))).unwrap_or(100),
            ts_unix: r.get(2),
        })
        .collect())
}

/// Every subscriber ever seen in a hello, ordered by (orch hash, agent path).
pub(super) async fn subscribers(c: &Client) -> Result<Vec<KnownSubscriber>, Error> {
    // Byte order (COLLATE "C"), as SQLite sorts: the database's locale must not reorder them.
    let rows = c
        .query(
            "SELECT orch_hash, agent_path, tier, last_seen FROM subscribers \
             ORDER BY orch_hash COLLATE \"C\", agent_path COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| KnownSubscriber {
            orch_hash: r.get(0),
            agent_path: r.get(1),
            tier: Tier::parse(r.get(2)).unwrap_or_default(),
            last_seen: r.get(3),
        })
        .collect())
}

/// Updates with `after < seq <= upto`, in seq order, at their percentage as of widening
/// `at_gen`, keeping those `keep` accepts.
pub(super) async fn updates_between(
    c: &Client,
    after: u64,
    upto: u64,
    at_gen: u64,
    mut keep: Keep,
) -> Result<Vec<StoredUpdate>, Error> {
    let rows = c
        .query(
            &format!(
                "SELECT {UPDATE_COLUMNS}, {} FROM updates u \
                 WHERE u.seq > $1 AND u.seq <= $2 ORDER BY u.seq",
                percent_at(3)
            ),
            &[&big(after), &big(upto), &big(at_gen)],
        )
        .await
        .map_err(pg)?;
    let mut out = Vec::new();
    for row in &rows {
        let u = row_to_update(row)?;
        if keep(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

/// Updates with `seq <= upto` widened at or before widening `at_gen` that `orch_hash` has
/// not acked, in seq order, at their percentage as of `at_gen`.
pub(super) async fn widened_unacked(
    c: &Client,
    upto: u64,
    at_gen: u64,
    orch_hash: &str,
) -> Result<Vec<StoredUpdate>, Error> {
    let rows = c
        .query(
            &format!(
                "SELECT {UPDATE_COLUMNS}, {} FROM updates u \
                 WHERE u.seq <= $1 \
                   AND EXISTS (SELECT 1 FROM widenings w \
                               WHERE w.update_id = u.update_id AND w.widen_seq <= $2) \
                   AND NOT EXISTS (SELECT 1 FROM acks a \
                                   WHERE a.update_id = u.update_id AND a.orch_hash = $3) \
                 ORDER BY u.seq",
                percent_at(2)
            ),
            &[&big(upto), &big(at_gen), &orch_hash],
        )
        .await
        .map_err(pg)?;
    rows_to_updates(&rows)
}

/// Updates with `seq <= upto` widened by a widening in `(from_gen, to_gen]`, in seq order:
/// each at its percentage as of `to_gen`, with its percentage as of `from_gen`.
pub(super) async fn widened_between(
    c: &Client,
    upto: u64,
    from_gen: u64,
    to_gen: u64,
) -> Result<Vec<WidenedFrom>, Error> {
    let rows = c
        .query(
            &format!(
                "SELECT {UPDATE_COLUMNS}, {}, {} FROM updates u \
                 WHERE u.seq <= $1 \
                   AND EXISTS (SELECT 1 FROM widenings w WHERE w.update_id = u.update_id \
                               AND w.widen_seq > $2 AND w.widen_seq <= $3) \
                 ORDER BY u.seq",
                percent_at(3),
                percent_at(2)
            ),
            &[&big(upto), &big(from_gen), &big(to_gen)],
        )
        .await
        .map_err(pg)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let before = percent_from_sql(row.try_get(4).map_err(pg)?);
        out.push((row_to_update(row)?, before));
    }
    Ok(out)
}
