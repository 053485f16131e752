//! Phoenix: operate a fleet of LLM agents ("ORCHs") from one binary.
//!
//! `cli` holds the clap definitions, `cmd` one module per subcommand (thin: arguments in,
//! output out; no command imports another), `output` the printer and table helpers the
//! commands share, `core` the domain, which never prints and never exits, and `bench` the load
//! generators and evaluations behind `phoenix bench` (they use `core`; `core` never uses them
//! outside its tests).

pub mod bench;
pub mod cli;
pub mod cmd;
pub mod output;
// The domain never prints: output is the commands' business.
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod core;
