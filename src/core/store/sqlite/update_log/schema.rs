//! The update log's schema, migrated step by step at open and recorded in `user_version`.

use rusqlite::Connection;

use crate::core::store::update_log::Error;

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the log, its widenings, and what subscribers did with each update.
    "CREATE TABLE updates (
        seq INTEGER PRIMARY KEY,
        update_id TEXT NOT NULL UNIQUE,
        ts_unix INTEGER NOT NULL,
        update_type TEXT NOT NULL,
        target_orch_hash TEXT,
        rolls_back TEXT,
        initial_percent INTEGER,
        rollout_percent INTEGER,
        envelope TEXT NOT NULL
    );
    CREATE TABLE widenings (
        widen_seq INTEGER PRIMARY KEY,
        update_id TEXT NOT NULL,
        from_percent INTEGER,
        to_percent INTEGER NOT NULL,
        ts_unix INTEGER NOT NULL
    );
    CREATE INDEX widenings_update ON widenings(update_id, widen_seq);
    CREATE TABLE deliveries (
        update_id TEXT NOT NULL,
        orch_hash TEXT NOT NULL,
        ts_unix INTEGER NOT NULL,
        PRIMARY KEY (update_id, orch_hash)
    ) WITHOUT ROWID;
    CREATE TABLE acks (
        update_id TEXT NOT NULL,
        orch_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        ts_unix INTEGER NOT NULL,
        PRIMARY KEY (update_id, orch_hash)
    ) WITHOUT ROWID;
    CREATE INDEX acks_status ON acks(update_id, status);
    CREATE TABLE subscribers (
        orch_hash TEXT NOT NULL,
        agent_path TEXT NOT NULL,
        tier TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (orch_hash, agent_path)
    ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    Ok(crate::core::store::sqlite::db::migrate(
        conn,
        MIGRATIONS,
        "update log",
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
