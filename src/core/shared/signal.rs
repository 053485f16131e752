//! The one stop signal of every long-running command: SIGINT (ctrl-c) or SIGTERM.

use std::future::Future;

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed by this call,
/// not when the future is first polled, so a signal right after it is not missed (and does
/// not kill the process the default way).
pub fn stop() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {},
                () = wait(term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// [`stop`], then `message` logged at info level (what the process does before it exits).
pub fn stop_then_log(message: &'static str) -> impl Future<Output = ()> + Send + 'static {
    let stop = stop();
    async move {
        stop.await;
        tracing::info!("{message}");
    }
}
