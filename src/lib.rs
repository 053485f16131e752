//! Phoenix: operate a fleet of LLM agents ("ORCHs") from one binary.
//!
//! `cli` holds the clap definitions, `cmd` one module per subcommand (thin: arguments in,
//! output out), and `core` the domain, which never prints and never exits.

pub mod cli;
pub mod cmd;
pub mod core;
