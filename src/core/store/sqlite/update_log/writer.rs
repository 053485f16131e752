//! The update log's single writer: one thread owns the write connection and commits whatever
//! is queued (publishes, widenings, and the frequent delivery / ack / subscriber rows) in one
//! transaction, so 10,000 acks of one update cost a handful of commits, not 10,000.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::percent_from_sql;
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::{AckRow, Error, StoredUpdate, Widening};
use crate::core::updates::UpdateEnvelope;

/// Most jobs one group commit takes before it commits and starts another.
const MAX_GROUP_JOBS: usize = 20_000;

/// Work for the writer.
pub(super) enum Job {
    /// A new update: the writer assigns the next seq.
    Append {
        envelope: UpdateEnvelope,
        target_orch_hash: Option<String>,
        rolls_back: Option<String>,
        reply: oneshot::Sender<Result<UpdateEnvelope, Error>>,
    },
    /// Raise an update's rollout percentage.
    Widen {
        update_id: String,
        percent: u8,
        ts_unix: i64,
        reply: oneshot::Sender<Result<Widening, Error>>,
    },
    /// An update was sent to an orch (counted once per pair).
    Delivery {
        update_id: Arc<str>,
        orch_hash: Arc<str>,
        ts_unix: i64,
    },
    /// What an orch did with an update (latest wins, but `skipped` never hides an outcome).
    Ack(AckRow),
    /// A subscriber said hello.
    Subscriber {
        orch_hash: Arc<str>,
        agent_path: Arc<str>,
        tier: Tier,
        ts_unix: i64,
    },
    /// Answer once everything queued before this is committed.
    Flush(oneshot::Sender<()>),
    /// Commit everything queued before this, then stop.
    Shutdown(oneshot::Sender<()>),
}

impl Job {
    /// Whether the job counts against the bounded queue (the frequent, droppable kinds).
    pub(super) fn is_bulk(&self) -> bool {
        matches!(
            self,
            Job::Delivery { .. } | Job::Ack(_) | Job::Subscriber { .. }
        )
    }
}

/// Replies held until the group's commit decides their fate.
enum Reply {
    Append(
        oneshot::Sender<Result<UpdateEnvelope, Error>>,
        Result<UpdateEnvelope, Error>,
    ),
    Widen(
        oneshot::Sender<Result<Widening, Error>>,
        Result<Widening, Error>,
    ),
    Flush(oneshot::Sender<()>),
}

/// Runs until a `Shutdown` job or until every sender is gone.
pub(super) fn run(mut conn: Connection, rx: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>) {
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let Ok(first) = rx.recv() else { break };
        let mut group = Vec::with_capacity(64);
        match first {
            Job::Shutdown(done) => stop = Some(done),
            job => group.push(job),
        }
        while stop.is_none() && group.len() < MAX_GROUP_JOBS {
            match rx.try_recv() {
                Ok(Job::Shutdown(done)) => stop = Some(done),
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&mut conn, group, &queued);
        }
    }
    // Shutting down: keep the promise to everything already queued.
    let rest: Vec<Job> = rx.try_iter().collect();
    let mut waiting = Vec::new();
    let mut group = Vec::new();
    for job in rest {
        match job {
            Job::Shutdown(done) => waiting.push(done),
            job => group.push(job),
        }
    }
    if !group.is_empty() {
        commit_group(&mut conn, group, &queued);
    }
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    drop(conn);
    for done in waiting.into_iter().chain(stop) {
        let _ = done.send(());
    }
}

