//! The collector's API as typed calls: the NDJSON ingest batcher (validation, gzip, retries),
//! analyze, insights and the telemetry query. The command line's only way to the collector
//! besides the Telemetrist's conversation sender.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::core::collector::insight::{Insight, InsightList};
use crate::core::shared::client::{self, ApiClient, RetryPolicy, with_retry};
use crate::core::telemetry::{RecordError, StoredTelemetry, decode_envelope};

/// Bodies larger than this are gzip-compressed before sending.
const GZIP_ABOVE: usize = 64 * 1024;

/// How many refusals an [`IngestReport`] lists (it counts them all).
pub const MAX_LISTED_ERRORS: usize = 20;

/// A client of one collector.
#[derive(Debug, Clone)]
pub struct CollectorClient {
    api: ApiClient,
}

impl CollectorClient {
    /// Talks to the collector through `api`.
    pub fn new(api: ApiClient) -> Self {
        CollectorClient { api }
    }

    /// The collector's base URL.
    pub fn base_url(&self) -> &str {
        self.api.base_url()
    }

    /// `POST /analyze` with `request` (an analysis request document); `premium_key` is sent
    /// as the `X402` header.
    pub async fn analyze(
        &self,
        request: &impl Serialize,
        premium_key: Option<&str>,
    ) -> Result<Insight, client::Error> {
        let headers: Vec<(&str, &str)> = premium_key.map(|k| vec![("X402", k)]).unwrap_or_default();
        self.api.post_json("/analyze", request, &headers).await
    }

    /// The `limit` newest insights the collector has stored, newest first.
    pub async fn insights(&self, limit: u32) -> Result<InsightList, client::Error> {
        self.api.get_json(&format!("/insights?limit={limit}")).await
    }

    /// One page of `GET /telemetry`; `query` is the encoded query string.
    pub async fn telemetry(&self, query: &str) -> Result<TelemetryPage, client::Error> {
        self.api.get_json(&format!("/telemetry?{query}")).await
    }

    /// `POST /ingest` of one JSON envelope, retried per `policy`.
    pub async fn ingest_one(
        &self,
        envelope: Vec<u8>,
        policy: RetryPolicy,
    ) -> Result<Accepted, client::Error> {
        self.ingest(envelope, "application/json", false, policy)
            .await
    }

    /// `POST /ingest` of `body` (gzip-compressed when `gzip`), retried per `policy`.
    async fn ingest(
        &self,
        body: Vec<u8>,
        content_type: &str,
        gzip: bool,
        policy: RetryPolicy,
    ) -> Result<Accepted, client::Error> {
        with_retry(policy, || {
            self.api
                .post_bytes("/ingest", body.clone(), content_type, gzip)
        })
        .await
    }
}

/// One page of the telemetry query.
#[derive(Debug, Serialize, Deserialize)]
pub struct TelemetryPage {
    /// Records on this page.
    pub count: usize,
    /// The records.
    pub records: Vec<StoredTelemetry>,
    /// Cursor of the next page.
    pub next_cursor: Option<i64>,
}

/// What the collector answers to an accepted batch.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    /// Records committed.
    pub accepted: usize,
    /// Their ids (single-event requests).
    #[serde(default)]
    pub ids: Vec<String>,
}

/// The end-of-run report of an ingest.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    /// Records committed by the collector.
    pub accepted: usize,
    /// Records refused (locally invalid or rejected by the server).
    pub rejected: usize,
    /// Requests sent.
    pub batches: usize,
    /// Ids of accepted records (single-event mode only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// The first refusals, with where and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl IngestReport {
    fn refuse(&mut self, n: usize, why: String) {
        self.rejected += n;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(why);
        }
    }

    /// The error to report when every record was refused (some refused is the caller's
    /// call).
    pub fn all_rejected(&self) -> Option<IngestError> {
        match (self.accepted, self.rejected) {
            (0, n) if n > 0 => Some(IngestError::AllRejected { n }),
            _ => None,
        }
    }
}

