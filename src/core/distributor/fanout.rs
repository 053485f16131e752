//! Fan-out: a bounded broadcast of pre-serialised updates, and the position bookkeeping that
//! lets a subscriber join (or rejoin after lagging) with no gap and no duplicate.
//!
//! Log mutations (publish, widen) are serialised by [`Hub::writing`] and announced in commit
//! order. Announcing and subscribing share a short lock, so a new receiver's first item is
//! exactly the first announcement after the [`Position`] it was handed: everything up to that
//! position is read from the log, everything after arrives live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use super::log::{Position, StoredUpdate};
use crate::core::updates::UpdateEnvelope;

/// `{"type":"update","update":{…}}` without cloning the envelope.
#[derive(Serialize)]
#[serde(tag = "type", rename = "update")]
struct UpdateFrame<'a> {
    update: &'a UpdateEnvelope,
}

/// The text of an `update` frame carrying `envelope`.
pub fn update_frame(envelope: &UpdateEnvelope) -> Utf8Bytes {
    serde_json::to_string(&UpdateFrame { update: envelope })
        .expect("envelopes serialise")
        .into()
}

/// An update ready to send: the envelope for targeting, the frame text shared by every
/// subscriber it goes to.
#[derive(Debug)]
pub struct Prepared {
    /// What targeting and rollout are checked against.
    pub update: StoredUpdate,
    /// The serialised `update` frame (reference-counted: sending it copies nothing).
    pub frame: Utf8Bytes,
    /// The update's id, shared by the delivery records.
    pub update_id: Arc<str>,
}

impl Prepared {
    /// Serialises the frame once.
    pub fn new(update: StoredUpdate) -> Arc<Prepared> {
        let frame = update_frame(&update.envelope);
        let update_id = Arc::from(update.envelope.update_id.as_str());
        Arc::new(Prepared {
            update,
            frame,
            update_id,
        })
    }
}

/// One announcement on the live channel.
#[derive(Debug, Clone)]
pub enum Live {
    /// A newly committed update, at its initial percentage.
    Update(Arc<Prepared>),
    /// An update's rollout was raised (from `from_percent` to the prepared percentage).
    Widened {
        /// The update at its new percentage.
        update: Arc<Prepared>,
        /// Percentage before.
        from_percent: Option<u8>,
        /// Position of this widening.
        widen_seq: u64,
    },
}

/// The live channel and the log position it has announced up to.
pub struct Hub {
    tx: broadcast::Sender<Live>,
    announced: Mutex<Position>,
    /// Held across "commit to the log, then announce" so announcements follow commit order.
    pub writing: tokio::sync::Mutex<()>,
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
            writing: tokio::sync::Mutex::new(()),
            min_widened_seq: AtomicU64::new(min_widened_seq.unwrap_or(u64::MAX)),
        }
    }

    /// A receiver of every announcement after the returned position.
    pub fn subscribe(&self) -> (broadcast::Receiver<Live>, Position) {
        let pos = self.announced.lock().expect("hub lock");
        (self.tx.subscribe(), *pos)
    }

    /// The position announced so far.
    pub fn position(&self) -> Position {
        *self.announced.lock().expect("hub lock")
    }

    /// The lowest seq ever widened (`u64::MAX` when none).
    pub fn min_widened_seq(&self) -> u64 {
        self.min_widened_seq.load(Ordering::Acquire)
    }

    /// Announces a committed update. Call with [`Hub::writing`] held.
    pub fn announce_update(&self, update: Arc<Prepared>) {
        let mut pos = self.announced.lock().expect("hub lock");
        pos.seq = pos.seq.max(update.update.envelope.seq);
        // No receivers is fine: the update is in the log for whoever connects later.
        let _ = self.tx.send(Live::Update(update));
    }

    /// Announces a committed widening. Call with [`Hub::writing`] held.
    pub fn announce_widening(
        &self,
        update: Arc<Prepared>,
        from_percent: Option<u8>,
        widen_seq: u64,
    ) {
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
        let (mut rx, pos) = hub.subscribe();
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
