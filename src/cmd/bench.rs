//! `phoenix bench`: runs a benchmark and prints its figures and targets.

use std::time::Duration;

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::bench::cluster::{self, ClusterReport, ClusterTarget};
use crate::bench::fanout::{self, FanoutOptions, FanoutReport, FanoutTarget};
use crate::bench::{
    self, BenchOptions, BenchReport, LoadFigures, Round, Target, TargetCheck, WriterActivity,
};
use crate::output::{self, goal, num, pct, warn_if_busy, warn_if_unoptimised};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ingest throughput against this machine's HTTP and storage ceilings, and /analyze latency
    Ingest(IngestArgs),
    /// Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event
    Query(super::bench_query::QueryArgs),
    /// Web dashboard: every page's latency over a store filled with millions of events, and the CPU an open live page costs
    Dashboard(super::bench_dashboard::DashboardArgs),
    /// WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber
    Fanout(FanoutArgs),
    /// PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s
    Pii(super::bench_pii::PiiArgs),
    /// OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector
    Otlp(super::bench_otlp::OtlpArgs),
    /// Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers
    Abuse(super::bench_abuse::AbuseArgs),
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
    /// Rows the raw storage ceiling writes (SQLite: in one transaction; PostgreSQL: by COPY, a batch per transaction)
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub storage_rows: usize,
    /// Timed POST /analyze calls over 5000 records
    #[arg(long, value_name = "N", default_value_t = 21)]
    pub analyze_runs: usize,
    /// Repeat the load and storage scenarios this many times and report medians
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rounds: usize,
    /// Run on this PostgreSQL server instead of SQLite, in a scratch database made and dropped by the run
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Ingest through this NATS JetStream into --database-url (the collector cluster's path), against raw JetStream publish and raw COPY ceilings; scratch stream deleted by the run
    #[arg(long, value_name = "URL", requires = "database_url")]
    pub nats_url: Option<String>,
}

/// Options of `phoenix bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers connected at once (each needs an open file here and one in the distributor)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub subscribers: usize,
    /// Updates published one at a time, each acked by every subscriber before the next
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub publishes: usize,
    /// WebSocket handshakes in flight at once while connecting
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub connect_parallelism: usize,
    /// Idle time after the last handshake before the distributor's memory is sampled
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Distributor processes sharing one update log; subscribers are spread over them and updates published on the first (needs --database-url)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nodes: usize,
    /// Keep the update log on this PostgreSQL server, in a scratch database made and dropped by the run
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Ring the nodes' NATS doorbell on this server after each publish (without it they poll the log)
    #[arg(long, value_name = "URL", requires = "database_url")]
    pub nats_url: Option<String>,
}

/// Runs `phoenix bench`.
pub async fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ingest(args) => ingest(args, ctx).await,
        Cmd::Query(args) => super::bench_query::run_query(args, ctx).await,
        Cmd::Dashboard(args) => super::bench_dashboard::run_dashboard(args, ctx).await,
        Cmd::Fanout(args) => fanout(args, ctx).await,
        Cmd::Pii(args) => super::bench_pii::run_pii(args, ctx).await,
        Cmd::Otlp(args) => super::bench_otlp::run_otlp(args, ctx).await,
        Cmd::Abuse(args) => super::bench_abuse::run_abuse(args, ctx).await,
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
        database_url: args.database_url.clone(),
    };
    warn_if_unoptimised("ingest");
    let progress = progress(ctx);
    if let Some(nats_url) = &args.nats_url {
        return cluster_ingest(&opts, nats_url, ctx, &progress).await;
    }
    let report = match bench::run(&opts, &progress).await {
        Err(bench::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the ingest benchmark")?,
    };
    finish(
        ctx,
        &report,
        report.machine.load_before,
        print_report,
        &report.failures,
        "failed requests",
    )
}

