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
    // 2: cheaper writes. Every secondary index costs each insert a B-tree update, and every
    // commit rewrites the index pages it touched; `(orch_hash, kind, ts_unix)` kept about
    // kinds × ORCHs insertion points hot. Orch lookups need only `(orch_hash, ts_unix)`;
    // the level index keeps only the levels people filter for (a partial index that the
    // query builder names literally); last heartbeats move to a table the writer keeps
    // current, one row per ORCH, so "last heartbeat of each ORCH" is a primary-key lookup.
    "DROP INDEX telemetry_level;
    CREATE INDEX telemetry_level ON telemetry(level, ts_unix) WHERE level IN ('warn', 'error', 'critical', 'fatal');
    DROP INDEX telemetry_orch;
    CREATE INDEX telemetry_orch ON telemetry(orch_hash, ts_unix);
    CREATE TABLE orch_heartbeats (
        orch_hash TEXT PRIMARY KEY,
        last_ts INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO orch_heartbeats (orch_hash, last_ts)
        SELECT orch_hash, MAX(ts_unix) FROM telemetry
        WHERE kind = 'orch_heartbeat' AND orch_hash IS NOT NULL GROUP BY orch_hash;",
];

/// The partial index condition of `telemetry_level`: a query filtering on one of these
/// levels repeats it word for word so SQLite can prove the index covers it.
pub const INDEXED_LEVELS_CONDITION: &str = "level IN ('warn', 'error', 'critical', 'fatal')";
/// Levels in [`INDEXED_LEVELS_CONDITION`].
pub const INDEXED_LEVELS: &[&str] = &["warn", "error", "critical", "fatal"];

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

    #[test]
    fn version_2_moves_heartbeats_and_keeps_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO telemetry (id, ts_unix, received_unix, kind, orch_hash, payload) VALUES
                ('a', 10, 10, 'orch_heartbeat', 'orch_a', '{}'),
                ('b', 30, 30, 'orch_heartbeat', 'orch_a', '{}'),
                ('c', 20, 20, 'orch_heartbeat', 'orch_b', '{}'),
                ('d', 99, 99, 'skill', 'orch_b', '{}'),
                ('e', 50, 50, 'orch_heartbeat', NULL, '{}');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT orch_hash, last_ts FROM orch_heartbeats ORDER BY orch_hash")
            .unwrap();
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [("orch_a".to_owned(), 30), ("orch_b".to_owned(), 20)]);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM telemetry", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn the_level_index_condition_is_the_one_queries_repeat() {
        assert!(MIGRATIONS[1].contains(&format!("WHERE {INDEXED_LEVELS_CONDITION};")));
        for level in INDEXED_LEVELS {
            assert!(INDEXED_LEVELS_CONDITION.contains(&format!("'{level}'")));
        }
    }
}
