//! The domain: everything Phoenix does, with no clap, no stdout and no process exit.

pub mod analysis;
pub mod anonymize;
pub mod api_error;
pub mod bench;
pub mod client;
pub mod collector;
pub mod config;
pub mod distributor;
pub mod http;
pub mod insight;
pub mod learning;
pub mod llm;
pub mod protocol;
pub mod sqlite;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod tier;
pub mod tls;
pub mod update;
