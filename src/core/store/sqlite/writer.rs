//! The single writer: one thread owns the write connection and group-commits whatever is
//! queued in one transaction, so concurrent requests share one commit. Small groups go to
//! the recent tail, which it moves into `telemetry` in bulk (store/tail.rs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::conversations::insert_conversations;
use super::tail::{self, Tail};
use crate::core::store::rollup::{Batch, Rollup};
use crate::core::store::{Error, StoreMetrics};
use crate::core::telemetry::conversation::NewConversation;
use crate::core::telemetry::{HEARTBEAT_KIND, NewRecord};

/// Most records one group commit takes before it commits and starts another.
const MAX_GROUP_RECORDS: usize = 50_000;

/// An insight as the writer stores it.
pub(super) use crate::core::store::InsightRecord as InsightRow;

/// What retention deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Telemetry,
    Conversations,
}

/// Work for the writer.
pub(super) enum Job {
    Telemetry(Batch, oneshot::Sender<Result<(), Error>>),
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
    /// Telemetry records: what decides between the tail and a direct insert.
    fn telemetry_records(&self) -> usize {
        match self {
            Job::Telemetry(r, _) => r.len(),
            _ => 0,
        }
    }

    fn records(&self) -> usize {
        match self {
            Job::Telemetry(r, _) => r.len(),
            Job::Conversations(r, _) => r.len(),
            _ => 0,
        }
    }
}

/// How long the writer keeps looking for the next job, yielding the CPU between looks,
/// before it blocks on the channel. Under load the next job is usually microseconds away; a
/// blocked writer must be woken by the submitter (a futex call) and, on a virtual machine
/// whose CPU went idle, wait for the hypervisor to run it again, while the requests behind
/// it wait too. `phoenix bench ingest` on the 2-CPU development VM, with other work running:
/// 61–74 µs of CPU per single-event request instead of 92–104, groups of 12–49 records
/// instead of 4–7. Idle, it costs at most this much CPU per commit.
const SPIN: Duration = Duration::from_micros(40);

/// How long a failed tail flush waits before it is tried again (the rows stay readable and
/// durable in the tail meanwhile).
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// Runs until a `Shutdown` job or until every sender is gone.
pub(super) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    metrics: StoreMetrics,
    checkpointer: Checkpointer,
) {
    let mut tail = match Tail::load(&conn) {
        Ok(tail) => tail,
        Err(e) => {
            // Without the next seq nothing can be written: fail every job instead of guessing.
            tracing::error!(error = %e, "cannot read the telemetry tail; refusing writes");
            refuse_all(rx, &e);
            return;
        }
    };
    let mut flusher = Flusher::default();
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let first = if let Some(job) = spin_for_job(&rx) {
            job
        } else if tail.rows > 0 {
            match rx.recv_timeout(tail::IDLE_FLUSH) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    flusher.flush(&mut conn, &mut tail, true);
                    checkpointer.committed(&conn);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            let Ok(job) = rx.recv() else { break };
            job
        };
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
            commit_group(&mut conn, &mut tail, group, records, &queued, &metrics);
            if tail.is_full() {
                flusher.flush(&mut conn, &mut tail, false);
            }
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
                commit_group(&mut conn, &mut tail, vec![job], n, &queued, &metrics);
            }
        }
    }
    // Leave the database at rest with everything in `telemetry`.
    flusher.flush(&mut conn, &mut tail, true);
    checkpointer.stop();
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "final WAL checkpoint failed; SQLite replays the WAL on the next open");
    }
    drop(conn);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// The next job if one arrives within [`SPIN`]; yields the CPU between looks.
fn spin_for_job(rx: &mpsc::Receiver<Job>) -> Option<Job> {
    let until = Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
            Err(_) => return None,
        }
    }
}

