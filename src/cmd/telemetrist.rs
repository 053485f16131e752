//! `phoenix telemetrist`: the edge service of seed 000. Every interval it picks up completed
//! conversations from a directory, redacts them on this machine (pseudonyms kept in the local
//! vault), spools them durably and sends them to the collector, each once. With
//! `--otlp-listen` it is also (or only) a local OTLP/HTTP endpoint whose spans and log records
//! take the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use super::{CollectorClientArgs, Context, UsageError, conversations_outcome};
use crate::core::privacy::edge;
use crate::core::privacy::telemetrist::otlp::{self, Forwarder, OtlpOptions};
use crate::core::privacy::telemetrist::service::{self, CycleReport, ServiceOptions};
use crate::core::privacy::telemetrist::spool::{OtlpQuarantined, Quarantined, Spool};
use crate::core::server::app::{self, Bound};
use crate::core::shared::client::RetryPolicy;
use crate::output::{self, table, time};

const AFTER_HELP: &str = "\
Conversations: `*.json` files holding one conversation object and `*.jsonl` files holding one
per line, in the wire shape of POST /ingest/conversations (`conversation_id`, `messages`,
optional `feedback`, `score`, `orch_id`, `agent_path`, `ts_unix`). Only those with
`\"ready_to_log\": true` are taken; files that are not complete JSON yet are looked at again
next cycle. Each conversation is redacted in its own pseudonym session (its id) unless
--session says otherwise: `phoenix redact --reveal --session <conversation_id>` maps it back.

OTLP (--otlp-listen IP:PORT): point the agents' OpenTelemetry exporter at
http://IP:PORT (OTLP/HTTP, protobuf or JSON, gzip). The content attributes (prompts,
completions, tool arguments and results: gen_ai.input.*, gen_ai.output.*, input.value, ...)
of spans, span events and log records, and log bodies, are redacted; the other attributes
are left for the collector's guard. A span's or log record's pseudonym session is its
gen_ai.conversation.id attribute, else its session.id, else that of another span or record
of its trace in the same request, else its resource's, else its trace id (32 hex digits, the
collector's payload.trace_id), else one per request (`otlp-` and 16 hex digits, listed with
the batch); --session overrides all of these. `phoenix redact --reveal --session <that id>`
maps stored content back. Each request is answered 200 once it is in the spool (503 with
Retry-After when the spool is past --otlp-spool-limit-mb or unusable) and forwarded to the
collector's /v1/traces and /v1/logs, retried while the collector is unreachable or busy. With
--json the bound address is printed first: {\"event\":\"listening\",\"service\":\"otlp\",\"url\":...}.
Without --source (or telemetrist.source) only the OTLP endpoint runs.

The spool (telemetrist.spool_path, default <home>/spool.db) keeps redacted conversations until
the collector has them and a ledger of those sent, so nothing is lost while the collector is
down and nothing is sent twice. Conversations the collector refuses (400/413/422), and OTLP
batches it refuses (400/413/415), go to the quarantine: listed by --quarantine, sent again
only after --requeue-quarantined.

Exit codes with --once: 0 done; 3 collector unreachable (everything kept in the spool); 4
refused (auth, endpoint); 5 some conversations invalid or quarantined. Without --once it runs
until SIGINT/SIGTERM: it stops accepting, finishes the spool commit under way, and exits 0.
--once does not go with --otlp-listen.

Examples:
  phoenix telemetrist --source /var/lib/orch/conversations
  phoenix telemetrist --otlp-listen 127.0.0.1:4318 --url https://collector.example:5002
  phoenix telemetrist --source ./conversations --once --json
  phoenix telemetrist --quarantine";

/// Arguments of `phoenix telemetrist`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Directory of completed conversations [default: $PHOENIX_TELEMETRIST_SOURCE]
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Seconds between two cycles [default: $PHOENIX_TELEMETRIST_INTERVAL or 300]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
    /// Run one cycle and exit (for cron and tests)
    #[arg(long)]
    pub once: bool,
    /// Pseudonym session for every conversation and OTLP record [default: each conversation's own id; OTLP: see below]
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Conversations per request
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Retries per request on 429, 5xx or an unreachable collector
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// List the quarantined conversations and OTLP batches and exit
    #[arg(long, conflicts_with_all = ["once", "requeue_quarantined", "otlp_listen"])]
    pub quarantine: bool,
    /// Move the quarantined conversations and OTLP batches back to the spool and exit; the
    /// next run sends them
    #[arg(long, conflicts_with_all = ["once", "otlp_listen"])]
    pub requeue_quarantined: bool,
    /// Serve OTLP/HTTP (POST /v1/traces, /v1/logs) on this address, e.g. 127.0.0.1:4318:
    /// spans and logs are redacted, spooled and forwarded to the collector
    #[arg(long, value_name = "IP:PORT", conflicts_with = "once")]
    pub otlp_listen: Option<SocketAddr>,
    /// MiB of OTLP batches not yet sent past which new OTLP requests get 503
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub otlp_spool_limit_mb: u64,
    /// Serve --otlp-listen on a non-loopback address, where anyone who reaches it can send
    /// through this edge's collector credentials
    #[arg(long, requires = "otlp_listen")]
    pub insecure_no_auth: bool,
    /// Collector connection [default URL and token: telemetrist.telemetry_endpoint and
    /// telemetrist.telemetry_stream_key]
    #[command(flatten)]
    pub client: CollectorClientArgs,
}

