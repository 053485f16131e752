//! The recent tail: small group commits land in `telemetry_recent`, a table with no
//! secondary index, and move into `telemetry` in bulk.
//!
//! Every commit writes each B-tree page it dirtied to the WAL once more. A group of 15
//! single-event requests inserted into `telemetry` dirties about 14 pages: the table's last
//! leaf, and in the indexes one hot leaf per kind, per agent path and per level, plus the
//! `orchs` rows. The same group inserted into the tail dirties the tail's last leaf and
//! `orchs`. Moving the tail into `telemetry` [`FLUSH_ROWS`] rows at a time writes each hot
//! index page once per flush instead of once per commit: `phoenix bench ingest` shows it
//! as the writer's CPU per single-event record.
//!
//! Readers see both tables in one statement (one snapshot), so a record can be queried the
//! moment it is acknowledged. The writer hands out every `seq` itself, in commit order, and
//! flushes the tail before it inserts a large group straight into `telemetry`; so every tail
//! row's `seq` is above every `telemetry` row's, and a flush only ever appends.

use std::time::Duration;

use rusqlite::Connection;

use crate::core::telemetry::HEARTBEAT_KIND;

/// The tail table.
pub(super) const TABLE: &str = "telemetry_recent";
/// Groups of at least this many records go straight into `telemetry`: their index pages
/// are already shared by many rows.
pub(super) const DIRECT_RECORDS: usize = 256;
/// The tail moves into `telemetry` once it holds this many rows ...
pub(super) const FLUSH_ROWS: usize = 2048;
/// ... or once the writer has had nothing to do for this long.
pub(super) const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// How an `INSERT INTO orchs` merges with the row already there: the seq range only grows
/// (`first_seq` stays) and the heartbeat is the later one; max(coalesce(a, b), coalesce(b,
/// a)) is the larger of the two, ignoring a NULL.
pub(super) const ORCHS_MERGE: &str = "ON CONFLICT (orch_hash) DO UPDATE SET \
     last_seq = max(last_seq, excluded.last_seq), \
     last_heartbeat_ts = max(coalesce(last_heartbeat_ts, excluded.last_heartbeat_ts), \
                             coalesce(excluded.last_heartbeat_ts, last_heartbeat_ts))";

const COLUMNS: &str =
    "seq, id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload";

/// The writer's view of the tail: the next `seq` to hand out and how many rows wait.
///
/// It is `Copy` so a transaction can work on a copy that is kept only if the commit succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail {
    /// The `seq` the next record gets.
    pub next_seq: i64,
    /// Rows in the tail table.
    pub rows: usize,
}

impl Tail {
    /// Reads the state a previous run left: the tail survives a crash like any table.
    pub fn load(conn: &Connection) -> rusqlite::Result<Tail> {
        let (max_seq, rows): (i64, i64) = conn.query_row(
            &format!(
                "SELECT max(coalesce((SELECT max(seq) FROM telemetry), 0), \
                            coalesce((SELECT max(seq) FROM {TABLE}), 0)), \
                        (SELECT count(*) FROM {TABLE})"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Tail {
            next_seq: max_seq + 1,
            rows: rows as usize,
        })
    }

    /// Hands out the next `seq`.
    pub fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Moves every tail row into `telemetry` and accounts for it in `orchs`, inside the
    /// caller's transaction.
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<usize> {
        if self.rows == 0 {
            return Ok(0);
        }
        let moved = conn.execute(
            &format!(
                "INSERT INTO telemetry ({COLUMNS}) SELECT {COLUMNS} FROM {TABLE} ORDER BY seq"
            ),
            [],
        )?;
        // One upsert per ORCH per flush, where small commits would have made one per ORCH
        // per commit. `WHERE true` settles SQLite's parse of `SELECT ... ON CONFLICT`.
        conn.execute(
            &format!(
                "INSERT INTO orchs (orch_hash, first_seq, last_seq, last_heartbeat_ts) \
                 SELECT orch_hash, min(seq), max(seq), \
                        max(CASE WHEN kind = '{HEARTBEAT_KIND}' THEN ts_unix END) \
                 FROM {TABLE} WHERE true AND orch_hash IS NOT NULL GROUP BY orch_hash \
                 {ORCHS_MERGE}"
            ),
            [],
        )?;
        // No WHERE: SQLite empties the table without visiting each row.
        conn.execute(&format!("DELETE FROM {TABLE}"), [])?;
        self.rows = 0;
        Ok(moved)
    }

    /// Whether the tail should be flushed after a commit.
    pub fn is_full(&self) -> bool {
        self.rows >= FLUSH_ROWS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::sqlite::migrations::migrate;

    fn insert(conn: &Connection, table: &str, seq: i64) {
        conn.execute(
            &format!(
                "INSERT INTO {table} (seq, id, ts_unix, received_unix, kind, payload) \
                 VALUES (?1, ?2, 1, 1, 'k', '{{}}')"
            ),
            rusqlite::params![seq, format!("id-{seq}")],
        )
        .unwrap();
    }

    #[test]
    fn load_continues_after_the_highest_seq_of_either_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(
            Tail::load(&conn).unwrap(),
            Tail {
                next_seq: 1,
                rows: 0
            }
        );
        insert(&conn, "telemetry", 7);
        assert_eq!(Tail::load(&conn).unwrap().next_seq, 8);
        insert(&conn, TABLE, 9);
        insert(&conn, TABLE, 10);
        assert_eq!(
            Tail::load(&conn).unwrap(),
            Tail {
                next_seq: 11,
                rows: 2
            }
        );
    }

    #[test]
    fn flush_moves_every_row_with_its_seq() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        insert(&conn, "telemetry", 1);
        insert(&conn, TABLE, 2);
        insert(&conn, TABLE, 3);
        let mut tail = Tail::load(&conn).unwrap();
        assert_eq!(tail.flush(&conn).unwrap(), 2);
        assert_eq!(tail.rows, 0);
        let seqs: Vec<(i64, String)> = conn
            .prepare("SELECT seq, id FROM telemetry ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            seqs,
            [
                (1, "id-1".to_owned()),
                (2, "id-2".to_owned()),
                (3, "id-3".to_owned())
            ]
        );
        let left: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {TABLE}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
}
