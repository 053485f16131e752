//! The Telemetrist's cycle: send what the spool still holds, scan the source for completed
//! conversations, redact and spool the new ones, send them; then wait for the next interval
//! or a stop request.
//!
//! A stop request is honoured between steps: a spool commit under way is finished, a send
//! under way is abandoned (its conversations stay pending and are resent next time), and
//! conversations read but not yet spooled are still in their files for the next run.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::sender::{self, Sender};
use super::{Edge, Error, Report, source};
use crate::core::shared::llm::error_chain;

/// Conversations redacted and spooled per vault/spool transaction.
const ADMIT_CHUNK: usize = 256;

/// What `phoenix telemetrist` runs on.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Directory of conversations.
    pub source: PathBuf,
    /// Time between the starts of two cycles.
    pub interval: Duration,
}

/// What one cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    /// 1 for the first cycle of this process.
    pub cycle: u64,
    /// Files scanned.
    pub files: usize,
    /// Conversations not flagged `ready_to_log: true` yet.
    pub not_ready: usize,
    /// Files or lines that are not complete JSON yet (looked at again next cycle).
    pub incomplete: usize,
    /// Conversations read, redacted, spooled, sent, and where the spool stands.
    #[serde(flatten)]
    pub run: Report,
}

/// Runs one cycle. Local failures (vault, spool, source) are errors; a collector failure
/// is returned beside the report, since the spool keeps everything for the next cycle.
pub async fn cycle(
    edge: &mut Edge,
    sender: &Sender,
    opts: &ServiceOptions,
    number: u64,
    stop: &mut watch::Receiver<bool>,
) -> Result<(CycleReport, Option<sender::Error>), Error> {
    let mut report = CycleReport {
        cycle: number,
        ..CycleReport::default()
    };
    // What an earlier cycle or run could not send goes first.
    let mut failure = deliver_unless_stopped(edge, sender, &mut report.run, stop).await?;
    if !stopped(stop) {
        let spool = edge.spool();
        let run = &mut report.run;
        let scan = source::scan(&opts.source, |id| match spool.known(id)? {
            Some(known) => {
                run.skip_known(known);
                Ok::<_, Error>(true)
            }
            None => Ok(false),
        })?;
        report.files = scan.files;
        report.not_ready = scan.not_ready;
        report.incomplete = scan.incomplete.len();
        for why in scan.invalid {
            tracing::warn!("skipping conversation {why}");
            report.run.invalid(why);
        }
        let mut ready = scan.ready.into_iter().map(|f| f.conversation).peekable();
        while ready.peek().is_some() && !stopped(stop) {
            let chunk: Vec<_> = ready.by_ref().take(ADMIT_CHUNK).collect();
            report.run.read += chunk.len();
            edge.admit(chunk, &mut report.run)?;
        }
        if failure.is_none() {
            failure = deliver_unless_stopped(edge, sender, &mut report.run, stop).await?;
        }
    }
    edge.finish(&mut report.run)?;
    report.run.delivery_error = failure.as_ref().map(|e| error_chain(e));
    tracing::info!(
        cycle = number,
        files = report.files,
        read = report.run.read,
        redacted = report.run.redacted_total(),
        spooled = report.run.spooled,
        sent = report.run.delivery.sent,
        duplicates = report.run.delivery.duplicates,
        quarantined = report.run.delivery.quarantined.len(),
        pending = report.run.pending,
        "telemetrist cycle done"
    );
    if let Some(e) = &failure {
        tracing::warn!(
            pending = report.run.pending,
            "{}; kept in the spool for the next cycle",
            error_chain(e)
        );
    }
    Ok((report, failure))
}

/// Runs cycles every `opts.interval` until `stop` turns true; `on_cycle` sees each report.
pub async fn run(
    edge: &mut Edge,
    sender: &Sender,
    opts: &ServiceOptions,
    mut stop: watch::Receiver<bool>,
    mut on_cycle: impl FnMut(&CycleReport),
) -> Result<u64, Error> {
    let mut number = 0;
    loop {
        let started = tokio::time::Instant::now();
        number += 1;
        let (report, _) = cycle(edge, sender, opts, number, &mut stop).await?;
        on_cycle(&report);
        if stopped(&stop) {
            return Ok(number);
        }
        tokio::select! {
            () = tokio::time::sleep_until(started + opts.interval) => {}
            () = wait_for_stop(&mut stop) => return Ok(number),
        }
    }
}

/// Delivers the spool unless a stop request comes first; a collector failure is returned,
/// a spool failure is an error.
async fn deliver_unless_stopped(
    edge: &mut Edge,
    sender: &Sender,
    report: &mut Report,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<sender::Error>, Error> {
    if stopped(stop) {
        return Ok(None);
    }
    tokio::select! {
        result = edge.deliver(sender, report) => match result {
            Ok(()) => Ok(None),
            Err(sender::Error::Spool(e)) => Err(e.into()),
            Err(e) => Ok(Some(e)),
        },
        () = wait_for_stop(stop) => Ok(None),
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // Nobody can ask any more: never stop.
        std::future::pending::<()>().await;
    }
}
