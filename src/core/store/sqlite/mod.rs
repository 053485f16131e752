//! Every store on the embedded SQLite default: the telemetry store (one group-committing
//! writer, the recent tail, the WAL checkpointer, migrations), conversations, the
//! distributor's update log, and the connection set-up they share. The only place `rusqlite`
//! types meet the storage seams: its errors become [`Error`] here.
//!
//! Depends on the store's traits and error, and the domain types they carry (`telemetry`,
//! `updates`); the only module where `rusqlite` meets a store.

pub mod ceiling;
pub(crate) mod checkpoint;
pub mod conversations;
pub mod db;
pub mod migrations;
pub(crate) mod rollup;
pub mod store;
pub(crate) mod tail;
pub mod update_log;
pub(crate) mod writer;

use crate::core::store::Error;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        let transient = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        Error::Backend {
            backend: "sqlite",
            message: e.to_string(),
            transient,
        }
    }
}

impl From<db::SetupError> for Error {
    fn from(e: db::SetupError) -> Error {
        use db::SetupError;
        match e {
            SetupError::Open { path, message } => Error::Open {
                what: path.display().to_string(),
                message,
            },
            SetupError::Sqlite(e) => Error::from(e),
            SetupError::SchemaTooNew { found, supported } => {
                Error::SchemaTooNew { found, supported }
            }
        }
    }
}
