//! `phoenix analyze`: ask the collector for an insight and show it as tables or JSON.

use serde::Serialize;

use super::{CollectorClientArgs, Context, parse_when};
use crate::core::collector::insight::Insight;
use crate::output::{self, num, pct, table};

/// Analyse the latest telemetry.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  phoenix analyze --last-n 500 --focus performance\n  phoenix analyze --last-n 5000 --premium-key \"$X402_PREMIUM_KEY\" --agent-prefix code-gen --json"
)]
pub struct Args {
    /// How many of the newest records to analyse (free tier: at most 200, premium: 5000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub last_n: Option<u64>,
    /// What the summary should focus on: performance, emotional_resonance, errors, ...
    #[arg(long, default_value = "general")]
    pub focus: String,
    /// Premium key sent as the X402 header [default: $X402_PREMIUM_KEY]
    #[arg(long, value_name = "KEY")]
    pub premium_key: Option<String>,
    /// Only records of this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only records of this level
    #[arg(long)]
    pub level: Option<String>,
    /// Only agents at or below this path (segment-wise: code-gen matches code-gen/rust)
    #[arg(long, value_name = "PATH")]
    pub agent_prefix: Option<String>,
    /// Only this ORCH (raw id or orch_ hash)
    #[arg(long, value_name = "ID")]
    pub orch: Option<String>,
    /// Only records at or after: Unix seconds, RFC 3339, or an age like 2h
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<i64>,
    /// Only records before: Unix seconds, RFC 3339, or an age like 30m
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<i64>,
    /// Collector connection.
    #[command(flatten)]
    pub client: CollectorClientArgs,
}

#[derive(Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    last_n: Option<u64>,
    focus: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_prefix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
}

/// Runs `phoenix analyze`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let client = args.client.client(&ctx.settings)?;
    let body = Request {
        last_n: args.last_n,
        focus: &args.focus,
        kind: args.kind.as_deref(),
        level: args.level.as_deref(),
        agent_prefix: args.agent_prefix.as_deref(),
        orch: args.orch.as_deref(),
        since: args.since,
        until: args.until,
    };
    let key = args
        .premium_key
        .clone()
        .or_else(|| ctx.settings.x402_premium_key.clone());
    let insight = client.analyze(&body, key.as_deref()).await?;
    ctx.printer().result(&insight, render)
}

/// Prints an insight for people.
pub fn render(i: &Insight) {
    let s = &i.stats;
    println!(
        "Insight {} — {} tier, focus {}, {} record(s) analysed{}",
        i.id,
        i.tier.as_str(),
        i.focus,
        i.records_analyzed,
        if i.clamped {
            format!(
                " (asked for {}, clamped to the {} tier limit of {})",
                i.requested_last_n,
                i.tier.as_str(),
                i.tier_limit
            )
        } else {
            String::new()
        }
    );
    match (&i.model, &i.fallback_reason) {
        (Some(model), _) => println!("Summary by {model}:"),
        (None, Some(reason)) => println!("Heuristic summary ({reason}):"),
        _ => println!("Summary:"),
    }
    for b in &i.bullets {
        println!("  - {b}");
    }
    println!();
    if let (Some(from), Some(to)) = (s.from_ts, s.to_ts) {
        println!("Window {} .. {}", output::time(from), output::time(to));
    }
    println!(
        "Errors {} ({}) · ORCHs {} distinct, {} stale, {} without heartbeat",
        s.errors,
        pct(s.error_rate),
        s.orchs.distinct,
        s.orchs.stale.len(),
        s.orchs.never_heartbeat
    );

    let mut counts = table(["kind", "count", "level", "count", "agent path", "count"]);
    let rows = s
        .by_kind
        .len()
        .max(s.by_level.len())
        .max(s.by_agent_path.len())
        .min(10);
    for r in 0..rows {
        let cell = |v: &[crate::core::collector::analysis::Count]| {
            v.get(r)
                .map(|c| (c.name.clone(), c.count.to_string()))
                .unwrap_or_default()
        };
        let (k, kc) = cell(&s.by_kind);
        let (l, lc) = cell(&s.by_level);
        let (a, ac) = cell(&s.by_agent_path);
        counts.add_row([k, kc, l, lc, a, ac]);
    }
    println!("{counts}");

    if !s.fields.is_empty() {
        let mut fields = table(["field", "count", "mean", "p50", "p95", "p99", "min", "max"]);
        for f in &s.fields {
            let o = &f.overall;
            fields.add_row([
                f.field.clone(),
                o.count.to_string(),
                num(o.mean),
                num(o.p50),
                num(o.p95),
                num(o.p99),
                num(o.min),
                num(o.max),
            ]);
        }
        println!("{fields}");
    }
    print_latency_and_tokens(s);
    if !s.outliers.is_empty() {
        let mut out = table([
            "agent path",
            "field",
            "agent mean",
            "rest of fleet",
            "ratio",
            "z",
            "samples",
        ]);
        for o in &s.outliers {
            out.add_row([
                o.agent_path.clone(),
                format!("{} ({})", o.field, o.direction.as_str()),
                num(o.agent_mean),
                num(o.fleet_mean),
                o.ratio
                    .map(|r| format!("{}x", num(r)))
                    .unwrap_or_else(|| "-".to_owned()),
                o.z.map(num).unwrap_or_else(|| "-".to_owned()),
                o.samples.to_string(),
            ]);
        }
        println!("Outliers against the fleet:\n{out}");
    }
    if !s.orchs.stale.is_empty() {
        let mut stale = table(["stale ORCH", "last heartbeat", "age"]);
        for o in s.orchs.stale.iter().take(20) {
            stale.add_row([
                o.orch_hash.clone(),
                output::time(o.last_heartbeat_ts),
                output::age(o.age_secs),
            ]);
        }
        println!("{stale}");
    }
}

