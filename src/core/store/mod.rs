//! Storage of telemetry, insights and conversations, behind async traits any backend
//! implements ([`TelemetryStore`], [`ConversationStore`]), with one neutral [`Error`].
//! [`open`] picks the backend from a URL: SQLite (the default, [`sqlite`]) or in memory
//! ([`memory`]), optionally behind the NATS JetStream ingest buffer ([`jetstream`]). May depend on `core::telemetry` and `core::shared`; only `sqlite/` knows
//! SQLite.
//!
//! Writes are queued to a single writer that group-commits; `submit` returns at once with a
//! [`Commit`] to await, and refuses with [`Error::QueueFull`] instead of queueing without
//! bound. Reads are async.

pub mod conversations;
pub mod error;
pub mod jetstream;
pub mod memory;
pub mod open;
pub mod postgres;
pub mod rollup;
pub mod sqlite;
pub mod telemetry;
pub mod update_log;

pub use conversations::{
    ConversationFilter, ConversationReader, ConversationStore, ConversationStream, FilterCounts,
    ReadOrder,
};
pub use error::Error;
pub use jetstream::{BufferOptions, BufferStatus, BufferedStore};
pub use memory::MemoryStore;
pub use open::{Location, OpenOptions, open, open_conversations};
pub use sqlite::conversations::SqliteConversations;
pub use sqlite::migrations::SCHEMA_VERSION;
pub use sqlite::store::{
    CHECKPOINT_THREAD, SqliteStore, StoreOptions, WRITER_THREAD, insert_statement,
};
pub use telemetry::{Commit, InsightRecord, Page, StoreMetrics, TelemetryFilter, TelemetryStore};
