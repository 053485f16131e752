//! Subcommands: each module parses its arguments, calls `core`, and prints the result.
//!
//! Each command depends on `core` and on this module's context (settings, clients, the printer
//! of `crate::output`); no command imports another.

pub mod agents;
pub mod analyze;
pub mod bench;
pub mod bench_abuse;
pub mod bench_dashboard;
pub mod bench_otlp;
pub mod bench_pii;
pub mod bench_query;
pub mod completions;
pub mod config;
pub mod evolve_playbook;
pub mod export;
mod forge_args;
pub mod ingest;
pub mod insights;
pub mod man;
pub mod propose;
pub mod publish;
pub mod redact;
pub mod serve;
pub mod spawn_agent;
pub mod subscribe;
pub mod telemetrist;
pub mod telemetry;

pub use forge_args::ForgeArgs;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::core::collector::client::CollectorClient;
use crate::core::distributor::client::{DistributorClient, http_base};
use crate::core::error_kind::{self, ErrorKind};
use crate::core::privacy::telemetrist::{Report, SendOptions, Sender, sender};
use crate::core::shared::client::{ApiClient, ClientOptions, RetryPolicy};
use crate::core::shared::config::{LoadOptions, Settings};
use crate::core::updates::{PublishRequest, UpdateEnvelope, UpdateType};

/// Process exit codes (documented in `--help` and README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Failure.
    pub const FAILED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// Server unreachable.
    pub const UNREACHABLE: u8 = 3;
    /// Request rejected by the server (4xx).
    pub const REJECTED: u8 = 4;
    /// Partial success.
    pub const PARTIAL: u8 = 5;
}

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Some items succeeded and some failed (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PartialFailure(pub String);

/// Everything a command needs besides its own arguments.
#[derive(Debug)]
pub struct Context {
    /// Effective settings.
    pub settings: Settings,
    /// `--json`.
    pub json: bool,
    /// Whether stdout is a terminal (tables and colours).
    pub stdout_tty: bool,
    /// Whether stderr is a terminal (progress bars).
    pub stderr_tty: bool,
}

impl Context {
    /// Where this command's output goes.
    pub fn printer(&self) -> crate::output::Printer {
        crate::output::Printer::new(self.json, self.stdout_tty, self.stderr_tty)
    }
}

/// Sets up tracing on stderr: `PHOENIX_LOG` wins, else `-v`/`-q`, else warn (info for servers).
pub fn init_tracing(cli: &Cli) {
    let default = match (cli.global.quiet, cli.global.verbose, &cli.command) {
        (true, _, _) => "error",
        (_, 0, Command::Serve(_) | Command::Telemetrist(_)) => "info",
        (_, 0, _) => "warn",
        (_, 1, _) => "info",
        (_, 2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("PHOENIX_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Loads the settings and runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = std::env::vars().collect();
    let load = LoadOptions {
        config_file: cli.global.config.clone(),
        env,
        cwd: std::env::current_dir().ok(),
    };
    let settings = Settings::load(&load).map_err(|e| UsageError(e.to_string()))?;
    let ctx = Context {
        settings,
        json: cli.global.json,
        stdout_tty: std::io::stdout().is_terminal(),
        stderr_tty: std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Serve(c) => serve::run(c, ctx).await,
        Command::Ingest(a) => ingest::run(a, &ctx).await,
        Command::Analyze(a) => analyze::run(a, &ctx).await,
        Command::Insights(a) => insights::run(a, &ctx).await,
        Command::Publish(c) => publish::run(c, &ctx).await,
        Command::Subscribe(a) => subscribe::run(a, &ctx).await,
        Command::Redact(a) => redact::run(a, &ctx).await,
        Command::Export(a) => export::run(a, &ctx).await,
        Command::Propose(a) => propose::run(a, &ctx).await,
        Command::Telemetry(c) => telemetry::run(c, &ctx).await,
        Command::Telemetrist(a) => telemetrist::run(a, &ctx).await,
        Command::Config(c) => config::run(c, &ctx),
        Command::Agents(c) => agents::run(c, &ctx),
        Command::Completions(a) => {
            not_json(&ctx, "completions", "shell scripts")?;
            completions::run(a)
        }
        Command::Man(a) => {
            not_json(&ctx, "man", "roff man pages")?;
            man::run(a)
        }
        Command::SpawnAgent(a) => spawn_agent::run(a, &ctx).await,
        Command::EvolvePlaybook(a) => evolve_playbook::run(a, &ctx).await,
        Command::Bench(c) => bench::run(c, &ctx).await,
    }
}

/// Prints clap's verdict on the command line (help and version as clap prints them, a usage
/// error also as the `--json` error document when `--json` was asked for); returns the exit code.
pub fn report_usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().skip(1).any(|a| a == "--json");
    if wants_json
        && !matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        let message = e.to_string();
        let detail = message
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        println!(
            "{}",
            serde_json::json!({ "error": "usage", "detail": detail, "exit_code": exit::USAGE })
        );
    }
    let _ = e.print();
    e.exit_code() as u8
}

/// `--json` is refused, not ignored, by commands whose output has a format of its own.
fn not_json(ctx: &Context, command: &str, what: &str) -> Result<(), UsageError> {
    if ctx.json {
        return Err(UsageError(format!(
            "--json does not apply to `phoenix {command}`: it writes {what}"
        )));
    }
    Ok(())
}

/// The one JSON document `--json` prints on stdout when a command fails, so scripts can
/// parse failures too: `{"error": code, "detail": sentence, "exit_code": n}` (plus the
/// server's `status` when it refused the request).
pub fn error_document(err: &anyhow::Error) -> serde_json::Value {
    let exit_code = exit_code(err);
    let detail = err
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    let server = err
        .chain()
        .find_map(|c| error_kind::of(c)?.refusal())
        .map(|r| (r.status, r.code.to_owned()));
    let error = match (exit_code, &server) {
        (_, Some((_, code))) => code.clone(),
        (exit::USAGE, _) => "usage".to_owned(),
        (exit::UNREACHABLE, _) => "unreachable".to_owned(),
        (exit::REJECTED, _) => "rejected".to_owned(),
        (exit::PARTIAL, _) => "partial_failure".to_owned(),
        _ => "failed".to_owned(),
    };
    let mut doc = serde_json::json!({ "error": error, "detail": detail, "exit_code": exit_code });
    if let Some((status, _)) = server {
        doc["status"] = status.into();
    }
    doc
}

/// Chooses the exit code from the first error in the chain that says what kind it is.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(kind) = error_kind::of(cause).and_then(|e| e.kind()) {
            return match kind {
                ErrorKind::Failed => exit::FAILED,
                ErrorKind::Usage => exit::USAGE,
                ErrorKind::Unreachable => exit::UNREACHABLE,
                ErrorKind::Rejected => exit::REJECTED,
                ErrorKind::Partial => exit::PARTIAL,
            };
        }
        if cause.is::<UsageError>() {
            return exit::USAGE;
        }
        if cause.is::<PartialFailure>() {
            return exit::PARTIAL;
        }
    }
    exit::FAILED
}

