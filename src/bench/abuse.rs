//! The abuse benchmark behind `phoenix bench abuse`: each scenario starts `phoenix serve …`
//! as a child process and treats it the way a careless or hostile client would, then reports
//! what the server did, against issue 13's targets.
//!
//! - `shutdown`: slow clients hold half-sent requests on both servers of `serve all`; SIGTERM;
//!   time to exit and the exit code.
//! - `slowloris`: connections trickle header bytes (and reconnect when cut) while a client
//!   times `GET /health` on fresh connections.
//! - `ping-flood`: a subscriber sends 125-byte pings and never reads; the distributor's RSS
//!   before and after, and whether it closed the peer.
//! - `gzip-bombs`: concurrent gzip bodies that inflate to GiBs; the collector's peak RSS.

mod bombs;
mod flood;
mod shutdown;
mod slowloris;

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::fanout::process::{self, Distributor as ServerProcess};
use super::{Bound, Machine, ScratchDir, TargetCheck, secs};

pub use bombs::BombFigures;
pub use flood::FloodFigures;
pub use shutdown::ShutdownFigures;
pub use slowloris::SlowlorisFigures;

/// Slowloris connections opened at once while connecting.
const CONNECT_PARALLELISM: usize = 128;
/// Longest wait for one ordinary request to a server under abuse.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGTERM with slow clients connected.
    Shutdown,
    /// Connections trickling headers while `/health` is timed.
    Slowloris,
    /// A non-reading WebSocket peer sending pings.
    PingFlood,
    /// Concurrent gzip bombs.
    GzipBombs,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 4] = [
        Scenario::Shutdown,
        Scenario::Slowloris,
        Scenario::PingFlood,
        Scenario::GzipBombs,
    ];
}

/// What an abuse run does.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseOptions {
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Slow clients connected when SIGTERM is sent.
    pub slow_clients: usize,
    /// The server's `--shutdown-timeout` (the deadline the exit is judged against).
    #[serde(serialize_with = "secs")]
    pub shutdown_timeout: Duration,
    /// Slowloris connections.
    pub slowloris: usize,
    /// How long `/health` is timed under the slowloris.
    #[serde(serialize_with = "secs")]
    pub slowloris_duration: Duration,
    /// Pings the flooding peer tries to send.
    pub pings: u64,
    /// Gzip bombs sent at once.
    pub bombs: usize,
    /// What each bomb inflates to, in MiB.
    pub bomb_decoded_mib: u64,
}

impl Default for AbuseOptions {
    fn default() -> Self {
        AbuseOptions {
            scenarios: Scenario::ALL.to_vec(),
            slow_clients: 100,
            shutdown_timeout: Duration::from_secs(10),
            slowloris: 2000,
            slowloris_duration: Duration::from_secs(15),
            pings: 6_000_000,
            bombs: 24,
            bomb_decoded_mib: 10 * 1024,
        }
    }
}

