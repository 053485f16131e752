//! The per-minute cells ([`crate::core::store::rollup`]) in PostgreSQL.
//!
//! Several writers (two commits in flight per process, several processes) would queue
//! behind each other on the same hot cell if each commit upserted it: a row lock held until
//! the commit. So a commit appends its group's cells, encoded as one value
//! ([`codec`](crate::core::store::rollup::codec)), as one `rollup_pending` row (no key, no
//! index, no lock on anything shared), and a folder task per process moves pending rows
//! into `rollup` every [`FOLD_EVERY`]: it takes them (`FOR UPDATE SKIP LOCKED`), sums them
//! here, and upserts one row per cell. Reads add the rows not folded yet, in the same
//! statement (one snapshot), so a committed record is counted at once and exactly once.
//!
//! Before, each commit appended a wide `rollup_delta` row per cell and the fold summed
//! them in SQL (unnesting and sorting every latency bucket): under single-event ingest
//! that fold was half of PostgreSQL's CPU. Rows an older process still writes there are
//! folded and read as before.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::store::{pg, pool_err};
use crate::core::store::Error;
use crate::core::store::rollup::{
    Cell, CellKey, CellRange, CellRow, Histogram, LATENCY_BUCKETS, Rollup, codec,
};

/// How often the pending cells are folded into `rollup`.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(2);

/// Most pending rows (and, separately, legacy deltas) one fold moves.
const FOLD_LIMIT: i64 = 20_000;

/// A group's cells as one `rollup_pending` row.
pub(super) struct Pending {
    minute_lo: i64,
    minute_hi: i64,
    cells: Vec<u8>,
}

impl Pending {
    /// The row for `rollup`'s cells; `None` when it has none.
    pub(super) fn of(rollup: &Rollup) -> Option<Pending> {
        let lo = rollup.cells.keys().map(|k| k.minute).min()?;
        let hi = rollup.cells.keys().map(|k| k.minute).max()?;
        Some(Pending {
            minute_lo: lo,
            minute_hi: hi,
            cells: codec::encode(&rollup.cells),
        })
    }

    /// The parameters of [`insert_pending_sql`].
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.minute_lo, &self.minute_hi, &self.cells]
    }
}

/// Appends one pending row, parameters `$first`…`$first+2`.
pub(super) fn insert_pending_sql(first: usize) -> String {
    let (a, b, c) = (first, first + 1, first + 2);
    format!(
        "INSERT INTO rollup_pending (minute_lo, minute_hi, cells) \
         VALUES (${a}::bigint, ${b}::bigint, ${c}::bytea)"
    )
}

/// Key of the advisory lock a fold takes: one folder at a time across every process (two
/// folding at once would upsert the same cells in different orders and could deadlock).
const FOLD_LOCK: i64 = 0x7068_6f65_6e69_7802;

/// The columns of a `rollup` (or legacy `rollup_delta`) row, in [`cell_of`]'s order.
const CELL_COLUMNS: &str = "minute, agent_path, kind, model, records, errors, latency, \
    latency_sum_ms, tokens_in, tokens_out, cost";

/// A `rollup`-shaped row as a cell.
fn cell_of(r: &Row) -> (CellKey, Cell) {
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
    (key, cell)
}

