//! Forwarding the spooled OTLP batches to the collector's `/v1/traces` and `/v1/logs`:
//! protobuf, consecutive batches of one signal merged into one request (the encoded export
//! requests concatenated, which protobuf reads as one with all their resources), gzip above
//! a size, retries with backoff that honour `Retry-After`, and a batch removed from the
//! spool only after the collector's 200 (which it sends only after its commit).
//!
//! A 400, 413 or 415 says something in the request is wrong, not the collector: the
//! request is halved until the batch at fault is alone, and that one goes to the quarantine
//! instead of blocking the rest forever. Any other failure (unreachable, 429, 5xx once the
//! retries are spent, 401) keeps everything in the spool; the loop waits, longer after each
//! failure, and tries again. While the spool is empty it sleeps until a batch is spooled.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio::sync::watch;

use super::{OtlpEdge, wait_for_stop};
use crate::core::privacy::telemetrist::sender::{GZIP_ABOVE, gzip_bytes};
use crate::core::privacy::telemetrist::spool::{self, OtlpPending, OtlpSignal};
use crate::core::shared::client::{self, ApiClient, RetryPolicy, with_retry};
use crate::core::shared::llm::error_chain;
use crate::core::shared::retry::backoff;
use crate::core::telemetry::otlp::{self, RpcStatus};

/// Most spooled batches merged into one request.
pub const MERGE_BATCHES: usize = 256;
/// Most bytes of batches merged into one request, unless one alone is larger.
pub const MERGE_BYTES: usize = 4 * 1024 * 1024;
/// First wait after a failed delivery; doubles up to the retry policy's cap.
const OUTAGE_WAIT: Duration = Duration::from_millis(500);

/// Sends the spooled OTLP batches.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: ApiClient,
    retry: RetryPolicy,
}

/// Why a delivery stopped.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("forwarding OTLP to {url}")]
    Collector {
        url: String,
        #[source]
        source: client::Error,
    },
    #[error(transparent)]
    Spool(#[from] spool::Error),
}

impl Forwarder {
    /// A forwarder through `client`, each request retried by `retry`.
    pub fn new(client: ApiClient, retry: RetryPolicy) -> Forwarder {
        Forwarder { client, retry }
    }

