//! `phoenix ingest --conversations FILE|-`: JSONL conversations, redacted on this machine,
//! spooled, then sent to the collector's `POST /ingest/conversations`.
//!
//! What an earlier run left in the spool is sent first. Input is redacted and spooled a
//! batch at a time and each batch sent right after, so a long file starts arriving early;
//! once the collector has failed, the rest of the input is still spooled, not sent.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;

use super::super::output;
use super::super::{Context, UsageError, conversations_outcome};
use super::{Args, JsonLines, progress_bar};
use crate::core::privacy::edge;
use crate::core::privacy::telemetrist::{Edge, Report, Sender, sender};
use crate::core::telemetry::conversation::decode_conversation;

/// Runs `phoenix ingest --conversations`.
pub(super) async fn run(input: &Path, args: &Args, ctx: &Context) -> anyhow::Result<()> {
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
    let mut report = Report::default();
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
    report: &mut Report,
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
