//! `phoenix subscribe`: run the agent-side learning pipeline, or `show` its state file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::core::error_kind::{Classified, ErrorKind};
use crate::core::learning::{
    self, Error, HeartbeatConfig, LearningPipelineState, SubscribeOptions, Summary, UpdateReport,
    state_file,
};
use crate::core::shared::client::{ApiClient, ClientOptions};
use crate::core::shared::tls;
use crate::core::telemetry::validate_agent_path;
use crate::output::{self, table};

const EXAMPLES: &str = "\
Examples:
  phoenix subscribe --orch-id orch-1 --agent-path code-gen/rust --exec './reload.sh'
  phoenix subscribe --orch-id orch-1 --agent-path code-gen/rust --once --json
  phoenix subscribe show --orch-id orch-1

The state file is JSON: overrides {default_prompt, default_model}, config_json, last_seq,
last update and error, and the history of applied updates. --exec runs `sh -c CMD` after
each applied update with the new state on stdin and PHOENIX_STATE_FILE, PHOENIX_UPDATE_ID,
PHOENIX_UPDATE_TYPE and PHOENIX_UPDATE_SEQ set; its output goes to stderr.";

/// Apply hot updates from the distributor to a local state file, and send heartbeats.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, after_help = EXAMPLES)]
pub struct Args {
    /// Inspect a state file instead of subscribing.
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Subscription options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `phoenix subscribe` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print the overrides, config, last update, last error and history of a state file
    Show(ShowArgs),
}

/// How to subscribe.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Raw ORCH id (targeting matches it or its orch_ hash)
    #[arg(long, required = true)]
    pub orch_id: Option<String>,
    /// Agent path such as code-gen/rust (targeting prefixes match whole segments)
    #[arg(long, required = true)]
    pub agent_path: Option<String>,
    /// State file [default: <data dir>/learning/<orch id>.json]
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Shell command run after each applied update, with the new state JSON on stdin
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Kill an --exec command still running after this long
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub exec_timeout: Duration,
    /// Distributor WebSocket URL [default: $PULSE_DISTRIBUTOR_URL or ws://127.0.0.1:5003/subscribe]
    #[arg(long, value_name = "WS_URL")]
    pub url: Option<String>,
    /// PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Key that unlocks premium-tier updates, sent in hello [default: $X402_PREMIUM_KEY]
    #[arg(long, value_name = "KEY")]
    pub premium_key: Option<String>,
    /// This ORCH's agent token, sent in hello and as the heartbeats' bearer (issued by `phoenix agents token ORCH_ID`; required by a distributor off loopback) [default: $PHOENIX_AGENT_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Collector that receives heartbeats [default: $TELEMETRIST_URL or http://127.0.0.1:5002]
    #[arg(long, value_name = "URL")]
    pub telemetrist_url: Option<String>,
    /// Time between heartbeats, e.g. 30s or 5m [default: $ORCH_SLAVE_SYNC_INTERVAL seconds, 300]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Send no heartbeats to the collector
    #[arg(long, conflicts_with_all = ["telemetrist_url", "heartbeat_interval"])]
    pub no_heartbeat: bool,
    /// Report master mode in heartbeats
    #[arg(long)]
    pub master_mode: bool,
    /// Agent template version reported in heartbeats
    #[arg(long, value_name = "VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub template_version: String,
    /// Apply the pending updates, then exit (no heartbeats); exit code 3 if the distributor is unreachable
    #[arg(long)]
    pub once: bool,
}

/// Which state file to show.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// State file to read
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "orch_id",
        required_unless_present = "orch_id"
    )]
    pub state: Option<PathBuf>,
    /// Read the default state file of this ORCH id
    #[arg(long)]
    pub orch_id: Option<String>,
    /// Print the config as pretty JSON instead of YAML
    #[arg(long)]
    pub config_json: bool,
    /// Most history entries listed, newest first
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Runs `phoenix subscribe`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    match args.command {
        Some(Cmd::Show(show_args)) => show(show_args, ctx),
        None => subscribe(args.run, ctx).await,
    }
}

