//! Command-line definition (clap derive). Each subcommand's arguments live in `cmd/<name>.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd;

/// Shown at the end of `phoenix --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure
  2  usage error (bad flags or arguments)
  3  server unreachable
  4  request rejected by the server (4xx)
  5  partial success (some items failed)

Configuration: flags > environment > phoenix.toml > defaults; see `phoenix config show`.";

/// Operate a fleet of LLM agents: telemetry, analysis and insights, hot updates.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, propagate_version = true, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Phoenix's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Phoenix's servers (the collector, or everything at once)
    #[command(subcommand)]
    Serve(cmd::serve::Cmd),
    /// Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector
    Ingest(cmd::ingest::Args),
    /// Ask the collector for an insight over the latest telemetry
    Analyze(cmd::analyze::Args),
    /// List the insights the collector has stored
    Insights(cmd::insights::Args),
    /// Publish hot updates to subscribed agents, and follow their delivery
    #[command(subcommand)]
    Publish(cmd::publish::Cmd),
    /// Run the agent-side learning pipeline: apply hot updates to a local state file
    Subscribe(cmd::subscribe::Args),
    /// De-identify text or chat messages with session pseudonyms, or reveal them from the vault
    Redact(cmd::redact::Args),
    /// Edge Telemetrist: pick up completed conversations, redact them here, spool and send them
    Telemetrist(cmd::telemetrist::Args),
    /// Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations
    Export(cmd::export::Args),
    /// Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them
    Propose(cmd::propose::Args),
    /// Read stored telemetry
    #[command(subcommand)]
    Telemetry(cmd::telemetry::Cmd),
    /// Inspect the effective configuration
    #[command(subcommand)]
    Config(cmd::config::Cmd),
    /// Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present
    #[command(subcommand)]
    Agents(cmd::agents::Cmd),
    /// Generate shell completions
    Completions(cmd::completions::Args),
    /// Generate man pages
    Man(cmd::man::Args),
    /// Create an agent repository from Phoenix's template, with LLM-generated code
    SpawnAgent(cmd::spawn_agent::Args),
    /// Evolve an agent's playbook through a branch, a pull request, CI and approval
    EvolvePlaybook(cmd::evolve_playbook::Args),
    /// Measure Phoenix's throughput and latency on this machine
    #[command(subcommand)]
    Bench(cmd::bench::Cmd),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
