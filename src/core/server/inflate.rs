//! Gzip request bodies inflated as they arrive, within a memory budget the whole process
//! shares: a bomb never holds more than the decoded limit, and many at once never hold more
//! than the budget (beyond it the request gets 503 and `Retry-After`).
//!
//! The budget is charged as the decoded buffer grows and given back when the last copy of the
//! decoded bytes is dropped, so it also covers the parsing that follows.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use memmap2::MmapMut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::server::api_error::ApiError;

/// Compressed bytes handed to the inflater at a time.
const BATCH_BYTES: usize = 64 * 1024;
/// What a gzip body pays from the budget before it is read; what it pays then doubles as it
/// inflates (within its limit).
const MIN_GROWTH: usize = 64 * 1024;
/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// Decoded bytes every gzip body of the process may hold at once. Clones share the budget.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

impl DecodeBudget {
    /// Twice the collector's default decoded limit: two bodies of the largest size, or many
    /// small ones, inflate at once.
    pub const DEFAULT_BYTES: usize = 128 * 1024 * 1024;

    /// A budget of `bytes` (at most `Semaphore::MAX_PERMITS`).
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        DecodeBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// The budget's size.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes charged now.
    pub fn in_use(&self) -> usize {
        self.bytes - self.permits.available_permits()
    }

    fn charge(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        self.permits.clone().try_acquire_many_owned(n).ok()
    }
}

/// Reads a gzip body of at most `max_body` compressed bytes and inflates it, to at most
/// `max_decoded` bytes, on the blocking pool as it arrives. `read_error` turns a failed body
/// read into the caller's answer.
pub async fn gunzip_body(
    body: Body,
    max_body: usize,
    max_decoded: usize,
    budget: &DecodeBudget,
    read_error: impl Fn(axum::Error) -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut body = body;
    // Paying for the first chunk up front refuses a body the budget has no room for before it
    // costs a decoder or a blocking thread.
    let first = budget.charge(MIN_GROWTH).ok_or_else(|| busy(budget))?;
    let mut inflater = Some(Inflater::new(max_decoded, budget.clone(), first));
    let mut batch: Vec<Bytes> = Vec::new();
    let (mut pending, mut received) = (0usize, 0usize);
    let mut take = |frame: Option<Result<Frame<Bytes>, axum::Error>>,
                    batch: &mut Vec<Bytes>,
                    pending: &mut usize|
     -> Result<bool, ApiError> {
        let Some(frame) = frame.transpose().map_err(&read_error)? else {
            return Ok(true);
        };
        if let Ok(data) = frame.into_data() {
            received += data.len();
            if received > max_body {
                return Err(crate::core::server::http::too_large(format!(
                    "body exceeds the limit of {max_body} bytes"
                )));
            }
            *pending += data.len();
            batch.push(data);
        }
        Ok(false)
    };
    loop {
        // Wait for some of the body, then take whatever else has already arrived.
        let mut end = take(body.frame().await, &mut batch, &mut pending)?;
        while !end && pending < BATCH_BYTES {
            match body.frame().now_or_never() {
                Some(frame) => end = take(frame, &mut batch, &mut pending)?,
                None => break,
            }
        }
        end |= body.is_end_stream();
        if pending > 0 {
            let mut working = inflater
                .take()
                .expect("the inflater is back after each batch");
            let input = std::mem::take(&mut batch);
            pending = 0;
            // A refused body is dropped here, on the thread that allocated it: the allocator
            // gives memory freed by its own thread back at once, memory freed by another
            // thread only once the owner allocates again.
            let back = tokio::task::spawn_blocking(move || {
                input
                    .iter()
                    .try_for_each(|chunk| working.feed(chunk))
                    .map(|()| working)
            })
            .await
            .map_err(|e| unavailable(e.to_string()))??;
            inflater = Some(back);
        }
        if end {
            let done = inflater
                .take()
                .expect("the inflater is back after each batch");
            return if done.is_empty() {
                Ok(Bytes::new())
            } else {
                tokio::task::spawn_blocking(move || done.finish())
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
            };
        }
    }
}

fn unavailable(detail: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
}

fn busy(budget: &DecodeBudget) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!(
            "the server is inflating as many gzip bodies as its budget allows ({} MiB at once); retry shortly",
            budget.bytes() / (1024 * 1024)
        ),
    )
    .retry_after(RETRY_AFTER_SECS)
}

/// A gzip decoder writing into a buffer that charges the budget as it grows.
struct Inflater {
    decoder: flate2::write::MultiGzDecoder<Sink>,
    fed: bool,
}

impl Inflater {
    fn new(limit: usize, budget: DecodeBudget, prepaid: OwnedSemaphorePermit) -> Self {
        Inflater {
            decoder: flate2::write::MultiGzDecoder::new(Sink {
                map: None,
                len: 0,
                limit,
                budget,
                paid: prepaid.num_permits(),
                charged: prepaid,
                refused: None,
            }),
            fed: false,
        }
    }

    /// Whether nothing was fed (an empty body, which is not gzip's business).
    fn is_empty(&self) -> bool {
        !self.fed
    }

