//! The single writer: one thread owns the write connection and group-commits whatever is
//! queued in one transaction, so concurrent requests share one commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::{Error, StoreMetrics, sqlite::insert_statement};
use crate::core::telemetry::NewRecord;

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

/// Work for the writer.
pub(super) enum Job {
    Telemetry(Vec<NewRecord>, oneshot::Sender<Result<(), Error>>),
    Insight(InsightRow, oneshot::Sender<Result<(), Error>>),
    Purge {
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
            _ => 0,
        }
    }
}

/// What a job produced inside the transaction, replied after the commit.
enum Done {
    Unit(oneshot::Sender<Result<(), Error>>, Result<(), Error>),
    Count(oneshot::Sender<Result<usize, Error>>, Result<usize, Error>),
}

/// Runs until a `Shutdown` job or until every sender is gone.
pub(super) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    metrics: StoreMetrics,
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
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
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
    let mut done = Vec::with_capacity(group.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let mut tx = conn.transaction()?;
        for job in group {
            // A savepoint per job: one failing request does not fail the others in the group.
            let sp = tx.savepoint()?;
            match job {
                Job::Telemetry(rows, reply) => {
                    let r = insert_records(&sp, &rows);
                    finish(sp, r.is_ok())?;
                    done.push(Done::Unit(reply, r.map_err(Error::from)));
                }
                Job::Insight(row, reply) => {
                    let r = sp
                        .execute(
                            "INSERT INTO insights (id, ts_unix, tier, focus, source, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![row.id, row.ts_unix, row.tier, row.focus, row.source, row.body],
                        )
                        .map(|_| ());
                    finish(sp, r.is_ok())?;
                    done.push(Done::Unit(reply, r.map_err(Error::from)));
                }
                Job::Purge {
                    cutoff,
                    limit,
                    reply,
                } => {
                    let r = sp.execute(
                        "DELETE FROM telemetry WHERE seq IN (SELECT seq FROM telemetry WHERE ts_unix < ?1 LIMIT ?2)",
                        params![cutoff, limit as i64],
                    );
                    finish(sp, r.is_ok())?;
                    done.push(Done::Count(reply, r.map_err(Error::from)));
                }
                Job::Shutdown(_) => unreachable!("shutdown jobs never enter a group"),
            }
        }
        tx.commit()
    })();
    queued.fetch_sub(records, Ordering::AcqRel);
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    if records > 0 {
        metrics.group_records.observe(records as f64);
    }
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "group commit failed; every write in the group is reported as failed");
    }
    for d in done {
        match d {
            Done::Unit(reply, r) => {
                let _ = reply.send(match &outcome {
                    Ok(()) => r,
                    Err(e) => Err(Error::Corrupt(format!("commit failed: {e}"))),
                });
            }
            Done::Count(reply, r) => {
                let _ = reply.send(match &outcome {
                    Ok(()) => r,
                    Err(e) => Err(Error::Corrupt(format!("commit failed: {e}"))),
                });
            }
        }
    }
}

/// Releases a job's savepoint, or rolls it back when the job failed.
fn finish(sp: rusqlite::Savepoint<'_>, ok: bool) -> Result<(), rusqlite::Error> {
    if ok { sp.commit() } else { sp.finish() }
}

fn insert_records(conn: &Connection, rows: &[NewRecord]) -> Result<(), rusqlite::Error> {
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
    }
    Ok(())
}
