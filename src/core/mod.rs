//! The domain: everything Phoenix does, with no clap, no stdout and no process exit.
//!
//! The folders follow the seeds' components. `shared` (settings, LLM client, TLS, keys,
//! strict JSON) and `server` (the serving loop and the HTTP pieces both servers use) may be
//! used by every other folder; `telemetry` and `updates` are the wire types agents and
//! servers exchange; `store` holds storage behind backend-neutral traits. The components —
//! `collector`, `distributor`, `learning`, `hive`, `forge`, `privacy` — use those, and one
//! another only through their public items. `error_kind` sits above them all: it says which
//! kind (and so which exit code) each component's errors are.

pub mod collector;
pub mod dashboard;
pub mod distributor;
pub mod error_kind;
pub mod forge;
pub mod hive;
pub mod learning;
pub mod privacy;
pub mod server;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod updates;
