//! `phoenix bench abuse`: slow, numerous and greedy clients against child servers, and what
//! the servers did, against the targets.

use std::time::Duration;

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::bench::TargetCheck;
use crate::bench::abuse::{self, AbuseOptions, AbuseReport, AbuseTarget, Scenario};
use crate::output::{self, goal, num, warn_if_unoptimised};

/// A scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioArg {
    /// SIGTERM to `serve all` with slow clients holding half-sent requests: time to exit, exit code
    Shutdown,
    /// Connections trickling headers while GET /health is timed
    Slowloris,
    /// A WebSocket subscriber sending pings without reading: distributor RSS, peer closed
    PingFlood,
    /// Concurrent gzip bombs: the collector's peak RSS
    GzipBombs,
}

/// Options of `phoenix bench abuse`.
#[derive(Debug, Clone, clap::Args)]
pub struct AbuseArgs {
    /// Run only this scenario (repeat for several) [default: all of them]
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Vec<ScenarioArg>,
    /// Slow clients connected when SIGTERM is sent (shutdown)
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub slow_clients: usize,
    /// The server's --shutdown-timeout, the deadline its exit is judged against (shutdown)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Connections trickling headers (slowloris; each needs an open file here and in the collector)
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub slowloris: usize,
    /// How long GET /health is timed under the slowloris (past the 10 s header timeout shows the cuts)
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub slowloris_duration: Duration,
    /// Pings the flooding subscriber tries to send (ping-flood)
    #[arg(long, value_name = "N", default_value_t = 6_000_000)]
    pub pings: u64,
    /// Gzip bombs sent at once (gzip-bombs)
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub bombs: usize,
    /// What each bomb inflates to, in MiB (gzip-bombs)
    #[arg(long, value_name = "MIB", default_value_t = 10 * 1024)]
    pub bomb_decoded_mib: u64,
}

/// Runs `phoenix bench abuse`.
pub async fn run_abuse(args: AbuseArgs, ctx: &Context) -> anyhow::Result<()> {
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario
            .iter()
            .map(|s| match s {
                ScenarioArg::Shutdown => Scenario::Shutdown,
                ScenarioArg::Slowloris => Scenario::Slowloris,
                ScenarioArg::PingFlood => Scenario::PingFlood,
                ScenarioArg::GzipBombs => Scenario::GzipBombs,
            })
            .collect()
    };
    let opts = AbuseOptions {
        scenarios,
        slow_clients: args.slow_clients,
        shutdown_timeout: args.shutdown_timeout,
        slowloris: args.slowloris,
        slowloris_duration: args.slowloris_duration,
        pings: args.pings,
        bombs: args.bombs,
        bomb_decoded_mib: args.bomb_decoded_mib,
    };
    warn_if_unoptimised("abuse");
    let progress = super::bench::progress(ctx);
    let report = match abuse::run(&opts, &progress).await {
        Err(abuse::Error::Options(problem)) => return Err(UsageError(problem).into()),
        Err(abuse::Error::Server(e @ crate::bench::fanout::Error::FileLimit { .. })) => {
            return Err(UsageError(e.to_string()).into());
        }
        other => other.context("running the abuse benchmark")?,
    };
    super::bench::finish(
        ctx,
        &report,
        report.machine.load_before,
        print_abuse,
        &report.failures,
        "its own clients fail",
    )
}

