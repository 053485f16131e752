//! Integration tests: one binary, a module per area.

mod analyze;
mod bench;
mod cli;
mod collector;
mod conformance;
mod conformance_log;
mod conversations;
mod distributor;
mod export;
mod forge;
mod github;
mod hardening;
mod ingest;
mod llm;
mod nats_ingest;
mod pii_evasions;
mod postgres;
mod privacy_pipeline;
mod propose;
mod redact;
mod scale_out;
mod subscribe;
mod subscribe_tls;
mod support;
mod swarm;
mod telemetrist;
