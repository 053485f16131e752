//! `phoenix bench dashboard`: fills a scratch store with generated events, serves the web
//! dashboard over it in process and prints every page's latency, the live stream's first
//! event and the CPU each open live page costs, against the targets.

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::bench::dashboard::{self, DashboardOptions, DashboardReport};
use crate::output::{self, goal, num, warn_if_unoptimised};

/// Options of `phoenix bench dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Events the scratch store is filled with before the pages are read
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub events: usize,
    /// Timed GETs per page (after 3 untimed ones) on one keep-alive connection, and live-stream connections timed to their first event
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub requests: usize,
    /// Live Fleet pages (GET /ui/stream?page=fleet) open at once while their CPU is measured
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub streams: usize,
    /// Seconds of process CPU measured without streams, then as long with --streams open
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub stream_seconds: u64,
    /// Leave the filled scratch store behind and say where it is
    #[arg(long)]
    pub keep: bool,
}

/// Runs `phoenix bench dashboard`.
pub async fn run_dashboard(args: DashboardArgs, ctx: &Context) -> anyhow::Result<()> {
    let opts = DashboardOptions {
        events: args.events,
        requests: args.requests,
        streams: args.streams,
        stream_seconds: args.stream_seconds,
        keep: args.keep,
    };
    warn_if_unoptimised("dashboard");
    let progress = super::bench::progress(ctx);
    let report = match dashboard::run(&opts, &progress).await {
        Err(crate::bench::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the dashboard benchmark")?,
    };
    if let Some(kept) = &report.kept {
        eprintln!("bench: the filled store was kept at {kept}");
    }
    super::bench::finish(
        ctx,
        &report,
        report.machine.load_before,
        print_report,
        &report.failures,
        "failed requests or streams",
    )
}

fn print_report(r: &DashboardReport) {
    let ms = |v: f64| num((v * 100.0).round() / 100.0);
    let check = |name: &str| r.targets.iter().find(|c| c.target == name);
    let target = |name: &str| match check(name) {
        Some(c) => (goal(c, num), if c.pass { "pass" } else { "FAIL" }),
        None => ("-".to_owned(), "-"),
    };
    let mut table = output::table([
        "page", "p50 ms", "p95 ms", "max ms", "bytes", "requests", "target", "pass",
    ]);
    for p in &r.pages {
        let (goal, pass) = target(&format!("{}_p95_ms", p.name));
        table.add_row(vec![
            format!("GET {}", p.path),
            ms(p.p50_ms),
            ms(p.p95_ms),
            ms(p.max_ms),
            num(p.mean_bytes.round()),
            p.requests.to_string(),
            goal,
            pass.to_owned(),
        ]);
    }
    let f = &r.first_event;
    table.add_row(vec![
        format!("GET {}: connect → first event", f.path),
        ms(f.p50_ms),
        ms(f.p95_ms),
        ms(f.max_ms),
        "-".to_owned(),
        f.samples.to_string(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    println!("{table}");

    let s = &r.stream;
    let mut cost = output::table(["live stream", "value", "unit", "target", "pass"]);
    let (goal, pass) = target("stream_cpu_percent_per_page");
    cost.add_row(vec![
        format!("CPU per open page ({} streams of {})", s.streams, s.path),
        num((s.cpu_percent_per_page * 1000.0).round() / 1000.0),
        "% of a core".to_owned(),
        goal,
        pass.to_owned(),
    ]);
    cost.add_row(vec![
        format!(
            "  process cores: none open / {} open ({} s each)",
            s.streams,
            num(s.with_streams_seconds.round())
        ),
        format!(
            "{} / {}",
            num((s.baseline_cores * 1000.0).round() / 1000.0),
            num((s.with_streams_cores * 1000.0).round() / 1000.0)
        ),
        "cores".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    cost.add_row(vec![
        format!(
            "  fragments events per stream: min / mean / max (of {} renders, a record written {}/s)",
            num(s.renders_per_stream.round()),
            num((s.trickle_per_sec * 10.0).round() / 10.0)
        ),
        format!(
            "{} / {} / {}",
            s.events_per_stream_min,
            num((s.events_per_stream_mean * 10.0).round() / 10.0),
            s.events_per_stream_max
        ),
        "events".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    cost.add_row(vec![
        "  mean event".to_owned(),
        num(s.mean_event_bytes.round()),
        "bytes".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    println!("{cost}");

    let (fill, c) = (&r.fill, &r.content);
    println!(
        "{} events filled in {}s ({} events/s); {} updates published, insight over {} records",
        fill.events,
        num((fill.seconds * 10.0).round() / 10.0),
        num(fill.events_per_sec.round()),
        c.updates,
        c.insight_records,
    );
    let m = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); the dashboard over HTTP from an in-process collector on \
         SQLite, live pages re-rendered every {}s; {} timed requests per page after 3 warm-ups",
        m.profile,
        m.cpus,
        m.os,
        m.arch,
        num(s.live_every_secs),
        r.options.requests,
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}