/// How the client commands reach the collector.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorClientArgs {
    /// Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Give up on one request after this long
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl CollectorClientArgs {
    /// A client for the collector, flags over settings.
    pub fn client(&self, settings: &Settings) -> anyhow::Result<CollectorClient> {
        self.build(
            &settings.collector.url,
            settings.collector.token.as_deref(),
            settings,
        )
        .map(CollectorClient::new)
    }

    /// A client for the collector's conversation endpoint: flags over the Telemetrist's
    /// `telemetry_endpoint` / `telemetry_stream_key` (which default to the collector's).
    pub fn conversation_client(&self, settings: &Settings) -> anyhow::Result<ApiClient> {
        let t = &settings.telemetrist;
        self.build(
            &t.telemetry_endpoint,
            t.telemetry_stream_key.as_deref(),
            settings,
        )
    }

    /// A sender to the collector's conversation endpoint.
    pub fn conversation_sender(
        &self,
        batch_size: u32,
        retries: u32,
        settings: &Settings,
    ) -> anyhow::Result<Sender> {
        let options = SendOptions {
            batch_records: batch_size as usize,
            retry: RetryPolicy {
                max_retries: retries,
                ..RetryPolicy::default()
            },
            ..SendOptions::default()
        };
        Ok(Sender::new(self.conversation_client(settings)?, options))
    }

    fn build(
        &self,
        url: &str,
        token: Option<&str>,
        settings: &Settings,
    ) -> anyhow::Result<ApiClient> {
        let opts = ClientOptions {
            base_url: self.url.clone().unwrap_or_else(|| url.to_owned()),
            token: self.token.clone().or_else(|| token.map(str::to_owned)),
            ca_cert: self
                .ca_cert
                .clone()
                .or_else(|| settings.collector.ca_cert.clone()),
            timeout: self.timeout,
        };
        ApiClient::new(&opts).context("setting up the collector client")
    }
}

