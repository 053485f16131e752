//! The subscription loop: connect, `hello`, `hello_ack`, then apply → save → ack → hook for
//! every `update` frame; reconnect with exponential backoff and full jitter, resuming from
//! `last_seq`. `--once` stops after the replay announced in `hello_ack`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::heartbeat::{self, HeartbeatConfig, Progress};
use super::state::LearningPipelineState;
use super::{Error, exec, state_file};
use crate::core::shared::tier::Tier;
use crate::core::shared::tls;
use crate::core::updates::protocol::{
    AckStatus, ClientFrame, MAX_FRAME_BYTES, ServerFrame, check_update_id,
};
use crate::core::updates::{Audience, UpdateEnvelope};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Error codes after which reconnecting would only be refused again.
const FATAL_ERROR_CODES: &[&str] = &[
    "bad_hello",
    "expected_hello",
    "protocol_error",
    "protocol_violation",
    "bad_frame",
    "bad_json",
    "frame_too_large",
    "unauthorized",
    "forbidden",
];

fn is_fatal(code: &str) -> bool {
    code.starts_with("invalid_") || FATAL_ERROR_CODES.contains(&code)
}

/// Exponential backoff with full jitter: each wait is uniform in `[0, cap]`, and the cap
/// doubles from `initial` up to `max` until [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starts at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            cap: initial,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap;
        self.cap = self.cap.saturating_mul(2).min(self.max);
        cap.mul_f64(rand::random_range(0.0..=1.0))
    }

    /// Back to `initial` (after a successful `hello_ack`).
    pub fn reset(&mut self) {
        self.cap = self.initial;
    }
}

/// How to subscribe.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Distributor WebSocket URL (`ws://127.0.0.1:5003/subscribe`).
    pub url: String,
    /// Raw orch id.
    pub orch_id: String,
    /// Agent path.
    pub agent_path: String,
    /// Premium key sent as `x402` in hello.
    pub premium_key: Option<String>,
    /// Agent token sent as `token` in hello (`phoenix agents token ORCH_ID`).
    pub agent_token: Option<String>,
    /// TLS for `wss://` URLs ([`tls::client_config`]); `None` trusts the webpki roots only.
    pub tls: Option<Arc<ClientConfig>>,
    /// State file.
    pub state_path: PathBuf,
    /// Shell command run after each applied update.
    pub exec: Option<String>,
    /// How long the hook may run.
    pub exec_timeout: Duration,
    /// Stop after the replay announced in `hello_ack`.
    pub once: bool,
    /// Heartbeats to the collector (not sent with `once`).
    pub heartbeat: Option<HeartbeatConfig>,
    /// Reconnection waits.
    pub backoff: Backoff,
    /// Limit on connecting plus receiving `hello_ack` (and, with `once`, between replayed
    /// updates).
    pub connect_timeout: Duration,
    /// A ping is sent this often; three times this without any frame from the distributor
    /// drops the connection (a peer that vanished without a FIN).
    pub keepalive: Duration,
}

impl SubscribeOptions {
    /// Options with the defaults: backoff 0.5 s doubling to 30 s, hook timeout 60 s.
    pub fn new(
        url: impl Into<String>,
        orch_id: impl Into<String>,
        agent_path: impl Into<String>,
        state_path: PathBuf,
    ) -> Self {
        SubscribeOptions {
            url: url.into(),
            orch_id: orch_id.into(),
            agent_path: agent_path.into(),
            premium_key: None,
            agent_token: None,
            tls: None,
            state_path,
            exec: None,
            exec_timeout: Duration::from_secs(60),
            once: false,
            heartbeat: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
        }
    }
}

/// What happened to one update (printed by the command, one line or one NDJSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    /// The update.
    pub update_id: String,
    /// Its seq.
    pub seq: u64,
    /// Its type (as sent, even when this version does not know it).
    pub update_type: String,
    /// The ack sent.
    pub status: AckStatus,
    /// Why, when rejected or skipped.
    pub error: Option<String>,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Updates applied.
    pub applied: usize,
    /// Updates rejected.
    pub rejected: usize,
    /// Updates skipped.
    pub skipped: usize,
    /// `last_seq` at the end.
    pub last_seq: u64,
}

