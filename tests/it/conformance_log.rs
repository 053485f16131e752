//! The update log's contract, run against every backend: SQLite (a temporary directory), the
//! in-memory log and PostgreSQL (a database per test, when `PHOENIX_TEST_DATABASE_URL` is
//! set). A new backend adds one `#[tokio::test]` per case below through its own factory.

use std::future::Future;
use std::sync::Arc;

use phoenix::core::shared::tier::Tier;
use phoenix::core::store::memory::update_log::MemoryUpdateLog;
use phoenix::core::store::postgres::{self as pg, PgOptions, PgUpdateLog};
use phoenix::core::store::sqlite::update_log::{LogOptions, SqliteUpdateLog};
use phoenix::core::store::update_log::{Counts, Error, Position, UpdateLog};
use phoenix::core::updates::protocol::AckStatus;
use phoenix::core::updates::{NewUpdate, UpdateEnvelope, UpdateType};
use serde_json::json;

use crate::support::services::TestDatabase;

/// A log under test and whatever must live as long as it (a temporary directory, a test
/// database); fields drop in order, so the log goes first.
struct Subject {
    log: Box<dyn UpdateLog>,
    _keep: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

async fn sqlite() -> Option<Subject> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = SqliteUpdateLog::open(&LogOptions::new(dir.path().join("updates.db")))
        .expect("open the SQLite log");
    Some(Subject {
        log: Box::new(log),
        _keep: Some(dir),
        _database: None,
    })
}

async fn memory() -> Option<Subject> {
    Some(Subject {
        log: Box::new(MemoryUpdateLog::new()),
        _keep: None,
        _database: None,
    })
}

/// A log on a migrated database of the test's own; `None` (the case is skipped) without
/// `PHOENIX_TEST_DATABASE_URL`.
async fn postgres() -> Option<Subject> {
    let db = TestDatabase::create().await?;
    let log = pg_log(&db.url).await;
    Some(Subject {
        log: Box::new(log),
        _keep: None,
        _database: Some(db),
    })
}

/// A log with a pool of its own over `url`: what one distributor process has.
async fn pg_log(url: &str) -> PgUpdateLog {
    let pool = pg::pool(&PgOptions::new(url)).expect("pool");
    pg::migrate(&pool).await.expect("migrate");
    PgUpdateLog::start(pool, 200_000)
}

fn envelope(percent: Option<u8>, target: Option<&str>) -> UpdateEnvelope {
    NewUpdate {
        target_orch: target.map(str::to_owned),
        target_agent_prefix: None,
        cascade: true,
        update_type: UpdateType::Notice,
        tier_required: Tier::Free,
        payload: json!({"message": "m"}),
        rollout_percent: percent,
    }
    // A seq given here is ignored: the log assigns it.
    .into_envelope(uuid::Uuid::now_v7().to_string(), 999, 1)
}

async fn seqs_are_gap_free_and_increasing(s: Subject) {
    let log = &*s.log;
    assert_eq!(log.position().await.unwrap(), Position::default());
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(
            log.append(envelope(None, None), None, None)
                .await
                .unwrap()
                .seq,
        );
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(log.position().await.unwrap().seq, 5);
    let dup = log.list(1).await.unwrap().remove(0).envelope;
    assert!(
        log.append(dup, None, None).await.is_err(),
        "an update id is logged once"
    );
    let next = log.append(envelope(None, None), None, None).await.unwrap();
    assert_eq!(next.seq, 6, "a refused append leaves no gap");
}

async fn concurrent_appends_get_distinct_gap_free_seqs(s: Subject) {
    let log = &*s.log;
    let appends = (0..20).map(|_| log.append(envelope(None, None), None, None));
    let mut seqs: Vec<u64> = futures_util::future::join_all(appends)
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let listed: Vec<u64> = log
        .list(100)
        .await
        .unwrap()
        .iter()
        .map(|u| u.envelope.seq)
        .collect();
    assert_eq!(listed, (1..=20).rev().collect::<Vec<_>>());
}

