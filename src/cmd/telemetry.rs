//! `phoenix telemetry query`: read stored telemetry with filters.

use super::{CollectorClientArgs, Context, parse_when};
use crate::output::{self, table};

/// Telemetry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Show stored records, newest first
    Query(QueryArgs),
}

/// Filters of `telemetry query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Only this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this level
    #[arg(long)]
    pub level: Option<String>,
    /// Only agents at or below this path
    #[arg(long, value_name = "PATH")]
    pub agent_prefix: Option<String>,
    /// Only this ORCH (raw id or orch_ hash)
    #[arg(long, value_name = "ID")]
    pub orch: Option<String>,
    /// At or after: Unix seconds, RFC 3339, or an age like 2h
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<i64>,
    /// Before: Unix seconds, RFC 3339, or an age like 30m
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<i64>,
    /// Most records to show
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub limit: u32,
    /// Continue after a previous page (its next_cursor)
    #[arg(long)]
    pub cursor: Option<i64>,
    /// Collector connection.
    #[command(flatten)]
    pub client: CollectorClientArgs,
}

/// Runs `phoenix telemetry`.
pub async fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    let Cmd::Query(args) = cmd;
    let client = args.client.client(&ctx.settings)?;
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    let optional = [
        ("kind", args.kind.clone()),
        ("level", args.level.clone()),
        ("agent_prefix", args.agent_prefix.clone()),
        ("orch", args.orch.clone()),
        ("since", args.since.map(|v| v.to_string())),
        ("until", args.until.map(|v| v.to_string())),
        ("cursor", args.cursor.map(|v| v.to_string())),
    ];
    query.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let qs: String = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let page = client.telemetry(&qs).await?;
    if ctx.json {
        return ctx.printer().document(&page);
    }
    let mut t = table(["time", "kind", "level", "agent path", "orch", "payload"]);
    for r in &page.records {
        t.add_row([
            output::time(r.ts_unix),
            r.kind.clone(),
            r.level.clone().unwrap_or_default(),
            r.agent_path.clone().unwrap_or_default(),
            r.orch_hash.clone().unwrap_or_default(),
            output::shorten(&r.payload.to_string(), 80),
        ]);
    }
    println!("{t}");
    match page.next_cursor {
        Some(c) => println!("{} record(s); more with --cursor {c}", page.count),
        None => println!("{} record(s)", page.count),
    }
    Ok(())
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
