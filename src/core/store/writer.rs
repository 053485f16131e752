//! The single writer: one thread owns the write connection and group-commits whatever is
//! queued in one transaction, so concurrent requests share one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::conversations::insert_conversations;
use super::{Error, StoreMetrics, sqlite::insert_statement};
use crate::core::conversation::NewConversation;
use crate::core::telemetry::{HEARTBEAT_KIND, NewRecord};

/// Most records one group commit takes before it commits and starts another.
const MAX_GROUP_RECORDS: usize = 50_000;

/// An insight as the writer stores it.
pub(super) struct InsightRow {
    pub id: String,
    pub ts_unix: i64,
    pub tier: String,
    pub focus: String,
    pub source: String,
    pub body: String,
}

/// What retention deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Telemetry,
    Conversations,
}

/// Work for the writer.
pub(super) enum Job {
    Telemetry(Vec<NewRecord>, oneshot::Sender<Result<(), Error>>),
    /// Replies with one flag per row: stored (true) or a duplicate of a stored id (false).
    Conversations(
        Vec<NewConversation>,
        oneshot::Sender<Result<Vec<bool>, Error>>,
    ),
    Insight(InsightRow, oneshot::Sender<Result<(), Error>>),
    Purge {
        table: Table,
        cutoff: i64,
        limit: usize,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    /// Finish everything queued before this, then stop.
    Shutdown(oneshot::Sender<()>),
}

impl Job {
    fn records(&self) -> usize {
        match self {
            Job::Telemetry(r, _) => r.len(),
            Job::Conversations(r, _) => r.len(),
            _ => 0,
        }
    }
}

/// Runs until a `Shutdown` job or until every sender is gone.
pub(super) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    metrics: StoreMetrics,
    checkpointer: Checkpointer,
) {
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let Ok(first) = rx.recv() else { break };
        let mut group = Vec::with_capacity(64);
        let mut records = first.records();
        match first {
            Job::Shutdown(done) => stop = Some(done),
            job => group.push(job),
        }
        while stop.is_none() && records < MAX_GROUP_RECORDS {
            match rx.try_recv() {
                Ok(Job::Shutdown(done)) => stop = Some(done),
                Ok(job) => {
                    records += job.records();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&mut conn, group, records, &queued, &metrics);
            checkpointer.committed(&conn);
        }
    }
    // Shutting down: take nothing new, but keep the promise to everything already queued.
    while let Ok(job) = rx.try_recv() {
        match job {
            Job::Shutdown(done) => {
                let _ = done.send(());
            }
            job => {
                let n = job.records();
                commit_group(&mut conn, vec![job], n, &queued, &metrics);
            }
        }
    }
    checkpointer.stop();
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "final WAL checkpoint failed; SQLite replays the WAL on the next open");
    }
    drop(conn);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

fn commit_group(
    conn: &mut Connection,
    group: Vec<Job>,
    records: usize,
    queued: &AtomicUsize,
    metrics: &StoreMetrics,
) {
    let started = Instant::now();
    // Optimistic: the whole group in one transaction, no savepoints (a savepoint per job
    // copies every page it touches once more). Records are validated before they are queued,
    // so a job fails only when the database does; then each job is retried alone, so one
    // failing job cannot fail the others.
    let outcomes = match run_jobs(conn, &group) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, jobs = group.len(), "group commit failed; retrying its jobs one by one");
            group
                .iter()
                .map(|job| match run_jobs(conn, std::slice::from_ref(job)) {
                    Ok(mut one) => one.pop().expect("one outcome per job"),
                    Err(e) => Outcome::Failed(e),
                })
                .collect()
        }
    };
    queued.fetch_sub(records, Ordering::AcqRel);
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    if records > 0 {
        metrics.group_records.observe(records as f64);
    }
    for (job, outcome) in group.into_iter().zip(outcomes) {
        match (job, outcome) {
            (Job::Telemetry(_, reply) | Job::Insight(_, reply), outcome) => {
                let _ = reply.send(outcome.unit());
            }
            (Job::Conversations(_, reply), outcome) => {
                let _ = reply.send(outcome.stored());
            }
            (Job::Purge { reply, .. }, outcome) => {
                let _ = reply.send(outcome.count());
            }
            (Job::Shutdown(_), _) => unreachable!("shutdown jobs never enter a group"),
        }
    }
}

/// What one job did, known only once its transaction committed.
enum Outcome {
    Done(usize),
    Stored(Vec<bool>),
    Failed(rusqlite::Error),
}

impl Outcome {
    fn unit(self) -> Result<(), Error> {
        self.count().map(|_| ())
    }

    fn count(self) -> Result<usize, Error> {
        match self {
            Outcome::Done(n) => Ok(n),
            Outcome::Stored(flags) => Ok(flags.len()),
            Outcome::Failed(e) => Err(Error::from(e)),
        }
    }

    fn stored(self) -> Result<Vec<bool>, Error> {
        match self {
            Outcome::Stored(flags) => Ok(flags),
            Outcome::Done(_) => Ok(Vec::new()),
            Outcome::Failed(e) => Err(Error::from(e)),
        }
    }
}

