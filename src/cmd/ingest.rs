//! `phoenix ingest`: send one event from flags, or many from NDJSON (file or stdin); or
//! conversations from JSONL, redacted here first (`run_conversations`).
//!
//! Lines are validated locally with the collector's own rules so one bad line costs only
//! itself (it is reported with its line number) instead of its whole batch.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::{CollectorClientArgs, Context, PartialFailure, UsageError, conversations_outcome};
use crate::core::collector::client::{
    CollectorClient, IngestBatcher, IngestReport as Report, MAX_LISTED_ERRORS,
};
use crate::core::privacy::edge;
use crate::core::privacy::telemetrist::{Edge, Report as EdgeReport, Sender, sender};
use crate::core::shared::client::RetryPolicy;
use crate::core::telemetry::conversation::decode_conversation;
use crate::core::telemetry::decode_envelope;
use crate::output;

/// Send telemetry to the collector.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  phoenix ingest --kind skill_execution --level info --orch-id orch-1 --agent-path code-gen/rust \\\n      --payload '{\"response_time\": 840, \"love_score\": 0.93}'\n  phoenix ingest --file events.ndjson\n  producer | phoenix ingest --file -\n  phoenix ingest --conversations chats.jsonl    # redacted here, spooled, sent once each\n\nWith --conversations: exit 3 when the collector stays unreachable (the conversations are kept\nin the spool and the next run sends them), 5 when lines were invalid or conversations were\nquarantined (refused by the collector); see `phoenix telemetrist --help` for the spool."
)]
pub struct Args {
    /// Event kind (one event from flags), e.g. orch_heartbeat, skill_execution
    #[arg(long, conflicts_with = "file")]
    pub kind: Option<String>,
    /// Level: trace, debug, info, notice, warn, error, critical, fatal
    #[arg(long, requires = "kind")]
    pub level: Option<String>,
    /// Tag (repeatable)
    #[arg(long = "tag", value_name = "TAG", requires = "kind")]
    pub tags: Vec<String>,
    /// Payload as a JSON document
    #[arg(long, value_name = "JSON", requires = "kind")]
    pub payload: Option<String>,
    /// Raw ORCH id (the collector stores only its keyed hash)
    #[arg(long, requires = "kind")]
    pub orch_id: Option<String>,
    /// Agent path such as code-gen/rust
    #[arg(long, requires = "kind")]
    pub agent_path: Option<String>,
    /// Event time in Unix seconds [default: the collector's clock]
    #[arg(long, value_name = "SECS", requires = "kind")]
    pub ts: Option<i64>,
    /// NDJSON file of envelopes, one per line; `-` reads stdin
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// JSONL file of conversations, one per line; `-` reads stdin. Each is redacted on this
    /// machine (pseudonyms in the local vault), spooled, and sent to POST /ingest/conversations
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kind", "file"])]
    pub conversations: Option<PathBuf>,
    /// Pseudonym session for every conversation [default: each conversation's own id]
    #[arg(long, value_name = "ID", requires = "conversations")]
    pub session: Option<String>,
    /// Records (or conversations) per request
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Retries per request on 429, 5xx or an unreachable collector
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Collector connection.
    #[command(flatten)]
    pub client: CollectorClientArgs,
}

/// Runs `phoenix ingest`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if let Some(input) = &args.conversations {
        return run_conversations(input, &args, ctx).await;
    }
    let client = args.client.client(&ctx.settings)?;
    let policy = RetryPolicy {
        max_retries: args.retries,
        ..RetryPolicy::default()
    };
    let report = if args.kind.is_some() {
        single(&args, &client, policy).await?
    } else {
        let source: Box<dyn Read + Send> = match args.file.as_deref() {
            Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin()),
            Some(p) => Box::new(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            ),
            None if !std::io::stdin().is_terminal() => Box::new(std::io::stdin()),
            None => {
                return Err(UsageError(
                    "nothing to send: give --kind (one event from flags) or --file FILE|- (NDJSON)"
                        .to_owned(),
                )
                .into());
            }
        };
        let size = args
            .file
            .as_deref()
            .filter(|p| p.as_os_str() != "-")
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        stream(source, size, &args, &client, policy, ctx).await?
    };
    finish(report, ctx)
}

fn finish(report: Report, ctx: &Context) -> anyhow::Result<()> {
    if ctx.json {
        ctx.printer().document(&report)?;
    } else {
        for e in &report.errors {
            eprintln!("rejected: {e}");
        }
        if report.rejected > MAX_LISTED_ERRORS {
            eprintln!("(only the first {MAX_LISTED_ERRORS} refusals are listed)");
        }
        println!(
            "accepted {} record(s), rejected {} in {} request(s)",
            report.accepted, report.rejected, report.batches
        );
        for id in &report.ids {
            println!("id {id}");
        }
    }
    if let Some(e) = report.all_rejected() {
        return Err(e.into());
    }
    match (report.accepted, report.rejected) {
        (_, 0) => Ok(()),
        (a, r) => Err(PartialFailure(format!("{r} of {} record(s) were rejected", a + r)).into()),
    }
}

