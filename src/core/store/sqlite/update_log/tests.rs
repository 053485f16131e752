//! The SQLite update log on its own (the shared contract is in tests/it/conformance_log.rs).

use std::sync::Arc;

use super::*;
use crate::core::store::update_log::{Counts, Error, Position, UpdateLog};
use crate::core::updates::{NewUpdate, UpdateType};
use serde_json::json;

fn notice(percent: Option<u8>) -> UpdateEnvelope {
    NewUpdate {
        target_orch: None,
        target_agent_prefix: None,
        cascade: true,
        update_type: UpdateType::Notice,
        tier_required: Tier::Free,
        payload: json!({"message": "m"}),
        rollout_percent: percent,
    }
    .into_envelope(uuid::Uuid::now_v7().to_string(), 0, 1)
}

#[tokio::test]
async fn appends_widens_and_reads_percentages_as_of_a_widening() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteUpdateLog::open(&LogOptions::new(dir.path().join("d.db"))).unwrap();
    let a = log.append(notice(None), None, None).await.unwrap();
    let b = log.append(notice(Some(10)), None, None).await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert!(matches!(
        log.widen(&a.update_id, 50, 2).await,
        Err(Error::NotWider { current: None, .. })
    ));
    assert!(matches!(
        log.widen(&b.update_id, 10, 2).await,
        Err(Error::NotWider {
            current: Some(10),
            ..
        })
    ));
    assert!(matches!(
        log.widen("nope", 50, 2).await,
        Err(Error::NotFound(_))
    ));
    let w = log.widen(&b.update_id, 40, 3).await.unwrap();
    assert_eq!((w.from_percent, w.widen_seq), (Some(10), 1));
    let w2 = log.widen(&b.update_id, 90, 4).await.unwrap();
    assert_eq!(w2.widen_seq, 2);
    assert_eq!(
        log.position().await.unwrap(),
        Position {
            seq: 2,
            widen_seq: 2
        }
    );
    assert_eq!(log.min_widened_seq().await.unwrap(), Some(2));

    let mut pcts = Vec::new();
    for widen_seq in 0..=2 {
        let between = log
            .updates_between(0, 2, widen_seq, Box::new(|_| true))
            .await
            .unwrap();
        pcts.push(between[1].envelope.rollout_percent);
    }
    assert_eq!(pcts, [Some(10), Some(40), Some(90)]);
    let between = log.widened_between(2, 1, 2).await.unwrap();
    assert_eq!(between.len(), 1);
    assert_eq!(between[0].0.envelope.rollout_percent, Some(90));
    assert_eq!(between[0].1, Some(40));
    assert_eq!(
        log.find("2")
            .await
            .unwrap()
            .unwrap()
            .envelope
            .rollout_percent,
        Some(90)
    );
    assert_eq!(
        log.find(&b.update_id)
            .await
            .unwrap()
            .unwrap()
            .initial_percent,
        Some(10)
    );

    let orch: Arc<str> = Arc::from("orch_00000000000000aa");
    assert_eq!(log.widened_unacked(2, 2, &orch).await.unwrap().len(), 1);
    log.record_ack(
        b.update_id.clone(),
        orch.clone(),
        AckStatus::Applied,
        None,
        5,
    );
    // A later `skipped` (a duplicate) does not hide the outcome.
    log.record_ack(
        b.update_id.clone(),
        orch.clone(),
        AckStatus::Skipped,
        Some("dup".into()),
        6,
    );
    log.record_ack("unknown".into(), orch.clone(), AckStatus::Applied, None, 6);
    log.record_delivery(Arc::from(b.update_id.as_str()), orch.clone(), 5);
    log.record_delivery(Arc::from(b.update_id.as_str()), orch.clone(), 6);
    log.flush().await;
    assert!(log.widened_unacked(2, 2, &orch).await.unwrap().is_empty());
    assert_eq!(
        log.counts(&b.update_id).await.unwrap(),
        Counts {
            delivered: 1,
            applied: 1,
            rejected: 0,
            skipped: 0
        }
    );
    log.close().await;
}