/// Runs `phoenix telemetrist`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    if args.quarantine || args.requeue_quarantined {
        return quarantine(&args, ctx);
    }
    let source = args
        .source
        .clone()
        .or_else(|| settings.telemetrist.source.clone());
    if source.is_none() && args.otlp_listen.is_none() {
        return Err(UsageError(
            "no conversation source: give --source DIR or set telemetrist.source (PHOENIX_TELEMETRIST_SOURCE), or serve OTLP with --otlp-listen IP:PORT"
                .to_owned(),
        )
        .into());
    }
    if let Some(source) = &source
        && !source.is_dir()
    {
        return Err(UsageError(format!("{} is not a directory", source.display())).into());
    }
    let interval = Duration::from_secs(args.interval.unwrap_or(settings.telemetrist.interval_secs));
    let sender = args
        .client
        .conversation_sender(args.batch_size, args.retries, settings)?;
    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stop_requested = crate::core::shared::signal::stop_then_log(
        "stop requested; finishing the spool commit under way",
    );
    let signal = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            stop_requested.await;
            stop_tx.send_replace(true);
        }
    });
    let result = match (source, args.otlp_listen) {
        (Some(source), _) if args.once => {
            let opts = ServiceOptions { source, interval };
            let mut edge = edge::open_edge(settings, args.session.clone())?;
            let mut stop = stop;
            let (report, failure) = service::cycle(&mut edge, &sender, &opts, 1, &mut stop).await?;
            print_cycle(&report, ctx)?;
            conversations_outcome(&report.run, failure)
        }
        (source, listen) => {
            let otlp = match listen {
                Some(addr) => Some(bind_otlp(&args, addr, ctx).await?),
                None => None,
            };
            let conversations = async {
                let Some(source) = source else {
                    return Ok(());
                };
                let result =
                    run_conversations(&args, ctx, source, interval, &sender, stop.clone()).await;
                // Whatever ended it ends the OTLP side too.
                stop_tx.send_replace(true);
                result
            };
            let proxy = async {
                let Some(otlp) = otlp else {
                    return Ok(());
                };
                let result = otlp.run(ctx, stop.clone()).await;
                stop_tx.send_replace(true);
                result
            };
            let (c, o) = tokio::join!(conversations, proxy);
            c.and(o)
        }
    };
    signal.abort();
    result
}

/// The conversation cycles until `stop`.
async fn run_conversations(
    args: &Args,
    ctx: &Context,
    source: PathBuf,
    interval: Duration,
    sender: &crate::core::privacy::telemetrist::Sender,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let opts = ServiceOptions { source, interval };
    let mut edge = edge::open_edge(&ctx.settings, args.session.clone())?;
    tracing::info!(
        source = %opts.source.display(),
        interval_secs = opts.interval.as_secs(),
        spool = %edge.spool().path().display(),
        "telemetrist started"
    );
    let cycles = service::run(&mut edge, sender, &opts, stop, |report| {
        if ctx.json
            && let Ok(line) = serde_json::to_string(report)
        {
            println!("{line}");
        }
    })
    .await?;
    let counts = edge.spool().counts()?;
    if !ctx.json {
        println!(
            "stopped after {cycles} cycle(s); {} conversation(s) pending and {} quarantined in {}",
            counts.pending,
            counts.quarantined,
            edge.spool().path().display()
        );
    }
    Ok(())
}

/// The OTLP proxy, bound and ready to run.
struct OtlpProxy {
    bound: Bound,
    edge: Arc<otlp::OtlpEdge>,
    forwarder: Forwarder,
}