async fn single(
    args: &Args,
    client: &CollectorClient,
    policy: RetryPolicy,
) -> anyhow::Result<Report> {
    let payload: serde_json::Value = match &args.payload {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| UsageError(format!("--payload is not valid JSON: {e}")))?,
        None => serde_json::json!({}),
    };
    let doc = serde_json::json!({
        "orch_id": args.orch_id, "agent_path": args.agent_path, "ts_unix": args.ts,
        "kind": args.kind, "level": args.level,
        "tags": if args.tags.is_empty() { None } else { Some(&args.tags) },
        "payload": payload,
    });
    let text = serde_json::to_string(&strip_nulls(doc))?;
    decode_envelope(&text, 0, None)
        .map_err(|e| UsageError(format!("invalid event: field `{}`: {}", e.field, e.message)))?;
    let body = text.into_bytes();
    let accepted = client.ingest_one(body, policy).await?;
    Ok(Report {
        accepted: accepted.accepted,
        batches: 1,
        ids: accepted.ids,
        ..Report::default()
    })
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

async fn stream(
    source: Box<dyn Read + Send>,
    size: Option<u64>,
    args: &Args,
    client: &CollectorClient,
    policy: RetryPolicy,
    ctx: &Context,
) -> anyhow::Result<Report> {
    let mut lines = JsonLines::new(source, progress_bar(size, ctx));
    let mut batcher = IngestBatcher::new(client, policy, args.batch_size as usize);
    while let Some((n, text)) = lines.next_line().context("reading telemetry input")? {
        batcher.push(n, text).await?;
    }
    let report = batcher.finish().await?;
    lines.progress.finish_and_clear();
    Ok(report)
}

/// The non-blank lines of JSON-lines input, trimmed and numbered from 1, moving a progress
/// bar by the bytes read.
struct JsonLines {
    reader: BufReader<Box<dyn Read + Send>>,
    line: String,
    line_no: usize,
    progress: ProgressBar,
}

impl JsonLines {
    fn new(source: Box<dyn Read + Send>, progress: ProgressBar) -> Self {
        JsonLines {
            reader: BufReader::with_capacity(256 * 1024, source),
            line: String::new(),
            line_no: 0,
            progress,
        }
    }

    /// The next non-blank line and its number, or `None` at the end of the input.
    fn next_line(&mut self) -> std::io::Result<Option<(usize, &str)>> {
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.progress.inc(n as u64);
            if !self.line.trim().is_empty() {
                return Ok(Some((self.line_no, self.line.trim())));
            }
        }
    }
}

fn progress_bar(size: Option<u64>, ctx: &Context) -> ProgressBar {
    if !ctx.printer().progress() {
        return ProgressBar::hidden();
    }
    match size {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

/// Runs `phoenix ingest --conversations`: JSONL conversations, redacted on this machine,
/// spooled, then sent to the collector's `POST /ingest/conversations`.
///
/// What an earlier run left in the spool is sent first. Input is redacted and spooled a
/// batch at a time and each batch sent right after, so a long file starts arriving early;
/// once the collector has failed, the rest of the input is still spooled, not sent.
async fn run_conversations(input: &Path, args: &Args, ctx: &Context) -> anyhow::Result<()> {
    let sender = args
        .client
        .conversation_sender(args.batch_size, args.retries, &ctx.settings)?;
    let mut edge = edge::open_edge(&ctx.settings, args.session.clone())?;
    let (source, size): (Box<dyn Read + Send>, Option<u64>) = if input.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(input)
            .map_err(|e| UsageError(format!("cannot open {}: {e}", input.display())))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let mut report = EdgeReport::default();
    let mut failure = deliver(&mut edge, &sender, &mut report, None).await?;
    let mut lines = JsonLines::new(source, progress_bar(size, ctx));
    let mut batch = Vec::new();
    while let Some((line_no, text)) = lines
        .next_line()
        .with_context(|| format!("reading {}", input.display()))?
    {
        match decode_conversation(text, line_no - 1, Some(line_no)) {
            Ok(c) => batch.push(c),
            Err(e) => report.invalid(e.to_string()),
        }
        if batch.len() == args.batch_size as usize {
            report.read += batch.len();
            edge.admit(std::mem::take(&mut batch), &mut report)?;
            failure = deliver(&mut edge, &sender, &mut report, failure).await?;
        }
    }
    report.read += batch.len();
    edge.admit(batch, &mut report)?;
    failure = deliver(&mut edge, &sender, &mut report, failure).await?;
    lines.progress.finish_and_clear();
    edge.finish(&mut report)?;
    report.delivery_error = failure
        .as_ref()
        .map(|e| crate::core::shared::llm::error_chain(e));
    ctx.printer().result(&report, output::conversation_report)?;
    conversations_outcome(&report, failure)
}

/// Sends the spool unless the collector already failed this run; a spool failure is an
/// error, a collector failure is kept for the summary.
async fn deliver(
    edge: &mut Edge,
    sender: &Sender,
    report: &mut EdgeReport,
    failure: Option<sender::Error>,
) -> anyhow::Result<Option<sender::Error>> {
    if failure.is_some() {
        return Ok(failure);
    }
    match edge.deliver(sender, report).await {
        Ok(()) => Ok(None),
        Err(sender::Error::Spool(e)) => Err(e.into()),
        Err(e) => Ok(Some(e)),
    }
}
