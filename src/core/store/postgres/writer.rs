//! The PostgreSQL writer: one task per process group-commits whatever is queued — telemetry
//! through one binary `COPY`, conversations, insights, heartbeats — in one transaction, and
//! answers every job of the group after the commit; up to [`MAX_IN_FLIGHT`] groups commit
//! at once. Several processes may write at once:
//! each has its own writer and `seq` comes from one database sequence.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::rollup::{Pending, insert_pending_sql};
use super::{Error, partitions};
use crate::core::store::Error as StoreError;
use crate::core::store::rollup::{Batch, Rollup};
use crate::core::telemetry::NewRecord;
use crate::core::telemetry::conversation::{Feedback, NewConversation};

/// Most records one group commit takes before it commits and starts another.
const MAX_GROUP_RECORDS: usize = 50_000;

/// An insight as stored: its listing columns and the whole JSON body.
#[derive(Debug, Clone)]
pub struct InsightRow {
    /// Identifier.
    pub id: String,
    /// When it was made.
    pub ts_unix: i64,
    /// `free` or `premium`.
    pub tier: String,
    /// Focus.
    pub focus: String,
    /// Who wrote the summary.
    pub source: String,
    /// The whole insight as JSON.
    pub body: String,
}

/// Where the writer answers a job: the store's commit channel itself, so a caller waits on
/// the writer's reply directly (no task in between to translate the error).
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer.
pub enum Job {
    /// Records to store; answered after the commit.
    Telemetry(Batch, Reply<()>),
    /// Conversations; answered with one flag per row: stored, or already stored.
    Conversations(Vec<NewConversation>, Reply<Vec<bool>>),
    /// One insight.
    Insight(InsightRow, Reply<()>),
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

/// What the writer shares with the store that feeds it.
pub struct WriterState {
    /// Records queued and not yet answered.
    pub queued: Arc<AtomicUsize>,
    /// Seconds per group commit.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Records per group commit.
    pub group_records: prometheus_client::metrics::histogram::Histogram,
}

/// Agent paths this process knows are in `agent_paths` (shared by its commits in flight).
type KnownPaths = Arc<std::sync::Mutex<HashSet<String>>>;

/// Group commits in flight at once. A commit spends most of its time waiting for the WAL
/// flush; while one waits, the next group is copied, and PostgreSQL flushes the commits
/// that arrive together at once. Records of one group are answered together, after their
/// own commit; groups may commit out of order (each record's `seq` is from the sequence).
pub const MAX_IN_FLIGHT: usize = 2;

/// Runs until a `Shutdown` job or until every sender is gone; on the way out, waits for the
/// commits in flight.
pub async fn run(pool: Pool, mut rx: mpsc::Receiver<Job>, state: WriterState) {
    let known_paths: KnownPaths = Arc::default();
    let state = Arc::new(state);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut stop = None;
    while stop.is_none() {
        // A free slot first, so the next group gathers what arrives meanwhile.
        while in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.join_next().await;
        }
        let first = tokio::select! {
            job = rx.recv() => job,
            // Reap finished commits while idle, so `join_next` above never waits on them.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
        };
        let Some(first) = first else {
            break;
        };
        let mut group = Vec::new();
        let mut records = first.records();
        match first {
            Job::Shutdown(reply) => stop = Some(reply),
            job => group.push(job),
        }
        while stop.is_none() && records < MAX_GROUP_RECORDS {
            match rx.try_recv() {
                Ok(Job::Shutdown(reply)) => stop = Some(reply),
                Ok(job) => {
                    records += job.records();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        if group.is_empty() {
            continue;
        }
        let (pool, known_paths, state) = (pool.clone(), known_paths.clone(), state.clone());
        in_flight.spawn(async move {
            let started = Instant::now();
            let outcome = commit_with_partitions(&pool, &group, &known_paths).await;
            state
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            state.group_records.observe(records as f64);
            state.queued.fetch_sub(records, Ordering::AcqRel);
            answer(group, outcome);
        });
    }
    // Everything queued before the shutdown is answered before it is.
    while in_flight.join_next().await.is_some() {}
    if let Some(reply) = stop {
        let _ = reply.send(());
    }
}

/// The stored flags of the conversation jobs, in order, when the commit succeeded.
type Outcome = Result<Vec<Vec<bool>>, Error>;

fn answer(group: Vec<Job>, outcome: Outcome) {
    let mut flags = match &outcome {
        Ok(f) => f.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let err = |e: &Error| StoreError::from(e.clone());
    for job in group {
        match (job, &outcome) {
            (Job::Telemetry(_, reply), Ok(_)) => {
                let _ = reply.send(Ok(()));
            }
            (Job::Telemetry(_, reply), Err(e)) => {
                let _ = reply.send(Err(err(e)));
            }
            (Job::Conversations(_, reply), Ok(_)) => {
                let _ = reply.send(Ok(flags.next().unwrap_or_default()));
            }
            (Job::Conversations(_, reply), Err(e)) => {
                let _ = reply.send(Err(err(e)));
            }
            (Job::Insight(_, reply), Ok(_)) => {
                let _ = reply.send(Ok(()));
            }
            (Job::Insight(_, reply), Err(e)) => {
                let _ = reply.send(Err(err(e)));
            }
            (Job::Shutdown(reply), _) => {
                let _ = reply.send(());
            }
        }
    }
}

/// How a group's telemetry goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    /// Plain inserts (COPY for large groups): the fast path.
    Fresh,
    /// Skipping records already stored, by id: for a group that holds a redelivered record.
    SkipStored,
}

/// Commits the group; a record whose day has no partition yet makes the partition, and a
/// record already stored (redelivered) makes the group skip stored ids; then the group is
/// committed again (nothing of the failed attempt was kept).
async fn commit_with_partitions(pool: &Pool, group: &[Job], known_paths: &KnownPaths) -> Outcome {
    let mut insert = Insert::Fresh;
    let mut partitions_made = false;
    loop {
        match commit(pool, group, known_paths, insert).await {
            Err(CommitError::NoPartition) if !partitions_made => {
                let times: Vec<i64> = group
                    .iter()
                    .filter_map(|j| match j {
                        Job::Telemetry(r, _) => Some(r.iter().map(|r| r.received_unix)),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                partitions::ensure(pool, &times).await?;
                partitions_made = true;
            }
            Err(CommitError::Duplicate) if insert == Insert::Fresh => {
                tracing::debug!("a group holds records already stored; storing the others");
                insert = Insert::SkipStored;
            }
            other => return other.map_err(CommitError::into_error),
        }
    }
}

enum CommitError {
    NoPartition,
    /// A record id (with its `received_unix`) is already stored: the group holds a record
    /// delivered again (the ingest buffer's redelivery after a crash between commit and ack).
    Duplicate,
    Other(Error),
}

impl CommitError {
    fn into_error(self) -> Error {
        match self {
            CommitError::NoPartition => {
                Error::Query("no telemetry partition for a record's day".to_owned())
            }
            CommitError::Duplicate => {
                Error::Query("a record id is stored twice in one group".to_owned())
            }
            CommitError::Other(e) => e,
        }
    }
}

impl From<tokio_postgres::Error> for CommitError {
    fn from(e: tokio_postgres::Error) -> CommitError {
        // "no partition of relation "telemetry" found for row"
        let no_partition = e.as_db_error().is_some_and(|db| {
            db.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION
                && db.message().contains("no partition")
        });
        let duplicate = e.as_db_error().is_some_and(|db| {
            db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                && (db.table().is_some_and(|t| t.starts_with("telemetry"))
                    || db.constraint().is_some_and(|c| c.starts_with("telemetry")))
        });
        if no_partition {
            CommitError::NoPartition
        } else if duplicate {
            CommitError::Duplicate
        } else {
            CommitError::Other(Error::from_pg(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for CommitError {
    fn from(e: deadpool_postgres::PoolError) -> CommitError {
        CommitError::Other(e.into())
    }
}

async fn commit(
    pool: &Pool,
    group: &[Job],
    known_paths: &KnownPaths,
    insert: Insert,
) -> Result<Vec<Vec<bool>>, CommitError> {
    let mut client = pool.get().await?;
    let records: Vec<&NewRecord> = group
        .iter()
        .filter_map(|j| match j {
            Job::Telemetry(r, _) => Some(r.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    // Sorted, so concurrent inserts of the same new paths lock them in one order.
    let new_paths: Vec<String> = records
        .iter()
        .filter_map(|r| r.agent_path.as_deref())
        .filter(|p| !known_paths.lock().expect("paths lock").contains(*p))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rollup = Rollup::default();
    for job in group {
        if let Job::Telemetry(batch, _) = job {
            rollup.merge(&batch.rollup);
        }
    }
    let telemetry_only = group.iter().all(|j| matches!(j, Job::Telemetry(..)));
    if telemetry_only && records.len() <= INSERT_UP_TO && insert == Insert::Fresh {
        // The common small group (single events from many agents): one statement, which
        // commits by itself, instead of BEGIN, INSERTs and COMMIT, each a round trip.
        insert_small_group(&client, &records, &rollup, &new_paths, insert).await?;
        known_paths.lock().expect("paths lock").extend(new_paths);
        return Ok(Vec::new());
    }
    let tx = client.transaction().await?;
    if !records.is_empty() {
        if let Some(stored) = copy_records(&tx, &records, insert).await? {
            // Redelivered records were skipped: count only the ones stored now.
            let fresh: Vec<NewRecord> = records
                .iter()
                .filter(|r| stored.contains(r.id.as_str()))
                .map(|r| (*r).clone())
                .collect();
            rollup = Rollup::of(&fresh);
        }
        record_heartbeats(&tx, &rollup).await?;
        if let Some(pending) = Pending::of(&rollup) {
            tx.execute(&insert_pending_sql(1), &pending.params())
                .await?;
        }
        if !new_paths.is_empty() {
            tx.execute(
                "INSERT INTO agent_paths SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[&new_paths],
            )
            .await?;
        }
    }
    let mut flags = Vec::new();
    for job in group {
        match job {
            Job::Conversations(rows, _) => flags.push(insert_conversations(&tx, rows).await?),
            Job::Insight(row, _) => {
                tx.execute(
                    "INSERT INTO insights (id, ts_unix, tier, focus, source, body) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    &[
                        &row.id,
                        &row.ts_unix,
                        &row.tier,
                        &row.focus,
                        &row.source,
                        &row.body,
                    ],
                )
                .await?;
            }
            Job::Telemetry(..) | Job::Shutdown(_) => {}
        }
    }
    tx.commit().await?;
    // Only once committed: a rolled-back group must insert its paths again.
    known_paths.lock().expect("paths lock").extend(new_paths);
    Ok(flags)
}

/// Groups up to this many records go in as one prepared `INSERT … SELECT FROM unnest(…)`
/// (one round trip, the statement cached per connection); larger ones through binary COPY,
/// whose per-statement start costs more but whose per-row cost is lower.
const INSERT_UP_TO: usize = 256;

/// The records through one statement; `seq` comes from the column's sequence default.
/// With `SkipStored`, returns the ids it stored (the others were stored before).
async fn copy_records(
    tx: &Transaction<'_>,
    records: &[&NewRecord],
    insert: Insert,
) -> Result<Option<HashSet<String>>, tokio_postgres::Error> {
    if insert == Insert::SkipStored {
        let sql = format!("{} RETURNING id", insert_unnest(insert));
        let stmt = tx.prepare_cached(&sql).await?;
        let rows = tx.query(&stmt, &Columns::of(records).params()).await?;
        return Ok(Some(rows.iter().map(|r| r.get(0)).collect()));
    }
    if records.len() <= INSERT_UP_TO {
        let stmt = tx.prepare_cached(&insert_unnest(insert)).await?;
        tx.execute(&stmt, &Columns::of(records).params()).await?;
        return Ok(None);
    }
    let sink = tx
        .copy_in(
            "COPY telemetry (id, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload) \
             FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    let writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    let mut writer = writer;
    for r in records {
        // Ids are stored as given (the collector's UUIDs, or a client's own ids).
        let row: [&(dyn ToSql + Sync); 9] = [
            &r.id,
            &r.ts_unix,
            &r.received_unix,
            &r.kind,
            &r.level,
            &r.orch_hash,
            &r.agent_path,
            &r.tags_json,
            &r.payload_json,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(None)
}

/// The newest heartbeat of each ORCH of a group (its rollup's ORCHs), in key order: two
/// transactions lock the rows they share in one order and never deadlock. Heartbeats only:
/// an upsert locks its row until the commit, so a row per ORCH of every record would make
/// concurrent commits (of this writer, or of another process) queue behind each other.
fn latest_heartbeats(rollup: &Rollup) -> (Vec<&str>, Vec<i64>, Vec<Option<&str>>) {
    let seen = rollup.orchs.values();
    (
        seen.clone().map(|o| o.orch_hash.as_str()).collect(),
        seen.clone().map(|o| o.last_heartbeat_ts).collect(),
        seen.map(|o| o.agent_path.as_deref()).collect(),
    )
}

/// Upserts each ORCH's newest heartbeat and its agent path; parameters `$a::text[]`,
/// `$a+1::bigint[]`, `$a+2::text[]`.
fn upsert_heartbeats_sql(a: usize) -> String {
    let (b, c) = (a + 1, a + 2);
    format!(
        "INSERT INTO orchs (orch_hash, last_heartbeat_ts, agent_path) \
         SELECT * FROM unnest(${a}::text[], ${b}::bigint[], ${c}::text[]) \
         ON CONFLICT (orch_hash) DO UPDATE SET \
           agent_path = CASE WHEN orchs.last_heartbeat_ts IS NULL \
                               OR EXCLUDED.last_heartbeat_ts >= orchs.last_heartbeat_ts \
                             THEN coalesce(EXCLUDED.agent_path, orchs.agent_path) \
                             ELSE coalesce(orchs.agent_path, EXCLUDED.agent_path) END, \
           last_heartbeat_ts = greatest(orchs.last_heartbeat_ts, EXCLUDED.last_heartbeat_ts)"
    )
}

/// The newest heartbeat of each ORCH in the group, kept in `orchs` (a key lookup for the
/// analysis's staleness, whatever the table's size).
async fn record_heartbeats(
    tx: &Transaction<'_>,
    rollup: &Rollup,
) -> Result<(), tokio_postgres::Error> {
    let (orchs, beats, paths) = latest_heartbeats(rollup);
    if orchs.is_empty() {
        return Ok(());
    }
    tx.execute(&upsert_heartbeats_sql(1), &[&orchs, &beats, &paths])
        .await?;
    Ok(())
}

/// Inserts a small telemetry-only group, its heartbeats, its pending cells and its new
/// agent paths in one statement (data-modifying CTEs), committed as one: a single round trip.
async fn insert_small_group(
    client: &deadpool_postgres::Client,
    records: &[&NewRecord],
    rollup: &Rollup,
    new_paths: &[String],
    insert: Insert,
) -> Result<(), tokio_postgres::Error> {
    let (orchs, beats, agent_of) = latest_heartbeats(rollup);
    let pending = Pending::of(rollup);
    let columns = Columns::of(records);
    let mut params = columns.params();
    let mut sql = format!("WITH t AS ({})", insert_unnest(insert));
    if !orchs.is_empty() {
        sql.push_str(&format!(
            ", h AS ({})",
            upsert_heartbeats_sql(params.len() + 1)
        ));
        params.push(&orchs);
        params.push(&beats);
        params.push(&agent_of);
    }
    if let Some(pending) = &pending {
        sql.push_str(&format!(
            ", d AS ({})",
            insert_pending_sql(params.len() + 1)
        ));
        params.extend(pending.params());
    }
    if !new_paths.is_empty() {
        let n = params.len() + 1;
        sql.push_str(&format!(
            ", p AS (INSERT INTO agent_paths SELECT unnest(${n}::text[]) ON CONFLICT DO NOTHING)"
        ));
        params.push(&new_paths);
    }
    sql.push_str(" SELECT 1");
    let stmt = client.prepare_cached(&sql).await?;
    client.execute(&stmt, &params).await?;
    Ok(())
}

/// Inserts telemetry rows given as nine arrays (`$1`…`$9`), one per column; `SkipStored`
/// leaves out the ids already stored (the unique key is `(id, received_unix)`, and a
/// redelivered record carries both unchanged).
fn insert_unnest(insert: Insert) -> String {
    let skip = match insert {
        Insert::Fresh => "",
        Insert::SkipStored => " ON CONFLICT (id, received_unix) DO NOTHING",
    };
    format!(
        "INSERT INTO telemetry (id, ts_unix, received_unix, kind, level, orch_hash, agent_path, \
         tags, payload) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], \
         $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]){skip}"
    )
}

/// A group's telemetry as one array per column, the parameters of [`insert_unnest`].
struct Columns<'a> {
    ids: Vec<&'a str>,
    ts: Vec<i64>,
    received: Vec<i64>,
    kinds: Vec<&'a str>,
    levels: Vec<Option<&'a str>>,
    orchs: Vec<Option<&'a str>>,
    paths: Vec<Option<&'a str>>,
    tags: Vec<Option<&'a str>>,
    payloads: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(records: &[&'a NewRecord]) -> Self {
        Columns {
            ids: records.iter().map(|r| r.id.as_str()).collect(),
            ts: records.iter().map(|r| r.ts_unix).collect(),
            received: records.iter().map(|r| r.received_unix).collect(),
            kinds: records.iter().map(|r| r.kind.as_str()).collect(),
            levels: records.iter().map(|r| r.level.as_deref()).collect(),
            orchs: records.iter().map(|r| r.orch_hash.as_deref()).collect(),
            paths: records.iter().map(|r| r.agent_path.as_deref()).collect(),
            tags: records.iter().map(|r| r.tags_json.as_deref()).collect(),
            payloads: records.iter().map(|r| r.payload_json.as_str()).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.ts,
            &self.received,
            &self.kinds,
            &self.levels,
            &self.orchs,
            &self.paths,
            &self.tags,
            &self.payloads,
        ]
    }
}

/// Inserts conversations, keeping the first of each `conversation_id`; one flag per row.
async fn insert_conversations(
    tx: &Transaction<'_>,
    rows: &[NewConversation],
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO conversations (conversation_id, ts_unix, received_unix, orch_hash, \
             agent_path, feedback, score, prompt_key, messages) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (conversation_id) DO NOTHING",
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let n = tx
            .execute(
                &stmt,
                &[
                    &r.conversation_id,
                    &r.ts_unix,
                    &r.received_unix,
                    &r.orch_hash,
                    &r.agent_path,
                    &r.feedback.map(Feedback::as_str),
                    &r.score,
                    &r.prompt_key,
                    &r.messages_json,
                ],
            )
            .await?;
        out.push(n == 1);
    }
    Ok(out)
}
