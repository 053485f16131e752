//! What every Phoenix server does the same way before and around its routes: read the bind
//! address, refuse an unauthenticated non-loopback address, load TLS, bind the listener and
//! name its URL, and run several servers under one stop signal so that when one stops (on
//! an error or the signal) the others drain and stop too. `serve collector`, `serve
//! distributor` and `serve all` are compositions of these.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig;

use super::Listener;
use crate::core::shared::tls;

/// Why a server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot be served as they are (a usage error).
    #[error("{0}")]
    Usage(String),
    /// The certificate or key.
    #[error("loading the TLS certificate")]
    Tls(#[source] tls::Error),
    /// The address could not be bound.
    #[error("binding the {service} to {addr}")]
    Bind {
        /// Which server.
        service: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound address could not be read back.
    #[error(transparent)]
    LocalAddr(std::io::Error),
}

/// `bind` as an address, or a usage error that names the `service`.
pub fn bind_address(service: &str, bind: &str) -> Result<SocketAddr, Error> {
    bind.parse().map_err(|e| {
        Error::Usage(format!(
            "{service} bind address {bind:?} is not IP:PORT: {e}"
        ))
    })
}

/// Off loopback a server needs a credential (`authenticated`) unless the operator said
/// `--insecure-no-auth`; `how` tells how to set one.
pub fn require_auth(
    service: &str,
    addr: SocketAddr,
    authenticated: bool,
    insecure_no_auth: bool,
    how: &str,
) -> Result<(), Error> {
    if !addr.ip().is_loopback() && !authenticated && !insecure_no_auth {
        return Err(Error::Usage(format!(
            "refusing to serve the {service} on non-loopback address {addr} without authentication: \
             {how}, or pass --insecure-no-auth"
        )));
    }
    Ok(())
}

/// Whether a server on `addr` is reachable off this machine without `--insecure-no-auth`,
/// so that every read and every subscriber needs a credential.
pub fn exposed(addr: SocketAddr, insecure_no_auth: bool) -> bool {
    !addr.ip().is_loopback() && !insecure_no_auth
}

/// The TLS configuration of a certificate chain and its key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    tls::server_config(cert, key).map_err(Error::Tls)
}

/// A listener bound to its address, with its TLS configuration when it serves HTTPS.
#[derive(Debug)]
pub struct Bound {
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    local: SocketAddr,
}

impl Bound {
    /// Binds `addr` for `service`.
    pub async fn bind(
        service: &'static str,
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
    ) -> Result<Bound, Error> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                service,
                addr,
                source,
            })?;
        let local = tcp.local_addr().map_err(Error::LocalAddr)?;
        Ok(Bound { tcp, tls, local })
    }

    /// `scheme://addr` + `path`, the scheme `plain` or (with TLS) `secure`.
    pub fn url(&self, plain: &str, secure: &str, path: &str) -> String {
        let scheme = if self.tls.is_some() { secure } else { plain };
        format!("{scheme}://{}{path}", self.local)
    }

    /// The listener to serve on.
    pub fn listener(self) -> Listener {
        match self.tls {
            Some(config) => Listener::tls(self.tcp, config),
            None => Listener::plain(self.tcp),
        }
    }
}

/// A future that resolves once [`Stop::stop`] was called on any clone.
pub type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// One stop for several servers: the signal, or the first of them to stop.
#[derive(Debug, Clone)]
pub struct Stop {
    tx: Arc<watch::Sender<bool>>,
}

impl Stop {
    /// A stop nothing has called yet.
    pub fn new() -> Stop {
        Stop {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Stops every server waiting on [`Stop::stopped`].
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves once stopped.
    pub fn stopped(&self) -> Stopped {
        let mut rx = self.tx.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    }

    /// Calls [`Stop::stop`] when `signal` resolves, until the returned guard is dropped.
    pub fn on(&self, signal: impl Future<Output = ()> + Send + 'static) -> StopOn {
        let this = self.clone();
        StopOn(tokio::spawn(async move {
            signal.await;
            this.stop();
        }))
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// Stops listening to a signal when dropped.
#[derive(Debug)]
pub struct StopOn(tokio::task::JoinHandle<()>);

impl Drop for StopOn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `a` and `b` under one stop: `signal`, or either of them returning.
pub async fn run_pair<A, B, FA, FB>(
    signal: impl Future<Output = ()> + Send + 'static,
    a: A,
    b: B,
) -> (FA::Output, FB::Output)
where
    A: FnOnce(Stopped) -> FA,
    B: FnOnce(Stopped) -> FB,
    FA: Future,
    FB: Future,
{
    let stop = Stop::new();
    let guard = stop.on(signal);
    let results = tokio::join!(
        async {
            let r = a(stop.stopped()).await;
            stop.stop();
            r
        },
        async {
            let r = b(stop.stopped()).await;
            stop.stop();
            r
        }
    );
    drop(guard);
    results
}