/// How a session ended.
enum End {
    Shutdown,
    ReplayDone,
}

/// Why a session failed.
enum Failure {
    /// Worth reconnecting; `connected` says whether hello_ack was received.
    Lost { detail: String, connected: bool },
    /// Stop for good.
    Fatal(Error),
}

fn lost(detail: impl Into<String>, connected: bool) -> Failure {
    Failure::Lost {
        detail: detail.into(),
        connected,
    }
}

/// Runs the learning pipeline until `shutdown` resolves (or, with `once`, until the replay
/// is applied), calling `on_update` after each update has been saved and acked.
///
/// Loads the state file (a missing one starts fresh); a corrupt one is an error.
pub async fn subscribe(
    opts: SubscribeOptions,
    shutdown: impl Future<Output = ()>,
    on_update: impl FnMut(&UpdateReport),
) -> Result<Summary, Error> {
    let tls = match &opts.tls {
        Some(config) => config.clone(),
        None => tls::client_config(None).map_err(|e| Error::Config(e.to_string()))?,
    };
    let mut state = state_file::load_for(&opts.state_path, &opts.orch_id, &opts.agent_path)?;
    state.distributor_url = Some(opts.url.clone());
    state.telemetrist_url = opts
        .heartbeat
        .as_ref()
        .map(|h| h.client.base_url().to_owned());
    let (progress, progress_rx) = watch::channel(progress_of(&state));
    let heartbeat = match &opts.heartbeat {
        Some(cfg) if !opts.once => Some(AbortOnDrop(heartbeat::spawn(cfg.clone(), progress_rx))),
        _ => None,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = opts.backoff.clone();
    let mut run = Run {
        summary: Summary {
            last_seq: state.last_seq,
            ..Summary::default()
        },
        opts,
        tls,
        state,
        progress,
        on_update,
    };
    loop {
        match run.session(&mut shutdown, &mut backoff).await {
            Ok(End::Shutdown | End::ReplayDone) => break,
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Lost { detail, connected }) => {
                let url = run.opts.url.clone();
                if run.opts.once {
                    return Err(if connected {
                        Error::ConnectionLost { url, detail }
                    } else {
                        Error::Unreachable { url, detail }
                    });
                }
                let wait = backoff.next_delay();
                tracing::warn!(%url, error = %detail, retry_in_ms = wait.as_millis() as u64, "distributor connection lost; reconnecting");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    drop(heartbeat);
    run.summary.last_seq = run.state.last_seq;
    Ok(run.summary)
}

fn progress_of(state: &LearningPipelineState) -> Progress {
    Progress {
        last_seq: state.last_seq,
        last_update_id: state.last_update_id.clone(),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Run<F> {
    opts: SubscribeOptions,
    tls: Arc<ClientConfig>,
    state: LearningPipelineState,
    summary: Summary,
    progress: watch::Sender<Progress>,
    on_update: F,
}

/// Who this subscriber is, as granted by `hello_ack`.
struct Grant {
    orch_hash: String,
    tier: Tier,
}

impl<F: FnMut(&UpdateReport)> Run<F> {
    async fn session<S>(&mut self, shutdown: &mut S, backoff: &mut Backoff) -> Result<End, Failure>
    where
        S: Future<Output = ()> + Unpin,
    {
        let handshake = tokio::time::timeout(self.opts.connect_timeout, self.connect());
        let (mut ws, grant, replay) = tokio::select! {
            _ = &mut *shutdown => return Ok(End::Shutdown),
            r = handshake => r.map_err(|_| lost(format!("no hello_ack within {:?}", self.opts.connect_timeout), false))??,
        };
        backoff.reset();
        if self.state.orch_hash.as_deref() != Some(grant.orch_hash.as_str())
            || self.state.tier != Some(grant.tier)
        {
            self.state.orch_hash = Some(grant.orch_hash.clone());
            self.state.tier = Some(grant.tier);
            self.save().await?;
        }
        let mut remaining = replay;
        if self.opts.once && remaining == 0 {
            let _ = ws.close(None).await;
            return Ok(End::ReplayDone);
        }
        let mut keepalive = tokio::time::interval(self.opts.keepalive);
        keepalive.reset();
        let mut last_rx = Instant::now();
        loop {
            let message = tokio::select! {
                biased;
                _ = &mut *shutdown => {
                    let _ = ws.close(None).await;
                    return Ok(End::Shutdown);
                }
                _ = keepalive.tick() => {
                    if last_rx.elapsed() >= self.opts.keepalive * 3 {
                        return Err(lost(format!("no frame from the distributor for {:?}", last_rx.elapsed()), true));
                    }
                    ws.send(Message::Ping(Default::default())).await.map_err(|e| lost(e.to_string(), true))?;
                    continue;
                }
                m = ws.next() => m,
                _ = tokio::time::sleep(self.opts.connect_timeout), if self.opts.once => {
                    return Err(lost(format!(
                        "the replay stalled: {remaining} announced update(s) did not arrive within {:?}",
                        self.opts.connect_timeout
                    ), true));
                }
            };
            last_rx = Instant::now();
            let text = match message {
                None => return Err(lost("the distributor closed the connection", true)),
                Some(Err(e)) => return Err(lost(e.to_string(), true)),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!(" ({} {})", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    return Err(lost(
                        format!("the distributor closed the connection{why}"),
                        true,
                    ));
                }
                Some(Ok(_)) => continue,
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Update { update }) => {
                    if let Err(why) = check_update_id(&update.update_id) {
                        self.skip_unnamed(update.seq, &why).await?;
                    } else {
                        self.handle_update(&mut ws, &grant, &update).await?;
                    }
                }
                Ok(ServerFrame::Error { error, detail }) => {
                    tracing::error!(code = %error, %detail, "error from the distributor");
                    if is_fatal(&error) {
                        return Err(Failure::Fatal(Error::Fatal {
                            code: error,
                            detail,
                        }));
                    }
                    return Err(lost(format!("distributor error {error}: {detail}"), true));
                }
                Ok(ServerFrame::HelloAck { .. }) => {
                    tracing::warn!("ignoring a second hello_ack");
                    continue;
                }
                Err(e) => {
                    if !self.reject_undecodable(&mut ws, &text, &e).await? {
                        tracing::warn!(error = %e, "ignoring a frame this version does not understand");
                        continue;
                    }
                }
            }
            remaining = remaining.saturating_sub(1);
            if self.opts.once && remaining == 0 {
                let _ = ws.close(None).await;
                return Ok(End::ReplayDone);
            }
        }
    }

    /// Connects, says hello and waits for `hello_ack`; returns it with the replay count.
    async fn connect(&self) -> Result<(Socket, Grant, usize), Failure> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        // The connector only applies to wss://; ws:// stays plain.
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            self.opts.url.as_str(),
            Some(config),
            true,
            Some(Connector::Rustls(self.tls.clone())),
        )
        .await
        .map_err(|e| self.connect_error(e))?;
        let hello = ClientFrame::Hello {
            orch_id: self.opts.orch_id.clone(),
            agent_path: self.opts.agent_path.clone(),
            last_seq: self.state.last_seq,
            x402: self.opts.premium_key.clone(),
            token: self.opts.agent_token.clone(),
        };
        ws.send(Message::text(to_json(&hello)))
            .await
            .map_err(|e| lost(e.to_string(), false))?;
        loop {
            let text = match ws.next().await {
                None => {
                    return Err(lost(
                        "the distributor closed the connection before hello_ack",
                        false,
                    ));
                }
                Some(Err(e)) => return Err(lost(e.to_string(), false)),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) => {
                    return Err(lost(
                        "the distributor closed the connection before hello_ack",
                        false,
                    ));
                }
                Some(Ok(_)) => continue,
            };
            return match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::HelloAck {
                    orch_hash,
                    tier,
                    server_seq,
                    replay,
                }) => {
                    tracing::info!(url = %self.opts.url, %orch_hash, tier = tier.as_str(), server_seq, replay, last_seq = self.state.last_seq, "subscribed");
                    Ok((ws, Grant { orch_hash, tier }, replay))
                }
                Ok(ServerFrame::Error { error, detail }) if is_fatal(&error) => {
                    Err(Failure::Fatal(Error::Fatal {
                        code: error,
                        detail,
                    }))
                }
                Ok(ServerFrame::Error { error, detail }) => {
                    Err(lost(format!("distributor error {error}: {detail}"), false))
                }
                Ok(ServerFrame::Update { .. }) => {
                    Err(lost("an update arrived before hello_ack", false))
                }
                Err(e) => Err(lost(
                    format!("expected hello_ack, got an unreadable frame: {e}"),
                    false,
                )),
            };
        }
    }

    fn connect_error(&self, e: tungstenite::Error) -> Failure {
        use tungstenite::error::{TlsError, UrlError};
        let url = self.opts.url.clone();
        match e {
            tungstenite::Error::Url(UrlError::UnableToConnect(detail)) => lost(detail, false),
            tungstenite::Error::Url(other) => Failure::Fatal(Error::Config(format!(
                "invalid distributor URL {url:?}: {other}"
            ))),
            tungstenite::Error::Io(io) => match tls::handshake_error(&io) {
                Some(cert) if tls::is_untrusted_certificate(cert) => {
                    Failure::Fatal(Error::UntrustedCertificate {
                        url,
                        detail: cert.to_string(),
                    })
                }
                Some(other) => lost(format!("TLS handshake failed: {other}"), false),
                None => lost(io.to_string(), false),
            },
            tungstenite::Error::Tls(TlsError::InvalidDnsName) => Failure::Fatal(Error::Config(
                format!("{url}: the host is not a name a TLS certificate can be checked against"),
            )),
            tungstenite::Error::Tls(e) => lost(format!("TLS handshake failed: {e}"), false),
            tungstenite::Error::Http(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_client_error() && status != 408 && status != 429 {
                    Failure::Fatal(Error::Refused { url, status })
                } else {
                    lost(
                        format!("HTTP {status} instead of a WebSocket upgrade"),
                        false,
                    )
                }
            }
            other => lost(other.to_string(), false),
        }
    }

    /// Applies, saves, acks, reports and runs the hook for one update.
    async fn handle_update(
        &mut self,
        ws: &mut Socket,
        grant: &Grant,
        update: &UpdateEnvelope,
    ) -> Result<(), Failure> {
        let who = Audience {
            orch_id: Some(&self.opts.orch_id),
            orch_hash: &grant.orch_hash,
            agent_path: &self.opts.agent_path,
            tier: grant.tier,
        };
        let outcome = self.state.apply(update, &who);
        let bytes = self.save().await?;
        let report = UpdateReport {
            update_id: update.update_id.clone(),
            seq: update.seq,
            update_type: update.update_type.as_str().to_owned(),
            status: outcome.status,
            error: outcome.error,
        };
        self.ack(ws, &report).await?;
        if report.status == AckStatus::Applied
            && let Some(command) = &self.opts.exec
            && let Err(e) = exec::run_hook(
                command,
                &self.opts.state_path,
                &bytes,
                update,
                self.opts.exec_timeout,
            )
            .await
        {
            tracing::warn!(update_id = %update.update_id, error = %e, "--exec hook failed");
        }
        Ok(())
    }

    /// An `update` frame whose envelope this version cannot read (say, a newer update type)
    /// is acked `rejected` rather than ignored, so it is neither lost silently nor resent
    /// forever. Returns whether the frame was such an update.
    async fn reject_undecodable(
        &mut self,
        ws: &mut Socket,
        text: &str,
        e: &serde_json::Error,
    ) -> Result<bool, Failure> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return Ok(false);
        };
        let update = &value["update"];
        let (Some("update"), Some(id), Some(seq)) = (
            value["type"].as_str(),
            update["update_id"].as_str(),
            update["seq"].as_u64(),
        ) else {
            return Ok(false);
        };
        if let Err(why) = check_update_id(id) {
            self.skip_unnamed(seq, &why).await?;
            return Ok(true);
        }
        let update_type = update["update_type"]
            .as_str()
            .filter(|t| t.len() <= 64 && !t.chars().any(char::is_control))
            .unwrap_or("unknown")
            .to_owned();
        let error = format!("cannot read this update: {e}");
        tracing::warn!(update_id = id, seq, %error, "update rejected");
        self.state.last_seq = self.state.last_seq.max(seq);
        self.state.last_error = Some(format!("{update_type} {id}: {error}"));
        self.save().await?;
        let report = UpdateReport {
            update_id: id.to_owned(),
            seq,
            update_type,
            status: AckStatus::Rejected,
            error: Some(error),
        };
        self.ack(ws, &report).await?;
        Ok(true)
    }

    /// An update whose id cannot be one (too long, control characters): it is neither
    /// applied nor acked (an ack would send the id back) nor shown; its seq is passed so it
    /// is not replayed forever.
    async fn skip_unnamed(&mut self, seq: u64, why: &str) -> Result<(), Failure> {
        tracing::warn!(
            seq,
            why,
            "ignoring an update with an invalid id from the distributor"
        );
        self.state.last_seq = self.state.last_seq.max(seq);
        self.state.last_error = Some(format!("update at seq {seq} ignored: {why}"));
        self.save().await?;
        self.summary.skipped += 1;
        self.summary.last_seq = self.state.last_seq;
        self.progress.send_replace(progress_of(&self.state));
        Ok(())
    }

    /// Sends the ack, then tells the caller and the heartbeat.
    async fn ack(&mut self, ws: &mut Socket, report: &UpdateReport) -> Result<(), Failure> {
        let frame = ClientFrame::Ack {
            update_id: report.update_id.clone(),
            seq: report.seq,
            status: report.status,
            error: report.error.clone(),
        };
        ws.send(Message::text(to_json(&frame)))
            .await
            .map_err(|e| lost(e.to_string(), true))?;
        match report.status {
            AckStatus::Applied => self.summary.applied += 1,
            AckStatus::Rejected => self.summary.rejected += 1,
            AckStatus::Skipped => self.summary.skipped += 1,
        }
        self.summary.last_seq = self.state.last_seq;
        (self.on_update)(report);
        self.progress.send_replace(progress_of(&self.state));
        Ok(())
    }

    /// Writes the state file (off the async threads); returns what was written.
    async fn save(&self) -> Result<Vec<u8>, Failure> {
        let bytes = state_file::encode(&self.state);
        let (path, data) = (self.opts.state_path.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || state_file::write(&path, &data))
            .await
            .map_err(|e| {
                Failure::Fatal(Error::StateIo {
                    action: "write",
                    path: self.opts.state_path.clone(),
                    source: std::io::Error::other(e),
                })
            })?
            .map_err(Failure::Fatal)?;
        Ok(bytes)
    }
}

fn to_json(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("frames are plain JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let caps: Vec<Duration> = (0..10)
            .map(|_| {
                let cap = b.cap;
                assert!(b.next_delay() <= cap);
                cap
            })
            .collect();
        assert_eq!(caps[0], Duration::from_millis(500));
        assert_eq!(caps[1], Duration::from_secs(1));
        assert_eq!(caps[6], Duration::from_secs(30));
        assert_eq!(caps[9], Duration::from_secs(30));
        let spread: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(spread.iter().any(|d| *d != spread[0]), "jittered");
        b.reset();
        assert_eq!(b.cap, Duration::from_millis(500));
    }

    #[test]
    fn input_errors_are_fatal_and_the_rest_are_retried() {
        assert!(is_fatal("invalid_agent_path"));
        assert!(is_fatal("bad_hello"));
        assert!(!is_fatal("shutting_down"));
        assert!(!is_fatal("lagged"));
    }
}