async fn finds_by_id_and_by_seq_and_lists_newest_first(s: Subject) {
    let log = &*s.log;
    let a = log
        .append(
            envelope(None, Some("orch-a")),
            Some("orch_hash_a".into()),
            None,
        )
        .await
        .unwrap();
    let b = log
        .append(envelope(Some(20), None), None, None)
        .await
        .unwrap();
    let found = log.find(&a.update_id).await.unwrap().unwrap();
    assert_eq!(found.envelope, a);
    assert_eq!(found.target_orch_hash.as_deref(), Some("orch_hash_a"));
    assert_eq!(found.initial_percent, None);
    let by_seq = log.find("2").await.unwrap().unwrap();
    assert_eq!(by_seq.envelope.update_id, b.update_id);
    assert_eq!(by_seq.initial_percent, Some(20));
    assert!(log.find("nope").await.unwrap().is_none());
    assert!(log.find("3").await.unwrap().is_none());
    let listed: Vec<u64> = log
        .list(10)
        .await
        .unwrap()
        .iter()
        .map(|u| u.envelope.seq)
        .collect();
    assert_eq!(listed, [2, 1]);
    assert_eq!(log.list(1).await.unwrap()[0].envelope.seq, 2);
}

async fn widening_only_raises(s: Subject) {
    let log = &*s.log;
    let all = log.append(envelope(None, None), None, None).await.unwrap();
    let part = log
        .append(envelope(Some(10), None), None, None)
        .await
        .unwrap();
    assert!(matches!(
        log.widen(&all.update_id, 50, 2).await,
        Err(Error::NotWider { current: None, .. })
    ));
    assert!(matches!(
        log.widen(&part.update_id, 10, 2).await,
        Err(Error::NotWider {
            current: Some(10),
            requested: 10
        })
    ));
    assert!(matches!(
        log.widen("nope", 50, 2).await,
        Err(Error::NotFound(_))
    ));
    let w = log.widen(&part.update_id, 40, 3).await.unwrap();
    assert_eq!((w.from_percent, w.widen_seq), (Some(10), 1));
    assert_eq!(w.update.envelope.rollout_percent, Some(40));
    assert_eq!(w.update.initial_percent, Some(10));
    let w2 = log.widen(&part.update_id, 90, 4).await.unwrap();
    assert_eq!((w2.from_percent, w2.widen_seq), (Some(40), 2));
    assert!(matches!(
        log.widen(&part.update_id, 50, 5).await,
        Err(Error::NotWider {
            current: Some(90),
            ..
        })
    ));
    assert_eq!(
        log.position().await.unwrap(),
        Position {
            seq: 2,
            widen_seq: 2
        }
    );
    assert_eq!(log.min_widened_seq().await.unwrap(), Some(2));
    let history = log.widenings(&part.update_id).await.unwrap();
    let steps: Vec<_> = history
        .iter()
        .map(|w| (w.from_percent, w.to_percent, w.ts_unix))
        .collect();
    assert_eq!(steps, [(Some(10), 40, 3), (Some(40), 90, 4)]);
    assert!(log.widenings(&all.update_id).await.unwrap().is_empty());
    let current = log.find(&part.update_id).await.unwrap().unwrap();
    assert_eq!(current.envelope.rollout_percent, Some(90));
}