async fn bind_otlp(args: &Args, addr: SocketAddr, ctx: &Context) -> anyhow::Result<OtlpProxy> {
    let settings = &ctx.settings;
    app::require_auth(
        "edge OTLP proxy",
        addr,
        false,
        args.insecure_no_auth,
        "it takes no credentials, so listen on a loopback address",
    )?;
    let options = OtlpOptions {
        max_body_bytes: settings.collector.max_body_bytes,
        max_decoded_bytes: settings.collector.max_decoded_bytes,
        spool_limit_bytes: args.otlp_spool_limit_mb.saturating_mul(1024 * 1024),
        session: args.session.clone(),
    };
    let edge = Arc::new(edge::open_otlp_edge(settings, options)?);
    let retry = RetryPolicy {
        max_retries: args.retries,
        ..RetryPolicy::default()
    };
    let forwarder = Forwarder::new(args.client.conversation_client(settings)?, retry);
    let bound = Bound::bind("edge OTLP proxy", addr, None).await?;
    // Said before anything else runs, so that it is the first line of --json output.
    let url = bound.url("http", "https", "");
    if ctx.json {
        ctx.printer().event(&serde_json::json!({
            "event": "listening", "service": "otlp", "url": url
        }));
    } else {
        tracing::info!(
            spool = %edge.spool().path().display(),
            "OTLP/HTTP listening on {url} (POST /v1/traces, /v1/logs)"
        );
    }
    Ok(OtlpProxy {
        bound,
        edge,
        forwarder,
    })
}

impl OtlpProxy {
    async fn run(self, ctx: &Context, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let limits = super::serve::server_limits(&ctx.settings);
        otlp::run(
            self.bound.listener(),
            self.edge.clone(),
            self.forwarder,
            limits,
            stop,
        )
        .await
        .context("serving OTLP")?;
        let counts = self.edge.spool().otlp_counts()?;
        if !ctx.json {
            println!(
                "stopped the OTLP proxy; {} OTLP batch(es) pending and {} quarantined in {}",
                counts.pending,
                counts.quarantined,
                self.edge.spool().path().display()
            );
        }
        Ok(())
    }
}

fn print_cycle(report: &CycleReport, ctx: &Context) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.printer().document(report);
    }
    println!(
        "scanned {} file(s): {} conversation(s) not ready yet, {} incomplete file(s) or line(s) left for later",
        report.files, report.not_ready, report.incomplete
    );
    output::conversation_report(&report.run);
    Ok(())
}

#[derive(Serialize)]
struct Requeued {
    requeued: usize,
    otlp_requeued: usize,
    spool: String,
}

/// One entry of `--quarantine --json`: a conversation or an OTLP batch.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum QuarantineEntry<'a> {
    Conversation(&'a Quarantined),
    Otlp(&'a OtlpQuarantined),
}

fn quarantine(args: &Args, ctx: &Context) -> anyhow::Result<()> {
    let mut spool =
        Spool::open(&ctx.settings.telemetrist.spool_path).context("opening the spool")?;
    if args.requeue_quarantined {
        let requeued = spool.requeue_quarantined()?;
        let otlp_requeued = spool.requeue_otlp_quarantined()?;
        let path = spool.path().display().to_string();
        if ctx.json {
            return ctx.printer().document(&Requeued {
                requeued,
                otlp_requeued,
                spool: path,
            });
        }
        println!(
            "{requeued} conversation(s) and {otlp_requeued} OTLP batch(es) moved back to the spool {path}; the next run sends them"
        );
        return Ok(());
    }
    let entries = spool.quarantined()?;
    let batches = spool.otlp_quarantined()?;
    if ctx.json {
        let all: Vec<QuarantineEntry<'_>> = entries
            .iter()
            .map(QuarantineEntry::Conversation)
            .chain(batches.iter().map(QuarantineEntry::Otlp))
            .collect();
        return ctx.printer().document(&all);
    }
    if entries.is_empty() && batches.is_empty() {
        println!("the quarantine of {} is empty", spool.path().display());
        return Ok(());
    }
    if !entries.is_empty() {
        let mut t = table(["conversation", "since", "status", "error", "detail"]);
        for q in &entries {
            t.add_row([
                q.conversation_id.clone(),
                time(q.quarantined_unix),
                q.status.to_string(),
                q.error.clone(),
                q.detail.clone(),
            ]);
        }
        println!("{t}");
    }
    if !batches.is_empty() {
        let mut t = table([
            "OTLP batch",
            "signal",
            "items",
            "sessions",
            "since",
            "status",
            "error",
            "detail",
        ]);
        for q in &batches {
            t.add_row([
                q.batch_id.to_string(),
                q.signal.as_str().to_owned(),
                q.items.to_string(),
                q.sessions.join(" "),
                time(q.quarantined_unix),
                q.status.to_string(),
                q.error.clone(),
                q.detail.clone(),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
