//! The serving loop every Phoenix server runs: accept (plain TCP or TLS), HTTP/1.1 with
//! upgrades through hyper, header and body read timeouts, a cap on open connections, and a
//! shutdown with a deadline.
//!
//! Depends on `shared` (TLS, tiers) and the store's error (its HTTP answers); every server
//! (`collector`, `distributor`) mounts its routes here.
//!
//! On the shutdown signal the listener is closed; connections that are idle or still sending
//! their request are closed at once, connections with a complete request in flight get its
//! answer written (then close), and whatever remains after
//! [`ServerLimits::shutdown_timeout`] is dropped. The caller then commits its stores.

pub mod access;
pub mod api_error;
pub mod app;
mod body;
pub mod http;
pub mod inflate;
mod limits;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt as _;

pub use body::{BodyTimeout, is_body_timeout};
pub use limits::{
    FileLimit, OpenConnections, ServerLimits, default_max_connections, raise_file_limit,
};

use body::{InFlight, MarkedBody, RequestMark, TimedBody};
use limits::OpenGuard;

/// Refusals (503 beyond the cap) being written at once; past this a refused connection is
/// closed without an answer, so refusing never costs more than a few descriptors.
const MAX_REFUSING: usize = 64;
/// Bytes of a refused request's head read before the answer.
const MAX_REFUSED_HEAD: usize = 16 * 1024;
/// How long a refusal may take to be written and its request drained.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The answer beyond the connection cap: minimal, written before the request is read.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 86\r\n\
\r\n\
{\"error\":\"too_many_connections\",\"detail\":\"the server is at its connection cap; retry\"}";
/// Pause after an accept error (usually EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// A bound TCP listener, serving TLS when it has a certificate.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    /// Plain HTTP.
    pub fn plain(tcp: TcpListener) -> Self {
        Listener { tcp, tls: None }
    }

    /// HTTPS (and WSS) with this rustls configuration.
    pub fn tls(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Listener {
            tcp,
            tls: Some(TlsAcceptor::from(config)),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Listener::plain(tcp)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains as the module says.
/// Returns no later than `limits.shutdown_timeout` after the signal (plus the moment it takes
/// to drop what remains); upgraded connections (WebSockets) are the router's to close.
pub async fn serve(
    listener: Listener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let Listener { tcp, tls } = listener;
    let shared = Arc::new(Shared {
        http: http_builder(limits.header_timeout),
        router,
        limits,
        refusing: AtomicUsize::new(0),
        draining: watch::channel(false).0,
    });
    let mut connections = JoinSet::new();
    let mut last_accept_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match shared.limits.admit() {
                        Some(open) => {
                            connections.spawn(connection(stream, peer, open, tls.clone(), shared.clone()));
                        }
                        None => refuse(stream, tls.is_some(), &shared),
                    }
                }
                Err(e) => {
                    // Never stop accepting: the cap keeps this rare, and the next accept may
                    // succeed once a descriptor is free.
                    if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(error = %e, open = shared.limits.open_connections(), "accept failed");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    let deadline = Instant::now() + shared.limits.shutdown_timeout;
    drop(tcp);
    shared.draining.send_replace(true);
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "shutdown deadline reached; dropping the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What every connection of one server shares.
struct Shared {
    router: Router,
    limits: ServerLimits,
    http: hyper::server::conn::http1::Builder,
    refusing: AtomicUsize,
    draining: watch::Sender<bool>,
}

/// HTTP/1.1 with keep-alive; the header timeout runs from the connection's start and from the
/// end of each response, so it is the keep-alive idle timeout too.
fn http_builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_timeout);
    b
}

/// Serves one accepted connection: TLS handshake if any, then HTTP until it ends, the
/// server drains it, or the drain's deadline drops it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    open: OpenGuard,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut draining = shared.draining.subscribe();
    match tls {
        None => {
            http(
                Tracked {
                    io: stream,
                    _open: open,
                },
                shared,
                &mut draining,
            )
            .await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream));
            let tls = tokio::select! {
                r = handshake => r,
                _ = draining.wait_for(|d| *d) => return,
            };
            match tls {
                Ok(Ok(tls)) => {
                    http(
                        Tracked {
                            io: tls,
                            _open: open,
                        },
                        shared,
                        &mut draining,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: Tracked<I>, shared: Arc<Shared>, draining: &mut watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let in_flight = Arc::new(InFlight::default());
    let service = Service {
        shared: shared.clone(),
        in_flight: in_flight.clone(),
    };
    let conn = shared
        .http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = draining.wait_for(|d| *d) => {}
    }
    // Idle, or a request still arriving: nothing acknowledged can be lost by closing now.
    if !in_flight.any() {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The hyper service over the router: timed request bodies, in-flight bookkeeping, and
/// `Connection: close` after a 408.
#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<MarkedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mark = RequestMark::new(self.in_flight.clone());
        let limits = &self.shared.limits;
        let (timeout, min_rate) = (limits.body_timeout, limits.body_min_rate);
        let body_mark = mark.clone();
        let req =
            req.map(|b| axum::body::Body::new(TimedBody::new(b, body_mark, timeout, min_rate)));
        let router = self.shared.router.clone();
        Box::pin(async move {
            let mut resp = match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if resp.status() == StatusCode::REQUEST_TIMEOUT {
                // The body was not read to its end, so the connection cannot carry another.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp.map(|b| MarkedBody::new(b, mark)))
        })
    }
}

/// Answers a connection beyond the cap with a minimal 503 (plain HTTP only: a TLS client
/// would need a handshake first) and closes it, in the background and bounded.
fn refuse(mut stream: TcpStream, tls: bool, shared: &Arc<Shared>) {
    if shared.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING || tls {
        shared.refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
            // Clients expect the answer after their request: read its head first (what is
            // left is read after the answer, so closing does not reset the connection before
            // the client has read it).
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REFUSED_HEAD {
                match stream.read(&mut buf).await? {
                    0 => break,
                    n => head.extend_from_slice(&buf[..n]),
                }
            }
            stream.write_all(BUSY_RESPONSE).await?;
            stream.shutdown().await?;
            while stream.read(&mut buf).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        shared.refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// A connection's stream, counted as open for as long as it lives (through an upgrade too).
struct Tracked<I> {
    io: I,
    _open: OpenGuard,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }
}