/// Answers every job with `e` until the channel closes.
fn refuse_all(rx: mpsc::Receiver<Job>, e: &rusqlite::Error) {
    let refusal = || Error::Corrupt(format!("the telemetry tail is unreadable: {e}"));
    while let Ok(job) = rx.recv() {
        match job {
            Job::Telemetry(_, reply) | Job::Insight(_, reply) => {
                let _ = reply.send(Err(refusal()));
            }
            Job::Conversations(_, reply) => {
                let _ = reply.send(Err(refusal()));
            }
            Job::Purge { reply, .. } => {
                let _ = reply.send(Err(refusal()));
            }
            Job::Shutdown(done) => {
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Flushes the tail in its own transaction, backing off after a failure.
#[derive(Default)]
struct Flusher {
    not_before: Option<Instant>,
}

impl Flusher {
    /// Moves the tail into `telemetry`; `force` ignores the back-off (idle and shutdown).
    fn flush(&mut self, conn: &mut Connection, tail: &mut Tail, force: bool) {
        if tail.rows == 0 || (!force && self.not_before.is_some_and(|t| Instant::now() < t)) {
            return;
        }
        let mut after = *tail;
        let result = conn.transaction().and_then(|tx| {
            after.flush(&tx)?;
            tx.commit()
        });
        match result {
            Ok(()) => {
                *tail = after;
                self.not_before = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = tail.rows, "moving the telemetry tail failed; its rows stay readable there");
                self.not_before = Some(Instant::now() + FLUSH_RETRY);
            }
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    tail: &mut Tail,
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
    let direct = group.iter().map(Job::telemetry_records).sum::<usize>() >= tail::DIRECT_RECORDS;
    let outcomes = match run_jobs(conn, tail, &group, direct) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, jobs = group.len(), "group commit failed; retrying its jobs one by one");
            group
                .iter()
                .map(|job| {
                    let direct = job.telemetry_records() >= tail::DIRECT_RECORDS;
                    match run_jobs(conn, tail, std::slice::from_ref(job), direct) {
                        Ok(mut one) => one.pop().expect("one outcome per job"),
                        Err(e) => Outcome::Failed(e),
                    }
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

/// Runs `jobs` in one transaction; on any error nothing of them is committed and `tail` is
/// left as it was. Records go to the tail, or with `direct` straight into `telemetry` after
/// the tail (which keeps every tail seq above every `telemetry` seq).
fn run_jobs(
    conn: &mut Connection,
    tail: &mut Tail,
    jobs: &[Job],
    direct: bool,
) -> Result<Vec<Outcome>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut after = *tail;
    if direct {
        after.flush(&tx)?;
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut orchs: HashMap<&str, OrchSeen> = HashMap::new();
    let mut paths: HashSet<&str> = HashSet::new();
    let mut rollup = Rollup::default();
    for job in jobs {
        let outcome = match job {
            Job::Telemetry(rows, _) => {
                insert_records(&tx, &mut after, rows, direct, &mut orchs)?;
                rollup.merge(&rows.rollup);
                paths.extend(rows.iter().filter_map(|r| r.agent_path.as_deref()));
                Outcome::Done(rows.len())
            }
            Job::Conversations(rows, _) => Outcome::Stored(insert_conversations(&tx, rows)?),
            Job::Insight(row, _) => Outcome::Done(tx.execute(
                "INSERT INTO insights (id, ts_unix, tier, focus, source, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, row.ts_unix, row.tier, row.focus, row.source, row.body],
            )?),
            Job::Purge {
                table: Table::Telemetry,
                cutoff,
                limit,
                ..
            } => {
                let old = tx.execute(
                    "DELETE FROM telemetry WHERE seq IN (SELECT seq FROM telemetry WHERE ts_unix < ?1 LIMIT ?2)",
                    params![cutoff, *limit as i64],
                )?;
                // The tail is small and unindexed: a scan of it is cheap.
                let recent = tx.execute(
                    "DELETE FROM telemetry_recent WHERE seq IN \
                     (SELECT seq FROM telemetry_recent WHERE ts_unix < ?1 LIMIT ?2)",
                    params![cutoff, (*limit - old) as i64],
                )?;
                after.rows -= recent;
                // Cells go with the last minute they count.
                tx.execute(
                    "DELETE FROM rollup WHERE minute + ?2 <= ?1",
                    params![cutoff, crate::core::store::rollup::MINUTE],
                )?;
                Outcome::Done(old + recent)
            }
            Job::Purge {
                table: Table::Conversations,
                cutoff,
                limit,
                ..
            } => Outcome::Done(tx.execute(
                "DELETE FROM conversations WHERE seq IN (SELECT seq FROM conversations WHERE ts_unix < ?1 LIMIT ?2)",
                params![cutoff, *limit as i64],
            )?),
            Job::Shutdown(_) => unreachable!("shutdown jobs never enter a group"),
        };
        outcomes.push(outcome);
    }
    if !orchs.is_empty() {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO orchs (orch_hash, first_seq, last_seq, last_heartbeat_ts) VALUES (?1, ?2, ?3, ?4) {}",
            tail::ORCHS_MERGE
        ))?;
        for (orch, seen) in orchs {
            stmt.execute(params![
                orch,
                seen.first_seq,
                seen.last_seq,
                seen.last_heartbeat
            ])?;
        }
    }
    if !paths.is_empty() {
        // What agent-prefix reads walk: every path ever stored (a handful per group).
        let mut stmt =
            tx.prepare_cached("INSERT OR IGNORE INTO agent_paths (agent_path) VALUES (?1)")?;
        for path in paths {
            stmt.execute([path])?;
        }
    }
    if !rollup.is_empty() {
        super::rollup::merge(&tx, &rollup)?;
    }
    tx.commit()?;
    *tail = after;
    Ok(outcomes)
}

/// What one direct group wrote for one ORCH, merged into the `orchs` table before the commit.
struct OrchSeen {
    first_seq: i64,
    last_seq: i64,
    last_heartbeat: Option<i64>,
}

fn insert_records<'a>(
    conn: &Connection,
    tail: &mut Tail,
    rows: &'a [NewRecord],
    direct: bool,
    orchs: &mut HashMap<&'a str, OrchSeen>,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(if direct {
        "INSERT INTO telemetry (seq, id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    } else {
        "INSERT INTO telemetry_recent (seq, id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    })?;
    for r in rows {
        let seq = tail.take_seq();
        stmt.execute(params![
            seq,
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
        if !direct {
            // `orchs` learns about tail rows when they are flushed.
            tail.rows += 1;
            continue;
        }
        if let Some(orch) = &r.orch_hash {
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
    use crate::core::store::sqlite::migrations::migrate;

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
            Job::Telemetry(Batch::new(vec![record(1), record(2)]), first),
            Job::Insight(insight("same"), dup1),
            // Violates insights.id UNIQUE: fails the optimistic group transaction.
            Job::Insight(insight("same"), dup2),
            Job::Telemetry(Batch::new(vec![record(3)]), last),
        ];
        let queued = AtomicUsize::new(3);
        let mut tail = Tail::load(&conn).unwrap();
        commit_group(
            &mut conn,
            &mut tail,
            group,
            3,
            &queued,
            &StoreMetrics::default(),
        );
        assert_eq!(queued.load(Ordering::Acquire), 0);
        assert!(first_rx.blocking_recv().unwrap().is_ok());
        assert!(dup1_rx.blocking_recv().unwrap().is_ok());
        assert!(dup2_rx.blocking_recv().unwrap().is_err());
        assert!(last_rx.blocking_recv().unwrap().is_ok());
        let rows: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM telemetry) + (SELECT COUNT(*) FROM telemetry_recent)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let insights: i64 = conn
            .query_row("SELECT COUNT(*) FROM insights", [], |r| r.get(0))
            .unwrap();
        assert_eq!((rows, insights), (3, 1));
    }
}
