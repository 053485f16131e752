//! The per-minute cells ([`crate::core::store::rollup`]) in PostgreSQL.
//!
//! Several writers (two commits in flight per process, several processes) would queue
//! behind each other on the same hot cell if each commit upserted it: a row lock held until
//! the commit. So a commit appends its cells to `rollup_delta` (no key, no index, no lock
//! on anything shared), and a folder task per process moves deltas into `rollup` every
//! [`FOLD_EVERY`], summing them (`FOR UPDATE SKIP LOCKED`: two folders never take the same
//! delta). Reads add the deltas not folded yet, so a committed record is counted at once.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::store::{pg, pool_err};
use crate::core::store::Error;
use crate::core::store::rollup::{Cell, CellKey, CellRange, CellRow, Histogram, Rollup};

/// How often the deltas are folded into `rollup`.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(2);

/// Most deltas one fold moves.
const FOLD_LIMIT: i64 = 50_000;

/// Appends the cells of a group, parameters `$first`…`$first+10`.
pub(super) fn insert_deltas_sql(first: usize) -> String {
    let p: Vec<String> = (first..first + 11).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO rollup_delta (minute, agent_path, kind, model, records, errors, latency, \
         latency_sum_ms, tokens_in, tokens_out, cost) \
         SELECT m, a, k, mo, r, e, l::bigint[], ls, ti, tou, c FROM unnest({}::bigint[], {}::text[], \
         {}::text[], {}::text[], {}::bigint[], {}::bigint[], {}::text[], {}::float8[], {}::bigint[], \
         {}::bigint[], {}::float8[]) AS t(m, a, k, mo, r, e, l, ls, ti, tou, c)",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]
    )
}

/// A group's cells as one array per column, the parameters of [`insert_deltas_sql`].
pub(super) struct DeltaColumns {
    minute: Vec<i64>,
    agent: Vec<String>,
    kind: Vec<String>,
    model: Vec<String>,
    records: Vec<i64>,
    errors: Vec<i64>,
    latency: Vec<String>,
    latency_sum: Vec<f64>,
    tokens_in: Vec<i64>,
    tokens_out: Vec<i64>,
    cost: Vec<f64>,
}

impl DeltaColumns {
    /// The cells of `rollup`.
    pub(super) fn of(rollup: &Rollup) -> DeltaColumns {
        let cells = &rollup.cells;
        DeltaColumns {
            minute: cells.keys().map(|k| k.minute).collect(),
            agent: cells.keys().map(|k| k.agent_path.clone()).collect(),
            kind: cells.keys().map(|k| k.kind.clone()).collect(),
            model: cells.keys().map(|k| k.model.clone()).collect(),
            records: cells.values().map(|c| c.records as i64).collect(),
            errors: cells.values().map(|c| c.errors as i64).collect(),
            latency: cells
                .values()
                .map(|c| format!("{{{}}}", c.latency.to_text()))
                .collect(),
            latency_sum: cells.values().map(|c| c.latency_sum_ms).collect(),
            tokens_in: cells.values().map(|c| c.tokens_in as i64).collect(),
            tokens_out: cells.values().map(|c| c.tokens_out as i64).collect(),
            cost: cells.values().map(|c| c.cost).collect(),
        }
    }

    /// True when there is no cell.
    pub(super) fn is_empty(&self) -> bool {
        self.minute.is_empty()
    }

    /// The eleven parameters.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.minute,
            &self.agent,
            &self.kind,
            &self.model,
            &self.records,
            &self.errors,
            &self.latency,
            &self.latency_sum,
            &self.tokens_in,
            &self.tokens_out,
            &self.cost,
        ]
    }
}

/// Key of the advisory lock a fold takes: one folder at a time across every process (two
/// folding at once would upsert the same cells in different orders and could deadlock).
const FOLD_LOCK: i64 = 0x7068_6f65_6e69_7802;