async fn subscribe(args: RunArgs, ctx: &Context) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    let orch_id = args.orch_id.unwrap_or_default();
    let agent_path = args.agent_path.unwrap_or_default();
    if orch_id.trim().is_empty() {
        return Err(UsageError("--orch-id must not be empty".to_owned()).into());
    }
    validate_agent_path(&agent_path).map_err(|m| UsageError(format!("--agent-path {m}")))?;
    let url = args.url.unwrap_or_else(|| settings.distributor.url.clone());
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(UsageError(format!(
            "distributor URL {url:?} must start with ws:// or wss://"
        ))
        .into());
    }
    let state_path = args
        .state
        .unwrap_or_else(|| state_file::default_path(&settings.data_dir, &orch_id));
    // One CA for both connections: the distributor's wss:// and the collector's https://.
    let ca_cert = args.ca_cert.or_else(|| settings.collector.ca_cert.clone());
    let tls = tls::client_config(ca_cert.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    let agent_token = args.token.or_else(|| settings.agent_token.clone());
    let heartbeat = if args.no_heartbeat || args.once {
        None
    } else {
        let interval = args
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(settings.orch_sync_interval));
        if interval.is_zero() {
            return Err(UsageError("the heartbeat interval must be above zero".to_owned()).into());
        }
        let client = ApiClient::new(&ClientOptions {
            base_url: args
                .telemetrist_url
                .unwrap_or_else(|| settings.collector.url.clone()),
            // The agent token proves the heartbeat's orch_id; the collector checks it.
            token: agent_token
                .clone()
                .or_else(|| settings.collector.token.clone()),
            ca_cert,
            timeout: interval.min(Duration::from_secs(10)),
        })
        .map_err(|e| UsageError(format!("heartbeats: {e}")))?;
        Some(HeartbeatConfig {
            client,
            orch_id: orch_id.clone(),
            agent_path: agent_path.clone(),
            master_mode: args.master_mode,
            template_version: args.template_version,
            interval,
        })
    };
    let mut opts = SubscribeOptions::new(url, orch_id, agent_path, state_path.clone());
    opts.tls = Some(tls);
    opts.premium_key = args
        .premium_key
        .or_else(|| settings.x402_premium_key.clone());
    opts.agent_token = agent_token;
    opts.exec = args.exec;
    opts.exec_timeout = args.exec_timeout;
    opts.once = args.once;
    opts.heartbeat = heartbeat;
    let json = ctx.json;
    let summary = learning::subscribe(opts, shutdown_signal(), |report| print_report(report, json))
        .await
        .map_err(exit_coded)
        .with_context(|| format!("subscribing (state file {})", state_path.display()))?;
    if !json {
        print_summary(&summary, &state_path);
    }
    Ok(())
}

/// Gives the errors that have an exit code of their own their kind, worded as the HTTP
/// clients word the same failure.
fn exit_coded(e: Error) -> anyhow::Error {
    match e {
        Error::Unreachable { url, detail } | Error::ConnectionLost { url, detail } => {
            Classified::new(ErrorKind::Unreachable, format!("cannot reach {url}: {detail}")).into()
        }
        Error::Refused { url, status } => Classified::refused(
            status,
            "upgrade_refused",
            format!(
                "{status} upgrade_refused: {url} answered HTTP {status} instead of upgrading to a WebSocket"
            ),
        )
        .into(),
        // Exit 3 like the HTTP clients' untrusted-certificate error, but never retried.
        Error::UntrustedCertificate { url, detail } => Classified::new(
            ErrorKind::Unreachable,
            format!(
                "cannot reach {url}: {}",
                tls::untrusted_certificate_detail(&detail)
            ),
        )
        .into(),
        Error::Config(m) => UsageError(m).into(),
        other => other.into(),
    }
}

