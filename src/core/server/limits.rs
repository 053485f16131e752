//! What a server tolerates from its clients: read timeouts, the connection cap, the shutdown
//! deadline and the decompression budget; and the open-file limit they are sized from.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::core::server::inflate::DecodeBudget;

/// Share of the open-file limit the connection cap takes by default; the rest is for the
/// databases, the runtime, refusals and whatever a handler opens.
const CAP_SHARE_PERCENT: u64 = 80;
/// Connection cap where the open-file limit cannot be read or is unlimited.
const FALLBACK_MAX_CONNECTIONS: usize = 10_000;

/// Limits of one server, or of every server in the process: clones share the open-connection
/// count and the decompression budget, so `serve all` caps both listeners together.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers, from the connection's start or the end
    /// of the previous response (so it is also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time a request body may take after its headers, before the `body_min_rate` allowance.
    pub body_timeout: Duration,
    /// Bytes per second a body must keep up: each this many bytes received extends its
    /// deadline by one second, so a body trickling slower runs out of time (408).
    pub body_min_rate: u64,
    /// TLS handshakes that take longer are dropped.
    pub handshake_timeout: Duration,
    /// Open connections (upgraded WebSockets included) beyond which a new one gets 503.
    pub max_connections: usize,
    /// After the shutdown signal, how long complete in-flight requests (and WebSocket close
    /// handshakes) may take before what remains is dropped.
    pub shutdown_timeout: Duration,
    /// Memory every gzip request body of the process may inflate into at once.
    pub decode_budget: DecodeBudget,
    /// The open-connection count the cap applies to (clones share it).
    pub open: OpenConnections,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 4096,
            handshake_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
            shutdown_timeout: Duration::from_secs(10),
            decode_budget: DecodeBudget::new(DecodeBudget::DEFAULT_BYTES),
            open: OpenConnections::default(),
        }
    }
}

impl ServerLimits {
    /// Connections open now, on every server sharing these limits.
    pub fn open_connections(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    /// Counts a new connection unless the cap is reached.
    pub(super) fn admit(&self) -> Option<OpenGuard> {
        let admitted = self
            .open
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| OpenGuard(self.open.clone()))
    }
}

/// A count of open connections that clones share.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

/// One open connection, counted until dropped (it travels with the socket into an upgrade).
#[derive(Debug)]
pub(super) struct OpenGuard(OpenConnections);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open-file limit (`RLIMIT_NOFILE`) before and after [`raise_file_limit`]; `None` is
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit before.
    pub was: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
    /// The hard limit, as far as the soft one may go.
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor, and
/// the usual soft default (1024) is reached by a few hundred slow clients.
pub fn raise_file_limit() -> std::io::Result<FileLimit> {
    let before = getrlimit(Resource::Nofile);
    let mut limit = FileLimit {
        was: before.current,
        now: before.current,
        hard: before.maximum,
    };
    if before.current != before.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
        limit.now = getrlimit(Resource::Nofile).current;
    }
    Ok(limit)
}

/// [`CAP_SHARE_PERCENT`] of the soft open-file limit as it is now.
pub fn default_max_connections() -> usize {
    cap_for(getrlimit(Resource::Nofile).current)
}

fn cap_for(soft: Option<u64>) -> usize {
    match soft {
        Some(n) => usize::try_from(n * CAP_SHARE_PERCENT / 100)
            .unwrap_or(usize::MAX)
            .max(1),
        None => FALLBACK_MAX_CONNECTIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_most_of_the_file_limit() {
        assert_eq!(cap_for(Some(1024)), 819);
        assert_eq!(cap_for(Some(1)), 1);
        assert_eq!(cap_for(None), FALLBACK_MAX_CONNECTIONS);
    }

    #[test]
    fn admission_stops_at_the_cap_and_clones_share_the_count() {
        let limits = ServerLimits {
            max_connections: 2,
            ..ServerLimits::default()
        };
        let other = limits.clone();
        let a = limits.admit().expect("first");
        let _b = other.admit().expect("second, through a clone");
        assert!(limits.admit().is_none());
        assert_eq!(other.open_connections(), 2);
        drop(a);
        assert!(other.admit().is_some());
    }

    #[test]
    fn the_soft_file_limit_reaches_the_hard_one() {
        let limit = raise_file_limit().unwrap();
        assert_eq!(limit.now, limit.hard);
    }
}