    fn feed(&mut self, compressed: &[u8]) -> Result<(), ApiError> {
        self.fed |= !compressed.is_empty();
        let written = self.decoder.write_all(compressed);
        self.check(written)
    }

    fn finish(mut self) -> Result<Bytes, ApiError> {
        let finished = self.decoder.try_finish();
        self.check(finished)?;
        let sink = self.decoder.finish().map_err(invalid)?;
        Ok(sink.into_bytes())
    }

    fn check(&self, result: std::io::Result<()>) -> Result<(), ApiError> {
        match (&self.decoder.get_ref().refused, result) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(invalid(e)),
        }
    }
}

fn invalid(e: std::io::Error) -> ApiError {
    ApiError::bad_request("invalid_body", format!("body is not valid gzip: {e}"))
}

/// The decoded bytes, in an anonymous map as large as the limit (only the pages written are
/// resident) and paid for from the budget before they are written: refuses to grow past the
/// limit (413) or the budget (503). A map and not the heap because the allocator keeps memory
/// freed on a thread other than the one that allocated it until that thread allocates again,
/// and inflating hops between blocking threads: many bombs would leave their memory behind.
struct Sink {
    map: Option<MmapMut>,
    len: usize,
    limit: usize,
    budget: DecodeBudget,
    paid: usize,
    charged: OwnedSemaphorePermit,
    refused: Option<ApiError>,
}

impl Sink {
    fn refuse(&mut self, why: ApiError) -> std::io::Error {
        self.refused = Some(why);
        std::io::Error::other("decoded body refused")
    }

    /// Pays for room up to `needed` bytes (doubling what is paid, within the limit).
    fn pay_for(&mut self, needed: usize) -> std::io::Result<()> {
        let target = needed.max(self.paid * 2).min(self.limit);
        let Some(permit) = self.budget.charge(target - self.paid) else {
            let why = busy(&self.budget);
            return Err(self.refuse(why));
        };
        self.charged.merge(permit);
        self.paid = target;
        Ok(())
    }

    fn into_bytes(self) -> Bytes {
        match self.map {
            None => Bytes::new(),
            Some(map) => Bytes::from_owner(Charged {
                map,
                len: self.len,
                _permit: self.charged,
            }),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let needed = self.len + buf.len();
        if needed > self.limit {
            let limit = self.limit;
            return Err(self.refuse(crate::core::server::http::too_large(format!(
                "decompressed body exceeds the limit of {limit} bytes"
            ))));
        }
        if needed > self.paid {
            self.pay_for(needed)?;
        }
        if self.map.is_none() {
            // Virtual until written: the limit's worth of address space, not of memory.
            match MmapMut::map_anon(self.limit.max(1)) {
                Ok(map) => self.map = Some(map),
                Err(e) => {
                    let why = unavailable(format!("cannot map memory for the decoded body: {e}"));
                    return Err(self.refuse(why));
                }
            }
        }
        let map = self.map.as_mut().expect("mapped above");
        map[self.len..needed].copy_from_slice(buf);
        self.len = needed;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decoded bytes that hold their share of the budget until the last copy is dropped.
struct Charged {
    map: MmapMut,
    len: usize,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    async fn inflate(
        compressed: Vec<u8>,
        limit: usize,
        budget: &DecodeBudget,
    ) -> Result<Bytes, ApiError> {
        gunzip_body(Body::from(compressed), usize::MAX, limit, budget, |e| {
            ApiError::bad_request("invalid_body", e.to_string())
        })
        .await
    }

    #[tokio::test]
    async fn bodies_inflate_and_give_the_budget_back_when_dropped() {
        let budget = DecodeBudget::new(1024 * 1024);
        let data = b"hello ".repeat(10_000);
        let out = inflate(gzip(&data), 1024 * 1024, &budget).await.unwrap();
        assert_eq!(&out[..], &data[..]);
        assert!(budget.in_use() >= data.len());
        drop(out);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn past_the_limit_is_413_and_past_the_budget_is_503() {
        let budget = DecodeBudget::new(256 * 1024);
        let bomb = gzip(&vec![0u8; 4 * 1024 * 1024]);
        let e = inflate(bomb.clone(), 1024 * 1024, &DecodeBudget::new(usize::MAX))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = inflate(bomb, 1024 * 1024, &budget).await.unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        assert_eq!(e.retry_after, Some(RETRY_AFTER_SECS));
        assert_eq!(budget.in_use(), 0, "a refused body gives its share back");
    }

    #[tokio::test]
    async fn empty_truncated_and_multi_member_bodies() {
        let budget = DecodeBudget::new(1024 * 1024);
        assert!(inflate(Vec::new(), 1024, &budget).await.unwrap().is_empty());
        let whole = gzip(b"abcdef");
        let e = inflate(whole[..whole.len() - 3].to_vec(), 1024, &budget)
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_body");
        let e = inflate(b"not gzip".to_vec(), 1024, &budget)
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_body");
        let mut two = gzip(b"abc");
        two.extend(gzip(b"def"));
        assert_eq!(&inflate(two, 1024, &budget).await.unwrap()[..], b"abcdef");
    }
}