/// Adds encoded cells to `into` (those in `range` only, when given). An unreadable value
/// (which only a bug could write) is logged and skipped: the rows it counted are stored.
fn add_encoded(into: &mut BTreeMap<CellKey, Cell>, bytes: &[u8], range: Option<&CellRange>) {
    match codec::decode(bytes) {
        Ok(cells) => {
            for (key, cell) in cells {
                if range.is_none_or(|r| r.contains(key.minute)) {
                    into.entry(key).or_default().merge(&cell);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "skipping unreadable pending rollup cells"),
    }
}

/// Moves up to [`FOLD_LIMIT`] pending rows into `rollup`, summed per cell; returns how many
/// (0 when another process is folding right now).
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
    let pending = tx
        .query(
            "DELETE FROM rollup_pending WHERE ctid IN \
             (SELECT ctid FROM rollup_pending LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING cells",
            &[&FOLD_LIMIT],
        )
        .await
        .map_err(pg)?;
    let legacy = tx
        .query(
            &format!(
                "DELETE FROM rollup_delta WHERE ctid IN \
                 (SELECT ctid FROM rollup_delta LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING {CELL_COLUMNS}"
            ),
            &[&FOLD_LIMIT],
        )
        .await
        .map_err(pg)?;
    let moved = pending.len().max(legacy.len()) as u64;
    if pending.is_empty() && legacy.is_empty() {
        return Ok(0);
    }
    let mut sums: BTreeMap<CellKey, Cell> = BTreeMap::new();
    for row in &pending {
        add_encoded(&mut sums, row.get(0), None);
    }
    for row in &legacy {
        let (key, cell) = cell_of(row);
        sums.entry(key).or_default().merge(&cell);
    }
    let merged = Merged::of(&sums);
    tx.execute(UPSERT_CELLS, &merged.params())
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(moved)
}

/// Adds summed cells to `rollup` (`$7` holds every cell's latency buckets one after the
/// other, [`LATENCY_BUCKETS`] each).
const UPSERT_CELLS: &str = "INSERT INTO rollup (minute, agent_path, kind, model, records, \
    errors, latency, latency_sum_ms, tokens_in, tokens_out, cost) \
    SELECT m, a, k, mo, r, e, ($7::bigint[])[(o::int - 1) * $12::int + 1 : o::int * $12::int], ls, ti, tou, c \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
                $8::float8[], $9::bigint[], $10::bigint[], $11::float8[]) \
         WITH ORDINALITY AS t(m, a, k, mo, r, e, ls, ti, tou, c, o) \
    ON CONFLICT (minute, agent_path, kind, model) DO UPDATE SET \
        records = rollup.records + EXCLUDED.records, \
        errors = rollup.errors + EXCLUDED.errors, \
        latency = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) \
                   FROM unnest(rollup.latency, EXCLUDED.latency) WITH ORDINALITY AS z(x, y, i)), \
        latency_sum_ms = rollup.latency_sum_ms + EXCLUDED.latency_sum_ms, \
        tokens_in = rollup.tokens_in + EXCLUDED.tokens_in, \
        tokens_out = rollup.tokens_out + EXCLUDED.tokens_out, \
        cost = rollup.cost + EXCLUDED.cost";

/// Summed cells as one array per column, the parameters of [`UPSERT_CELLS`].
struct Merged {
    minute: Vec<i64>,
    agent: Vec<String>,
    kind: Vec<String>,
    model: Vec<String>,
    records: Vec<i64>,
    errors: Vec<i64>,
    latency: Vec<i64>,
    latency_sum: Vec<f64>,
    tokens_in: Vec<i64>,
    tokens_out: Vec<i64>,
    cost: Vec<f64>,
    buckets: i32,
}

impl Merged {
    fn of(cells: &BTreeMap<CellKey, Cell>) -> Merged {
        // Counts are stored as bigint; beyond it (never in practice) they saturate.
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Merged {
            minute: cells.keys().map(|k| k.minute).collect(),
            agent: cells.keys().map(|k| k.agent_path.clone()).collect(),
            kind: cells.keys().map(|k| k.kind.clone()).collect(),
            model: cells.keys().map(|k| k.model.clone()).collect(),
            records: cells.values().map(|c| int(c.records)).collect(),
            errors: cells.values().map(|c| int(c.errors)).collect(),
            latency: cells
                .values()
                .flat_map(|c| {
                    (0..LATENCY_BUCKETS).map(|i| int(c.latency.0.get(i).copied().unwrap_or(0)))
                })
                .collect(),
            latency_sum: cells.values().map(|c| c.latency_sum_ms).collect(),
            tokens_in: cells.values().map(|c| int(c.tokens_in)).collect(),
            tokens_out: cells.values().map(|c| int(c.tokens_out)).collect(),
            cost: cells.values().map(|c| c.cost).collect(),
            buckets: LATENCY_BUCKETS as i32,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
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
            &self.buckets,
        ]
    }
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

/// The cells of `range`: folded ones plus the pending ones (and legacy deltas) not folded
/// yet, read in one statement (one snapshot: a fold between two reads cannot hide or double
/// a cell), oldest minute first.
pub(super) async fn cells(pool: &Pool, range: CellRange) -> Result<Vec<CellRow>, Error> {
    let client = pool.get().await.map_err(pool_err)?;
    let rows = client
        .query(
            &format!(
                "SELECT {CELL_COLUMNS}, NULL::bytea FROM rollup WHERE minute >= $1 AND minute < $2 \
                 UNION ALL \
                 SELECT {CELL_COLUMNS}, NULL FROM rollup_delta WHERE minute >= $1 AND minute < $2 \
                 UNION ALL \
                 SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, cells \
                 FROM rollup_pending WHERE minute_hi >= $1 AND minute_lo < $2"
            ),
            &[&range.since, &range.until],
        )
        .await
        .map_err(pg)?;
    let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
    for r in &rows {
        match r.get::<_, Option<&[u8]>>(11) {
            Some(bytes) => add_encoded(&mut cells, bytes, Some(&range)),
            None => {
                let (key, cell) = cell_of(r);
                cells.entry(key).or_default().merge(&cell);
            }
        }
    }
    Ok(cells
        .into_iter()
        .map(|(key, cell)| CellRow { key, cell })
        .collect())
}
