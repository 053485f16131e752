//! Versioned schema migrations, applied in order at open and recorded in `user_version`.

use rusqlite::Connection;

use super::Error;

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: telemetry and insights.
    "CREATE TABLE telemetry (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        ts_unix INTEGER NOT NULL,
        received_unix INTEGER NOT NULL,
        kind TEXT NOT NULL,
        level TEXT,
        orch_hash TEXT,
        agent_path TEXT,
        tags TEXT,
        payload TEXT NOT NULL
    );
    CREATE INDEX telemetry_ts ON telemetry(ts_unix);
    CREATE INDEX telemetry_kind ON telemetry(kind, ts_unix);
    CREATE INDEX telemetry_level ON telemetry(level, ts_unix);
    CREATE INDEX telemetry_agent ON telemetry(agent_path, ts_unix);
    CREATE INDEX telemetry_orch ON telemetry(orch_hash, kind, ts_unix);
    CREATE TABLE insights (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        ts_unix INTEGER NOT NULL,
        tier TEXT NOT NULL,
        focus TEXT NOT NULL,
        source TEXT NOT NULL,
        body TEXT NOT NULL
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