async fn counts_acks_and_errors(s: Subject) {
    let log = &*s.log;
    let u = log.append(envelope(None, None), None, None).await.unwrap();
    let id: Arc<str> = Arc::from(u.update_id.as_str());
    let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) =
        ("orch_a".into(), "orch_b".into(), "orch_c".into());
    log.record_delivery(id.clone(), a.clone(), 5);
    log.record_delivery(id.clone(), a.clone(), 6);
    log.record_delivery(id.clone(), b.clone(), 6);
    log.record_ack(u.update_id.clone(), a.clone(), AckStatus::Applied, None, 7);
    // A later `skipped` (a duplicate) does not hide the outcome.
    log.record_ack(
        u.update_id.clone(),
        a.clone(),
        AckStatus::Skipped,
        Some("dup".into()),
        8,
    );
    log.record_ack(
        u.update_id.clone(),
        b.clone(),
        AckStatus::Skipped,
        Some("not mine".into()),
        9,
    );
    log.record_ack(
        u.update_id.clone(),
        c.clone(),
        AckStatus::Rejected,
        Some("broken".into()),
        7,
    );
    log.record_ack("unknown".into(), a.clone(), AckStatus::Applied, None, 7);
    log.flush().await;
    assert_eq!(
        log.counts(&u.update_id).await.unwrap(),
        Counts {
            delivered: 2,
            applied: 1,
            rejected: 1,
            skipped: 1
        }
    );
    assert_eq!(log.counts("unknown").await.unwrap(), Counts::default());
    // Counts of several updates at once, in the order asked, the unknown one zero.
    assert_eq!(
        log.counts_of(vec!["unknown".into(), u.update_id.clone()])
            .await
            .unwrap(),
        vec![Counts::default(), log.counts(&u.update_id).await.unwrap()]
    );
    let errors = log.errors(&u.update_id, 10).await.unwrap();
    let seen: Vec<_> = errors
        .iter()
        .map(|e| (e.orch_hash.as_str(), e.status.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("orch_c", "rejected", "broken"),
            ("orch_b", "skipped", "not mine")
        ],
        "rejections first"
    );
    assert_eq!(log.errors(&u.update_id, 1).await.unwrap().len(), 1);

    log.record_subscriber(b.clone(), "support/eu".into(), Tier::Free, 3);
    log.record_subscriber(a.clone(), "support".into(), Tier::Free, 3);
    log.record_subscriber(a.clone(), "support".into(), Tier::Premium, 4);
    log.flush().await;
    let subs: Vec<_> = log
        .subscribers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.orch_hash, s.agent_path, s.tier, s.last_seen))
        .collect();
    assert_eq!(
        subs,
        [
            ("orch_a".to_owned(), "support".to_owned(), Tier::Premium, 4),
            ("orch_b".to_owned(), "support/eu".to_owned(), Tier::Free, 3),
        ]
    );
}

async fn replays_between_positions_as_of_a_widening(s: Subject) {
    let log = &*s.log;
    let mut ids = Vec::new();
    for p in [None, Some(10), None, Some(30)] {
        ids.push(
            log.append(envelope(p, None), None, None)
                .await
                .unwrap()
                .update_id,
        );
    }
    log.widen(&ids[1], 40, 2).await.unwrap();
    log.widen(&ids[3], 60, 3).await.unwrap();
    log.widen(&ids[1], 90, 4).await.unwrap();

    let seqs = |v: &[phoenix::core::store::update_log::StoredUpdate]| {
        v.iter().map(|u| u.envelope.seq).collect::<Vec<_>>()
    };
    let between = log
        .updates_between(1, 3, 0, Box::new(|_| true))
        .await
        .unwrap();
    assert_eq!(seqs(&between), [2, 3]);
    assert!(
        log.updates_between(3, 3, 0, Box::new(|_| true))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        log.updates_between(4, 2, 0, Box::new(|_| true))
            .await
            .unwrap()
            .is_empty()
    );
    let kept = log
        .updates_between(0, 4, 0, Box::new(|u| u.initial_percent.is_some()))
        .await
        .unwrap();
    assert_eq!(seqs(&kept), [2, 4]);
    for (gen_, want) in [(0, Some(10)), (1, Some(40)), (2, Some(40)), (3, Some(90))] {
        let at = log
            .updates_between(0, 4, gen_, Box::new(|_| true))
            .await
            .unwrap();
        assert_eq!(
            at[1].envelope.rollout_percent, want,
            "as of widening {gen_}"
        );
        assert_eq!(at[1].initial_percent, Some(10));
    }

    let widened = log.widened_between(4, 1, 3).await.unwrap();
    let got: Vec<_> = widened
        .iter()
        .map(|(u, before)| (u.envelope.seq, u.envelope.rollout_percent, *before))
        .collect();
    assert_eq!(got, [(2, Some(90), Some(40)), (4, Some(60), Some(30))]);
    let capped = log.widened_between(3, 0, 3).await.unwrap();
    assert_eq!(capped.len(), 1, "only updates up to `upto`");
    assert!(log.widened_between(4, 3, 3).await.unwrap().is_empty());
    assert!(log.widened_between(4, 3, 1).await.unwrap().is_empty());
}

