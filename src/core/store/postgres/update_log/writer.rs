//! The update log's bulk writer: one task per process takes whatever deliveries, acks and
//! subscriber sightings are queued and commits them in one transaction of three multi-row
//! statements (`unnest` arrays), so 10,000 acks of one update cost a handful of round trips.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::super::Error as PgError;
use crate::core::shared::tier::Tier;
use crate::core::store::update_log::AckRow;
use crate::core::updates::protocol::AckStatus;

/// Most jobs one group commit takes before it commits and starts another.
const MAX_GROUP_JOBS: usize = 20_000;

/// Work for the writer.
pub(super) enum Job {
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

/// Runs until a `Shutdown` job or until every sender is gone.
pub(super) async fn run(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<Job>,
    queued: Arc<AtomicUsize>,
) {
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut group = Vec::new();
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
            commit_group(&pool, group, &queued).await;
        }
    }
    // Shutting down: refuse new rows, then keep the promise to everything already queued.
    rx.close();
    let mut waiting: Vec<oneshot::Sender<()>> = stop.into_iter().collect();
    let mut group = Vec::new();
    while let Ok(job) = rx.try_recv() {
        match job {
            Job::Shutdown(done) => waiting.push(done),
            job => group.push(job),
        }
    }
    if !group.is_empty() {
        commit_group(&pool, group, &queued).await;
    }
    for done in waiting {
        let _ = done.send(());
    }
}

/// A group's rows, folded so each key appears once (one statement may not update a row
/// twice), as the columns the statements unnest.
#[derive(Default)]
struct Rows {
    delivery_ids: Vec<String>,
    delivery_orchs: Vec<String>,
    delivery_ts: Vec<i64>,
    ack_ids: Vec<String>,
    ack_orchs: Vec<String>,
    ack_status: Vec<&'static str>,
    ack_errors: Vec<Option<String>>,
    ack_ts: Vec<i64>,
    sub_orchs: Vec<String>,
    sub_paths: Vec<String>,
    sub_tiers: Vec<&'static str>,
    sub_first: Vec<i64>,
    sub_last: Vec<i64>,
}

/// A sighting folded over a group: the first time and the latest tier and time.
struct Sighting {
    tier: Tier,
    first: i64,
    last: i64,
}

impl Rows {
    /// Folds the group in queue order. Acks fold as the database applies them one by one
    /// (a `skipped` replaces only a `skipped`), so folding first changes nothing.
    fn fold(group: Vec<Job>, flushes: &mut Vec<oneshot::Sender<()>>) -> (Rows, usize) {
        let mut bulk = 0;
        let mut deliveries: HashMap<(Arc<str>, Arc<str>), i64> = HashMap::new();
        let mut acks: HashMap<(String, Arc<str>), AckRow> = HashMap::new();
        let mut sightings: HashMap<(Arc<str>, Arc<str>), Sighting> = HashMap::new();
        for job in group {
            match job {
                Job::Delivery {
                    update_id,
                    orch_hash,
                    ts_unix,
                } => {
                    bulk += 1;
                    deliveries.entry((update_id, orch_hash)).or_insert(ts_unix);
                }
                Job::Ack(a) => {
                    bulk += 1;
                    match acks.entry((a.update_id.clone(), a.orch_hash.clone())) {
                        Entry::Vacant(v) => {
                            v.insert(a);
                        }
                        Entry::Occupied(mut o) => {
                            let hides_outcome = a.status == AckStatus::Skipped
                                && o.get().status != AckStatus::Skipped;
                            if !hides_outcome {
                                o.insert(a);
                            }
                        }
                    }
                }
                Job::Subscriber {
                    orch_hash,
                    agent_path,
                    tier,
                    ts_unix,
                } => {
                    bulk += 1;
                    sightings
                        .entry((orch_hash, agent_path))
                        .and_modify(|s| {
                            s.tier = tier;
                            s.last = ts_unix;
                        })
                        .or_insert(Sighting {
                            tier,
                            first: ts_unix,
                            last: ts_unix,
                        });
                }
                Job::Flush(done) => flushes.push(done),
                Job::Shutdown(_) => unreachable!("shutdown jobs never enter a group"),
            }
        }
        let mut rows = Rows::default();
        for ((id, orch), ts) in deliveries {
            rows.delivery_ids.push(id.to_string());
            rows.delivery_orchs.push(orch.to_string());
            rows.delivery_ts.push(ts);
        }
        for (_, a) in acks {
            rows.ack_ids.push(a.update_id);
            rows.ack_orchs.push(a.orch_hash.to_string());
            rows.ack_status.push(a.status.as_str());
            rows.ack_errors.push(a.error);
            rows.ack_ts.push(a.ts_unix);
        }
        for ((orch, path), s) in sightings {
            rows.sub_orchs.push(orch.to_string());
            rows.sub_paths.push(path.to_string());
            rows.sub_tiers.push(s.tier.as_str());
            rows.sub_first.push(s.first);
            rows.sub_last.push(s.last);
        }
        (rows, bulk)
    }
}