impl AbuseOptions {
    fn validate(&self) -> Result<(), Error> {
        if self.scenarios.is_empty()
            || [self.slow_clients, self.slowloris, self.bombs].contains(&0)
            || self.pings == 0
            || self.bomb_decoded_mib == 0
        {
            return Err(Error::Options(
                "scenarios, slow clients, slowloris connections, pings, bombs and the bomb size must be at least 1"
                    .to_owned(),
            ));
        }
        if self.slowloris_duration.is_zero() || self.shutdown_timeout.is_zero() {
            return Err(Error::Options(
                "the slowloris duration and the shutdown timeout must be longer than zero"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Descriptors the load generator needs at once.
    fn files_needed(&self) -> usize {
        let mut n = 0;
        for s in &self.scenarios {
            n = n.max(match s {
                Scenario::Shutdown => self.slow_clients,
                Scenario::Slowloris => self.slowloris + 16,
                Scenario::PingFlood => 1,
                Scenario::GzipBombs => self.bombs,
            });
        }
        n
    }
}

/// A figure the issue sets a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbuseTarget {
    /// Exit code after SIGTERM (must be 0).
    ShutdownExitCode,
    /// Seconds from SIGTERM to exit, against the shutdown timeout.
    ShutdownSeconds,
    /// `/health` p99 under the slowloris, ms.
    SlowlorisHealthP99,
    /// RSS growth of the distributor over the ping flood, MB.
    PingFloodRssGrowth,
    /// Whether the flooding peer was closed (1 = yes).
    PingFloodPeerClosed,
    /// Peak RSS of the collector under concurrent gzip bombs, MB.
    GzipBombsPeakRss,
}

/// `/health` p99 under the slowloris must stay below this, ms.
pub const SLOWLORIS_P99_MS: f64 = 50.0;
/// The distributor's RSS may grow by at most this over the ping flood, MB.
pub const FLOOD_GROWTH_MB: f64 = 50.0;
/// The collector's peak RSS under the bombs must stay below this, MB.
pub const BOMBS_PEAK_MB: f64 = 300.0;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: AbuseOptions,
    /// `shutdown`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownFigures>,
    /// `slowloris`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowloris: Option<SlowlorisFigures>,
    /// `ping-flood`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_flood: Option<FloodFigures>,
    /// `gzip-bombs`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gzip_bombs: Option<BombFigures>,
    /// Targets of the scenarios that ran.
    pub targets: Vec<TargetCheck<AbuseTarget>>,
    /// What went wrong on the load generator's side; a run with any is not trustworthy.
    pub failures: Vec<String>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// Starting, measuring or stopping a server failed (also: the open-file limit).
    #[error(transparent)]
    Server(#[from] super::fanout::Error),
    /// The scratch directory could not be created.
    #[error(transparent)]
    Scratch(#[from] super::Error),
    /// A request the benchmark needs failed.
    #[error("{0}")]
    Request(String),
}

/// 1024-based KiB to decimal MB, as the figures are given.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Runs the chosen scenarios one after another, each on its own child server in its own
/// scratch directory; `progress` is told which step starts.
pub async fn run(
    opts: &AbuseOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<AbuseReport, Error> {
    opts.validate()?;
    // The generator holds as many sockets as the server: raise this process's limit as far
    // as it goes, then refuse clearly if that is not enough.
    let _ = crate::core::server::raise_file_limit();
    process::check_file_limit(opts.files_needed())?;
    let mut report = AbuseReport {
        machine: Machine::current(),
        options: opts.clone(),
        shutdown: None,
        slowloris: None,
        ping_flood: None,
        gzip_bombs: None,
        targets: Vec::new(),
        failures: Vec::new(),
    };
    for scenario in &opts.scenarios {
        let scratch = ScratchDir::create()?;
        match scenario {
            Scenario::Shutdown => {
                progress(&format!(
                    "shutdown: {} slow clients, then SIGTERM",
                    opts.slow_clients
                ));
                let f = shutdown::run(opts, &scratch.0).await?;
                let code = f.exit_code.map_or(f64::NAN, f64::from);
                report.targets.push(TargetCheck::new(
                    AbuseTarget::ShutdownExitCode,
                    code,
                    Bound::AtMost,
                    0.0,
                ));
                report.targets.push(TargetCheck::new(
                    AbuseTarget::ShutdownSeconds,
                    f.exit_seconds,
                    Bound::AtMost,
                    opts.shutdown_timeout.as_secs_f64(),
                ));
                report.shutdown = Some(f);
            }
            Scenario::Slowloris => {
                progress(&format!(
                    "slowloris: {} connections trickling headers, /health timed for {}",
                    opts.slowloris,
                    humantime::format_duration(opts.slowloris_duration)
                ));
                let f = slowloris::run(opts, &scratch.0, &mut report.failures).await?;
                report.targets.push(TargetCheck::new(
                    AbuseTarget::SlowlorisHealthP99,
                    f.health_p99_ms,
                    Bound::Below,
                    SLOWLORIS_P99_MS,
                ));
                report.slowloris = Some(f);
            }
            Scenario::PingFlood => {
                progress(&format!("ping-flood: up to {} pings", opts.pings));
                let f = flood::run(opts, &scratch.0).await?;
                report.targets.push(TargetCheck::new(
                    AbuseTarget::PingFloodRssGrowth,
                    f.rss_growth_mb,
                    Bound::AtMost,
                    FLOOD_GROWTH_MB,
                ));
                report.targets.push(TargetCheck::new(
                    AbuseTarget::PingFloodPeerClosed,
                    if f.peer_closed { 1.0 } else { 0.0 },
                    Bound::AtLeast,
                    1.0,
                ));
                report.ping_flood = Some(f);
            }
            Scenario::GzipBombs => {
                progress(&format!(
                    "gzip-bombs: {} at once, each inflating to {} MiB",
                    opts.bombs, opts.bomb_decoded_mib
                ));
                let f = bombs::run(opts, &scratch.0, &mut report.failures).await?;
                report.targets.push(TargetCheck::new(
                    AbuseTarget::GzipBombsPeakRss,
                    f.peak_rss_mb,
                    Bound::Below,
                    BOMBS_PEAK_MB,
                ));
                report.gzip_bombs = Some(f);
            }
        }
    }
    Ok(report)
}

/// `phoenix serve collector` on 127.0.0.1:0 with its database in `dir`.
async fn start_collector(dir: &Path) -> Result<ServerProcess, Error> {
    let args: Vec<OsString> = vec![
        "collector".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--db".into(),
        dir.join("collector.db").into(),
    ];
    Ok(ServerProcess::start_serve(dir, &args, &[], 1).await?)
}

/// Stops a child that should be healthy; a failure to stop cleanly is the run's failure.
async fn stop(server: ServerProcess) -> Result<(), Error> {
    Ok(server.stop().await?)
}

/// The `host:port` of an `http://host:port` URL.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://")
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_and_files_counted() {
        let opts = AbuseOptions::default();
        assert!(opts.validate().is_ok());
        assert_eq!(opts.files_needed(), 2016);
        let none = AbuseOptions {
            scenarios: Vec::new(),
            ..AbuseOptions::default()
        };
        assert!(none.validate().is_err());
        assert_eq!(authority("http://127.0.0.1:5/x"), "127.0.0.1:5");
        assert_eq!(authority("ws://127.0.0.1:6/subscribe"), "127.0.0.1:6");
    }
}