    /// Forwards until `stop` turns true; a send under way then is abandoned (its batches
    /// stay pending and go next time).
    pub async fn run(self, edge: Arc<OtlpEdge>, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let delivered = tokio::select! {
                result = self.deliver(&edge) => result,
                () = wait_for_stop(&mut stop) => return,
            };
            match delivered {
                Ok(()) => {
                    failures = 0;
                    // Empty: sleep until the proxy spools a batch (a batch spooled since
                    // the spool was read left a permit, so this returns at once).
                    tokio::select! {
                        () = edge.wake.notified() => {}
                        () = wait_for_stop(&mut stop) => return,
                    }
                }
                Err(e) => {
                    let wait = backoff(OUTAGE_WAIT, self.retry.max.max(OUTAGE_WAIT), failures);
                    failures = failures.saturating_add(1);
                    let pending = edge.spool().otlp_counts().map_or(0, |c| c.pending);
                    tracing::warn!(
                        pending,
                        wait_ms = wait.as_millis() as u64,
                        "{}; the OTLP batches are kept in the spool and sent later",
                        error_chain(&e)
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = wait_for_stop(&mut stop) => return,
                    }
                }
            }
        }
    }

    /// Sends every pending batch, oldest first, until the spool is empty or a send fails.
    async fn deliver(&self, edge: &OtlpEdge) -> Result<(), Error> {
        loop {
            let batch = edge.spool().next_otlp(MERGE_BATCHES, MERGE_BYTES)?;
            if batch.is_empty() {
                return Ok(());
            }
            self.send_isolating(edge, &batch).await?;
        }
    }

    /// Sends `batch` (one signal); on a refusal that names the content, halves it until the
    /// culprit is alone and quarantines it.
    async fn send_isolating(&self, edge: &OtlpEdge, batch: &[OtlpPending]) -> Result<(), Error> {
        let signal = batch[0].signal;
        // (start, end) of the parts still to send, the next one last.
        let mut todo = vec![(0, batch.len())];
        while let Some((start, end)) = todo.pop() {
            let part = &batch[start..end];
            match self.post(signal, part).await {
                Ok(answer) => {
                    warn_on_partial_success(signal, &answer);
                    let ids: Vec<i64> = part.iter().map(|p| p.id).collect();
                    edge.spool().acknowledge_otlp(&ids)?;
                    tracing::debug!(
                        batches = ids.len(),
                        items = part.iter().map(|p| p.items).sum::<usize>(),
                        signal = signal.as_str(),
                        "OTLP batches forwarded"
                    );
                }
                Err(client::Error::Rejected {
                    status: status @ (400 | 413 | 415),
                    code,
                    detail,
                    ..
                }) => {
                    if part.len() > 1 {
                        let mid = start + part.len() / 2;
                        todo.push((mid, end));
                        todo.push((start, mid));
                        continue;
                    }
                    let id = part[0].id;
                    tracing::warn!(batch_id = id, status, %code, %detail, "OTLP batch quarantined");
                    edge.spool().quarantine_otlp(id, status, &code, &detail)?;
                }
                Err(source) => {
                    return Err(Error::Collector {
                        url: format!("{}{}", self.client.base_url(), signal.path()),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn post(
        &self,
        signal: OtlpSignal,
        part: &[OtlpPending],
    ) -> Result<Vec<u8>, client::Error> {
        let mut body = Vec::with_capacity(part.iter().map(|p| p.body.len()).sum());
        for p in part {
            body.extend_from_slice(&p.body);
        }
        let gzip = body.len() > GZIP_ABOVE;
        if gzip {
            body = gzip_bytes(&body);
        }
        with_retry(self.retry, || {
            self.client.post_for_bytes(
                signal.path(),
                body.clone(),
                otlp::PROTOBUF,
                gzip,
                describe_status,
            )
        })
        .await
    }
}

/// The collector's `partial_success`: it kept the batch (so it leaves the spool), but says
/// it refused or dropped part of it.
fn warn_on_partial_success(signal: OtlpSignal, answer: &[u8]) {
    let (rejected, message) = match signal {
        OtlpSignal::Traces => ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        OtlpSignal::Logs => ExportLogsServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default();
    if rejected > 0 || !message.is_empty() {
        tracing::warn!(
            rejected,
            signal = signal.as_str(),
            "the collector took the OTLP batch only in part: {message}"
        );
    }
}

/// An OTLP error answer: a protobuf `google.rpc.Status` (what the collector sends to a
/// protobuf request), as its code's name and its message.
fn describe_status(body: &[u8]) -> Option<(String, String)> {
    let status = RpcStatus::decode(body).ok()?;
    if status.code == 0 && status.message.is_empty() {
        return None;
    }
    let name = match status.code {
        3 => "invalid_argument",
        4 => "deadline_exceeded",
        5 => "not_found",
        7 => "permission_denied",
        8 => "resource_exhausted",
        12 => "unimplemented",
        13 => "internal",
        14 => "unavailable",
        16 => "unauthenticated",
        _ => "rpc_error",
    };
    Some((name.to_owned(), status.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rpc_status_is_described_by_its_code_and_message() {
        let status = RpcStatus {
            code: 8,
            message: "body is 900 bytes; the limit is 100 bytes".to_owned(),
            details: Vec::new(),
        };
        assert_eq!(
            describe_status(&status.encode_to_vec()),
            Some((
                "resource_exhausted".to_owned(),
                "body is 900 bytes; the limit is 100 bytes".to_owned()
            ))
        );
        assert_eq!(describe_status(b""), None);
    }
}