async fn commit_group(pool: &Pool, group: Vec<Job>, queued: &AtomicUsize) {
    let started = Instant::now();
    let jobs = group.len();
    let mut flushes = Vec::new();
    let (rows, bulk) = Rows::fold(group, &mut flushes);
    let outcome = commit(pool, &rows).await;
    queued.fetch_sub(bulk, Ordering::AcqRel);
    tracing::trace!(
        jobs,
        micros = started.elapsed().as_micros() as u64,
        "update-log group commit"
    );
    if let Err(e) = &outcome {
        tracing::error!(error = %e, rows = bulk, "update-log commit failed; the group's rows are lost");
    }
    for done in flushes {
        let _ = done.send(());
    }
}

async fn commit(pool: &Pool, rows: &Rows) -> Result<(), PgError> {
    if rows.delivery_ids.is_empty() && rows.ack_ids.is_empty() && rows.sub_orchs.is_empty() {
        return Ok(());
    }
    let pg = |e: tokio_postgres::Error| PgError::from_pg(&e);
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(pg)?;
    if !rows.delivery_ids.is_empty() {
        tx.execute(
            "INSERT INTO deliveries (update_id, orch_hash, ts_unix) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
             ON CONFLICT (update_id, orch_hash) DO NOTHING",
            &[&rows.delivery_ids, &rows.delivery_orchs, &rows.delivery_ts],
        )
        .await
        .map_err(pg)?;
    }
    if !rows.ack_ids.is_empty() {
        // Acks of updates not in the log are left out; a `skipped` never replaces an outcome.
        tx.execute(
            "INSERT INTO acks (update_id, orch_hash, status, error, ts_unix) \
             SELECT a.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
               AS a(update_id, orch_hash, status, error, ts_unix) \
             WHERE EXISTS (SELECT 1 FROM updates u WHERE u.update_id = a.update_id) \
             ON CONFLICT (update_id, orch_hash) DO UPDATE \
               SET status = excluded.status, error = excluded.error, ts_unix = excluded.ts_unix \
               WHERE NOT (excluded.status = 'skipped' AND acks.status <> 'skipped')",
            &[
                &rows.ack_ids,
                &rows.ack_orchs,
                &rows.ack_status,
                &rows.ack_errors,
                &rows.ack_ts,
            ],
        )
        .await
        .map_err(pg)?;
    }
    if !rows.sub_orchs.is_empty() {
        tx.execute(
            "INSERT INTO subscribers (orch_hash, agent_path, tier, first_seen, last_seen) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (orch_hash, agent_path) DO UPDATE \
               SET tier = excluded.tier, last_seen = excluded.last_seen",
            &[
                &rows.sub_orchs,
                &rows.sub_paths,
                &rows.sub_tiers,
                &rows.sub_first,
                &rows.sub_last,
            ],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(orch: &str, status: AckStatus, ts_unix: i64) -> Job {
        Job::Ack(AckRow {
            update_id: "u".to_owned(),
            orch_hash: Arc::from(orch),
            status,
            error: None,
            ts_unix,
        })
    }

    #[test]
    fn a_group_folds_as_its_rows_would_apply_one_by_one() {
        let sighting = |tier, ts_unix| Job::Subscriber {
            orch_hash: Arc::from("o"),
            agent_path: Arc::from("p"),
            tier,
            ts_unix,
        };
        let delivery = |ts_unix| Job::Delivery {
            update_id: Arc::from("u"),
            orch_hash: Arc::from("o"),
            ts_unix,
        };
        let group = vec![
            ack("a", AckStatus::Applied, 1),
            ack("a", AckStatus::Skipped, 2),
            ack("b", AckStatus::Skipped, 1),
            ack("b", AckStatus::Rejected, 2),
            ack("c", AckStatus::Skipped, 1),
            ack("c", AckStatus::Skipped, 3),
            sighting(Tier::Free, 5),
            sighting(Tier::Premium, 7),
            delivery(1),
            delivery(2),
        ];
        let mut flushes = Vec::new();
        let (rows, bulk) = Rows::fold(group, &mut flushes);
        assert_eq!(bulk, 10);
        let mut acks: Vec<_> = rows
            .ack_orchs
            .iter()
            .zip(&rows.ack_status)
            .zip(&rows.ack_ts)
            .map(|((o, s), t)| (o.as_str(), *s, *t))
            .collect();
        acks.sort_unstable();
        assert_eq!(
            acks,
            [
                ("a", "applied", 1),
                ("b", "rejected", 2),
                ("c", "skipped", 3)
            ],
            "a later skipped never hides an outcome"
        );
        assert_eq!(
            (rows.sub_tiers, rows.sub_first, rows.sub_last),
            (vec!["premium"], vec![5], vec![7])
        );
        assert_eq!(
            rows.delivery_ts,
            [1],
            "a delivery counts once, its first time"
        );
    }
}