fn print_report(report: &UpdateReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).expect("reports are plain JSON")
        );
        return;
    }
    let why = report
        .error
        .as_deref()
        .map(|e| format!(": {}", output::printable(e)))
        .unwrap_or_default();
    println!(
        "{} {} {} seq {}{why}",
        report.status.as_str(),
        output::printable(&report.update_type),
        output::printable(&report.update_id),
        report.seq
    );
}

fn print_summary(summary: &Summary, state_path: &std::path::Path) {
    println!(
        "{} applied, {} rejected, {} skipped; last seq {}; state in {}",
        summary.applied,
        summary.rejected,
        summary.skipped,
        summary.last_seq,
        state_path.display()
    );
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    crate::core::shared::signal::stop_then_log("shutdown requested; finishing the update in hand")
}

fn show(args: ShowArgs, ctx: &Context) -> anyhow::Result<()> {
    let path = match (args.state, args.orch_id) {
        (Some(p), _) => p,
        (None, Some(id)) => state_file::default_path(&ctx.settings.data_dir, &id),
        (None, None) => {
            return Err(UsageError("give --state FILE or --orch-id ID".to_owned()).into());
        }
    };
    let state = state_file::load(&path)?.with_context(|| {
        format!(
            "no state file at {}: run `phoenix subscribe` first",
            path.display()
        )
    })?;
    if ctx.json {
        return ctx.printer().document(&state);
    }
    render(&state, &path, args.config_json, args.limit)
}

fn render(
    s: &LearningPipelineState,
    path: &std::path::Path,
    config_json: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let hash = s
        .orch_hash
        .as_deref()
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    let tier = s
        .tier
        .map(|t| format!(", tier {}", t.as_str()))
        .unwrap_or_default();
    println!("State file   {}", path.display());
    println!("ORCH         {}{hash} at {}{tier}", s.orch_id, s.agent_path);
    println!(
        "Distributor  {}, last seq {}",
        or_dash(s.distributor_url.as_deref()),
        s.last_seq
    );
    println!(
        "Prompt       {}",
        or_dash(s.overrides.default_prompt.as_deref())
    );
    println!(
        "Model        {}",
        or_dash(s.overrides.default_model.as_deref())
    );
    let last = match (&s.last_update_type, &s.last_update_id) {
        (Some(t), Some(id)) => {
            let when = s
                .last_update_ts
                .map(|ts| format!(", published {}", output::time(ts)))
                .unwrap_or_default();
            format!("{} {id}{when}", t.as_str())
        }
        _ => "-".to_owned(),
    };
    println!("Last update  {last}");
    println!("Last error   {}", or_dash(s.last_error.as_deref()));
    let config = serde_json::Value::Object(s.config_json.clone());
    println!("\nConfig:");
    let text = if s.config_json.is_empty() {
        "{}".to_owned()
    } else if config_json {
        serde_json::to_string_pretty(&config)?
    } else {
        serde_norway::to_string(&config)?
    };
    for line in text.trim_end().lines() {
        println!("  {line}");
    }
    let folded = if s.folded_ids.is_empty() {
        String::new()
    } else {
        ", older ones folded into the base".to_owned()
    };
    println!(
        "\nHistory ({} kept{folded}, newest first):",
        s.history.len()
    );
    if s.history.is_empty() {
        println!("  (no update applied yet)");
        return Ok(());
    }
    let statuses = s.entry_statuses();
    let mut t = table(["seq", "update id", "type", "applied", "status", "what"]);
    for (e, status) in s.history.iter().zip(&statuses).rev().take(limit) {
        let status = match status {
            learning::EntryStatus::InEffect => "in effect".to_owned(),
            learning::EntryStatus::RolledBack { by } => format!("rolled back by {by}"),
            learning::EntryStatus::Inactive { error } => format!("inactive: {error}"),
        };
        t.add_row([
            e.seq.to_string(),
            e.update_id.clone(),
            e.update_type.as_str().to_owned(),
            output::time(e.applied_at),
            status,
            output::shorten(&e.summary(), 60),
        ]);
    }
    println!("{t}");
    Ok(())
}