/// Who receives an update.
#[derive(Debug, Clone, clap::Args)]
pub struct Targeting {
    /// Only this ORCH (its raw id or its orch_ hash)
    #[arg(long, value_name = "ORCH")]
    pub target_orch: Option<String>,
    /// Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)
    #[arg(long, value_name = "PATH")]
    pub target_prefix: Option<String>,
    /// Only the exact --target-prefix path, not the agents below it
    #[arg(long, requires = "target_prefix")]
    pub no_cascade: bool,
    /// Tier a subscriber needs to receive the update [default: free]
    #[arg(long, value_name = "TIER", value_parser = ["free", "premium"])]
    pub tier: Option<String>,
    /// Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub rollout_percent: Option<u8>,
}

/// How to reach the distributor.
#[derive(Debug, Clone, clap::Args)]
pub struct DistributorClientArgs {
    /// Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Give up on one request after this long
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl DistributorClientArgs {
    /// A client for the distributor, flags over settings.
    pub fn client(&self, settings: &Settings) -> anyhow::Result<DistributorClient> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| settings.distributor.url.clone());
        let opts = ClientOptions {
            base_url: http_base(&url)?,
            token: self.token.clone().or_else(|| settings.admin_token.clone()),
            ca_cert: self
                .ca_cert
                .clone()
                .or_else(|| settings.collector.ca_cert.clone()),
            timeout: self.timeout,
        };
        ApiClient::new(&opts)
            .map(DistributorClient::new)
            .context("setting up the distributor client")
    }

    /// Sends a checked publish request; the envelope the distributor stored.
    pub async fn publish(
        &self,
        settings: &Settings,
        req: &PublishRequest,
    ) -> anyhow::Result<UpdateEnvelope> {
        Ok(self.client(settings)?.publish(req).await?)
    }
}

/// The `POST /publish` body for an update of `update_type` with `payload` and targeting,
/// checked the way the distributor will check it (a failure is a usage error, exit 2).
pub fn publish_request(
    update_type: UpdateType,
    payload: Value,
    target: &Targeting,
) -> Result<PublishRequest, UsageError> {
    let req = PublishRequest {
        target_orch: target.target_orch.clone(),
        target_agent_prefix: target.target_prefix.clone(),
        cascade: target.no_cascade.then_some(false),
        update_type: Some(update_type.as_str().to_owned()),
        tier_required: target.tier.clone(),
        payload: Some(payload),
        rollout_percent: target.rollout_percent.map(Value::from),
    };
    // The server runs the same checks; failing here saves a round trip and exits 2.
    req.clone()
        .validate()
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(req)
}

/// Who an update targets, in words.
pub fn audience(e: &UpdateEnvelope) -> String {
    let path = match (&e.target_agent_prefix, e.cascade) {
        (None, _) => "every agent".to_owned(),
        (Some(p), true) => format!("agents under {p}"),
        (Some(p), false) => format!("agent path {p} only"),
    };
    match &e.target_orch {
        Some(o) => format!("{path} of orch {o}"),
        None => path,
    }
}

/// The exit status of a run: the collector's failure (everything kept in the spool), else
/// partial when something was invalid or quarantined.
pub fn conversations_outcome(
    report: &Report,
    failure: Option<sender::Error>,
) -> anyhow::Result<()> {
    if let Some(e) = failure {
        return Err(anyhow::Error::new(e).context(format!(
            "the collector did not get everything: {} conversation(s) are kept in the spool at {}; the next `phoenix ingest --conversations` or `phoenix telemetrist` run sends them",
            report.pending, report.spool
        )));
    }
    let quarantined = report.delivery.quarantined.len();
    if report.invalid + quarantined > 0 {
        return Err(PartialFailure(format!(
            "{} conversation(s) skipped as invalid, {quarantined} quarantined",
            report.invalid
        ))
        .into());
    }
    Ok(())
}

/// Parses a point in time: Unix seconds, RFC 3339, or an age such as `15m`, `2h`, `7d`.
pub fn parse_when(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .map_err(|_| format!("{s:?} is before 1970"));
    }
    match humantime::parse_duration(s) {
        Ok(age) => Ok(crate::core::telemetry::now_unix() - age.as_secs() as i64),
        Err(_) => Err(format!(
            "{s:?} is not Unix seconds, an RFC 3339 time, or an age like 15m / 2h / 7d"
        )),
    }
}
