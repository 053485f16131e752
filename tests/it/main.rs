//! Integration tests: one binary, a module per area.

mod analyze;
mod cli;
mod collector;
mod distributor;
mod ingest;
mod llm;
mod subscribe;
mod subscribe_tls;
mod support;
