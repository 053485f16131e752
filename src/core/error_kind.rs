//! What kind of failure an error is — the one thing the CLI needs to choose an exit code and
//! the `--json` error document — and the kinds of the core errors that have one.
//!
//! This is the one file that knows which core errors decide an exit code: each component's
//! error type gets its [`HasKind`] impl here, and [`of`] finds it behind a `dyn Error` in a
//! chain. Errors not listed are plain failures.

use std::error::Error as StdError;
use std::fmt;

use crate::core::forge::{self, evolve, git, scaffold, spawn};
use crate::core::shared::client;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything else (exit 1).
    Failed,
    /// A mistake in how the command was called or configured (exit 2).
    Usage,
    /// The server or forge could not be reached (exit 3).
    Unreachable,
    /// The server or forge refused the request (exit 4).
    Rejected,
    /// Some items succeeded and some failed (exit 5).
    Partial,
}

/// A server's refusal, as its JSON error document named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// HTTP status.
    pub status: u16,
    /// Machine code.
    pub code: &'a str,
}

/// An error that knows its kind.
pub trait HasKind {
    /// The kind, or `None` when this error does not decide it (a cause further down the
    /// chain may).
    fn kind(&self) -> Option<ErrorKind>;

    /// The server's refusal this error reports, if any.
    fn refusal(&self) -> Option<Refusal<'_>> {
        None
    }
}

/// The [`HasKind`] of one cause in an error chain, when it is a core error that has one.
pub fn of<'a>(cause: &'a (dyn StdError + 'static)) -> Option<&'a dyn HasKind> {
    macro_rules! find {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$t>() {
                return Some(e);
            })*
        };
    }
    find!(
        client::Error,
        Classified,
        forge::Error,
        spawn::Error,
        evolve::Error,
        scaffold::InvalidName,
        crate::core::collector::client::IngestError,
        crate::core::server::app::Error,
        crate::core::store::Error,
    );
    None
}

/// An error made with its kind, for failures that are not a core error type (a WebSocket
/// upgrade refused, an agent that dropped the connection): shown as its message.
#[derive(Debug)]
pub struct Classified {
    kind: ErrorKind,
    message: String,
    refusal: Option<(u16, String)>,
}

impl Classified {
    /// An error of `kind` that reads `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Classified {
            kind,
            message: message.into(),
            refusal: None,
        }
    }

    /// A refusal with the server's `status` and machine `code`.
    pub fn refused(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Classified {
            kind: ErrorKind::Rejected,
            message: message.into(),
            refusal: Some((status, code.into())),
        }
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Classified {}

impl HasKind for Classified {
    fn kind(&self) -> Option<ErrorKind> {
        Some(self.kind)
    }

    fn refusal(&self) -> Option<Refusal<'_>> {
        self.refusal.as_ref().map(|(status, code)| Refusal {
            status: *status,
            code,
        })
    }
}

impl HasKind for crate::core::store::Error {
    fn kind(&self) -> Option<ErrorKind> {
        use crate::core::store::Error;
        match self {
            // A database server that cannot be reached now, like a collector that cannot.
            Error::Backend {
                transient: true, ..
            } => Some(ErrorKind::Unreachable),
            Error::UnsupportedUrl(_) => Some(ErrorKind::Usage),
            _ => None,
        }
    }
}

impl HasKind for client::Error {
    fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            client::Error::Unreachable { .. } | client::Error::Timeout { .. } => {
                ErrorKind::Unreachable
            }
            client::Error::Rejected { .. } => ErrorKind::Rejected,
            client::Error::Config(_) => ErrorKind::Usage,
            client::Error::Server { .. } | client::Error::Decode { .. } => ErrorKind::Failed,
        })
    }

    fn refusal(&self) -> Option<Refusal<'_>> {
        match self {
            client::Error::Rejected { status, code, .. } => Some(Refusal {
                status: *status,
                code,
            }),
            _ => None,
        }
    }
}

impl HasKind for forge::Error {
    fn kind(&self) -> Option<ErrorKind> {
        use forge::Error as F;
        match self {
            F::Unauthorized { .. }
            | F::Forbidden { .. }
            | F::RateLimited { .. }
            | F::RepoExists { .. }
            | F::BranchExists { .. }
            | F::Push(git::PushError::Auth { .. } | git::PushError::Rejected { .. }) => {
                Some(ErrorKind::Rejected)
            }
            F::Unreachable { .. } => Some(ErrorKind::Unreachable),
            F::Config(_) => Some(ErrorKind::Usage),
            _ => None,
        }
    }
}

// The workflows wrap forge errors transparently, so the chain skips the forge error: ask it.
impl HasKind for spawn::Error {
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            spawn::Error::Forge(e) => e.kind(),
            spawn::Error::Name(_) | spawn::Error::ForcePr { .. } => Some(ErrorKind::Usage),
            _ => None,
        }
    }
}

impl HasKind for evolve::Error {
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            evolve::Error::Forge(e) => e.kind(),
            _ => None,
        }
    }
}

impl HasKind for scaffold::InvalidName {
    fn kind(&self) -> Option<ErrorKind> {
        Some(ErrorKind::Usage)
    }
}

impl HasKind for crate::core::collector::client::IngestError {
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::AllRejected { .. } => Some(ErrorKind::Rejected),
            // The collector's own answer, further down the chain, decides.
            Self::Send { .. } | Self::Gzip(_) => None,
        }
    }

    fn refusal(&self) -> Option<Refusal<'_>> {
        match self {
            Self::AllRejected { .. } => Some(Refusal {
                status: 400,
                code: "invalid_record",
            }),
            _ => None,
        }
    }
}

impl HasKind for crate::core::server::app::Error {
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Usage(_) => Some(ErrorKind::Usage),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::collector::client::IngestError;

    fn first_kind(err: &anyhow::Error) -> Option<ErrorKind> {
        err.chain().find_map(|c| of(c)?.kind())
    }

    #[test]
    fn a_kind_is_found_behind_context_and_wrappers() {
        let unreachable = client::Error::Unreachable {
            url: "http://127.0.0.1:1/ingest".to_owned(),
            detail: "refused".to_owned(),
        };
        let err = anyhow::Error::new(IngestError::Send {
            lines: (1, 2),
            accepted: 0,
            source: unreachable,
        })
        .context("ingesting");
        assert_eq!(first_kind(&err), Some(ErrorKind::Unreachable));
        assert_eq!(err.chain().find_map(|c| of(c)?.refusal()), None);
    }

    #[test]
    fn refusals_carry_the_servers_status_and_code() {
        let err = anyhow::Error::new(IngestError::AllRejected { n: 3 });
        assert_eq!(first_kind(&err), Some(ErrorKind::Rejected));
        assert_eq!(
            err.chain().find_map(|c| of(c)?.refusal()),
            Some(Refusal {
                status: 400,
                code: "invalid_record"
            })
        );
        assert_eq!(
            err.to_string(),
            "400 invalid_record: all 3 record(s) were rejected"
        );
        let refused = anyhow::Error::new(Classified::refused(426, "upgrade_refused", "no"));
        assert_eq!(first_kind(&refused), Some(ErrorKind::Rejected));
        assert_eq!(refused.to_string(), "no");
    }

    #[test]
    fn errors_without_a_kind_leave_it_to_their_causes() {
        let err = anyhow::Error::new(std::io::Error::other("disk"));
        assert_eq!(first_kind(&err), None);
        let forge = anyhow::Error::new(spawn::Error::Forge(forge::Error::Config("x".to_owned())));
        assert_eq!(first_kind(&forge), Some(ErrorKind::Usage));
    }
}
