//! `phoenix subscribe`: the agent-side learning pipeline (being written).

use super::Context;

/// Subscribe options.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `phoenix subscribe`.
pub async fn run(_args: Args, _ctx: &Context) -> anyhow::Result<()> {
    anyhow::bail!("phoenix subscribe is not implemented yet")
}
