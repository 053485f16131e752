//! The agent-side learning pipeline: applies hot updates from the distributor to a local
//! `LearningPipelineState`, keeps it in a state file, and sends heartbeats to the collector.
//!
//! Agent-side: depends on `updates` (envelopes, protocol), `telemetry` (heartbeats) and
//! `shared` (client, TLS, tiers); never on a server module.
//!
//! - [`state`]: the state and how one update changes it (targeting re-check, idempotence,
//!   all-or-nothing patches, exact rollback);
//! - [`document`]: the patchable `{"overrides", "config"}` document and deep merge;
//! - [`state_file`]: atomic, durable persistence;
//! - [`client`]: the WebSocket loop (hello, replay, acks, reconnects, `--once`);
//! - [`heartbeat`]: the periodic `orch_heartbeat`;
//! - [`exec`]: the `--exec` reload hook.

pub mod client;
pub mod document;
pub mod exec;
pub mod heartbeat;
pub mod state;
pub mod state_file;

use std::path::PathBuf;

pub use client::{Backoff, SubscribeOptions, Summary, UpdateReport, subscribe};
pub use document::{Document, LearningOverrides};
pub use heartbeat::{HeartbeatConfig, Progress};
pub use state::{EntryStatus, HistoryEntry, LearningPipelineState, Outcome};

/// Why the learning pipeline stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file could not be read or written.
    #[error("cannot {action} state file {path}: {source}")]
    StateIo {
        /// `read` or `write`.
        action: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The state file exists but is not a state this version can read. It is left alone.
    #[error(
        "state file {path} is not a valid learning state ({message}); it was left untouched: repair it or move it away"
    )]
    CorruptState {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The state file belongs to another orch or agent path.
    #[error("state file {path} belongs to {found}, not {wanted}: pass another --state")]
    StateMismatch {
        /// File.
        path: PathBuf,
        /// `orch at path` in the file.
        found: String,
        /// `orch at path` asked for.
        wanted: String,
    },
    /// The distributor could not be reached (`--once` only; the loop otherwise retries).
    #[error("cannot reach the distributor at {url}: {detail}")]
    Unreachable {
        /// URL tried.
        url: String,
        /// Cause.
        detail: String,
    },
    /// The connection dropped before the replay was complete (`--once` only).
    #[error("connection to the distributor at {url} lost: {detail}")]
    ConnectionLost {
        /// URL.
        url: String,
        /// Cause.
        detail: String,
    },
    /// The distributor's TLS certificate is not trusted. Retrying will not change that.
    #[error("the distributor at {url} presented a TLS certificate that is not trusted ({detail}); {hint}", hint = crate::core::shared::tls::PRIVATE_CA_HINT)]
    UntrustedCertificate {
        /// URL.
        url: String,
        /// What rustls found wrong with the certificate.
        detail: String,
    },
    /// The distributor refused the WebSocket upgrade with an HTTP error.
    #[error("the distributor at {url} refused the subscription: HTTP {status}")]
    Refused {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The distributor sent an error frame that reconnecting will not fix.
    #[error("the distributor refused this subscriber: {code}: {detail}")]
    Fatal {
        /// Machine code from the error frame.
        code: String,
        /// Human detail.
        detail: String,
    },
    /// The distributor URL cannot be used.
    #[error("{0}")]
    Config(String),
}
