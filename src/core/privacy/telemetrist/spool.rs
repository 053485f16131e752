//! The spool: a local SQLite file holding redacted conversations until the collector has
//! acknowledged them, the ledger of conversation ids already sent (so each conversation
//! leaves once), and the quarantine of conversations the collector refused. The redacted
//! OTLP export requests of `telemetrist --otlp-listen` have their own three tables
//! ([`otlp`]).
//!
//! Every change is one transaction with `synchronous = FULL`: a conversation is either
//! pending, in the ledger or quarantined, never lost between two of them and never in two.
//! Only redacted conversations are stored here; the originals stay in their source and the
//! mapping back in the vault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::core::shared::config::SyncMode;
use crate::core::store::sqlite::db::{self, SetupError};
use crate::core::telemetry::now_unix;

mod otlp;

pub use otlp::{OtlpBatch, OtlpCounts, OtlpPending, OtlpQuarantined, OtlpSignal};

/// Versioned schema: a spool file of an earlier version gains the later tables when opened.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE pending (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL UNIQUE,
        session TEXT NOT NULL,
        body TEXT NOT NULL,
        spooled_unix INTEGER NOT NULL
    );
    CREATE TABLE sent (
        conversation_id TEXT PRIMARY KEY,
        duplicate INTEGER NOT NULL,
        sent_unix INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE quarantine (
        conversation_id TEXT PRIMARY KEY,
        session TEXT NOT NULL,
        body TEXT NOT NULL,
        status INTEGER NOT NULL,
        error TEXT NOT NULL,
        detail TEXT NOT NULL,
        quarantined_unix INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    otlp::MIGRATION,
];

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or migrating the file failed.
    #[error("spool {path}: {source}")]
    Setup {
        /// Spool file.
        path: PathBuf,
        /// Cause.
        source: SetupError,
    },
    /// A query failed.
    #[error("spool {path}: {source}")]
    Sqlite {
        /// Spool file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
}

/// Where a conversation id already is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Known {
    /// Spooled, waiting for the collector.
    Pending,
    /// In the ledger: the collector has it.
    Sent,
    /// Refused by the collector; kept aside.
    Quarantined,
}

/// A redacted conversation ready to be spooled.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Its id.
    pub conversation_id: String,
    /// The pseudonym session it was redacted in (what `redact --reveal --session` needs).
    pub session: String,
    /// The redacted conversation as JSON.
    pub body: String,
}

/// A pending conversation as read back for sending.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its id.
    pub conversation_id: String,
    /// The redacted conversation as JSON.
    pub body: String,
}

/// One quarantined conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// Its id.
    pub conversation_id: String,
    /// Pseudonym session.
    pub session: String,
    /// HTTP status of the refusal.
    pub status: u16,
    /// The collector's machine code (`pii_detected`, `invalid_record`, ...).
    pub error: String,
    /// The collector's explanation.
    pub detail: String,
    /// When, Unix seconds.
    pub quarantined_unix: i64,
}

/// How many conversations are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Waiting to be sent.
    pub pending: usize,
    /// In the ledger.
    pub sent: usize,
    /// Quarantined.
    pub quarantined: usize,
}

/// The open spool.
pub struct Spool {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).finish()
    }
}

