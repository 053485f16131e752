//! The per-minute cells and the ORCHs seen ([`crate::core::store::rollup`]) in SQLite:
//! merged by the writer inside a group's transaction, read by the dashboard.

use rusqlite::{Connection, OptionalExtension, params};

use crate::core::store::Error;
use crate::core::store::rollup::{
    Cell, CellKey, CellRange, CellRow, Histogram, OrchHealth, OrchSeen, Rollup,
};

/// Adds `rollup` to the stored cells and ORCHs. The writer is the only one writing, so a
/// read-then-replace per cell is exact (a handful of cells per group).
pub(crate) fn merge(conn: &Connection, rollup: &Rollup) -> Result<(), rusqlite::Error> {
    let mut get = conn.prepare_cached(
        "SELECT records, errors, latency, latency_sum_ms, tokens_in, tokens_out, cost \
         FROM rollup WHERE minute = ?1 AND agent_path = ?2 AND kind = ?3 AND model = ?4",
    )?;
    let mut put = conn.prepare_cached(
        "INSERT OR REPLACE INTO rollup (minute, agent_path, kind, model, records, errors, \
         latency, latency_sum_ms, tokens_in, tokens_out, cost) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (key, delta) in &rollup.cells {
        let stored = get
            .query_row(
                params![key.minute, key.agent_path, key.kind, key.model],
                |row| cell_at(row, 0),
            )
            .optional()?;
        let mut cell = stored.unwrap_or_default();
        cell.merge(delta);
        put.execute(params![
            key.minute,
            key.agent_path,
            key.kind,
            key.model,
            cell.records as i64,
            cell.errors as i64,
            cell.latency.to_text(),
            cell.latency_sum_ms,
            cell.tokens_in as i64,
            cell.tokens_out as i64,
            cell.cost,
        ])?;
    }
    let mut orch = conn.prepare_cached(
        "INSERT INTO orch_seen (orch_hash, agent_path, last_heartbeat_ts) VALUES (?1, ?2, ?3) \
         ON CONFLICT (orch_hash) DO UPDATE SET \
         agent_path = CASE WHEN excluded.last_heartbeat_ts >= last_heartbeat_ts \
                           THEN COALESCE(excluded.agent_path, agent_path) \
                           ELSE COALESCE(agent_path, excluded.agent_path) END, \
         last_heartbeat_ts = MAX(last_heartbeat_ts, excluded.last_heartbeat_ts)",
    )?;
    for seen in rollup.orchs.values() {
        orch.execute(params![
            seen.orch_hash,
            seen.agent_path,
            seen.last_heartbeat_ts
        ])?;
    }
    Ok(())
}

/// The cell whose seven columns start at column `at`.
fn cell_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Cell> {
    let text: String = row.get(at + 2)?;
    Ok(Cell {
        records: row.get::<_, i64>(at)? as u64,
        errors: row.get::<_, i64>(at + 1)? as u64,
        latency: Histogram::from_text(&text),
        latency_sum_ms: row.get(at + 3)?,
        tokens_in: row.get::<_, i64>(at + 4)? as u64,
        tokens_out: row.get::<_, i64>(at + 5)? as u64,
        cost: row.get(at + 6)?,
    })
}

/// The cells of `range`, oldest minute first.
pub(crate) fn cells(conn: &Connection, range: CellRange) -> Result<Vec<CellRow>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT minute, agent_path, kind, model, records, errors, latency, latency_sum_ms, \
         tokens_in, tokens_out, cost FROM rollup WHERE minute >= ?1 AND minute < ?2 ORDER BY minute",
    )?;
    let rows = stmt.query_map(params![range.since, range.until], |row| {
        let key = CellKey {
            minute: row.get(0)?,
            agent_path: row.get(1)?,
            kind: row.get(2)?,
            model: row.get(3)?,
        };
        let cell = cell_at(row, 4)?;
        Ok(CellRow { key, cell })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// At most `limit` ORCHs, newest heartbeat first.
pub(crate) fn orchs(conn: &Connection, limit: usize) -> Result<Vec<OrchSeen>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT orch_hash, agent_path, last_heartbeat_ts FROM orch_seen \
         ORDER BY last_heartbeat_ts DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |row| {
        Ok(OrchSeen {
            orch_hash: row.get(0)?,
            agent_path: row.get(1)?,
            last_heartbeat_ts: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// ORCHs per agent path, and how many are healthy.
pub(crate) fn orch_health(conn: &Connection, healthy_since: i64) -> Result<Vec<OrchHealth>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(agent_path, ''), COUNT(*), COUNT(CASE WHEN last_heartbeat_ts >= ?1 THEN 1 END) \
         FROM orch_seen GROUP BY 1 ORDER BY 1",
    )?;
    let rows = stmt.query_map([healthy_since], |row| {
        Ok(OrchHealth {
            agent_path: row.get(0)?,
            seen: row.get::<_, i64>(1)? as u64,
            healthy: row.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
