//! `phoenix bench query`: fills a scratch store with generated events and prints filtered
//! `GET /telemetry` latencies and bytes per event, against the targets.

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::bench::query::{self, QueryOptions, QueryReport};
use crate::output::{self, goal, num, warn_if_unoptimised};

/// Options of `phoenix bench query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Events the scratch store is filled with before the queries
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub events: usize,
    /// Timed requests per query, one at a time on one keep-alive connection
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub requests: usize,
    /// A query stops before --requests once its timed requests have taken this long
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub query_budget: std::time::Duration,
    /// Run on this PostgreSQL server instead of SQLite, in a scratch database made (and dropped) by the run
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Leave the filled scratch store behind and say where it is
    #[arg(long)]
    pub keep: bool,
}

/// Runs `phoenix bench query`.
pub async fn run_query(args: QueryArgs, ctx: &Context) -> anyhow::Result<()> {
    let opts = QueryOptions {
        events: args.events,
        requests: args.requests,
        query_budget: args.query_budget,
        database_url: args.database_url,
        keep: args.keep,
    };
    warn_if_unoptimised("query");
    let progress = super::bench::progress(ctx);
    let report = match query::run(&opts, &progress).await {
        Err(crate::bench::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the query benchmark")?,
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
        "failed or empty queries",
    )
}

fn print_report(r: &QueryReport) {
    let ms = |v: f64| num((v * 100.0).round() / 100.0);
    let mut table = output::table([
        "query", "p50 ms", "p99 ms", "max ms", "requests", "records", "target", "pass",
    ]);
    for q in &r.queries {
        let check = r
            .targets
            .iter()
            .find(|c| c.target == format!("{}_p50_ms", q.name));
        let (target, pass) = match check {
            Some(c) => (goal(c, num), if c.pass { "pass" } else { "FAIL" }),
            None => ("-".to_owned(), "-"),
        };
        table.add_row(vec![
            q.example.clone(),
            ms(q.p50_ms),
            ms(q.p99_ms),
            ms(q.max_ms),
            if q.budget_exhausted {
                format!("{} (time budget)", q.requests)
            } else {
                q.requests.to_string()
            },
            num(q.mean_records.round()),
            target,
            pass.to_owned(),
        ]);
    }
    println!("{table}");
    let (f, d) = (&r.fill, &r.disk);
    println!(
        "{} events filled in {}s ({} events/s); on disk {} MiB, {} bytes/event ({}; whole \
         database {} MiB)",
        f.events,
        num((f.seconds * 10.0).round() / 10.0),
        num(f.events_per_sec.round()),
        num((d.bytes as f64 / 1_048_576.0).round()),
        num(d.bytes_per_event.round()),
        d.measured,
        num((d.database_bytes as f64 / 1_048_576.0).round()),
    );
    let m = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); GET /telemetry over HTTP to an in-process collector on {}; \
         at most {} timed requests per query after warm-up, {} each at most",
        m.profile,
        m.cpus,
        m.os,
        m.arch,
        match &r.postgres {
            Some(pg) => format!(
                "PostgreSQL at {} (scratch database {})",
                pg.server, pg.scratch_database
            ),
            None => "SQLite".to_owned(),
        },
        r.options.requests,
        humantime::format_duration(r.options.query_budget),
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}