impl Spool {
    /// Opens (creating and migrating it on first use) the spool at `path`.
    pub fn open(path: &Path) -> Result<Spool, Error> {
        let setup = |source| Error::Setup {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        let mut conn = db::open(path, SyncMode::Full, false, 2 * 1024).map_err(setup)?;
        #[cfg(unix)]
        if !existed {
            // Redacted, but still people's conversations.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        db::migrate(&mut conn, MIGRATIONS, "spool").map_err(setup)?;
        Ok(Spool {
            conn,
            path: path.to_owned(),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Where `conversation_id` already is, if anywhere.
    pub fn known(&self, conversation_id: &str) -> Result<Option<Known>, Error> {
        let sql = "SELECT 1 FROM sent WHERE conversation_id = ?1 UNION ALL
                   SELECT 2 FROM quarantine WHERE conversation_id = ?1 UNION ALL
                   SELECT 3 FROM pending WHERE conversation_id = ?1 LIMIT 1";
        let found: Option<i64> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row([conversation_id], |r| r.get(0)).optional())
            .map_err(self.sql())?;
        Ok(found.map(|k| match k {
            1 => Known::Sent,
            2 => Known::Quarantined,
            _ => Known::Pending,
        }))
    }

    /// Adds conversations in one transaction, skipping any id already pending, sent or
    /// quarantined; returns how many were added.
    pub fn enqueue(&mut self, items: &[Spooled]) -> Result<usize, Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO pending (conversation_id, session, body, spooled_unix)
                     SELECT ?1, ?2, ?3, ?4
                     WHERE NOT EXISTS (SELECT 1 FROM sent WHERE conversation_id = ?1)
                       AND NOT EXISTS (SELECT 1 FROM quarantine WHERE conversation_id = ?1)",
                )
                .map_err(sql)?;
            let now = now_unix();
            for item in items {
                added += insert
                    .execute(params![item.conversation_id, item.session, item.body, now])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        Ok(added)
    }

    /// The oldest pending conversations: at most `max_records`, and no more than `max_bytes`
    /// of bodies unless a single one is larger.
    pub fn next_batch(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Pending>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conversation_id, body FROM pending ORDER BY seq LIMIT ?1")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([max_records as i64], |r| {
                Ok(Pending {
                    conversation_id: r.get(0)?,
                    body: r.get(1)?,
                })
            })
            .map_err(self.sql())?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let p = row.map_err(self.sql())?;
            if !batch.is_empty() && bytes + p.body.len() > max_bytes {
                break;
            }
            bytes += p.body.len();
            batch.push(p);
        }
        Ok(batch)
    }

