//! `phoenix publish`: publish hot updates and follow their delivery (being written).

use super::Context;

/// Publish subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List published updates
    List,
}

/// Runs `phoenix publish`.
pub async fn run(_cmd: Cmd, _ctx: &Context) -> anyhow::Result<()> {
    anyhow::bail!("phoenix publish is not implemented yet")
}
