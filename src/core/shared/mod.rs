//! What every component may use and that depends on no component: settings, the HTTP client
//! of Phoenix's servers, the LLM client, connecting to NATS, TLS, per-installation keys (orch hashes, agent
//! tokens), tiers, strict JSON, one retry/backoff loop, and order statistics (median, percentiles).

pub mod agent_token;
pub mod anonymize;
pub mod client;
pub mod config;
pub mod json;
pub mod keyfile;
pub mod llm;
pub mod nats;
pub mod retry;
pub mod signal;
pub mod stats;
pub mod tier;
pub mod tls;
