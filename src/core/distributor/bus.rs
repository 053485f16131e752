//! The fan-out bus: how committed updates and widenings reach every connection that may
//! deliver them. Today's in-process [`Hub`](super::fanout::Hub) is the first implementation; a
//! cross-node bus (NATS) feeds the same [`Live`] items into the same kind of receiver.
//!
//! Contract: a [`Subscription`]'s receiver yields exactly the announcements after its
//! `position`, in commit order; everything up to that position is read from the update log.
//! A receiver that falls behind sees `Lagged` and is caught up from the log, so no bus needs
//! unbounded memory. Frames are [`Frame`]s (reference-counted bytes, serialised once per
//! update): transports convert them to their own message type at the very last step.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use super::{Position, StoredUpdate};
use crate::core::updates::UpdateEnvelope;

/// The text of a server frame: valid UTF-8 JSON, shared (cloning copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// The frame text.
    pub fn as_str(&self) -> &str {
        // Built only from `String`s, so always UTF-8; checked rather than assumed.
        std::str::from_utf8(&self.0).expect("frames are UTF-8")
    }

    /// The bytes, for a transport that takes them as they are.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, handed over (no copy, no reference-count traffic).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Frame {
        Frame(Bytes::from(s))
    }
}

/// `{"type":"update","update":{…}}` without cloning the envelope.
#[derive(Serialize)]
#[serde(tag = "type", rename = "update")]
struct UpdateFrame<'a> {
    update: &'a UpdateEnvelope,
}

/// The text of an `update` frame carrying `envelope`.
pub fn update_frame(envelope: &UpdateEnvelope) -> Frame {
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
    pub frame: Frame,
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

/// Live items, bounded: a receiver too far behind gets `Lagged` and catches up from the log.
pub type LiveReceiver = broadcast::Receiver<Live>;

/// A receiver of live items and the position it starts after.
#[derive(Debug)]
pub struct Subscription {
    /// Every announcement after `position`.
    pub live: LiveReceiver,
    /// What the caller reads from the log (up to here) before taking live items.
    pub position: Position,
}

/// Fan-out of committed log changes to the connections of this process.
pub trait Bus: Send + Sync + 'static {
    /// Live items after the returned position. `from` is where the caller stands (its last
    /// seq and widening): a bus that keeps history may start there; the in-process hub starts
    /// at what it has announced, and the caller reads `(from, position]` from the log.
    fn subscribe_from(&self, from: Position) -> Subscription;

    /// The position announced so far.
    fn position(&self) -> Position;

    /// The lowest seq ever widened (`u64::MAX` when none).
    fn min_widened_seq(&self) -> u64;

    /// Announces a committed update. Announcements follow commit order (the caller
    /// serialises "commit, then announce").
    fn announce_update(&self, update: Arc<Prepared>);

    /// Announces a committed widening, in commit order like [`Bus::announce_update`].
    fn announce_widening(&self, update: Arc<Prepared>, from_percent: Option<u8>, widen_seq: u64);
}
