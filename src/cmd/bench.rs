//! `phoenix bench`: runs the load benchmark in-process and prints its figures and targets.

use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use super::output::{self, num, pct};
use crate::core::bench::{
    self, BenchOptions, BenchReport, Bound, LoadFigures, Round, Target, TargetCheck, WriterActivity,
};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ingest throughput against this machine's HTTP and storage ceilings, and /analyze latency
    Ingest(IngestArgs),
}

/// Options of `phoenix bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Measured time of each load scenario
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before each measurement
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Keep-alive connections for GET /health and single-event POST /ingest
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub connections: usize,
    /// Keep-alive connections for batch POST /ingest
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub batch_connections: usize,
    /// Records per NDJSON batch request
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: usize,
    /// Rows the raw SQLite storage ceiling inserts in one transaction
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub storage_rows: usize,
    /// Timed POST /analyze calls over 5000 records
    #[arg(long, value_name = "N", default_value_t = 21)]
    pub analyze_runs: usize,
    /// Repeat the load and storage scenarios this many times and report medians
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rounds: usize,
}

/// A 1-minute load average from which other work visibly skews the figures.
const BUSY_LOAD: f64 = 0.5;

/// Runs `phoenix bench`.
pub async fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ingest(args) => ingest(args, ctx).await,
    }
}

async fn ingest(args: IngestArgs, ctx: &Context) -> anyhow::Result<()> {
    let opts = BenchOptions {
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        batch_connections: args.batch_connections,
        batch_size: args.batch_size,
        storage_rows: args.storage_rows,
        analyze_runs: args.analyze_runs,
        rounds: args.rounds,
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this phoenix is built without optimisations; its figures say little. \
             Run `cargo run --release -- bench ingest`."
        );
    }
    let show_progress = ctx.stderr_tty;
    let progress = |step: &str| {
        if show_progress {
            eprintln!("bench: {step}");
        }
    };
    let report = bench::run(&opts, &progress)
        .await
        .context("running the ingest benchmark")?;
    if let Some(load) = report.machine.load_before.filter(|l| *l >= BUSY_LOAD) {
        eprintln!(
            "warning: the load average was {load:.2} when the benchmark started; other work \
             shares these CPUs, so the figures understate this machine"
        );
    }
    if ctx.json {
        output::print_json(&report)?;
    } else {
        print_report(&report);
    }
    if !report.failures.is_empty() {
        // Figures from a run whose requests failed are not figures: make the run fail.
        anyhow::bail!(
            "the benchmark saw failed requests, so its figures cannot be trusted:\n  {}",
            report.failures.join("\n  ")
        );
    }
    Ok(())
}

fn print_report(r: &BenchReport) {
    let o = &r.options;
    let s = &r.summary;
    let check = |t: Target| r.targets.iter().find(|c| c.target == t);
    let rate = |v: f64| num(v.round());
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |scenario: String, figure: String, unit: &str, target: Option<&TargetCheck>| {
        let (goal, pass) = match target {
            Some(c) => (goal(c), if c.pass { "pass" } else { "FAIL" }),
            None => ("-".to_owned(), "-"),
        };
        rows.push(vec![
            scenario,
            figure,
            unit.to_owned(),
            goal,
            pass.to_owned(),
        ]);
    };
    row(
        format!("GET /health, {} conns (HTTP ceiling)", o.connections),
        rate(s.health_per_sec),
        "req/s",
        None,
    );
    row(
        format!("POST /ingest single, {} conns", o.connections),
        rate(s.ingest_single_per_sec),
        "events/s",
        check(Target::IngestSingleRate),
    );
    row(
        "  single / health".to_owned(),
        pct(s.single_vs_health),
        "ratio",
        check(Target::IngestSingleVsHealth),
    );
    row(
        "  writer: commits/s, records/commit, busy".to_owned(),
        writer(r, |round| &round.ingest_single),
        "-",
        None,
    );
    row(
        format!(
            "POST /ingest NDJSON ×{}, {} conns",
            o.batch_size, o.batch_connections
        ),
        rate(s.ingest_batch_per_sec),
        "events/s",
        check(Target::IngestBatchRate),
    );
    row(
        format!(
            "raw SQLite insert, {} rows in 1 tx (storage ceiling)",
            o.storage_rows
        ),
        rate(s.storage_rows_per_sec),
        "rows/s",
        None,
    );
    row(
        "  batch / storage".to_owned(),
        pct(s.batch_vs_storage),
        "ratio",
        check(Target::IngestBatchVsStorage),
    );
    row(
        "  writer: commits/s, records/commit, busy".to_owned(),
        writer(r, |round| &round.ingest_batch),
        "-",
        None,
    );
    row(
        format!(
            "POST /analyze {} records, median of {}",
            bench::ANALYZE_RECORDS,
            r.analyze.runs
        ),
        num(r.analyze.median_ms),
        "ms",
        check(Target::AnalyzeMedian),
    );
    row(
        "  p95 / max / server-side median".to_owned(),
        format!(
            "{} / {} / {}",
            num(r.analyze.p95_ms),
            num(r.analyze.max_ms),
            num(r.analyze.server_analysis_median_ms)
        ),
        "ms",
        None,
    );
    let mut table = output::table(["scenario", "figure", "unit", "target", "pass"]);
    for cells in rows {
        table.add_row(cells);
    }
    println!("{table}");
    if r.rounds.len() > 1 {
        let mut rounds = output::table([
            "round",
            "health req/s",
            "single ev/s",
            "single/health",
            "batch ev/s",
            "storage rows/s",
            "batch/storage",
        ]);
        for (i, round) in r.rounds.iter().enumerate() {
            rounds.add_row(vec![
                (i + 1).to_string(),
                rate(round.health.requests_per_sec),
                rate(round.ingest_single.events_per_sec),
                pct(round.single_vs_health),
                rate(round.ingest_batch.events_per_sec),
                rate(round.storage_ceiling.rows_per_sec),
                pct(round.batch_vs_storage),
            ]);
        }
        println!("{rounds}");
    }
    let m = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); {} measured after {} of warm-up per scenario; {}",
        m.profile,
        m.cpus,
        m.os,
        m.arch,
        humantime::format_duration(o.duration),
        humantime::format_duration(o.warmup),
        if r.rounds.len() > 1 {
            format!("medians of {} rounds", r.rounds.len())
        } else {
            "one round".to_owned()
        },
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}

/// The store writer's activity in one scenario, medians over rounds: `312 · 58 · 54%`.
fn writer(r: &BenchReport, scenario: fn(&Round) -> &LoadFigures) -> String {
    let med = |f: fn(&WriterActivity) -> f64| {
        bench::median(
            &r.rounds
                .iter()
                .map(|x| f(&scenario(x).writer))
                .collect::<Vec<_>>(),
        )
    };
    format!(
        "{} · {} · {}",
        num(med(|w| w.commits_per_sec).round()),
        num(med(|w| w.records_per_commit).round()),
        pct(med(|w| w.busy))
    )
}

/// `≥ 20000`, `≥ 40.0%`, `< 50`: ratio targets read as percentages.
fn goal(c: &TargetCheck) -> String {
    let op = match c.bound {
        Bound::AtLeast => "≥",
        Bound::Below => "<",
    };
    let value = match c.target {
        Target::IngestSingleVsHealth | Target::IngestBatchVsStorage => pct(c.threshold),
        _ => num(c.threshold),
    };
    format!("{op} {value}")
}
