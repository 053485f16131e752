//! Integration tests: one binary, a module per area.

mod cli;
mod llm;
mod support;