/// Runs `jobs` in one transaction; on any error nothing of them is committed.
fn run_jobs(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Outcome>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut orchs: HashMap<&str, OrchSeen> = HashMap::new();
    for job in jobs {
        let outcome = match job {
            Job::Telemetry(rows, _) => {
                insert_records(&tx, rows, &mut orchs)?;
                Outcome::Done(rows.len())
            }
            Job::Conversations(rows, _) => Outcome::Stored(insert_conversations(&tx, rows)?),
            Job::Insight(row, _) => Outcome::Done(tx.execute(
                "INSERT INTO insights (id, ts_unix, tier, focus, source, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, row.ts_unix, row.tier, row.focus, row.source, row.body],
            )?),
            Job::Purge {
                table,
                cutoff,
                limit,
                ..
            } => {
                let sql = match table {
                    Table::Telemetry => {
                        "DELETE FROM telemetry WHERE seq IN (SELECT seq FROM telemetry WHERE ts_unix < ?1 LIMIT ?2)"
                    }
                    Table::Conversations => {
                        "DELETE FROM conversations WHERE seq IN (SELECT seq FROM conversations WHERE ts_unix < ?1 LIMIT ?2)"
                    }
                };
                Outcome::Done(tx.execute(sql, params![cutoff, *limit as i64])?)
            }
            Job::Shutdown(_) => unreachable!("shutdown jobs never enter a group"),
        };
        outcomes.push(outcome);
    }
    if !orchs.is_empty() {
        // max(coalesce(a, b), coalesce(b, a)) is the larger of the two, ignoring a NULL.
        let mut stmt = tx.prepare_cached(
            "INSERT INTO orchs (orch_hash, first_seq, last_seq, last_heartbeat_ts) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (orch_hash) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), \
             last_heartbeat_ts = max(coalesce(last_heartbeat_ts, excluded.last_heartbeat_ts), \
                                     coalesce(excluded.last_heartbeat_ts, last_heartbeat_ts))",
        )?;
        for (orch, seen) in orchs {
            stmt.execute(params![
                orch,
                seen.first_seq,
                seen.last_seq,
                seen.last_heartbeat
            ])?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// What one group wrote for one ORCH, merged into the `orchs` table before the commit.
struct OrchSeen {
    first_seq: i64,
    last_seq: i64,
    last_heartbeat: Option<i64>,
}

fn insert_records<'a>(
    conn: &Connection,
    rows: &'a [NewRecord],
    orchs: &mut HashMap<&'a str, OrchSeen>,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(insert_statement())?;
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
        if let Some(orch) = &r.orch_hash {
            let seq = conn.last_insert_rowid();
            let heartbeat = (r.kind == HEARTBEAT_KIND).then_some(r.ts_unix);
            let seen = orchs.entry(orch).or_insert(OrchSeen {
                first_seq: seq,
                last_seq: seq,
                last_heartbeat: None,
            });
            seen.last_seq = seq;
            seen.last_heartbeat = seen.last_heartbeat.max(heartbeat);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::migrate;

    fn record(i: usize) -> NewRecord {
        NewRecord {
            id: format!("id-{i}"),
            ts_unix: 1,
            received_unix: 1,
            kind: "k".to_owned(),
            level: None,
            orch_hash: None,
            agent_path: None,
            tags_json: None,
            payload_json: "{}".to_owned(),
        }
    }

    fn insight(id: &str) -> InsightRow {
        InsightRow {
            id: id.to_owned(),
            ts_unix: 1,
            tier: "free".to_owned(),
            focus: "f".to_owned(),
            source: "heuristic".to_owned(),
            body: "{}".to_owned(),
        }
    }

    #[test]
    fn a_failing_job_fails_alone_and_the_rest_of_its_group_commits() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let (first, first_rx) = oneshot::channel();
        let (dup1, dup1_rx) = oneshot::channel();
        let (dup2, dup2_rx) = oneshot::channel();
        let (last, last_rx) = oneshot::channel();
        let group = vec![
            Job::Telemetry(vec![record(1), record(2)], first),
            Job::Insight(insight("same"), dup1),
            // Violates insights.id UNIQUE: fails the optimistic group transaction.
            Job::Insight(insight("same"), dup2),
            Job::Telemetry(vec![record(3)], last),
        ];
        let queued = AtomicUsize::new(3);
        commit_group(&mut conn, group, 3, &queued, &StoreMetrics::default());
        assert_eq!(queued.load(Ordering::Acquire), 0);
        assert!(first_rx.blocking_recv().unwrap().is_ok());
        assert!(dup1_rx.blocking_recv().unwrap().is_ok());
        assert!(dup2_rx.blocking_recv().unwrap().is_err());
        assert!(last_rx.blocking_recv().unwrap().is_ok());
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM telemetry", [], |r| r.get(0))
            .unwrap();
        let insights: i64 = conn
            .query_row("SELECT COUNT(*) FROM insights", [], |r| r.get(0))
            .unwrap();
        assert_eq!((rows, insights), (3, 1));
    }
}
