//! Every store on the embedded SQLite default: the telemetry store (one group-committing
//! writer, the recent tail, the WAL checkpointer, migrations), conversations, the
//! distributor's update log, and the connection set-up they share.

pub(crate) mod checkpoint;
pub mod conversations;
pub mod db;
pub mod migrations;
pub mod store;
pub(crate) mod tail;
pub mod update_log;
pub(crate) mod writer;
