//! The in-process [`Bus`]: a bounded broadcast of pre-serialised updates, and the position
//! bookkeeping that lets a subscriber join (or rejoin after lagging) with no gap and no
//! duplicate.
//!
//! Log mutations (publish, widen) are serialised by the service and announced in commit
//! order. Announcing and subscribing share a short lock, so a new receiver's first item is
//! exactly the first announcement after the [`Position`] it was handed: everything up to that
//! position is read from the log, everything after arrives live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::Position;
use super::bus::{Bus, Live, Prepared, Subscription};

/// The live channel and the log position it has announced up to.
pub struct Hub {
    tx: broadcast::Sender<Live>,
    announced: Mutex<Position>,
    min_widened_seq: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("announced", &self.position())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose log stands at `position`, with room for `capacity` live items.
    pub fn new(position: Position, min_widened_seq: Option<u64>, capacity: usize) -> Hub {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Hub {
            tx,
            announced: Mutex::new(position),
            min_widened_seq: AtomicU64::new(min_widened_seq.unwrap_or(u64::MAX)),
        }
    }
}

impl Bus for Hub {
    fn subscribe_from(&self, _from: Position) -> Subscription {
        let pos = self.announced.lock().expect("hub lock");
        Subscription {
            live: self.tx.subscribe(),
            position: *pos,
        }
    }

    fn position(&self) -> Position {
        *self.announced.lock().expect("hub lock")
    }

    fn min_widened_seq(&self) -> u64 {
        self.min_widened_seq.load(Ordering::Acquire)
    }

    fn announce_update(&self, update: Arc<Prepared>) {
        let mut pos = self.announced.lock().expect("hub lock");
        pos.seq = pos.seq.max(update.update.envelope.seq);
        // No receivers is fine: the update is in the log for whoever connects later.
        let _ = self.tx.send(Live::Update(update));
    }

    fn announce_widening(&self, update: Arc<Prepared>, from_percent: Option<u8>, widen_seq: u64) {
        let mut pos = self.announced.lock().expect("hub lock");
        pos.widen_seq = pos.widen_seq.max(widen_seq);
        self.min_widened_seq
            .fetch_min(update.update.envelope.seq, Ordering::AcqRel);
        let _ = self.tx.send(Live::Widened {
            update,
            from_percent,
            widen_seq,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::distributor::StoredUpdate;
    use crate::core::distributor::bus::update_frame;
    use crate::core::shared::tier::Tier;
    use crate::core::updates::protocol::ServerFrame;
    use crate::core::updates::{NewUpdate, UpdateType};
    use serde_json::json;

    #[test]
    fn prepared_frame_is_a_server_update_frame() {
        let envelope = NewUpdate {
            target_orch: Some("o".into()),
            target_agent_prefix: None,
            cascade: true,
            update_type: UpdateType::PromptTweak,
            tier_required: Tier::Premium,
            payload: json!({"default_prompt": "p"}),
            rollout_percent: Some(30),
        }
        .into_envelope("u".into(), 7, 9);
        let frame = update_frame(&envelope);
        let parsed: ServerFrame = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(parsed, ServerFrame::Update { update: envelope });
    }

    #[tokio::test]
    async fn a_receiver_sees_exactly_what_follows_its_position() {
        let hub = Hub::new(
            Position {
                seq: 4,
                widen_seq: 0,
            },
            None,
            8,
        );
        let envelope = |seq| {
            NewUpdate {
                target_orch: None,
                target_agent_prefix: None,
                cascade: true,
                update_type: UpdateType::Notice,
                tier_required: Tier::Free,
                payload: json!({"message": "m"}),
                rollout_percent: None,
            }
            .into_envelope(format!("u{seq}"), seq, 0)
        };
        let prepared = |seq| {
            Prepared::new(StoredUpdate {
                envelope: envelope(seq),
                initial_percent: None,
                target_orch_hash: None,
            })
        };
        hub.announce_update(prepared(5));
        let Subscription {
            live: mut rx,
            position: pos,
        } = hub.subscribe_from(Position::default());
        assert_eq!(pos.seq, 5);
        hub.announce_update(prepared(6));
        match rx.recv().await.unwrap() {
            Live::Update(p) => assert_eq!(p.update.envelope.seq, 6),
            other => panic!("{other:?}"),
        }
        hub.announce_widening(prepared(6), Some(10), 3);
        assert_eq!(
            hub.position(),
            Position {
                seq: 6,
                widen_seq: 3
            }
        );
        assert_eq!(hub.min_widened_seq(), 6);
    }
}