/// Why an ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A batch could not be delivered (after the retries) or was refused as a whole.
    #[error("sending lines {}-{} ({accepted} record(s) accepted before this)", .lines.0, .lines.1)]
    Send {
        /// First and last input line of the batch.
        lines: (usize, usize),
        /// Records accepted before it.
        accepted: usize,
        /// The collector's answer.
        source: client::Error,
    },
    /// Every record was refused (as the collector would report it: 400 invalid_record).
    #[error("400 invalid_record: all {n} record(s) were rejected")]
    AllRejected {
        /// How many.
        n: usize,
    },
    /// Compressing a batch.
    #[error(transparent)]
    Gzip(#[from] std::io::Error),
}

/// Streams NDJSON envelopes to the collector in batches: each line is validated with the
/// collector's own rules first, so one bad line costs only itself (it is reported with its
/// line number) instead of its whole batch.
#[derive(Debug)]
pub struct IngestBatcher<'a> {
    client: &'a CollectorClient,
    policy: RetryPolicy,
    batch_size: usize,
    batch: Vec<u8>,
    in_batch: usize,
    first_line: usize,
    last_line: usize,
    report: IngestReport,
}

impl<'a> IngestBatcher<'a> {
    /// Batches of `batch_size` records to `client`, each request retried per `policy`.
    pub fn new(client: &'a CollectorClient, policy: RetryPolicy, batch_size: usize) -> Self {
        IngestBatcher {
            client,
            policy,
            batch_size,
            batch: Vec::with_capacity(256 * 1024),
            in_batch: 0,
            first_line: 1,
            last_line: 0,
            report: IngestReport::default(),
        }
    }

    /// Adds input line `line_no` (from 1, trimmed); sends the batch when it is full.
    pub async fn push(&mut self, line_no: usize, text: &str) -> Result<(), IngestError> {
        self.last_line = line_no;
        match decode_envelope(text, line_no - 1, Some(line_no)) {
            Ok(_) => {
                if self.in_batch == 0 {
                    self.first_line = line_no;
                }
                self.batch.extend_from_slice(text.as_bytes());
                self.batch.push(b'\n');
                self.in_batch += 1;
            }
            Err(e) => self.report.refuse(1, e.to_string()),
        }
        if self.in_batch == self.batch_size {
            self.send().await?;
        }
        Ok(())
    }

    /// Sends what is left and returns the report.
    pub async fn finish(mut self) -> Result<IngestReport, IngestError> {
        if self.in_batch > 0 {
            self.send().await?;
        }
        Ok(self.report)
    }

    async fn send(&mut self) -> Result<(), IngestError> {
        let records = std::mem::take(&mut self.in_batch);
        let lines = (self.first_line, self.last_line);
        let (body, gzip) = if self.batch.len() > GZIP_ABOVE {
            (gzip(&self.batch)?, true)
        } else {
            (self.batch.clone(), false)
        };
        self.batch.clear();
        let report = &mut self.report;
        report.batches += 1;
        match self
            .client
            .ingest(body, "application/x-ndjson", gzip, self.policy)
            .await
        {
            Ok(a) => report.accepted += a.accepted,
            Err(client::Error::Rejected {
                status,
                code,
                detail,
                body,
                ..
            }) if status != 401 && status != 403 => {
                let listed: Vec<RecordError> = body
                    .get("records")
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default();
                let why = if listed.is_empty() {
                    format!("lines {}-{}: {status} {code}: {detail}", lines.0, lines.1)
                } else {
                    format!("lines {}-{}: {detail}", lines.0, lines.1)
                };
                report.refuse(records, why);
            }
            Err(source) => {
                return Err(IngestError::Send {
                    lines,
                    accepted: report.accepted,
                    source,
                });
            }
        }
        Ok(())
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}
