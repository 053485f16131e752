//! `phoenix bench otlp`: OTLP/HTTP protobuf span ingest next to the NDJSON batch rate and the
//! `/health` rate of the same collector, against the targets.

use std::time::Duration;

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::bench::otlp::{self, OtlpOptions, OtlpReport, OtlpRound, OtlpTarget};
use crate::bench::{LoadFigures, TargetCheck};
use crate::output::{self, goal, num, pct, warn_if_unoptimised};

/// Options of `phoenix bench otlp`.
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// Measured time of each scenario
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before each measurement
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Keep-alive connections sending POST /v1/traces
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub connections: usize,
    /// Spans per OTLP request (GenAI chat, tool and embedding spans; a second scenario adds message content)
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub spans_per_request: usize,
    /// Keep-alive connections of the NDJSON batch POST /ingest it is compared with
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub batch_connections: usize,
    /// Records per NDJSON batch request
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: usize,
    /// Keep-alive connections of GET /health
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub health_connections: usize,
    /// Rows of the OTLP scenario the raw SQLite storage ceiling inserts in one transaction
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub storage_rows: usize,
    /// Repeat the scenarios and the ceiling this many times and report medians
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rounds: usize,
}

/// Runs `phoenix bench otlp`.
pub async fn run_otlp(args: OtlpArgs, ctx: &Context) -> anyhow::Result<()> {
    let opts = OtlpOptions {
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        spans_per_request: args.spans_per_request,
        batch_connections: args.batch_connections,
        batch_size: args.batch_size,
        health_connections: args.health_connections,
        storage_rows: args.storage_rows,
        rounds: args.rounds,
    };
    warn_if_unoptimised("otlp");
    let progress = super::bench::progress(ctx);
    let report = match otlp::run(&opts, &progress).await {
        Err(crate::bench::Error::Options(problem)) => return Err(UsageError(problem).into()),
        other => other.context("running the OTLP benchmark")?,
    };
    super::bench::finish(
        ctx,
        &report,
        report.machine.load_before,
        print_report,
        &report.failures,
        "failed requests or refused spans",
    )
}

fn print_report(r: &OtlpReport) {
    let (o, s) = (&r.options, &r.summary);
    let check = |t: OtlpTarget| r.targets.iter().find(|c| c.target == t);
    let rate = |v: f64| num(v.round());
    let mut table = output::table(["scenario", "figure", "unit", "target", "pass"]);
    let mut row =
        |scenario: String, figure: String, unit: &str, target: Option<&TargetCheck<OtlpTarget>>| {
            let (goal, pass) = match target {
                Some(c) => (
                    goal(c, |v| match c.target {
                        OtlpTarget::OtlpSpansRate => num(v),
                        OtlpTarget::OtlpVsBatch => pct(v),
                    }),
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
    row(
        format!("GET /health, {} conns (HTTP ceiling)", o.health_connections),
        rate(s.health_per_sec),
        "req/s",
        None,
    );
    row(
        format!(
            "POST /ingest NDJSON ×{}, {} conns ({} KiB/request)",
            o.batch_size,
            o.batch_connections,
            s.batch_request_bytes / 1024
        ),
        rate(s.ingest_batch_per_sec),
        "events/s",
        None,
    );
    row(
        format!(
            "POST /v1/traces protobuf ×{}, {} conns ({} KiB/request)",
            o.spans_per_request,
            o.connections,
            s.otlp_request_bytes / 1024
        ),
        rate(s.otlp_spans_per_sec),
        "spans/s",
        check(OtlpTarget::OtlpSpansRate),
    );
    row(
        format!(
            "POST /v1/traces protobuf ×{} with message content ({} KiB/request)",
            o.spans_per_request,
            s.otlp_content_request_bytes / 1024
        ),
        rate(s.otlp_content_spans_per_sec),
        "spans/s",
        None,
    );
    row(
        "  OTLP (GenAI attributes) / NDJSON batch".to_owned(),
        pct(s.otlp_vs_batch),
        "ratio",
        check(OtlpTarget::OtlpVsBatch),
    );
    row(
        format!(
            "raw SQLite insert of the OTLP rows, {} in 1 tx ({} B payload each; storage ceiling)",
            o.storage_rows, s.stored_payload_bytes
        ),
        rate(s.storage_rows_per_sec),
        "rows/s",
        None,
    );
    row(
        "  OTLP (GenAI attributes) / storage ceiling".to_owned(),
        pct(s.otlp_vs_storage),
        "ratio",
        None,
    );
    for (name, scenario) in [
        (
            "NDJSON",
            (|round| &round.ingest_batch) as fn(&OtlpRound) -> &LoadFigures,
        ),
        ("OTLP", |round| &round.otlp),
        ("OTLP with content", |round| &round.otlp_content),
    ] {
        let per_round: Vec<String> = r
            .rounds
            .iter()
            .map(|round| {
                let f = scenario(round);
                format!(
                    "{} µs · {} ({}) · {}",
                    num((f.cpu.us_per_request / f.events_per_request as f64 * 10.0).round() / 10.0),
                    num((f.cpu.cores * 100.0).round() / 100.0),
                    num((f.cpu.writer_cores * 100.0).round() / 100.0),
                    pct(f.writer.busy),
                )
            })
            .collect();
        row(
            format!("  {name}: cpu µs/record · cores (writer) · writer busy"),
            per_round.join("; "),
            "-",
            None,
        );
    }
    println!("{table}");
    let m = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); an in-process collector on SQLite; {} round(s) of {} after \
         {} warm-up; medians over rounds; {} records stored",
        m.profile,
        m.cpus,
        m.os,
        m.arch,
        o.rounds,
        humantime::format_duration(o.duration),
        humantime::format_duration(o.warmup),
        r.stored_records,
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}
