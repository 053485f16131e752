//! The `conversations` table: idempotent inserts for the writer, the reads both the
//! collector's store and the read-only [`SqliteConversations`] serve, which dataset exports
//! stream from (safe next to a running collector: WAL readers never block the writer).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, Transaction, params, params_from_iter};
use tokio::sync::mpsc;

use super::db::ReaderPool;
use super::migrations::{CONVERSATIONS_SINCE, SCHEMA_VERSION};
use super::store::{CACHE_KIB, open_connection};
use crate::core::shared::config::SyncMode;
use crate::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error, FilterCounts,
    ReadOrder,
};
use crate::core::telemetry::conversation::{Feedback, NewConversation, StoredConversation};

/// Inserts rows whose `conversation_id` is new; returns, per row, whether it was stored
/// (false: the id is already stored, or came earlier in the same batch).
pub(super) fn insert_conversations(
    tx: &Transaction<'_>,
    rows: &[NewConversation],
) -> Result<Vec<bool>, rusqlite::Error> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO conversations (conversation_id, ts_unix, received_unix, orch_hash, agent_path, \
         feedback, score, prompt_key, messages) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (conversation_id) DO NOTHING",
    )?;
    rows.iter()
        .map(|r| {
            let n = stmt.execute(params![
                r.conversation_id,
                r.ts_unix,
                r.received_unix,
                r.orch_hash,
                r.agent_path,
                r.feedback.map(Feedback::as_str),
                r.score,
                r.prompt_key,
                r.messages_json,
            ])?;
            Ok(n == 1)
        })
        .collect()
}

/// Rows handed from the reading thread to a [`ConversationStream`] at a time.
const STREAM_ROWS: usize = 64;

/// A read-only view of a collector database's conversations (what `phoenix export` opens:
/// safe next to a running collector).
pub struct SqliteConversations {
    path: PathBuf,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteConversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConversations")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteConversations {
    /// Opens `path` read-only; refuses a database without the conversations table or written
    /// by a newer Phoenix.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = open_connection(path, SyncMode::Normal, true)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < CONVERSATIONS_SINCE {
            return Err(Error::Open {
                what: path.display().to_string(),
                message: format!(
                    "schema version {version} has no conversations (start `phoenix serve collector` on it once to upgrade it)"
                ),
            });
        }
        drop(conn);
        Ok(SqliteConversations {
            path: path.to_owned(),
            // Each read (and an open stream) takes its own connection: a stream left open
            // never blocks a count.
            readers: Arc::new(ReaderPool::new(path, 2, CACHE_KIB)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let readers = self.readers.clone();
        blocking(move || readers.with(f)).await
    }
}

#[async_trait::async_trait]
impl ConversationStore for SqliteConversations {
    fn submit_conversations(
        &self,
        _conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error> {
        Err(read_only())
    }

    fn purge_conversations_before(
        &self,
        _cutoff: i64,
        _limit: usize,
    ) -> Result<Commit<usize>, Error> {
        Err(read_only())
    }

    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        let filter = *filter;
        self.read(move |conn| filter_counts(conn, &filter)).await
    }

    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error> {
        let filter = *filter;
        self.read(move |conn| count(conn, &filter, order)).await
    }

    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error> {
        Ok(spawn_stream(self.readers.clone(), *filter, order))
    }
}

fn read_only() -> Error {
    Error::Backend {
        backend: "sqlite",
        message: "the database is open read-only".to_owned(),
        transient: false,
    }
}

/// Runs a blocking read on the blocking pool.
pub(super) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::Backend {
            backend: "sqlite",
            message: format!("the read task failed: {e}"),
            transient: false,
        })
    })
}