async fn widened_unacked_leaves_out_what_an_orch_acked(s: Subject) {
    let log = &*s.log;
    let a = log
        .append(envelope(Some(10), None), None, None)
        .await
        .unwrap();
    let b = log
        .append(envelope(Some(10), None), None, None)
        .await
        .unwrap();
    let _plain = log
        .append(envelope(Some(10), None), None, None)
        .await
        .unwrap();
    log.widen(&a.update_id, 50, 2).await.unwrap();
    log.widen(&b.update_id, 50, 2).await.unwrap();
    let orch: Arc<str> = Arc::from("orch_00000000000000aa");
    let seqs = |v: Vec<phoenix::core::store::update_log::StoredUpdate>| {
        v.iter()
            .map(|u| (u.envelope.seq, u.envelope.rollout_percent))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(log.widened_unacked(3, 2, &orch).await.unwrap()),
        [(1, Some(50)), (2, Some(50))]
    );
    assert_eq!(
        seqs(log.widened_unacked(3, 1, &orch).await.unwrap()),
        [(1, Some(50))],
        "only widenings up to `at_gen`"
    );
    assert_eq!(
        seqs(log.widened_unacked(1, 2, &orch).await.unwrap()),
        [(1, Some(50))],
        "only updates up to `upto`"
    );
    log.record_ack(
        a.update_id.clone(),
        orch.clone(),
        AckStatus::Skipped,
        None,
        3,
    );
    log.flush().await;
    assert_eq!(
        seqs(log.widened_unacked(3, 2, &orch).await.unwrap()),
        [(2, Some(50))]
    );
    assert_eq!(
        log.widened_unacked(3, 2, "someone_else")
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn close_refuses_writes(s: Subject) {
    let log = &*s.log;
    let u = log
        .append(envelope(Some(10), None), None, None)
        .await
        .unwrap();
    log.record_delivery(Arc::from(u.update_id.as_str()), Arc::from("orch_a"), 2);
    log.close().await;
    assert!(matches!(
        log.append(envelope(None, None), None, None).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        log.widen(&u.update_id, 50, 3).await,
        Err(Error::Closed)
    ));
    // What was queued before the close is committed; what comes after is dropped and counted.
    assert_eq!(log.counts(&u.update_id).await.unwrap().delivered, 1);
    let before = log.dropped();
    log.record_delivery(Arc::from(u.update_id.as_str()), Arc::from("orch_b"), 4);
    assert_eq!(log.dropped(), before + 1);
    assert_eq!(log.queue_depth(), 0);
    assert_eq!(log.position().await.unwrap().seq, 1, "reads still work");
}

/// One test per backend for each case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::$case, super::sqlite).await;
                }
            )*
        }
        mod memory_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::$case, super::memory).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::$case, super::postgres).await;
                }
            )*
        }
    };
}

/// Runs `case` on a fresh log from `make`, unless the backend is not configured here.
async fn run<F, M>(case: impl FnOnce(Subject) -> F, make: fn() -> M)
where
    F: Future<Output = ()>,
    M: Future<Output = Option<Subject>>,
{
    if let Some(subject) = make().await {
        case(subject).await;
    }
}

conformance!(
    seqs_are_gap_free_and_increasing,
    concurrent_appends_get_distinct_gap_free_seqs,
    finds_by_id_and_by_seq_and_lists_newest_first,
    widening_only_raises,
    counts_acks_and_errors,
    replays_between_positions_as_of_a_widening,
    widened_unacked_leaves_out_what_an_orch_acked,
    close_refuses_writes,
);

