//! Sending the spool to the collector's `POST /ingest/conversations`: NDJSON batches, gzip
//! above a size, retries with backoff that honour `Retry-After`, and the spool updated only
//! after the collector's 200 (which it sends only after its commit).
//!
//! A 400, 413 or 422 says something in the batch is wrong, not the collector: the batch is
//! halved until the conversation(s) at fault are alone, and those go to the quarantine
//! instead of blocking the rest forever. Any other failure stops the delivery and leaves
//! everything not yet acknowledged in the spool for the next run.

use std::collections::HashSet;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::spool::{Pending, Spool};
use crate::core::shared::client::{self, ApiClient, RetryPolicy, with_retry};

/// The collector's endpoint for conversations.
pub const ENDPOINT: &str = "/ingest/conversations";
/// Bodies larger than this are gzip-compressed.
pub const GZIP_ABOVE: usize = 64 * 1024;

/// How batches are made and retried.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Most conversations per request.
    pub batch_records: usize,
    /// Most bytes of (uncompressed) conversations per request, unless one alone is larger.
    pub batch_bytes: usize,
    /// Retries of one request.
    pub retry: RetryPolicy,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            batch_records: 500,
            batch_bytes: 4 * 1024 * 1024,
            retry: RetryPolicy::default(),
        }
    }
}

/// What the collector answers to an accepted batch.
#[derive(Debug, Deserialize)]
struct Accepted {
    #[serde(default)]
    accepted: usize,
    #[serde(default)]
    duplicates: usize,
    /// Conversation ids stored for the first time.
    #[serde(default)]
    ids: Vec<String>,
}

/// One conversation the collector refused, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Its id.
    pub conversation_id: String,
    /// HTTP status.
    pub status: u16,
    /// The collector's machine code.
    pub error: String,
    /// The collector's explanation.
    pub detail: String,
}

/// What a delivery did so far (kept when it stops early).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// Conversations the collector stored for the first time.
    pub sent: usize,
    /// Conversations the collector already had (a resend after a lost answer).
    pub duplicates: usize,
    /// Requests that got an answer.
    pub requests: usize,
    /// Conversations quarantined, with the collector's reasons.
    pub quarantined: Vec<Refusal>,
}

/// Why a delivery stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The collector could not be reached, kept failing, or refused for a reason no single
    /// conversation is to blame for (auth, wrong endpoint).
    #[error("sending conversations to {url}{}", ENDPOINT)]
    Collector {
        /// Collector base URL.
        url: String,
        /// Cause.
        #[source]
        source: client::Error,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] super::spool::Error),
}

/// Sends what is in the spool.
#[derive(Debug, Clone)]
pub struct Sender {
    client: ApiClient,
    options: SendOptions,
}

impl Sender {
    /// A sender through `client`.
    pub fn new(client: ApiClient, options: SendOptions) -> Sender {
        Sender { client, options }
    }

    /// Sends every pending conversation, oldest first, counting into `out` as it goes.
    ///
    /// Safe to cancel at any await: what was not acknowledged stays pending and is resent,
    /// which the collector counts as a duplicate.
    pub async fn deliver(&self, spool: &mut Spool, out: &mut Delivery) -> Result<(), Error> {
        loop {
            let batch = spool.next_batch(self.options.batch_records, self.options.batch_bytes)?;
            if batch.is_empty() {
                return Ok(());
            }
            self.send_isolating(spool, &batch, out).await?;
        }
    }

    /// Sends `batch`; on a refusal that names the content, halves it until the culprits are
    /// alone and quarantines them.
    async fn send_isolating(
        &self,
        spool: &mut Spool,
        batch: &[Pending],
        out: &mut Delivery,
    ) -> Result<(), Error> {
        // (start, end) of the parts still to send, the next one last.
        let mut todo = vec![(0, batch.len())];
        while let Some((start, end)) = todo.pop() {
            let part = &batch[start..end];
            match self.post(part).await {
                Ok(accepted) => {
                    out.requests += 1;
                    let ids: Vec<String> = part.iter().map(|p| p.conversation_id.clone()).collect();
                    let new: HashSet<String> = accepted.ids.into_iter().collect();
                    if accepted.accepted + accepted.duplicates != part.len() {
                        tracing::warn!(
                            sent = part.len(),
                            accepted = accepted.accepted,
                            duplicates = accepted.duplicates,
                            "the collector's counts do not add up to the batch"
                        );
                    }
                    out.sent += ids.iter().filter(|id| new.contains(*id)).count();
                    out.duplicates += ids.iter().filter(|id| !new.contains(*id)).count();
                    spool.acknowledge(&ids, &new)?;
                }
                Err(client::Error::Rejected {
                    status: status @ (400 | 413 | 422),
                    code,
                    detail,
                    ..
                }) => {
                    out.requests += 1;
                    if part.len() > 1 {
                        let mid = start + part.len() / 2;
                        todo.push((mid, end));
                        todo.push((start, mid));
                        continue;
                    }
                    let id = &part[0].conversation_id;
                    tracing::warn!(conversation_id = %id, status, %code, %detail, "quarantined");
                    spool.quarantine(id, status, &code, &detail)?;
                    out.quarantined.push(Refusal {
                        conversation_id: id.clone(),
                        status,
                        error: code,
                        detail,
                    });
                }
                Err(source) => {
                    return Err(Error::Collector {
                        url: self.client.base_url().to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn post(&self, part: &[Pending]) -> Result<Accepted, client::Error> {
        let mut body = Vec::with_capacity(part.iter().map(|p| p.body.len() + 1).sum());
        for p in part {
            body.extend_from_slice(p.body.as_bytes());
            body.push(b'\n');
        }
        let gzip = body.len() > GZIP_ABOVE;
        if gzip {
            body = gzip_bytes(&body);
        }
        with_retry(self.options.retry, || {
            self.client
                .post_bytes(ENDPOINT, body.clone(), "application/x-ndjson", gzip)
        })
        .await
    }
}

/// `data` gzip-compressed at the fast level.
pub(crate) fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)
        .expect("writing to a Vec-backed encoder does not fail");
    enc.finish()
        .expect("finishing a Vec-backed encoder does not fail")
}