/// Moves up to [`FOLD_LIMIT`] deltas into `rollup`, summed per cell; returns how many (0
/// when another process is folding right now).
pub(super) async fn fold(pool: &Pool) -> Result<u64, Error> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg)?;
    let ours: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .map_err(pg)?
        .get(0);
    if !ours {
        return Ok(0);
    }
    let row = tx
        .query_one(
            "WITH moved AS (
                DELETE FROM rollup_delta WHERE ctid IN
                    (SELECT ctid FROM rollup_delta LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING *
            ), sums AS (
                SELECT minute, agent_path, kind, model, sum(records)::bigint AS records,
                       sum(errors)::bigint AS errors, sum(latency_sum_ms) AS latency_sum_ms,
                       sum(tokens_in)::bigint AS tokens_in, sum(tokens_out)::bigint AS tokens_out,
                       sum(cost) AS cost
                FROM moved GROUP BY 1, 2, 3, 4
            ), hist AS (
                SELECT minute, agent_path, kind, model, array_agg(n ORDER BY i) AS latency
                FROM (SELECT minute, agent_path, kind, model, i, sum(x)::bigint AS n
                      FROM moved, unnest(latency) WITH ORDINALITY AS u(x, i)
                      GROUP BY 1, 2, 3, 4, 5) per_bucket
                GROUP BY 1, 2, 3, 4
            ), merged AS (
                INSERT INTO rollup (minute, agent_path, kind, model, records, errors, latency,
                                    latency_sum_ms, tokens_in, tokens_out, cost)
                SELECT s.minute, s.agent_path, s.kind, s.model, s.records, s.errors, h.latency,
                       s.latency_sum_ms, s.tokens_in, s.tokens_out, s.cost
                FROM sums s JOIN hist h USING (minute, agent_path, kind, model)
                ON CONFLICT (minute, agent_path, kind, model) DO UPDATE SET
                    records = rollup.records + EXCLUDED.records,
                    errors = rollup.errors + EXCLUDED.errors,
                    latency = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i)
                               FROM unnest(rollup.latency, EXCLUDED.latency) WITH ORDINALITY AS z(a, b, i)),
                    latency_sum_ms = rollup.latency_sum_ms + EXCLUDED.latency_sum_ms,
                    tokens_in = rollup.tokens_in + EXCLUDED.tokens_in,
                    tokens_out = rollup.tokens_out + EXCLUDED.tokens_out,
                    cost = rollup.cost + EXCLUDED.cost
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM moved)::bigint, (SELECT count(*) FROM merged)::bigint",
            &[&FOLD_LIMIT],
        )
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Folds every [`FOLD_EVERY`] until aborted; a failure (the database away) is tried again.
pub(super) async fn fold_forever(pool: Pool) {
    // The first fold one period in: a short-lived process (an export) never folds.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FOLD_EVERY, FOLD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match fold(&pool).await {
                Ok(n) if n as i64 >= FOLD_LIMIT => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not fold the dashboard's rollup deltas; trying again");
                    break;
                }
            }
        }
    }
}

/// The cells of `range`: folded ones plus the deltas not folded yet, oldest minute first.
pub(super) async fn cells(pool: &Pool, range: CellRange) -> Result<Vec<CellRow>, Error> {
    let client = pool.get().await.map_err(pool_err)?;
    let rows = client
        .query(
            "SELECT minute, agent_path, kind, model, records, errors, latency, latency_sum_ms, \
             tokens_in, tokens_out, cost FROM rollup WHERE minute >= $1 AND minute < $2 \
             UNION ALL \
             SELECT minute, agent_path, kind, model, records, errors, latency, latency_sum_ms, \
             tokens_in, tokens_out, cost FROM rollup_delta WHERE minute >= $1 AND minute < $2",
            &[&range.since, &range.until],
        )
        .await
        .map_err(pg)?;
    let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
    for r in rows {
        let key = CellKey {
            minute: r.get(0),
            agent_path: r.get(1),
            kind: r.get(2),
            model: r.get(3),
        };
        let mut latency = Histogram::default();
        for (slot, n) in latency.0.iter_mut().zip(r.get::<_, Vec<i64>>(6)) {
            *slot = n.max(0) as u64;
        }
        let cell = Cell {
            records: r.get::<_, i64>(4) as u64,
            errors: r.get::<_, i64>(5) as u64,
            latency,
            latency_sum_ms: r.get(7),
            tokens_in: r.get::<_, i64>(8) as u64,
            tokens_out: r.get::<_, i64>(9) as u64,
            cost: r.get(10),
        };
        cells.entry(key).or_default().merge(&cell);
    }
    Ok(cells
        .into_iter()
        .map(|(key, cell)| CellRow { key, cell })
        .collect())
}
