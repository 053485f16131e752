//! `phoenix telemetrist`: the edge service of seed 000. Every interval it picks up completed
//! conversations from a directory, redacts them on this machine (pseudonyms kept in the local
//! vault), spools them durably and sends them to the collector, each once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use super::{CollectorClientArgs, Context, UsageError, conversations_outcome};
use crate::core::privacy::edge;
use crate::core::privacy::telemetrist::service::{self, CycleReport, ServiceOptions};
use crate::core::privacy::telemetrist::spool::Spool;
use crate::output::{self, table, time};

const AFTER_HELP: &str = "\
Conversations: `*.json` files holding one conversation object and `*.jsonl` files holding one
per line, in the wire shape of POST /ingest/conversations (`conversation_id`, `messages`,
optional `feedback`, `score`, `orch_id`, `agent_path`, `ts_unix`). Only those with
`\"ready_to_log\": true` are taken; files that are not complete JSON yet are looked at again
next cycle. Each conversation is redacted in its own pseudonym session (its id) unless
--session says otherwise: `phoenix redact --reveal --session <conversation_id>` maps it back.

The spool (telemetrist.spool_path, default <home>/spool.db) keeps redacted conversations until
the collector has them and a ledger of those sent, so nothing is lost while the collector is
down and nothing is sent twice. Conversations the collector refuses (400/413/422) go to the
quarantine: listed by --quarantine, sent again only after --requeue-quarantined.

Exit codes with --once: 0 done; 3 collector unreachable (everything kept in the spool); 4
refused (auth, endpoint); 5 some conversations invalid or quarantined. Without --once it runs
until SIGINT/SIGTERM, finishing the spool commit under way, and exits 0.

Examples:
  phoenix telemetrist --source /var/lib/orch/conversations
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
    /// Pseudonym session for every conversation [default: each conversation's own id]
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Conversations per request
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Retries per request on 429, 5xx or an unreachable collector
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// List the quarantined conversations and exit
    #[arg(long, conflicts_with_all = ["once", "requeue_quarantined"])]
    pub quarantine: bool,
    /// Move the quarantined conversations back to the spool and exit; the next run sends them
    #[arg(long, conflicts_with = "once")]
    pub requeue_quarantined: bool,
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
        .or_else(|| settings.telemetrist.source.clone())
        .ok_or_else(|| {
            UsageError(
                "no conversation source: give --source DIR or set telemetrist.source (PHOENIX_TELEMETRIST_SOURCE)"
                    .to_owned(),
            )
        })?;
    if !source.is_dir() {
        return Err(UsageError(format!("{} is not a directory", source.display())).into());
    }
    let opts = ServiceOptions {
        source,
        interval: Duration::from_secs(args.interval.unwrap_or(settings.telemetrist.interval_secs)),
    };
    let sender = args
        .client
        .conversation_sender(args.batch_size, args.retries, settings)?;
    let mut edge = edge::open_edge(settings, args.session.clone())?;
    let (stop_tx, mut stop) = watch::channel(false);
    let stop_requested = crate::core::shared::signal::stop_then_log(
        "stop requested; finishing the spool commit under way",
    );
    let signal = tokio::spawn(async move {
        stop_requested.await;
        stop_tx.send_replace(true);
    });
    let result = if args.once {
        let (report, failure) = service::cycle(&mut edge, &sender, &opts, 1, &mut stop).await?;
        print_cycle(&report, ctx)?;
        conversations_outcome(&report.run, failure)
    } else {
        tracing::info!(
            source = %opts.source.display(),
            interval_secs = opts.interval.as_secs(),
            spool = %edge.spool().path().display(),
            "telemetrist started"
        );
        let cycles = service::run(&mut edge, &sender, &opts, stop, |report| {
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
    };
    signal.abort();
    result
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
    spool: String,
}

fn quarantine(args: &Args, ctx: &Context) -> anyhow::Result<()> {
    let mut spool =
        Spool::open(&ctx.settings.telemetrist.spool_path).context("opening the spool")?;
    if args.requeue_quarantined {
        let requeued = spool.requeue_quarantined()?;
        let path = spool.path().display().to_string();
        if ctx.json {
            return ctx.printer().document(&Requeued {
                requeued,
                spool: path,
            });
        }
        println!(
            "{requeued} conversation(s) moved back to the spool {path}; the next run sends them"
        );
        return Ok(());
    }
    let entries = spool.quarantined()?;
    if ctx.json {
        return ctx.printer().document(&entries);
    }
    if entries.is_empty() {
        println!("the quarantine of {} is empty", spool.path().display());
        return Ok(());
    }
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
    Ok(())
}