async fn cluster_ingest(
    opts: &BenchOptions,
    nats_url: &str,
    ctx: &Context,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let report = match cluster::run_cluster(opts, nats_url, progress).await {
        Err(bench::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the cluster ingest benchmark")?,
    };
    finish(
        ctx,
        &report,
        report.machine.load_before,
        print_cluster,
        &report.failures,
        "failed requests or drains",
    )
}

/// The benchmark's steps, told on stderr when it is a terminal.
pub(super) fn progress(ctx: &Context) -> impl Fn(&str) + Sync + use<> {
    let show = ctx.stderr_tty;
    move |step: &str| {
        if show {
            eprintln!("bench: {step}");
        }
    }
}

/// Prints a benchmark's report (JSON, or the table `print` makes) after warning if the
/// machine was busy, and fails the run when it saw `failures`: figures from a run whose own
/// requests failed are not figures. `saw` says what failed, for the message.
pub(super) fn finish<R: serde::Serialize>(
    ctx: &Context,
    report: &R,
    load_before: Option<f64>,
    print: impl FnOnce(&R),
    failures: &[String],
    saw: &str,
) -> anyhow::Result<()> {
    warn_if_busy(load_before);
    if ctx.json {
        ctx.printer().document(report)?;
    } else {
        print(report);
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "the benchmark saw {saw}, so its figures cannot be trusted:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn print_cluster(r: &ClusterReport) {
    let s = &r.summary;
    let check = |t: ClusterTarget| r.targets.iter().find(|c| c.target == t);
    let rate = |v: f64| num(v.round());
    let secs = |v: f64| num((v * 100.0).round() / 100.0);
    let mut table = output::table(["scenario", "figure", "unit", "target", "pass"]);
    let mut row = |scenario: String,
                   figure: String,
                   unit: &str,
                   target: Option<&TargetCheck<ClusterTarget>>| {
        let (goal, pass) = match target {
            Some(c) => (
                match c.target {
                    ClusterTarget::AckedVsJetStream => format!("≥ {}", pct(c.threshold)),
                    ClusterTarget::SteadyDrainSeconds => format!("≤ {} s", num(c.threshold)),
                },
                if c.pass { "pass" } else { "FAIL" },
            ),
            None => ("-".to_owned(), "-"),
        };
        table.add_row(vec![
            scenario,
            figure,
            unit.to_owned(),
            goal,
            pass.to_owned(),
        ]);
    };
    let o = &r.options;
    let first = r.rounds.first();
    row(
        format!(
            "raw JetStream publish, {} publishers, {} B messages (ceiling)",
            o.batch_connections,
            first.map_or(0, |f| f.jetstream_ceiling.message_bytes)
        ),
        rate(s.jetstream_records_per_sec),
        "records/s",
        None,
    );
    row(
        format!(
            "POST /ingest NDJSON ×{}, {} conns, surge: acknowledged",
            o.batch_size, o.batch_connections
        ),
        rate(s.ingest_batch_acked_per_sec),
        "events/s",
        None,
    );
    row(
        "  acknowledged / JetStream ceiling".to_owned(),
        pct(s.acked_vs_jetstream),
        "ratio",
        check(ClusterTarget::AckedVsJetStream),
    );
    row(
        "  stored meanwhile (drain into PostgreSQL)".to_owned(),
        rate(s.ingest_batch_stored_per_sec),
        "events/s",
        None,
    );
    row(
        "  lag back to 0 after the surge stops".to_owned(),
        secs(s.batch_drain_seconds),
        "s",
        None,
    );
    row(
        format!(
            "  steady: paced at {} of the COPY ceiling, acknowledged",
            pct(cluster::STEADY_SHARE)
        ),
        rate(s.steady_acked_per_sec),
        "events/s",
        None,
    );
    row(
        "    stored meanwhile".to_owned(),
        rate(s.steady_stored_per_sec),
        "events/s",
        None,
    );
    row(
        "    lag back to 0 after the steady load stops".to_owned(),
        secs(s.steady_drain_seconds),
        "s",
        check(ClusterTarget::SteadyDrainSeconds),
    );
    row(
        format!("POST /ingest single, {} conns: acknowledged", o.connections),
        rate(s.ingest_single_acked_per_sec),
        "events/s",
        None,
    );
    row(
        format!(
            "raw PostgreSQL binary COPY, {} rows, {} per tx (storage ceiling)",
            o.storage_rows, o.batch_size
        ),
        rate(s.storage_rows_per_sec),
        "rows/s",
        None,
    );
    row(
        "  stored / storage ceiling".to_owned(),
        pct(s.stored_vs_storage),
        "ratio",
        None,
    );
    println!("{table}");
    println!(
        "{} build, {} CPUs ({}/{}); {}s measured after {}s of warm-up per scenario; {} round(s), medians",
        r.machine.profile,
        r.machine.cpus,
        r.machine.os,
        r.machine.arch,
        num(o.duration.as_secs_f64()),
        num(o.warmup.as_secs_f64()),
        r.rounds.len()
    );
    println!(
        "through NATS at {} (scratch stream {}, deleted) into PostgreSQL at {} (scratch database {}, dropped)",
        r.cluster.nats, r.cluster.stream, r.cluster.postgres, r.cluster.scratch_database
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}

async fn fanout(args: FanoutArgs, ctx: &Context) -> anyhow::Result<()> {
    let opts = FanoutOptions {
        subscribers: args.subscribers,
        publishes: args.publishes,
        connect_parallelism: args.connect_parallelism,
        settle: args.settle,
        nodes: args.nodes,
        database_url: args.database_url,
        nats_url: args.nats_url,
    };
    warn_if_unoptimised("fanout");
    let progress = progress(ctx);
    let report = match fanout::run(&opts, &progress).await {
        Err(fanout::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the fan-out benchmark")?,
    };
    finish(
        ctx,
        &report,
        report.machine.load_before,
        print_fanout,
        &report.failures,
        "lost connections or missing acks",
    )
}

fn print_fanout(r: &FanoutReport) {
    let (c, l, m) = (&r.connect, &r.latency, &r.memory);
    let check = |t: FanoutTarget| r.targets.iter().find(|c| c.target == t);
    let mib = |kib: u64| num((kib as f64 / 1024.0 * 10.0).round() / 10.0);
    let ms = |v: f64| num((v * 10.0).round() / 10.0);
    let mut table = output::table(["figure", "value", "unit", "target", "pass"]);
    let mut row = |figure: String, value: String, unit: &str, target: Option<&TargetCheck<_>>| {
        let (goal, pass) = match target {
            Some(c) => (goal(c, num), if c.pass { "pass" } else { "FAIL" }),
            None => ("-".to_owned(), "-"),
        };
        table.add_row(vec![figure, value, unit.to_owned(), goal, pass.to_owned()]);
    };
    row(
        format!("subscribers connected (hello_ack), of {}", c.attempted),
        c.connected.to_string(),
        "subscribers",
        check(FanoutTarget::AllConnected),
    );
    row(
        format!(
            "  connect time, {} handshakes at a time",
            r.options.connect_parallelism
        ),
        format!(
            "{} ({}/s)",
            num((c.seconds * 100.0).round() / 100.0),
            num(c.per_sec.round())
        ),
        "s",
        None,
    );
    row(
        format!(
            "publish → applied ack p50, {} acks ({} publishes)",
            l.acks,
            r.publishes.len()
        ),
        ms(l.p50_ms),
        "ms",
        None,
    );
    row(
        "publish → applied ack p99".to_owned(),
        ms(l.p99_ms),
        "ms",
        check(FanoutTarget::AckLatencyP99),
    );
    row("  max".to_owned(), ms(l.max_ms), "ms", None);
    if let Some(x) = &r.cross_node {
        row(
            format!(
                "  subscribers on other nodes than the publisher's: p50, {} acks",
                x.acks
            ),
            ms(x.p50_ms),
            "ms",
            None,
        );
        row(
            "  subscribers on other nodes: p99".to_owned(),
            ms(x.p99_ms),
            "ms",
            check(FanoutTarget::CrossNodeAckLatencyP99),
        );
    }
    row(
        "  per publish, median: POST / last ack sent / all acks recorded".to_owned(),
        format!(
            "{} / {} / {}",
            ms(l.publish_median_ms),
            ms(l.last_ack_median_ms),
            ms(l.recorded_median_ms)
        ),
        "ms",
        None,
    );
    row(
        "  CPU per publish: distributor / load generator".to_owned(),
        format!(
            "{} / {}",
            num(r.cpu.distributor_ms_per_publish.round()),
            num(r.cpu.generator_ms_per_publish.round())
        ),
        "ms",
        None,
    );
    row(
        "distributor memory per idle subscriber".to_owned(),
        ms(m.per_subscriber_kib),
        "KiB",
        check(FanoutTarget::MemoryPerSubscriber),
    );
    row(
        "  distributor RSS: started / connected / after publishes".to_owned(),
        format!(
            "{} / {} / {}",
            mib(m.baseline_kib),
            mib(m.connected_kib),
            mib(m.after_publishes_kib)
        ),
        "MiB",
        None,
    );
    println!("{table}");
    let machine = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); {}, the {} subscribers share this one",
        machine.profile,
        machine.cpus,
        machine.os,
        machine.arch,
        match r.options.nodes {
            1 => "the distributor is a child process".to_owned(),
            n => format!("the {n} distributors are child processes"),
        },
        c.attempted,
    );
    if let Some(cluster) = &r.cluster {
        let spread: Vec<String> = cluster
            .subscribers_per_node
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "{} distributor nodes (subscribers {}; published on node {}, recorded acks read \
             from node {}; memory and CPU are all nodes together) sharing the update log in \
             PostgreSQL at {} (scratch database {}, dropped), {}",
            spread.len(),
            spread.join(" / "),
            cluster.publish_node,
            cluster.status_node,
            cluster.postgres,
            cluster.scratch_database,
            match &cluster.nats {
                Some(nats) => format!("doorbell on NATS at {nats}"),
                None => "no doorbell: the nodes poll the log".to_owned(),
            }
        );
    }
    if let Some(why) = &c.first_failure {
        println!("first connect failure: {why}");
    }
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}

fn print_report(r: &BenchReport) {
    let o = &r.options;
    let s = &r.summary;
    let check = |t: Target| r.targets.iter().find(|c| c.target == t);
    let rate = |v: f64| num(v.round());
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |scenario: String, figure: String, unit: &str, target: Option<&TargetCheck>| {
        let (goal, pass) = match target {
            Some(c) => (
                goal(c, |v| ingest_goal(c.target, v)),
                if c.pass { "pass" } else { "FAIL" },
            ),
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
    for (name, scenario) in [
        (
            "health",
            (|round| &round.health) as fn(&Round) -> &LoadFigures,
        ),
        ("single", |round| &round.ingest_single),
    ] {
        row(
            format!("  {name} cpu: µs/request, cores (writer, checkpoint)"),
            cpu(r, scenario),
            "-",
            None,
        );
    }
    row(
        format!(
            "POST /ingest NDJSON ×{}, {} conns",
            o.batch_size, o.batch_connections
        ),
        rate(s.ingest_batch_per_sec),
        "events/s",
        check(Target::IngestBatchRate),
    );
    let ceiling = if r.postgres.is_some() {
        format!(
            "raw PostgreSQL binary COPY, {} rows, {} per tx (storage ceiling)",
            o.storage_rows, o.batch_size
        )
    } else {
        format!(
            "raw SQLite insert, {} rows in 1 tx (storage ceiling)",
            o.storage_rows
        )
    };
    row(ceiling, rate(s.storage_rows_per_sec), "rows/s", None);
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
    if let Some(pg) = &r.postgres {
        println!(
            "on PostgreSQL at {}, in scratch database {} (dropped)",
            pg.server, pg.scratch_database
        );
    }
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

/// CPU of one scenario, medians over rounds: `31.2 · 1.97 (0.41, 0.05)`.
fn cpu(r: &BenchReport, scenario: fn(&Round) -> &LoadFigures) -> String {
    let med = |f: fn(&bench::cpu::CpuUse) -> f64| {
        bench::median(
            &r.rounds
                .iter()
                .map(|x| f(&scenario(x).cpu))
                .collect::<Vec<_>>(),
        )
    };
    format!(
        "{:.1} · {:.2} ({:.2}, {:.2})",
        med(|c| c.us_per_request),
        med(|c| c.cores),
        med(|c| c.writer_cores),
        med(|c| c.checkpoint_cores)
    )
}

/// Ratio targets read as percentages.
fn ingest_goal(target: Target, threshold: f64) -> String {
    match target {
        Target::IngestSingleVsHealth | Target::IngestBatchVsStorage => pct(threshold),
        _ => num(threshold),
    }
}
