//! The OTLP side of the spool: redacted export requests of `telemetrist --otlp-listen`
//! (protobuf, one row per request the agent's SDK made) until the collector has answered
//! 200, a ledger of those sent, and the quarantine of those it refused.
//!
//! As for conversations, every change is one transaction: a batch is pending, sent or
//! quarantined, never lost between two of them. Ids are never reused (AUTOINCREMENT), so a
//! batch keeps its id from the spool to the ledger or the quarantine and back.

use rusqlite::params;
use serde::Serialize;

use super::{Error, Spool};
use crate::core::telemetry::now_unix;

/// The tables, added to spool files of the first version when they are opened.
pub(super) const MIGRATION: &str = "
    CREATE TABLE otlp_pending (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        signal TEXT NOT NULL CHECK (signal IN ('traces', 'logs')),
        items INTEGER NOT NULL,
        sessions TEXT NOT NULL,
        body BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        spooled_unix INTEGER NOT NULL
    );
    CREATE TABLE otlp_sent (
        id INTEGER PRIMARY KEY,
        signal TEXT NOT NULL,
        items INTEGER NOT NULL,
        spooled_unix INTEGER NOT NULL,
        sent_unix INTEGER NOT NULL
    );
    CREATE TABLE otlp_quarantine (
        id INTEGER PRIMARY KEY,
        signal TEXT NOT NULL,
        items INTEGER NOT NULL,
        sessions TEXT NOT NULL,
        body BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        spooled_unix INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error TEXT NOT NULL,
        detail TEXT NOT NULL,
        quarantined_unix INTEGER NOT NULL
    );
";

/// Which OTLP signal a batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpSignal {
    /// An `ExportTraceServiceRequest`, for `POST /v1/traces`.
    Traces,
    /// An `ExportLogsServiceRequest`, for `POST /v1/logs`.
    Logs,
}

impl OtlpSignal {
    /// The name stored in the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpSignal::Traces => "traces",
            OtlpSignal::Logs => "logs",
        }
    }

    /// The OTLP/HTTP path of the signal.
    pub fn path(self) -> &'static str {
        match self {
            OtlpSignal::Traces => "/v1/traces",
            OtlpSignal::Logs => "/v1/logs",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<OtlpSignal> {
        match s {
            "traces" => Ok(OtlpSignal::Traces),
            "logs" => Ok(OtlpSignal::Logs),
            other => Err(rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown OTLP signal {other:?}").into(),
            )),
        }
    }
}

/// A redacted export request ready to be spooled.
#[derive(Debug, Clone)]
pub struct OtlpBatch {
    /// What it carries.
    pub signal: OtlpSignal,
    /// Spans or log records in it.
    pub items: usize,
    /// The pseudonym sessions it was redacted in (what `redact --reveal --session` needs).
    pub sessions: Vec<String>,
    /// The request, protobuf-encoded.
    pub body: Vec<u8>,
}

/// A pending batch as read back for sending.
#[derive(Debug, Clone)]
pub struct OtlpPending {
    /// Its id in the spool.
    pub id: i64,
    /// What it carries.
    pub signal: OtlpSignal,
    /// Spans or log records in it.
    pub items: usize,
    /// The request, protobuf-encoded.
    pub body: Vec<u8>,
}

/// One quarantined batch.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpQuarantined {
    /// Its id in the spool.
    pub batch_id: i64,
    /// What it carries.
    pub signal: OtlpSignal,
    /// Spans or log records in it.
    pub items: usize,
    /// Pseudonym sessions.
    pub sessions: Vec<String>,
    /// HTTP status of the refusal.
    pub status: u16,
    /// The collector's machine code, or the `google.rpc.Code` name of its OTLP answer.
    pub error: String,
    /// The collector's explanation.
    pub detail: String,
    /// When, Unix seconds.
    pub quarantined_unix: i64,
}

/// How many batches are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OtlpCounts {
    /// Waiting to be sent.
    pub pending: usize,
    /// Bytes of the pending batches.
    pub pending_bytes: u64,
    /// In the ledger.
    pub sent: usize,
    /// Quarantined.
    pub quarantined: usize,
}

