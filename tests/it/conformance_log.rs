//! The update log's contract, run against every backend: SQLite (a temporary directory) and
//! the in-memory log. A new backend (PostgreSQL, …) adds one `#[tokio::test]` per case below
//! through its own factory.

use std::future::Future;
use std::sync::Arc;

use phoenix::core::shared::tier::Tier;
use phoenix::core::store::memory::update_log::MemoryUpdateLog;
use phoenix::core::store::sqlite::update_log::{LogOptions, SqliteUpdateLog};
use phoenix::core::store::update_log::{Counts, Error, Position, UpdateLog};
use phoenix::core::updates::protocol::AckStatus;
use phoenix::core::updates::{NewUpdate, UpdateEnvelope, UpdateType};
use serde_json::json;

/// A log under test and whatever must live as long as it (a temporary directory).
struct Subject {
    log: Box<dyn UpdateLog>,
    _keep: Option<tempfile::TempDir>,
}

fn sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = SqliteUpdateLog::open(&LogOptions::new(dir.path().join("updates.db")))
        .expect("open the SQLite log");
    Subject {
        log: Box::new(log),
        _keep: Some(dir),
    }
}

fn memory() -> Subject {
    Subject {
        log: Box::new(MemoryUpdateLog::new()),
        _keep: None,
    }
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
    };
}

async fn run<F: Future<Output = ()>>(case: impl FnOnce(Subject) -> F, make: fn() -> Subject) {
    case(make()).await;
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
