//! The storage ceiling `phoenix bench ingest` compares ingest with: the rows the collector
//! would store, inserted in one transaction with the telemetry store's own connection set-up
//! and statement, and nothing else (no HTTP, no queue, no group commit).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;

use super::migrations::migrate;
use super::store::{insert_statement, open_connection};
use crate::core::shared::config::SyncMode;
use crate::core::store::Error;
use crate::core::telemetry::NewRecord;

/// Inserts `rows` into a fresh database at `path` opened as the store opens its writer
/// (default durability, checkpoints left to no one), then deletes the files. Only the
/// inserts and the commit are timed.
pub fn raw_insert(path: &Path, rows: &[NewRecord]) -> Result<Duration, Error> {
    let mut conn = open_connection(path, SyncMode::Normal, false)?;
    migrate(&mut conn)?;
    // The writer leaves checkpoints to a background thread (`checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(insert_statement())?;
        for r in rows {
            stmt.execute(params![
                r.id,
                r.ts_unix,
                r.received_unix,
                r.kind,
                r.level,
                r.orch_hash,
                r.agent_path,
                r.tags_json,
                r.payload_json
            ])?;
        }
    }
    tx.commit()?;
    let elapsed = started.elapsed();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    Ok(elapsed)
}
