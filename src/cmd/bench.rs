//! `phoenix bench`: load generators and measurements (written next).

use super::Context;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ingest throughput against this machine's HTTP and storage ceilings
    Ingest,
}

/// Runs `phoenix bench`.
pub async fn run(_cmd: Cmd, _ctx: &Context) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
