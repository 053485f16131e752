//! The PostgreSQL backend of every fleet store: telemetry (range-partitioned by time, binary
//! COPY group commits), insights, conversations and the distributor's update log, for fleets
//! that outgrow one machine and run several collector and distributor processes.
//!
//! Depends on `core::store` (the traits and error it implements), `core::telemetry`,
//! `core::updates` (the update log's rows) and `core::shared` (TLS, settings' URL helpers).

pub mod ceiling;
mod connect;
mod conversations;
mod partitions;
pub mod query;
mod retention;
mod rollup;
mod schema;
mod store;
mod update_log;
pub mod writer;

pub use connect::{PgOptions, is_postgres_url, mask_password, pool};
pub use partitions::{drop_before, ensure, ensure_around, partition_of};
pub use schema::{SCHEMA_VERSION, migrate};
pub use store::PgStore;
pub use update_log::PgUpdateLog;

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The URL or the TLS settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached or refused the work; worth retrying.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// The database was migrated by a newer Phoenix.
    #[error(
        "database schema version {found} is newer than this phoenix understands ({supported}); upgrade phoenix"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// A statement failed for a reason retrying will not fix.
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl Error {
    /// Sorts a driver error: lost connections and server shutdowns are transient.
    pub fn from_pg(e: &tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        let transient = e.is_closed()
            || e.code().is_some_and(|c| {
                [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::CONNECTION_EXCEPTION,
                    SqlState::CONNECTION_FAILURE,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(c)
            })
            || e.code().is_none();
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => {
                // "error connecting to server" alone does not say why: add the causes.
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    let more = c.to_string();
                    if !text.contains(&more) {
                        text.push_str(": ");
                        text.push_str(&more);
                    }
                    cause = c.source();
                }
                text
            }
        };
        if transient {
            Error::Unavailable(detail)
        } else {
            Error::Query(detail)
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Error {
        match e {
            deadpool_postgres::PoolError::Backend(pg) => Error::from_pg(&pg),
            other => Error::Unavailable(other.to_string()),
        }
    }
}