/// Two distributor processes (two logs, two pools) on one database: their concurrent
/// appends share one gap-free seq sequence, and each sees the other's appends and widenings.
#[tokio::test]
async fn postgres_processes_share_one_gap_free_sequence() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (pg_log(&db.url).await, pg_log(&db.url).await);
    let appends = |log: &PgUpdateLog| {
        let log = log.clone();
        async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                // Every fifth a rollout, for the widening below.
                let percent = (i % 5 == 0).then_some(10);
                seqs.push(
                    log.append(envelope(percent, None), None, None)
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }
    };
    let (from_a, from_b) = tokio::join!(tokio::spawn(appends(&a)), tokio::spawn(appends(&b)));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    for seqs in [&from_a, &from_b] {
        assert!(seqs.is_sorted(), "one process's appends get rising seqs");
    }
    let mut all: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>());
    for log in [&a, &b] {
        assert_eq!(
            log.position().await.unwrap(),
            Position {
                seq: 100,
                widen_seq: 0
            }
        );
    }

    // A widening through one process is what the other reads, at once.
    let target = a.find(&from_b[0].to_string()).await.unwrap().unwrap();
    assert_eq!(target.initial_percent, Some(10));
    let w = a.widen(&target.envelope.update_id, 60, 7).await.unwrap();
    assert_eq!(w.widen_seq, 1);
    assert_eq!(b.position().await.unwrap().widen_seq, 1);
    let seen = b.find(&target.envelope.update_id).await.unwrap().unwrap();
    assert_eq!(seen.envelope.rollout_percent, Some(60));
    let widened = b.widened_between(100, 0, 1).await.unwrap();
    let got: Vec<_> = widened
        .iter()
        .map(|(u, before)| (u.envelope.seq, u.envelope.rollout_percent, *before))
        .collect();
    assert_eq!(got, [(from_b[0], Some(60), Some(10))]);
    // The next widening, through the other process, takes the next widen_seq.
    let w2 = b.widen(&target.envelope.update_id, 80, 8).await.unwrap();
    assert_eq!((w2.widen_seq, w2.from_percent), (2, Some(60)));
    assert_eq!(
        a.widenings(&target.envelope.update_id).await.unwrap().len(),
        2
    );

    // Acks recorded by one process count for an update the other published.
    b.record_ack(
        target.envelope.update_id.clone(),
        Arc::from("orch_a"),
        AckStatus::Applied,
        None,
        9,
    );
    b.flush().await;
    assert_eq!(
        a.counts(&target.envelope.update_id).await.unwrap().applied,
        1
    );
    a.close().await;
    b.close().await;
}

/// A log whose database cannot be reached answers every call with a postgres backend error at
/// once, and its queued rows are given up rather than left waiting.
#[tokio::test]
async fn postgres_unreachable_fails_promptly() {
    // Nothing listens on port 1; no PostgreSQL is needed for this one.
    let pool = pg::pool(&PgOptions::new("postgres://postgres@127.0.0.1:1/none")).unwrap();
    let log = PgUpdateLog::start(pool, 100);
    let backend = |e: Error| match e {
        Error::Backend {
            backend: "postgres",
            ..
        } => {}
        other => panic!("not a postgres backend error: {other:?}"),
    };
    let within = std::time::Duration::from_secs(10);
    backend(
        tokio::time::timeout(within, log.append(envelope(None, None), None, None))
            .await
            .expect("append answers promptly")
            .unwrap_err(),
    );
    backend(
        tokio::time::timeout(within, log.widen("u", 50, 1))
            .await
            .expect("widen answers promptly")
            .unwrap_err(),
    );
    backend(
        tokio::time::timeout(within, log.position())
            .await
            .expect("reads answer promptly")
            .unwrap_err(),
    );
    log.record_delivery(Arc::from("u"), Arc::from("orch_a"), 1);
    tokio::time::timeout(within, log.flush())
        .await
        .expect("flush returns");
    assert_eq!(
        log.queue_depth(),
        0,
        "a failed commit leaves nothing queued"
    );
    log.close().await;
}
