//! The storage error every backend answers with: no backend's own error type in it, so
//! callers (HTTP handlers, `phoenix export`) never depend on SQLite or PostgreSQL.

/// Storage failures a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too many records are waiting for the writer; try again later.
    #[error("write queue is full ({queued} records waiting, capacity {capacity})")]
    QueueFull {
        /// Records waiting.
        queued: usize,
        /// Capacity.
        capacity: usize,
    },
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
    /// The backend failed (SQLite: the library's message; PostgreSQL: the server's or the
    /// network's). Reads as `sqlite: ...` for SQLite, as it always has.
    #[error("{backend}: {message}")]
    Backend {
        /// `sqlite`, `postgres`, `memory`.
        backend: &'static str,
        /// The backend's message.
        message: String,
        /// Retrying the same call later may succeed (busy database, lost connection).
        transient: bool,
    },
    /// Opening the database failed.
    #[error("cannot open database {what}: {message}")]
    Open {
        /// The database: a file, or a URL without its password.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer Phoenix.
    #[error(
        "database schema version {found} is newer than this phoenix understands ({supported}); upgrade phoenix"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store URL names a backend this build cannot open.
    #[error("{0}")]
    UnsupportedUrl(String),
    /// The ingest buffer (JetStream) is at its limits; try again later.
    #[error("{0}")]
    BufferFull(String),
    /// One item is larger than the store can take in one piece (the ingest buffer's
    /// message size limit); sending it again cannot succeed.
    #[error("{0}")]
    TooLarge(String),
}

impl Error {
    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::QueueFull { .. }
                | Error::BufferFull(_)
                | Error::Backend {
                    transient: true,
                    ..
                }
        )
    }
}