fn commit_group(conn: &mut Connection, group: Vec<Job>, queued: &AtomicUsize) {
    let started = Instant::now();
    let jobs = group.len();
    let bulk = group.iter().filter(|j| j.is_bulk()).count();
    let mut replies = Vec::new();
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let mut tx = conn.transaction()?;
        for job in group {
            match job {
                Job::Append {
                    envelope,
                    target_orch_hash,
                    rolls_back,
                    reply,
                } => {
                    // A savepoint each, so a failed publish does not take the group down.
                    let sp = tx.savepoint()?;
                    let r = append(&sp, envelope, target_orch_hash, rolls_back);
                    finish(sp, r.is_ok())?;
                    replies.push(Reply::Append(reply, r));
                }
                Job::Widen {
                    update_id,
                    percent,
                    ts_unix,
                    reply,
                } => {
                    let sp = tx.savepoint()?;
                    let r = widen(&sp, &update_id, percent, ts_unix);
                    finish(sp, r.is_ok())?;
                    replies.push(Reply::Widen(reply, r));
                }
                Job::Delivery {
                    update_id,
                    orch_hash,
                    ts_unix,
                } => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO deliveries (update_id, orch_hash, ts_unix) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&*update_id, &*orch_hash, ts_unix])?;
                }
                Job::Ack(a) => {
                    tx.prepare_cached(
                        "INSERT INTO acks (update_id, orch_hash, status, error, ts_unix)
                         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM updates WHERE update_id = ?1)
                         ON CONFLICT (update_id, orch_hash) DO UPDATE
                           SET status = excluded.status, error = excluded.error, ts_unix = excluded.ts_unix
                           WHERE NOT (excluded.status = 'skipped' AND acks.status <> 'skipped')",
                    )?
                    .execute(params![
                        a.update_id,
                        &*a.orch_hash,
                        a.status.as_str(),
                        a.error,
                        a.ts_unix
                    ])?;
                }
                Job::Subscriber {
                    orch_hash,
                    agent_path,
                    tier,
                    ts_unix,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO subscribers (orch_hash, agent_path, tier, first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?4)
                         ON CONFLICT (orch_hash, agent_path) DO UPDATE
                           SET tier = excluded.tier, last_seen = excluded.last_seen",
                    )?
                    .execute(params![&*orch_hash, &*agent_path, tier.as_str(), ts_unix])?;
                }
                Job::Flush(done) => replies.push(Reply::Flush(done)),
                Job::Shutdown(_) => unreachable!("shutdown jobs never enter a group"),
            }
        }
        tx.commit()
    })();
    queued.fetch_sub(bulk, Ordering::AcqRel);
    tracing::trace!(
        jobs,
        micros = started.elapsed().as_micros() as u64,
        "update-log group commit"
    );
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs, "update-log commit failed; the group's writes are lost");
    }
    let failed = |e: &rusqlite::Error| Error::Corrupt(format!("commit failed: {e}"));
    for r in replies {
        match r {
            Reply::Append(tx, r) => {
                let _ = tx.send(match &outcome {
                    Ok(()) => r,
                    Err(e) => Err(failed(e)),
                });
            }
            Reply::Widen(tx, r) => {
                let _ = tx.send(match &outcome {
                    Ok(()) => r,
                    Err(e) => Err(failed(e)),
                });
            }
            Reply::Flush(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// Releases a job's savepoint, or rolls it back when the job failed.
fn finish(sp: rusqlite::Savepoint<'_>, ok: bool) -> Result<(), rusqlite::Error> {
    if ok { sp.commit() } else { sp.finish() }
}

fn append(
    conn: &Connection,
    mut envelope: UpdateEnvelope,
    target_orch_hash: Option<String>,
    rolls_back: Option<String>,
) -> Result<UpdateEnvelope, Error> {
    let last: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM updates", [], |r| {
        r.get(0)
    })?;
    envelope.seq = last as u64 + 1;
    let json = serde_json::to_string(&envelope)
        .map_err(|e| Error::Corrupt(format!("cannot encode envelope: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO updates (seq, update_id, ts_unix, update_type, target_orch_hash, rolls_back,
                              initial_percent, rollout_percent, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )?
    .execute(params![
        envelope.seq as i64,
        envelope.update_id,
        envelope.ts_unix,
        envelope.update_type.as_str(),
        target_orch_hash,
        rolls_back,
        envelope.rollout_percent.map(i64::from),
        json
    ])?;
    Ok(envelope)
}

fn widen(conn: &Connection, update_id: &str, percent: u8, ts_unix: i64) -> Result<Widening, Error> {
    let row = conn
        .query_row(
            "SELECT envelope, initial_percent, rollout_percent, target_orch_hash FROM updates WHERE update_id = ?1",
            [update_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((json, initial, current, target_orch_hash)) = row else {
        return Err(Error::NotFound(update_id.to_owned()));
    };
    let current = percent_from_sql(current);
    match current {
        Some(c) if percent > c => {}
        _ => {
            return Err(Error::NotWider {
                current,
                requested: percent,
            });
        }
    }
    conn.execute(
        "UPDATE updates SET rollout_percent = ?2 WHERE update_id = ?1",
        params![update_id, i64::from(percent)],
    )?;
    conn.execute(
        "INSERT INTO widenings (update_id, from_percent, to_percent, ts_unix) VALUES (?1, ?2, ?3, ?4)",
        params![update_id, current.map(i64::from), i64::from(percent), ts_unix],
    )?;
    let widen_seq = conn.last_insert_rowid() as u64;
    let mut envelope: UpdateEnvelope = serde_json::from_str(&json)
        .map_err(|e| Error::Corrupt(format!("update {update_id}: {e}")))?;
    envelope.rollout_percent = Some(percent);
    Ok(Widening {
        update: StoredUpdate {
            envelope,
            initial_percent: percent_from_sql(initial),
            target_orch_hash,
        },
        from_percent: current,
        widen_seq,
    })
}