/// Streams from a read connection of `readers`, on the blocking pool.
pub(super) fn spawn_stream(
    readers: Arc<ReaderPool>,
    filter: ConversationFilter,
    order: ReadOrder,
) -> ConversationStream {
    let (tx, rows) = ConversationStream::channel(STREAM_ROWS);
    tokio::task::spawn_blocking(move || {
        let opened = readers.with(|conn| {
            stream(conn, &filter, order, &tx);
            Ok::<_, Error>(())
        });
        if let Err(e) = opened {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rows
}

/// How many conversations are stored and how many `filter` leaves out, by reason.
pub(super) fn filter_counts(
    conn: &Connection,
    filter: &ConversationFilter,
) -> Result<FilterCounts, Error> {
    let since = filter.since.unwrap_or(i64::MIN);
    let min = filter.min_score;
    let row = conn.query_row(
        "SELECT COUNT(*), \
             COALESCE(SUM(ts_unix < ?1), 0), \
             COALESCE(SUM(ts_unix >= ?1 AND ?2 IS NOT NULL AND score IS NULL), 0), \
             COALESCE(SUM(ts_unix >= ?1 AND ?2 IS NOT NULL AND score < ?2), 0) \
             FROM conversations",
        params![since, min],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        },
    )?;
    Ok(FilterCounts {
        stored: row.0 as u64,
        before_since: row.1 as u64,
        unscored: row.2 as u64,
        below_min_score: row.3 as u64,
    })
}

/// How many conversations [`stream`] would send.
pub(super) fn count(
    conn: &Connection,
    filter: &ConversationFilter,
    order: ReadOrder,
) -> Result<u64, Error> {
    let (clause, args) = where_clause(filter, order);
    let sql = format!("SELECT COUNT(*) FROM conversations {clause}");
    let n: i64 = conn.query_row(&sql, params_from_iter(args.iter()), |r| r.get(0))?;
    Ok(n as u64)
}

/// Sends every conversation `filter` keeps, in `order`, from one statement (one snapshot);
/// stops early when the consumer goes away. A failure is sent as the last item.
pub(super) fn stream(
    conn: &Connection,
    filter: &ConversationFilter,
    order: ReadOrder,
    tx: &mpsc::Sender<Result<StoredConversation, Error>>,
) {
    let sent = (|| -> Result<(), Error> {
        let (clause, args) = where_clause(filter, order);
        let order_by = match order {
            ReadOrder::Stored => "seq",
            ReadOrder::ByPrompt => "prompt_key, seq",
        };
        let sql = format!(
            "SELECT seq, conversation_id, ts_unix, received_unix, orch_hash, agent_path, feedback, \
             score, prompt_key, messages FROM conversations {clause} ORDER BY {order_by}"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        while let Some(row) = rows.next()? {
            if tx.blocking_send(Ok(decode(row)?)).is_err() {
                break;
            }
        }
        Ok(())
    })();
    if let Err(e) = sent {
        let _ = tx.blocking_send(Err(e));
    }
}

fn where_clause(
    filter: &ConversationFilter,
    order: ReadOrder,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut conds = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(since) = filter.since {
        args.push(since.into());
        conds.push(format!("ts_unix >= ?{}", args.len()));
    }
    if let Some(min) = filter.min_score {
        args.push(min.into());
        conds.push(format!("score >= ?{}", args.len()));
    }
    if order == ReadOrder::ByPrompt {
        conds.push("prompt_key IS NOT NULL".to_owned());
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (clause, args)
}

fn decode(row: &rusqlite::Row<'_>) -> Result<StoredConversation, Error> {
    let feedback: Option<String> = row.get(6)?;
    let messages: String = row.get(9)?;
    Ok(StoredConversation {
        seq: row.get(0)?,
        conversation_id: row.get(1)?,
        ts_unix: row.get(2)?,
        received_unix: row.get(3)?,
        orch_hash: row.get(4)?,
        agent_path: row.get(5)?,
        feedback: match feedback {
            Some(f) => Some(
                Feedback::parse(&f)
                    .ok_or_else(|| Error::Corrupt(format!("conversation feedback {f:?}")))?,
            ),
            None => None,
        },
        score: row.get(7)?,
        prompt_key: row.get(8)?,
        messages: serde_json::from_str(&messages)
            .map_err(|e| Error::Corrupt(format!("conversation messages: {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::{SqliteStore, StoreMetrics, StoreOptions};

    fn row(id: &str, ts: i64, score: Option<f64>, key: Option<&str>) -> NewConversation {
        NewConversation {
            conversation_id: id.to_owned(),
            ts_unix: ts,
            received_unix: ts,
            orch_hash: None,
            agent_path: None,
            feedback: Some(Feedback::Positive),
            score,
            messages_json: format!(r#"[{{"role":"user","content":"{id}"}}]"#),
            prompt_key: key.map(str::to_owned),
        }
    }

    async fn ids(
        reader: &SqliteConversations,
        filter: ConversationFilter,
        order: ReadOrder,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut rows = reader.read_conversations(&filter, order).await.unwrap();
        while let Some(c) = rows.next().await {
            out.push(c.unwrap().conversation_id);
        }
        out
    }

    #[tokio::test]
    async fn resends_store_nothing_and_the_reader_filters_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&StoreOptions::new(&path), StoreMetrics::default()).unwrap();
        let first = vec![
            row("a", 100, Some(5.0), Some("k2")),
            row("b", 200, None, Some("k1")),
            row("c", 300, Some(1.0), None),
            row("a", 999, None, None),
        ];
        let stored = store
            .submit_conversations(first)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(stored, [true, true, true, false]);
        let again = vec![
            row("c", 300, Some(1.0), None),
            row("d", 400, Some(3.0), Some("k2")),
        ];
        let stored = store
            .submit_conversations(again)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(stored, [false, true]);

        // The reader works next to the running writer (WAL).
        let reader = SqliteConversations::open(&path).unwrap();
        let all = ConversationFilter::default();
        assert_eq!(
            ids(&reader, all, ReadOrder::Stored).await,
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            ids(&reader, all, ReadOrder::ByPrompt).await,
            ["b", "a", "d"]
        );
        let recent = ConversationFilter {
            since: Some(200),
            min_score: Some(2.0),
        };
        assert_eq!(ids(&reader, recent, ReadOrder::Stored).await, ["d"]);
        assert_eq!(
            reader
                .count_conversations(&recent, ReadOrder::Stored)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            reader.filter_counts(&recent).await.unwrap(),
            FilterCounts {
                stored: 4,
                before_since: 1,
                unscored: 1,
                below_min_score: 1
            }
        );

        let purged = store
            .purge_conversations_before(250, 1)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(purged, 1);
        let purged = store
            .purge_conversations_before(250, 10)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(purged, 1);
        assert_eq!(ids(&reader, all, ReadOrder::Stored).await, ["c", "d"]);
        store.close().await;
    }

    #[test]
    fn a_database_from_before_conversations_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        let err = SqliteConversations::open(&path).unwrap_err().to_string();
        assert!(err.contains("serve collector"), "{err}");
    }
}
