//! Versioned schema migrations, applied in order at open and recorded in `user_version`.

use rusqlite::Connection;

use crate::core::store::Error;

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
    // commit rewrites the index pages it touched. `(orch_hash, kind, ts_unix)` kept one
    // insertion point per ORCH and kind hot: with 50 ORCHs it alone cut batch ingest by
    // about 40% (`phoenix bench ingest`). It becomes the `orchs` table, one row per ORCH
    // that the writer keeps current: the range of `seq` the ORCH's records lie in (queries
    // filtered by ORCH scan only that range) and its last heartbeat (a key lookup). The
    // level index keeps only the levels people filter for, as a partial index that the
    // query builder names literally.
    "DROP INDEX telemetry_level;
    CREATE INDEX telemetry_level ON telemetry(level, ts_unix) WHERE level IN ('warn', 'error', 'critical', 'fatal');
    DROP INDEX telemetry_orch;
    CREATE TABLE orchs (
        orch_hash TEXT PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        last_heartbeat_ts INTEGER
    ) WITHOUT ROWID;
    INSERT INTO orchs (orch_hash, first_seq, last_seq, last_heartbeat_ts)
        SELECT orch_hash, MIN(seq), MAX(seq), MAX(CASE WHEN kind = 'orch_heartbeat' THEN ts_unix END)
        FROM telemetry WHERE orch_hash IS NOT NULL GROUP BY orch_hash;",
    // 3: the recent tail (store/tail.rs). Small group commits insert here, where a commit
    // dirties one leaf instead of a hot leaf in every index; the writer moves the rows into
    // `telemetry` in bulk. Same columns; `seq` is handed out by the writer.
    "CREATE TABLE telemetry_recent (
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
    );",
    // 4: de-identified conversations for fine-tuning datasets. `conversation_id` is the
    // edge's id and UNIQUE, so a resend after a lost acknowledgement stores nothing twice.
    // `prompt_key` groups conversations that share a prompt (preference pairs); the index
    // is partial because conversations without a final assistant turn never pair. `messages`
    // comes last so scans that skip it do not read its overflow pages.
    "CREATE TABLE conversations (
        seq INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL UNIQUE,
        ts_unix INTEGER NOT NULL,
        received_unix INTEGER NOT NULL,
        orch_hash TEXT,
        agent_path TEXT,
        feedback TEXT,
        score REAL,
        prompt_key TEXT,
        messages TEXT NOT NULL
    );
    CREATE INDEX conversations_ts ON conversations(ts_unix);
    CREATE INDEX conversations_prompt ON conversations(prompt_key, seq) WHERE prompt_key IS NOT NULL;",
    // 5: filtered reads that stop after `limit` rows. `GET /telemetry` is newest first by
    // `seq` (the rowid); an index on `(kind, ts_unix)` holds a kind's rows in time order, so
    // a kind filter read and sorted every row of the kind (1 s for 100 rows of a 3M-row
    // store). An index on `(kind)` is `(kind, rowid)` to SQLite: a backward walk of it
    // yields the kind's rows newest first and stops after `limit`. The same for agent
    // paths and levels. An agent prefix matches several paths, each a walk of its own (the
    // paths come from `agent_paths`), merged by seq. (Partial agent+level and kind+level
    // indexes, as PostgreSQL has, cost a third of batch ingest here: `phoenix bench ingest`.)
    "DROP INDEX telemetry_kind;
    CREATE INDEX telemetry_kind ON telemetry(kind);
    DROP INDEX telemetry_agent;
    CREATE INDEX telemetry_agent ON telemetry(agent_path);
    DROP INDEX telemetry_level;
    CREATE INDEX telemetry_level ON telemetry(level) WHERE level IN ('warn', 'error', 'critical', 'fatal');
    CREATE TABLE agent_paths (agent_path TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT OR IGNORE INTO agent_paths SELECT DISTINCT agent_path FROM telemetry WHERE agent_path IS NOT NULL;
    INSERT OR IGNORE INTO agent_paths SELECT DISTINCT agent_path FROM telemetry_recent WHERE agent_path IS NOT NULL;",
    // 6: what the dashboard reads instead of rows (store/rollup.rs): per-minute cells by
    // agent path, kind and model, and per ORCH its latest agent path, record and heartbeat.
    // The writer merges a group's cells in the group's transaction. Stored rows are counted
    // here once; their latency histogram stays empty (it needs the writer's bucketing).
    "CREATE TABLE rollup (
        minute INTEGER NOT NULL,
        agent_path TEXT NOT NULL,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        records INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        latency TEXT NOT NULL,
        latency_sum_ms REAL NOT NULL,
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        cost REAL NOT NULL,
        PRIMARY KEY (minute, agent_path, kind, model)
    ) WITHOUT ROWID;
    CREATE TABLE orch_seen (
        orch_hash TEXT PRIMARY KEY,
        agent_path TEXT,
        last_heartbeat_ts INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO rollup
        SELECT (ts_unix / 60) * 60 - (CASE WHEN ts_unix < 0 AND ts_unix % 60 != 0 THEN 60 ELSE 0 END),
               COALESCE(agent_path, ''), kind,
               CASE WHEN json_valid(payload) AND json_type(payload, '$.model') = 'text'
                    THEN substr(json_extract(payload, '$.model'), 1, 200) ELSE '' END AS model,
               COUNT(*), COUNT(CASE WHEN level IN ('error', 'critical', 'fatal') THEN 1 END), '', 0, 0, 0, 0
        FROM (SELECT ts_unix, agent_path, kind, level, payload FROM telemetry
              UNION ALL SELECT ts_unix, agent_path, kind, level, payload FROM telemetry_recent)
        GROUP BY 1, 2, 3, 4;
    -- The bare agent_path is the one of the row with MAX(ts_unix) (SQLite's documented rule).
    INSERT INTO orch_seen
        SELECT orch_hash, agent_path, MAX(ts_unix)
        FROM (SELECT orch_hash, agent_path, ts_unix FROM telemetry WHERE orch_hash IS NOT NULL AND kind = 'orch_heartbeat'
              UNION ALL SELECT orch_hash, agent_path, ts_unix FROM telemetry_recent WHERE orch_hash IS NOT NULL AND kind = 'orch_heartbeat')
        GROUP BY orch_hash;",
];

/// The first schema version that has the `conversations` table.
pub const CONVERSATIONS_SINCE: i64 = 4;

/// The partial index condition of `telemetry_level`: a query filtering on one of these
/// levels repeats it word for word so SQLite can prove the index covers it.
pub const INDEXED_LEVELS_CONDITION: &str = "level IN ('warn', 'error', 'critical', 'fatal')";
/// Levels in [`INDEXED_LEVELS_CONDITION`].
pub const INDEXED_LEVELS: &[&str] = &["warn", "error", "critical", "fatal"];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    Ok(crate::core::store::sqlite::db::migrate(
        conn,
        MIGRATIONS,
        "telemetry schema",
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
    fn version_2_builds_the_orch_table_and_keeps_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, orch_hash, payload) VALUES
                (1, 'a', 10, 10, 'orch_heartbeat', 'orch_a', '{}'),
                (2, 'b', 30, 30, 'orch_heartbeat', 'orch_a', '{}'),
                (3, 'c', 20, 20, 'orch_heartbeat', 'orch_b', '{}'),
                (4, 'd', 99, 99, 'skill', 'orch_b', '{}'),
                (5, 'e', 50, 50, 'orch_heartbeat', NULL, '{}'),
                (6, 'f', 60, 60, 'skill', 'orch_c', '{}');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT orch_hash, first_seq, last_seq, last_heartbeat_ts FROM orchs ORDER BY orch_hash")
            .unwrap();
        let rows: Vec<(String, i64, i64, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [
                ("orch_a".to_owned(), 1, 2, Some(30)),
                ("orch_b".to_owned(), 3, 4, Some(20)),
                ("orch_c".to_owned(), 6, 6, None)
            ]
        );
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM telemetry", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6);
        // Version 6 counted the stored rows into the dashboard's cells.
        let (records, minutes): (i64, i64) = conn
            .query_row(
                "SELECT SUM(records), COUNT(DISTINCT minute) FROM rollup",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((records, minutes), (6, 2));
        let beats: i64 = conn
            .query_row("SELECT COUNT(*) FROM orch_seen", [], |r| r.get(0))
            .unwrap();
        assert_eq!(beats, 2);
    }

    #[test]
    fn version_6_counts_stored_rows_by_minute_kind_and_model() {
        let mut conn = Connection::open_in_memory().unwrap();
        for step in &MIGRATIONS[..5] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            r#"INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, level, agent_path, payload) VALUES
                (1, 'a', 120, 120, 'llm_call', 'error', 'x', '{"model":"m1"}'),
                (2, 'b', 130, 130, 'llm_call', NULL, 'x', '{"model":"m1"}'),
                (3, 'c', 140, 140, 'llm_call', NULL, 'x', '{"model":7}'),
                (4, 'd', 150, 150, 'llm_call', NULL, NULL, 'not json');
               INSERT INTO telemetry_recent (seq, id, ts_unix, received_unix, kind, payload) VALUES
                (5, 'e', 200, 200, 'tool', '{}');"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT minute, agent_path, kind, model, records, errors FROM rollup ORDER BY 1, 2, 3, 4")
            .unwrap();
        let rows: Vec<(i64, String, String, String, i64, i64)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |m: i64, a: &str, k: &str, mo: &str, n: i64, e: i64| {
            (m, a.to_owned(), k.to_owned(), mo.to_owned(), n, e)
        };
        assert_eq!(
            rows,
            [
                row(120, "", "llm_call", "", 1, 0),
                row(120, "x", "llm_call", "", 1, 0),
                row(120, "x", "llm_call", "m1", 2, 1),
                row(180, "", "tool", "", 1, 0),
            ]
        );
    }

    #[test]
    fn the_level_index_condition_is_the_one_queries_repeat() {
        assert!(MIGRATIONS[1].contains(&format!("WHERE {INDEXED_LEVELS_CONDITION};")));
        for level in INDEXED_LEVELS {
            assert!(INDEXED_LEVELS_CONDITION.contains(&format!("'{level}'")));
        }
    }
}