    /// Moves acknowledged conversations from the spool to the ledger in one transaction;
    /// `new` holds the ids the collector stored for the first time (the rest were
    /// duplicates).
    pub fn acknowledge(&mut self, ids: &[String], new: &HashSet<String>) -> Result<(), Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut ledger = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO sent (conversation_id, duplicate, sent_unix) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            let mut remove = tx
                .prepare_cached("DELETE FROM pending WHERE conversation_id = ?1")
                .map_err(sql)?;
            let now = now_unix();
            for id in ids {
                ledger
                    .execute(params![id, !new.contains(id), now])
                    .map_err(sql)?;
                remove.execute([id]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Moves one pending conversation to the quarantine with the collector's reason.
    pub fn quarantine(
        &mut self,
        conversation_id: &str,
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
            "INSERT OR REPLACE INTO quarantine
                 (conversation_id, session, body, status, error, detail, quarantined_unix)
             SELECT conversation_id, session, body, ?2, ?3, ?4, ?5 FROM pending WHERE conversation_id = ?1",
            params![conversation_id, status, error, detail, now_unix()],
        )
        .map_err(sql)?;
        tx.execute(
            "DELETE FROM pending WHERE conversation_id = ?1",
            [conversation_id],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Puts every quarantined conversation back in the spool (after the collector or the
    /// data was fixed); returns how many.
    pub fn requeue_quarantined(&mut self) -> Result<usize, Error> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let moved = tx
            .execute(
                "INSERT OR IGNORE INTO pending (conversation_id, session, body, spooled_unix)
                 SELECT conversation_id, session, body, ?1 FROM quarantine ORDER BY quarantined_unix",
                [now_unix()],
            )
            .map_err(sql)?;
        tx.execute("DELETE FROM quarantine", []).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(moved)
    }

    /// The quarantine, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT conversation_id, session, status, error, detail, quarantined_unix
                 FROM quarantine ORDER BY quarantined_unix, conversation_id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Quarantined {
                    conversation_id: r.get(0)?,
                    session: r.get(1)?,
                    status: r.get(2)?,
                    error: r.get(3)?,
                    detail: r.get(4)?,
                    quarantined_unix: r.get(5)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// How many conversations are pending, sent and quarantined.
    pub fn counts(&self) -> Result<Counts, Error> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM pending), (SELECT COUNT(*) FROM sent),
                        (SELECT COUNT(*) FROM quarantine)",
                [],
                |r| {
                    Ok(Counts {
                        pending: r.get::<_, i64>(0)? as usize,
                        sent: r.get::<_, i64>(1)? as usize,
                        quarantined: r.get::<_, i64>(2)? as usize,
                    })
                },
            )
            .map_err(self.sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Spooled {
        Spooled {
            conversation_id: id.to_owned(),
            session: id.to_owned(),
            body: format!(r#"{{"conversation_id":"{id}","messages":[]}}"#),
        }
    }

    fn ids(batch: &[Pending]) -> Vec<&str> {
        batch.iter().map(|p| p.conversation_id.as_str()).collect()
    }

    #[test]
    fn pending_survives_a_restart_and_leaves_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut s = Spool::open(&path).unwrap();
            assert_eq!(s.enqueue(&[item("a"), item("b"), item("c")]).unwrap(), 3);
            assert_eq!(s.enqueue(&[item("b")]).unwrap(), 0, "already pending");
        }
        let mut s = Spool::open(&path).unwrap();
        let batch = s.next_batch(2, usize::MAX).unwrap();
        assert_eq!(ids(&batch), ["a", "b"], "oldest first, at most 2");
        let new: HashSet<String> = ["a".to_owned()].into();
        s.acknowledge(&["a".to_owned(), "b".to_owned()], &new)
            .unwrap();
        assert_eq!(
            s.counts().unwrap(),
            Counts {
                pending: 1,
                sent: 2,
                quarantined: 0
            }
        );
        assert_eq!(s.known("a").unwrap(), Some(Known::Sent));
        assert_eq!(s.known("c").unwrap(), Some(Known::Pending));
        assert_eq!(s.known("zzz").unwrap(), None);
        assert_eq!(
            s.enqueue(&[item("a"), item("d")]).unwrap(),
            1,
            "the ledger keeps a sent conversation from being spooled again"
        );
        drop(s);
        let s = Spool::open(&path).unwrap();
        assert_eq!(ids(&s.next_batch(10, usize::MAX).unwrap()), ["c", "d"]);
        assert_eq!(s.counts().unwrap().sent, 2, "the ledger is durable too");
    }

    #[test]
    fn batches_respect_the_byte_cap_but_always_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("spool.db")).unwrap();
        s.enqueue(&[item("a"), item("b"), item("c")]).unwrap();
        let one = item("a").body.len();
        assert_eq!(ids(&s.next_batch(10, one * 2).unwrap()), ["a", "b"]);
        assert_eq!(ids(&s.next_batch(10, 1).unwrap()), ["a"]);
    }

    #[test]
    fn quarantine_is_kept_aside_counted_and_can_be_requeued() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("spool.db")).unwrap();
        s.enqueue(&[item("a"), item("b")]).unwrap();
        s.quarantine("a", 422, "pii_detected", "record 0: email")
            .unwrap();
        assert_eq!(ids(&s.next_batch(10, usize::MAX).unwrap()), ["b"]);
        assert_eq!(s.known("a").unwrap(), Some(Known::Quarantined));
        assert_eq!(s.enqueue(&[item("a")]).unwrap(), 0, "not resent by itself");
        let q = s.quarantined().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].status, q[0].error.as_str()), (422, "pii_detected"));
        assert_eq!(s.requeue_quarantined().unwrap(), 1);
        assert_eq!(ids(&s.next_batch(10, usize::MAX).unwrap()), ["b", "a"]);
        assert_eq!(s.counts().unwrap().quarantined, 0);
    }
}