fn print_abuse(r: &AbuseReport) {
    let check = |t: AbuseTarget| r.targets.iter().find(|c| c.target == t);
    let one = |v: f64| num((v * 10.0).round() / 10.0);
    let mut table = output::table(["scenario", "figure", "value", "unit", "target", "pass"]);
    let mut row = |scenario: &str,
                   figure: String,
                   value: String,
                   unit: &str,
                   target: Option<&TargetCheck<AbuseTarget>>| {
        let (goal, pass) = match target {
            Some(c) => (goal(c, num), if c.pass { "pass" } else { "FAIL" }),
            None => ("-".to_owned(), "-"),
        };
        table.add_row(vec![
            scenario.to_owned(),
            figure,
            value,
            unit.to_owned(),
            goal,
            pass.to_owned(),
        ]);
    };
    if let Some(s) = &r.shutdown {
        row(
            "shutdown",
            format!(
                "SIGTERM → exit, {} slow clients ({} half headers, {} unfinished bodies, {} idle)",
                s.slow_clients, s.half_sent_headers, s.unfinished_bodies, s.idle_keep_alive
            ),
            num((s.exit_seconds * 100.0).round() / 100.0),
            "s",
            check(AbuseTarget::ShutdownSeconds),
        );
        row(
            "",
            "exit code".to_owned(),
            s.exit_code.map_or("killed".to_owned(), |c| c.to_string()),
            "-",
            check(AbuseTarget::ShutdownExitCode),
        );
    }
    if let Some(s) = &r.slowloris {
        row(
            "slowloris",
            format!(
                "GET /health p99, {} trickling connections ({} open at start)",
                s.connections, s.connected
            ),
            one(s.health_p99_ms),
            "ms",
            check(AbuseTarget::SlowlorisHealthP99),
        );
        row(
            "",
            format!(
                "  p50 / max, {} requests on fresh connections, {} failed",
                s.health_requests, s.health_failures
            ),
            format!("{} / {}", one(s.health_p50_ms), one(s.health_max_ms)),
            "ms",
            None,
        );
        row(
            "",
            "  slowloris connections cut by the server (header timeout)".to_owned(),
            s.cut_by_server.to_string(),
            "-",
            None,
        );
        row("", "  collector RSS".to_owned(), one(s.rss_mb), "MB", None);
    }
    if let Some(f) = &r.ping_flood {
        row(
            "ping-flood",
            format!(
                "distributor RSS growth, {} of {} pings sent in {}s",
                f.pings_sent,
                f.pings_planned,
                num((f.seconds * 100.0).round() / 100.0)
            ),
            one(f.rss_growth_mb),
            "MB",
            check(AbuseTarget::PingFloodRssGrowth),
        );
        row(
            "",
            format!(
                "flooding peer closed (close code {}, floods counted {})",
                f.close_code.map_or("-".to_owned(), |c| c.to_string()),
                num(f.floods_counted)
            ),
            if f.peer_closed { "yes" } else { "no" }.to_owned(),
            "-",
            check(AbuseTarget::PingFloodPeerClosed),
        );
        row(
            "",
            "  RSS before / after / peak".to_owned(),
            format!(
                "{} / {} / {}",
                one(f.rss_before_mb),
                one(f.rss_after_mb),
                one(f.peak_rss_mb)
            ),
            "MB",
            None,
        );
    }
    if let Some(b) = &r.gzip_bombs {
        row(
            "gzip-bombs",
            format!(
                "collector peak RSS, {} bombs at once ({} MB → {} MB each)",
                b.bombs,
                one(b.compressed_mb),
                num(b.decoded_mb.round())
            ),
            one(b.peak_rss_mb),
            "MB",
            check(AbuseTarget::GzipBombsPeakRss),
        );
        row(
            "",
            "  answered 413 / 503 / other / closed unanswered".to_owned(),
            format!(
                "{} / {} / {} / {}",
                b.too_large, b.busy, b.other, b.no_answer
            ),
            "-",
            None,
        );
        row(
            "",
            "  peak RSS before the bombs; seconds until all answered".to_owned(),
            format!("{} ; {}", one(b.peak_rss_before_mb), one(b.seconds)),
            "MB ; s",
            None,
        );
    }
    println!("{table}");
    let m = &r.machine;
    println!(
        "{} build, {} CPUs ({}/{}); each scenario runs its own `phoenix serve` child process",
        m.profile, m.cpus, m.os, m.arch
    );
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!("targets met: {met}/{}", r.targets.len());
}
