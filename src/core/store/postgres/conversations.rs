//! The conversation reads and writes of [`PgStore`], with the semantics of the SQLite
//! backend: idempotent inserts (writer.rs), filter counts, and a stream in export order from
//! one statement (one snapshot).

use futures_util::StreamExt;
use tokio_postgres::types::ToSql;

use super::store::{PgStore, pg, pool_err};
use super::writer::Job;
use crate::core::store::{
    Commit, ConversationFilter, ConversationStore, ConversationStream, Error, FilterCounts,
    ReadOrder,
};
use crate::core::telemetry::conversation::{Feedback, NewConversation, StoredConversation};

/// Rows handed from the reading task to a [`ConversationStream`] at a time.
const STREAM_ROWS: usize = 64;

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn where_clause(filter: &ConversationFilter, order: ReadOrder) -> (String, Params) {
    let mut conds = Vec::new();
    let mut args: Params = Vec::new();
    if let Some(since) = filter.since {
        args.push(Box::new(since));
        conds.push(format!("ts_unix >= ${}", args.len()));
    }
    if let Some(min) = filter.min_score {
        args.push(Box::new(min));
        conds.push(format!("score >= ${}", args.len()));
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

fn refs(args: &Params) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn decode(row: &tokio_postgres::Row) -> Result<StoredConversation, Error> {
    let feedback: Option<String> = row.get(6);
    let messages: String = row.get(9);
    Ok(StoredConversation {
        seq: row.get(0),
        conversation_id: row.get(1),
        ts_unix: row.get(2),
        received_unix: row.get(3),
        orch_hash: row.get(4),
        agent_path: row.get(5),
        feedback: match feedback {
            Some(f) => Some(
                Feedback::parse(&f)
                    .ok_or_else(|| Error::Corrupt(format!("conversation feedback {f:?}")))?,
            ),
            None => None,
        },
        score: row.get(7),
        prompt_key: row.get(8),
        messages: serde_json::from_str(&messages)
            .map_err(|e| Error::Corrupt(format!("conversation messages: {e}")))?,
    })
}

#[async_trait::async_trait]
impl ConversationStore for PgStore {
    fn submit_conversations(
        &self,
        conversations: Vec<NewConversation>,
    ) -> Result<Commit<Vec<bool>>, Error> {
        let (reply, commit) = Commit::channel();
        self.enqueue(
            conversations.len(),
            Job::Conversations(conversations, reply),
        )?;
        Ok(commit)
    }

    fn purge_conversations_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Commit<usize>, Error> {
        self.purge(move |pool| async move {
            if limit == 0 {
                return Ok(0);
            }
            let client = pool.get().await.map_err(pool_err)?;
            let n = client
                .execute(
                    "DELETE FROM conversations WHERE seq IN \
                     (SELECT seq FROM conversations WHERE ts_unix < $1 LIMIT $2)",
                    &[&cutoff, &(limit as i64)],
                )
                .await
                .map_err(pg)?;
            Ok(n as usize)
        })
    }

    async fn filter_counts(&self, filter: &ConversationFilter) -> Result<FilterCounts, Error> {
        let since = filter.since.unwrap_or(i64::MIN);
        let min = filter.min_score;
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), \
                 count(*) FILTER (WHERE ts_unix < $1), \
                 count(*) FILTER (WHERE ts_unix >= $1 AND $2::float8 IS NOT NULL AND score IS NULL), \
                 count(*) FILTER (WHERE ts_unix >= $1 AND $2::float8 IS NOT NULL AND score < $2) \
                 FROM conversations",
                &[&since, &min],
            )
            .await
            .map_err(pg)?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(FilterCounts {
            stored: n(0),
            before_since: n(1),
            unscored: n(2),
            below_min_score: n(3),
        })
    }

    async fn count_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<u64, Error> {
        let (clause, args) = where_clause(filter, order);
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM conversations {clause}"),
                &refs(&args),
            )
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    async fn read_conversations(
        &self,
        filter: &ConversationFilter,
        order: ReadOrder,
    ) -> Result<ConversationStream, Error> {
        let (clause, args) = where_clause(filter, order);
        let order_by = match order {
            ReadOrder::Stored => "seq",
            ReadOrder::ByPrompt => "prompt_key, seq",
        };
        let sql = format!(
            "SELECT seq, conversation_id, ts_unix, received_unix, orch_hash, agent_path, feedback, \
             score, prompt_key, messages FROM conversations {clause} ORDER BY {order_by}"
        );
        let pool = self.pool.clone();
        let (tx, rows) = ConversationStream::channel(STREAM_ROWS);
        tokio::spawn(async move {
            let sent = async {
                let client = pool.get().await.map_err(pool_err)?;
                let stream = client.query_raw(&sql, refs(&args)).await.map_err(pg)?;
                let mut stream = std::pin::pin!(stream);
                while let Some(row) = stream.next().await {
                    let row = row.map_err(pg)?;
                    if tx.send(Ok(decode(&row)?)).await.is_err() {
                        break;
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = sent {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rows)
    }
}