/// Latency and token figures per agent (when any record has them) and per model.
fn print_latency_and_tokens(s: &crate::core::collector::analysis::Stats) {
    use crate::core::collector::analysis::Summary;
    let field = |name: &str| s.fields.iter().find(|f| f.field == name);
    let latency = field("response_time");
    let tokens = field("tokens.total");
    let cell = |v: Option<&Summary>, pick: fn(&Summary) -> f64| {
        v.map(|x| num(pick(x))).unwrap_or_default()
    };
    if latency.is_some() || tokens.is_some() {
        let mut t = table([
            "agent path",
            "records",
            "errors",
            "latency p50 ms",
            "latency p95 ms",
            "tokens mean",
            "tokens p95",
        ]);
        for a in &s.agents {
            let (l, k) = (
                agent_summary(latency, &a.agent_path),
                agent_summary(tokens, &a.agent_path),
            );
            if l.is_none() && k.is_none() {
                continue;
            }
            t.add_row([
                a.agent_path.clone(),
                a.records.to_string(),
                a.errors.to_string(),
                cell(l, |x| x.p50),
                cell(l, |x| x.p95),
                cell(k, |x| x.mean),
                cell(k, |x| x.p95),
            ]);
        }
        println!("{t}");
    }
    if !s.models.is_empty() {
        let mut t = table([
            "model",
            "calls",
            "errors",
            "latency p50 ms",
            "latency p95 ms",
            "input tok mean",
            "output tok mean",
            "cost mean",
            "agents",
        ]);
        for m in &s.models {
            t.add_row([
                m.model.clone(),
                m.records.to_string(),
                format!("{} ({})", m.errors, pct(m.error_rate)),
                cell(m.response_time.as_ref(), |x| x.p50),
                cell(m.response_time.as_ref(), |x| x.p95),
                cell(m.input_tokens.as_ref(), |x| x.mean),
                cell(m.output_tokens.as_ref(), |x| x.mean),
                cell(m.cost.as_ref(), |x| x.mean),
                m.agents.len().to_string(),
            ]);
        }
        println!("{t}");
    }
}

fn agent_summary<'a>(
    field: Option<&'a crate::core::collector::analysis::FieldStats>,
    agent: &str,
) -> Option<&'a crate::core::collector::analysis::Summary> {
    field
        .and_then(|f| f.per_agent.iter().find(|p| p.agent_path == agent))
        .map(|p| &p.summary)
}
