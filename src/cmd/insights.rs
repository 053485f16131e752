//! `phoenix insights`: list stored insights.

use super::{CollectorClientArgs, Context};
use crate::output::{self, table};

/// List the newest insights.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many insights to show, newest first
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Show every bullet and the statistics of each insight instead of one line each
    #[arg(long)]
    pub full: bool,
    /// Collector connection.
    #[command(flatten)]
    pub client: CollectorClientArgs,
}

/// Runs `phoenix insights`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let client = args.client.client(&ctx.settings)?;
    let list = client.insights(args.limit).await?;
    if ctx.json {
        return ctx.printer().document(&list);
    }
    if list.insights.is_empty() {
        println!("No insights yet: run `phoenix analyze` first.");
        return Ok(());
    }
    if args.full {
        for i in &list.insights {
            super::analyze::render(i);
            println!();
        }
        return Ok(());
    }
    let mut t = table(["time", "tier", "focus", "source", "records", "first bullet"]);
    for i in &list.insights {
        t.add_row([
            output::time(i.ts_unix),
            i.tier.as_str().to_owned(),
            i.focus.clone(),
            i.source.as_str().to_owned(),
            i.records_analyzed.to_string(),
            i.bullets
                .first()
                .map(|b| output::shorten(b, 90))
                .unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(())
}
