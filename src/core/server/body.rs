//! Request and response bodies as the serving loop hands them out: a request body that must
//! arrive in time (else [`BodyTimeout`]), and the bookkeeping that tells a connection with a
//! complete request in flight (finish it on shutdown) from one that is idle or still sending
//! (close it at once).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a request body yields when it does not arrive in time; `read_body` answers it
/// with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time ({0})")]
pub struct BodyTimeout(String);

/// Whether `err` or one of its sources is a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Requests of one connection whose body has fully arrived and whose response has not been
/// fully written yet.
#[derive(Debug, Default)]
pub(super) struct InFlight(AtomicUsize);

impl InFlight {
    /// Whether a complete request is being handled or answered.
    pub(super) fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One request's share of [`InFlight`]: counted once its body is complete, until the last
/// holder (request body, handler, response body) lets go.
#[derive(Debug)]
pub(super) struct RequestMark {
    conn: Arc<InFlight>,
    complete: AtomicBool,
}

impl RequestMark {
    pub(super) fn new(conn: Arc<InFlight>) -> Arc<Self> {
        Arc::new(RequestMark {
            conn,
            complete: AtomicBool::new(false),
        })
    }

    /// The whole request has arrived: from now on shutdown waits for its answer.
    pub(super) fn complete(&self) {
        if !self.complete.swap(true, Ordering::AcqRel) {
            self.conn.0.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for RequestMark {
    fn drop(&mut self) {
        if *self.complete.get_mut() {
            self.conn.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A request body with a deadline: `timeout` after the headers, extended by a second for
/// every `min_rate` bytes received.
pub(super) struct TimedBody {
    inner: Incoming,
    mark: Option<Arc<RequestMark>>,
    started: Instant,
    timeout: Duration,
    min_rate: u64,
    received: u64,
    /// Armed the first time the body is not ready: most bodies arrive with their headers,
    /// and a timer per request would cost every one of them.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    pub(super) fn new(
        inner: Incoming,
        mark: Arc<RequestMark>,
        timeout: Duration,
        min_rate: u64,
    ) -> Self {
        let started = Instant::now();
        if inner.is_end_stream() {
            mark.complete();
        }
        TimedBody {
            inner,
            mark: Some(mark),
            started,
            timeout,
            min_rate: min_rate.max(1),
            received: 0,
            deadline: None,
        }
    }

    fn allowed(&self) -> Duration {
        self.timeout + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64)
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.started + this.allowed();
                    if let Some(sleep) = this.deadline.as_mut() {
                        sleep.as_mut().reset(deadline);
                    }
                }
                if this.inner.is_end_stream()
                    && let Some(mark) = &this.mark
                {
                    mark.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(mark) = &this.mark {
                    mark.complete();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                let at = this.started + this.allowed();
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        // Not complete, never will be: shutdown need not wait for this request.
                        this.mark = None;
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(format!(
                            "{} bytes in {:.1}s; the body may take {}s plus one second per {} bytes",
                            this.received,
                            this.started.elapsed().as_secs_f64(),
                            this.timeout.as_secs_f64(),
                            this.min_rate
                        ))))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it is written.
pub(super) struct MarkedBody {
    inner: axum::body::Body,
    _mark: Arc<RequestMark>,
}

impl MarkedBody {
    pub(super) fn new(inner: axum::body::Body, mark: Arc<RequestMark>) -> Self {
        MarkedBody { inner, _mark: mark }
    }
}

impl HttpBody for MarkedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
