//! Integration tests: one binary, a module per area.

mod analyze;
mod cli;
mod collector;
mod ingest;
mod llm;
mod support;