impl Spool {
    /// Adds one batch in one transaction; returns its id.
    pub fn enqueue_otlp(&mut self, batch: &OtlpBatch) -> Result<i64, Error> {
        let sessions = serde_json::to_string(&batch.sessions).expect("strings serialize");
        self.conn
            .prepare_cached(
                "INSERT INTO otlp_pending (signal, items, sessions, body, bytes, spooled_unix)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    batch.signal.as_str(),
                    batch.items as i64,
                    sessions,
                    batch.body,
                    batch.body.len() as i64,
                    now_unix()
                ])
            })
            .map_err(self.sql())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The oldest pending batches of one signal (the oldest batch's): at most `max_batches`,
    /// and no more than `max_bytes` of bodies unless a single one is larger.
    pub fn next_otlp(
        &self,
        max_batches: usize,
        max_bytes: usize,
    ) -> Result<Vec<OtlpPending>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, signal, items, body FROM otlp_pending ORDER BY id LIMIT ?1")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([max_batches as i64], |r| {
                Ok(OtlpPending {
                    id: r.get(0)?,
                    signal: OtlpSignal::parse(&r.get::<_, String>(1)?)?,
                    items: r.get::<_, i64>(2)? as usize,
                    body: r.get(3)?,
                })
            })
            .map_err(self.sql())?;
        let mut batch: Vec<OtlpPending> = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let p = row.map_err(self.sql())?;
            if let Some(first) = batch.first()
                && (first.signal != p.signal || bytes + p.body.len() > max_bytes)
            {
                break;
            }
            bytes += p.body.len();
            batch.push(p);
        }
        Ok(batch)
    }

    /// Moves batches the collector answered 200 from the spool to the ledger, in one
    /// transaction.
    pub fn acknowledge_otlp(&mut self, ids: &[i64]) -> Result<(), Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut ledger = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO otlp_sent (id, signal, items, spooled_unix, sent_unix)
                     SELECT id, signal, items, spooled_unix, ?2 FROM otlp_pending WHERE id = ?1",
                )
                .map_err(sql)?;
            let mut remove = tx
                .prepare_cached("DELETE FROM otlp_pending WHERE id = ?1")
                .map_err(sql)?;
            let now = now_unix();
            for id in ids {
                ledger.execute(params![id, now]).map_err(sql)?;
                remove.execute([id]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Moves one pending batch to the quarantine with the collector's reason.
    pub fn quarantine_otlp(
        &mut self,
        id: i64,
        status: u16,
        error: &str,
        detail: &str,
    ) -> Result<(), Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT OR REPLACE INTO otlp_quarantine
                 (id, signal, items, sessions, body, bytes, spooled_unix, status, error, detail,
                  quarantined_unix)
             SELECT id, signal, items, sessions, body, bytes, spooled_unix, ?2, ?3, ?4, ?5
             FROM otlp_pending WHERE id = ?1",
            params![id, status, error, detail, now_unix()],
        )
        .map_err(sql)?;
        tx.execute("DELETE FROM otlp_pending WHERE id = ?1", [id])
            .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Puts every quarantined batch back in the spool under its own id; returns how many.
    pub fn requeue_otlp_quarantined(&mut self) -> Result<usize, Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let moved = tx
            .execute(
                "INSERT OR IGNORE INTO otlp_pending (id, signal, items, sessions, body, bytes, spooled_unix)
                 SELECT id, signal, items, sessions, body, bytes, ?1 FROM otlp_quarantine ORDER BY id",
                [now_unix()],
            )
            .map_err(sql)?;
        tx.execute("DELETE FROM otlp_quarantine", []).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(moved)
    }

    /// The OTLP quarantine, oldest first.
    pub fn otlp_quarantined(&self) -> Result<Vec<OtlpQuarantined>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, signal, items, sessions, status, error, detail, quarantined_unix
                 FROM otlp_quarantine ORDER BY quarantined_unix, id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                let sessions: String = r.get(3)?;
                Ok(OtlpQuarantined {
                    batch_id: r.get(0)?,
                    signal: OtlpSignal::parse(&r.get::<_, String>(1)?)?,
                    items: r.get::<_, i64>(2)? as usize,
                    sessions: serde_json::from_str(&sessions).unwrap_or_default(),
                    status: r.get(4)?,
                    error: r.get(5)?,
                    detail: r.get(6)?,
                    quarantined_unix: r.get(7)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// How many batches are pending (and their bytes), sent and quarantined.
    pub fn otlp_counts(&self) -> Result<OtlpCounts, Error> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM otlp_pending),
                        (SELECT COALESCE(SUM(bytes), 0) FROM otlp_pending),
                        (SELECT COUNT(*) FROM otlp_sent),
                        (SELECT COUNT(*) FROM otlp_quarantine)",
                [],
                |r| {
                    Ok(OtlpCounts {
                        pending: r.get::<_, i64>(0)? as usize,
                        pending_bytes: r.get::<_, i64>(1)? as u64,
                        sent: r.get::<_, i64>(2)? as usize,
                        quarantined: r.get::<_, i64>(3)? as usize,
                    })
                },
            )
            .map_err(self.sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::sqlite::db;

    fn batch(signal: OtlpSignal, body: &[u8]) -> OtlpBatch {
        OtlpBatch {
            signal,
            items: 1,
            sessions: vec!["conv-1".to_owned()],
            body: body.to_vec(),
        }
    }

    fn ids(batch: &[OtlpPending]) -> Vec<i64> {
        batch.iter().map(|p| p.id).collect()
    }

    #[test]
    fn batches_survive_a_restart_and_leave_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut s = Spool::open(&path).unwrap();
            for body in [b"a", b"b", b"c"] {
                s.enqueue_otlp(&batch(OtlpSignal::Traces, body)).unwrap();
            }
        }
        let mut s = Spool::open(&path).unwrap();
        let next = s.next_otlp(2, usize::MAX).unwrap();
        assert_eq!(ids(&next), [1, 2], "oldest first, at most 2");
        s.acknowledge_otlp(&[1, 2]).unwrap();
        let counts = s.otlp_counts().unwrap();
        assert_eq!(
            (counts.pending, counts.sent, counts.pending_bytes),
            (1, 2, 1)
        );
        let id = s.enqueue_otlp(&batch(OtlpSignal::Traces, b"d")).unwrap();
        assert_eq!(id, 4, "ids are not reused");
        assert_eq!(ids(&s.next_otlp(10, usize::MAX).unwrap()), [3, 4]);
        assert_eq!(s.counts().unwrap().pending, 0, "conversations are apart");
    }

    #[test]
    fn a_batch_holds_one_signal_and_respects_the_byte_cap_but_always_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("spool.db")).unwrap();
        s.enqueue_otlp(&batch(OtlpSignal::Traces, b"aaaa")).unwrap();
        s.enqueue_otlp(&batch(OtlpSignal::Traces, b"bbbb")).unwrap();
        s.enqueue_otlp(&batch(OtlpSignal::Logs, b"cccc")).unwrap();
        assert_eq!(ids(&s.next_otlp(10, usize::MAX).unwrap()), [1, 2]);
        assert_eq!(ids(&s.next_otlp(10, 6).unwrap()), [1]);
        assert_eq!(ids(&s.next_otlp(10, 1).unwrap()), [1]);
        s.acknowledge_otlp(&[1, 2]).unwrap();
        let logs = s.next_otlp(10, usize::MAX).unwrap();
        assert_eq!((logs[0].id, logs[0].signal), (3, OtlpSignal::Logs));
        assert_eq!(logs[0].body, b"cccc");
    }

    #[test]
    fn quarantine_is_kept_aside_listed_and_can_be_requeued_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("spool.db")).unwrap();
        s.enqueue_otlp(&batch(OtlpSignal::Traces, b"a")).unwrap();
        s.enqueue_otlp(&batch(OtlpSignal::Traces, b"b")).unwrap();
        s.quarantine_otlp(1, 413, "resource_exhausted", "too large")
            .unwrap();
        assert_eq!(ids(&s.next_otlp(10, usize::MAX).unwrap()), [2]);
        let q = s.otlp_quarantined().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].batch_id, q[0].status), (1, 413));
        assert_eq!(q[0].sessions, ["conv-1"]);
        assert_eq!(s.otlp_counts().unwrap().quarantined, 1);
        assert_eq!(s.requeue_otlp_quarantined().unwrap(), 1);
        assert_eq!(ids(&s.next_otlp(10, usize::MAX).unwrap()), [1, 2]);
        assert_eq!(s.otlp_counts().unwrap().quarantined, 0);
    }

    #[test]
    fn a_spool_of_the_first_version_gains_the_otlp_tables_and_keeps_its_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut conn = db::open(
                &path,
                crate::core::shared::config::SyncMode::Full,
                false,
                256,
            )
            .unwrap();
            db::migrate(&mut conn, &super::super::MIGRATIONS[..1], "spool").unwrap();
            conn.execute(
                "INSERT INTO pending (conversation_id, session, body, spooled_unix)
                 VALUES ('c1', 'c1', '{}', 0)",
                [],
            )
            .unwrap();
        }
        let mut s = Spool::open(&path).unwrap();
        assert_eq!(s.counts().unwrap().pending, 1);
        s.enqueue_otlp(&batch(OtlpSignal::Logs, b"x")).unwrap();
        assert_eq!(s.otlp_counts().unwrap().pending, 1);
    }
}
