//! The distributor's WebSocket protocol (DESIGN.md), as JSON text frames:
//!
//! ```text
//! → {"type":"hello","orch_id":"…","agent_path":"…","last_seq":41,"x402":"…","token":"…"}
//! ← {"type":"hello_ack","orch_hash":"orch_…","tier":"free","server_seq":48,"replay":3}
//! ← {"type":"update","update":{…UpdateEnvelope…}}
//! → {"type":"ack","update_id":"…","seq":42,"status":"applied|rejected|skipped","error":null}
//! ← {"type":"error","error":"…","detail":"…"}   (then close, on protocol violations)
//! ```

use serde::{Deserialize, Serialize};

use crate::core::shared::tier::Tier;
use crate::core::updates::UpdateEnvelope;

/// Largest text frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 512 * 1024;

/// Longest update id either side accepts (the distributor's are UUIDs, 36 bytes).
pub const MAX_UPDATE_ID_BYTES: usize = 128;

/// Whether `id` can be an update id: 1 to [`MAX_UPDATE_ID_BYTES`] bytes of printable
/// characters, no whitespace. A server that sends anything else is broken or hostile, and
/// its id must be neither acked back nor printed.
pub fn check_update_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_UPDATE_ID_BYTES {
        return Err(format!(
            "update_id must be 1 to {MAX_UPDATE_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("update_id holds whitespace or control characters".to_owned());
    }
    Ok(())
}

/// Frames a subscriber sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame of every connection.
    Hello {
        /// Raw orch id.
        orch_id: String,
        /// Agent path of this subscriber.
        agent_path: String,
        /// Highest seq already applied (0 for none).
        #[serde(default)]
        last_seq: u64,
        /// Premium key, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        x402: Option<String>,
        /// The ORCH's agent token (`phoenix agents token ORCH_ID`); required off loopback.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Outcome of one update.
    Ack {
        /// The update.
        update_id: String,
        /// Its seq.
        seq: u64,
        /// What happened.
        status: AckStatus,
        /// Why, when rejected or skipped.
        #[serde(default)]
        error: Option<String>,
    },
}

/// What a subscriber did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    /// Applied to the state.
    Applied,
    /// Could not be applied; state unchanged.
    Rejected,
    /// Not for this subscriber (targeting/tier/rollout re-check) or already applied.
    Skipped,
}

impl AckStatus {
    /// `applied`, `rejected` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Applied => "applied",
            AckStatus::Rejected => "rejected",
            AckStatus::Skipped => "skipped",
        }
    }
}

/// Frames the distributor sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to hello.
    HelloAck {
        /// Keyed hash of the orch id (the same key as the collector's).
        orch_hash: String,
        /// Tier granted.
        tier: Tier,
        /// Highest seq in the log.
        server_seq: u64,
        /// How many updates are about to be replayed.
        replay: usize,
    },
    /// One update.
    Update {
        /// The envelope, with `rollout_percent` as of sending.
        update: UpdateEnvelope,
    },
    /// A protocol violation; the server closes after sending it.
    Error {
        /// Machine code.
        error: String,
        /// Human sentence.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_ids_are_short_and_printable() {
        assert!(check_update_id("01a2024c-ea04-76b2-bb9e-74079230ca86").is_ok());
        assert!(check_update_id("").is_err());
        assert!(check_update_id(&"a".repeat(129)).is_err());
        assert!(check_update_id("ab\ncd").is_err());
        assert!(check_update_id("ab\u{1b}[2Jcd").is_err());
        assert!(check_update_id("a b").is_err());
    }

    #[test]
    fn frames_match_the_documented_json() {
        let hello: ClientFrame = serde_json::from_str(
            r#"{"type":"hello","orch_id":"o","agent_path":"a","last_seq":41,"x402":"k"}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            ClientFrame::Hello {
                orch_id: "o".into(),
                agent_path: "a".into(),
                last_seq: 41,
                x402: Some("k".into()),
                token: None,
            }
        );
        let ack: ClientFrame = serde_json::from_str(
            r#"{"type":"ack","update_id":"u","seq":42,"status":"applied","error":null}"#,
        )
        .unwrap();
        assert!(matches!(
            ack,
            ClientFrame::Ack {
                status: AckStatus::Applied,
                ..
            }
        ));
        let frame = ServerFrame::HelloAck {
            orch_hash: "orch_1".into(),
            tier: Tier::Free,
            server_seq: 48,
            replay: 3,
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"hello_ack","orch_hash":"orch_1","tier":"free","server_seq":48,"replay":3}"#
        );
    }
}
