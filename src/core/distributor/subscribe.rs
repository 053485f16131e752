//! `GET /subscribe`: one task per WebSocket connection.
//!
//! hello → hello_ack → replay from the log → live updates; acks are recorded as they come.
//! The connection holds a position `(seq, widen_seq)`: every update up to `seq` and every widening
//! up to `widen_seq` has been considered for it, so live items at or below it are dropped and a
//! subscriber that lags behind the bounded live channel is caught up from the log from there.
//! A subscriber that stops reading is closed after `send_timeout` (it resumes from its
//! `last_seq` when it reconnects), so it never holds more than one frame of server memory.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::bus::{Frame, Live, LiveReceiver, Subscription, update_frame};
use super::metrics::StatusLabel;
use super::{AppState, ConnectionGuard};
use super::{Position, StoredUpdate};
use crate::core::server::api_error::ApiError;
use crate::core::shared::tier::Tier;
use crate::core::telemetry::{now_unix, validate_agent_path};
use crate::core::updates::Audience;
use crate::core::updates::protocol::{ClientFrame, MAX_FRAME_BYTES, ServerFrame, check_update_id};

/// Frames up to this size are read whole, so one just over [`MAX_FRAME_BYTES`] gets a clean
/// error frame; larger ones are cut off by the WebSocket layer.
const HARD_FRAME_LIMIT: usize = 2 * MAX_FRAME_BYTES;
/// Longest accepted orch id.
const MAX_ORCH_ID: usize = 256;
/// Longest ack error kept.
const MAX_ACK_ERROR: usize = 2048;

pub(super) async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            state.metrics.reject("websocket_required");
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                format!("GET /subscribe is a WebSocket endpoint ({e})"),
            )
            .into_response();
        }
    };
    let x402 = headers
        .get("x402")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let guard = state.track_connection();
    ws.read_buffer_size(state.config.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(write_queue_bytes(&state.config))
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| connection(socket, state, x402, guard))
}

/// The most a connection queues for its peer: one update frame of the largest publishable
/// size, with room for the pongs and the close frame queued behind it. Past it, the pongs a
/// ping flood asks for are not queued (tungstenite keeps only the latest), and a frame of ours
/// waits for the peer to read, up to `send_timeout`.
fn write_queue_bytes(config: &super::DistributorConfig) -> usize {
    2 * config.max_body_bytes.max(MAX_FRAME_BYTES) + 64 * 1024
}

/// Why a connection ends, and so how it is closed.
enum End {
    /// The peer vanished.
    Gone,
    /// The peer sent a close frame: let the automatic reply go out.
    PeerClosed,
    /// A protocol violation: error frame, then close.
    Violation { code: &'static str, detail: String },
    /// The server is stopping: close frame "going away".
    Shutdown,
    /// The peer did not take a frame within `send_timeout`.
    SendTimeout,
    /// The peer did not answer a ping within `pong_timeout`.
    Reaped,
    /// The log could not be read: error frame, then close; the peer retries.
    Unavailable(String),
    /// The peer sent more control frames than `max_control_frames` per `control_window`.
    Flooded,
    /// A frame did not fit in the connection's bounded write queue.
    QueueFull,
}

/// Counts the peer's control frames per window.
struct ControlFrames {
    window_start: Instant,
    seen: u32,
}

impl ControlFrames {
    fn new() -> Self {
        ControlFrames {
            window_start: Instant::now(),
            seen: 0,
        }
    }

    /// Counts one; false once the peer is over the limit.
    fn allow(&mut self, config: &super::DistributorConfig) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= config.control_window {
            self.window_start = now;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(1);
        self.seen <= config.max_control_frames
    }
}

fn violation(code: &'static str, detail: impl Into<String>) -> End {
    End::Violation {
        code,
        detail: detail.into(),
    }
}

/// A subscriber after its hello, and how far it has been served. Only the hash of its orch
/// id is kept: targeting on the server goes through hashes alone.
struct Subscriber {
    orch_hash: Arc<str>,
    agent_path: Box<str>,
    tier: Tier,
    /// Every update with a seq up to here has been considered.
    seq: u64,
    /// Every widening up to here has been considered.
    widen_seq: u64,
}

impl Subscriber {
    fn audience<'a>(&'a self, u: &'a StoredUpdate) -> Audience<'a> {
        u.audience(&self.orch_hash, &self.agent_path, self.tier)
    }

    /// Whether `u`, at its percentage as read, goes to this subscriber.
    fn wants(&self, u: &StoredUpdate) -> bool {
        u.envelope
            .delivers_to(&self.audience(u), u.envelope.rollout_percent)
    }

    /// Whether raising `u` from `from` to its current percentage newly admits this subscriber.
    fn newly_admitted(&self, u: &StoredUpdate, from: Option<u8>) -> bool {
        let env = &u.envelope;
        env.targets(&self.audience(u))
            && env.tier_allows(self.tier)
            && !env.admits(&self.orch_hash, from)
            && env.admits(&self.orch_hash, env.rollout_percent)
    }

    /// A copy that closures on the blocking pool can own.
    fn snapshot(&self) -> Subscriber {
        Subscriber {
            orch_hash: self.orch_hash.clone(),
            agent_path: self.agent_path.clone(),
            tier: self.tier,
            seq: self.seq,
            widen_seq: self.widen_seq,
        }
    }
}

async fn connection(
    mut socket: WebSocket,
    state: AppState,
    x402_header: Option<String>,
    _guard: ConnectionGuard,
) {
    let mut stop = state.stop.subscribe();
    let mut abort = state.abort.subscribe();
    let served = async {
        let end = if *stop.borrow_and_update() {
            End::Shutdown
        } else {
            serve_subscriber(&mut socket, &state, x402_header, &mut stop).await
        };
        finish(&mut socket, &state, end).await;
    };
    // Past the shutdown deadline the socket is dropped, close handshake or not.
    tokio::select! {
        () = served => {}
        _ = abort.wait_for(|a| *a) => {}
    }
}

async fn serve_subscriber(
    socket: &mut WebSocket,
    state: &AppState,
    x402_header: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let (mut sub, last_seq) = match wait_hello(socket, state, x402_header, stop).await {
        Ok(hello) => hello,
        Err(end) => return end,
    };
    state.log.record_subscriber(
        sub.orch_hash.clone(),
        Arc::from(&*sub.agent_path),
        sub.tier,
        now_unix(),
    );
    // Subscribe before reading the log: what the read misses arrives live, nothing twice.
    let from = Position {
        seq: last_seq,
        widen_seq: 0,
    };
    let Subscription {
        live: mut rx,
        position: pos,
    } = state.bus.subscribe_from(from);
    let replay = match Box::pin(read_replay(state, &sub, last_seq, pos)).await {
        Ok(r) => r,
        Err(e) => return End::Unavailable(e.to_string()),
    };
    if last_seq > pos.seq {
        tracing::warn!(
            orch_hash = %sub.orch_hash,
            last_seq,
            server_seq = pos.seq,
            "subscriber claims a seq beyond this log; was the distributor's database replaced?"
        );
    }
    let ack = ServerFrame::HelloAck {
        orch_hash: sub.orch_hash.to_string(),
        tier: sub.tier,
        server_seq: pos.seq,
        replay: replay.len(),
    };
    if let Err(end) = send_frame(socket, state, &ack).await {
        return end;
    }
    tracing::debug!(orch_hash = %sub.orch_hash, agent_path = %sub.agent_path, last_seq, replay = replay.len(), "subscriber joined");
    state.metrics.replayed.inc_by(replay.len() as u64);
    for u in replay {
        let id = Arc::from(u.envelope.update_id.as_str());
        if let Err(end) = deliver(socket, state, &sub, update_frame(&u.envelope), id).await {
            return end;
        }
    }
    sub.seq = pos.seq;
    sub.widen_seq = pos.widen_seq;
    live(socket, state, &mut sub, &mut rx, stop).await
}

/// Waits for the hello; answers anything else with a violation.
async fn wait_hello(
    socket: &mut WebSocket,
    state: &AppState,
    x402_header: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(Subscriber, u64), End> {
    let deadline = Instant::now() + state.config.hello_timeout;
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return Err(End::Shutdown),
            () = sleep_until(deadline) => {
                return Err(violation(
                    "hello_timeout",
                    format!("no hello within {:?} of connecting", state.config.hello_timeout),
                ));
            }
            msg = socket.recv() => msg,
        };
        let text = match incoming(msg)? {
            Some(text) => text,
            None => continue,
        };
        match parse_frame(&text)? {
            ClientFrame::Hello {
                orch_id,
                agent_path,
                last_seq,
                x402,
                token,
            } => {
                // Hashed as sent, exactly as the collector hashes telemetry's orch_id — also
                // when it looks like a hash: `orch_…` in a hello is an id, never a hash.
                if orch_id.trim().is_empty() || orch_id.len() > MAX_ORCH_ID {
                    return Err(violation(
                        "invalid_hello",
                        format!("orch_id must be 1 to {MAX_ORCH_ID} bytes"),
                    ));
                }
                check_agent_token(state, &orch_id, token.as_deref())?;
                let agent_path = agent_path.trim().trim_end_matches('/');
                validate_agent_path(agent_path)
                    .map_err(|m| violation("invalid_hello", format!("agent_path {m}")))?;
                let key = state.config.premium_key.as_deref();
                let tier = if Tier::from_key(key, x402.as_deref()) == Tier::Premium
                    || Tier::from_key(key, x402_header.as_deref()) == Tier::Premium
                {
                    Tier::Premium
                } else {
                    Tier::Free
                };
                let sub = Subscriber {
                    orch_hash: Arc::from(state.anonymizer.orch_hash(&orch_id)),
                    agent_path: agent_path.into(),
                    tier,
                    seq: 0,
                    widen_seq: 0,
                };
                return Ok((sub, last_seq));
            }
            ClientFrame::Ack { .. } => {
                return Err(violation(
                    "expected_hello",
                    "the first frame must be a hello",
                ));
            }
        }
    }
}

/// Refuses a hello whose agent token is wrong, or missing where tokens are required.
fn check_agent_token(state: &AppState, orch_id: &str, token: Option<&str>) -> Result<(), End> {
    let cfg = &state.config;
    match (token, &cfg.agent_keys) {
        (Some(token), Some(keys)) if keys.verify(orch_id, token) => Ok(()),
        (Some(_), _) => Err(violation(
            "forbidden",
            "the agent token is not valid for this orch_id; ask the operator for a new one \
             (`phoenix agents token ORCH_ID`)",
        )),
        (None, _) if cfg.require_agent_tokens => Err(violation(
            "unauthorized",
            "this distributor requires an agent token: send it as `token` in hello \
             (the operator issues it with `phoenix agents token ORCH_ID`)",
        )),
        (None, _) => Ok(()),
    }
}

/// The text of a data frame; `None` for control frames; the end for anything else.
fn incoming(msg: Option<Result<Message, axum::Error>>) -> Result<Option<Utf8Bytes>, End> {
    match msg {
        Some(Ok(Message::Text(t))) => Ok(Some(t)),
        Some(Ok(Message::Binary(_))) => Err(violation(
            "invalid_frame",
            "binary frames are not part of the protocol; send JSON text frames",
        )),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Close(_))) => Err(End::PeerClosed),
        None => Err(End::Gone),
        Some(Err(e)) => {
            let too_long = e
                .into_inner()
                .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                .is_some_and(|t| matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_)));
            if too_long {
                Err(too_large())
            } else {
                Err(End::Gone)
            }
        }
    }
}

fn too_large() -> End {
    violation(
        "frame_too_large",
        format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
    )
}

fn parse_frame(text: &str) -> Result<ClientFrame, End> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(too_large());
    }
    serde_json::from_str(text)
        .map_err(|e| violation("invalid_frame", format!("not a protocol frame: {e}")))
}

/// What a subscriber at `last_seq` missed, as of `pos`: updates widened since it saw them
/// (that now admit it and that it has not acked), then every later update that targets it.
async fn read_replay(
    state: &AppState,
    sub: &Subscriber,
    last_seq: u64,
    pos: Position,
) -> Result<Vec<StoredUpdate>, super::Error> {
    let below = last_seq.min(pos.seq);
    let check_widened = state.bus.min_widened_seq() <= below && pos.widen_seq > 0;
    if !check_widened && last_seq >= pos.seq {
        return Ok(Vec::new());
    }
    let _slot = state.read_slot().await?;
    let mut out = Vec::new();
    if check_widened {
        out.extend(
            state
                .log
                .widened_unacked(below, pos.widen_seq, &sub.orch_hash)
                .await?
                .into_iter()
                .filter(|u| sub.newly_admitted(u, u.initial_percent)),
        );
    }
    let who = sub.snapshot();
    let keep = Box::new(move |u: &StoredUpdate| who.wants(u));
    out.extend(
        state
            .log
            .updates_between(last_seq, pos.seq, pos.widen_seq, keep)
            .await?,
    );
    Ok(out)
}

/// Serves live announcements until the connection ends.
async fn live(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &mut Subscriber,
    rx: &mut LiveReceiver,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let cfg = &state.config;
    let mut ping_due = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let mut control = ControlFrames::new();
    loop {
        let wake = pong_deadline.unwrap_or(ping_due);
        tokio::select! {
            biased;
            _ = stop.changed() => return End::Shutdown,
            msg = socket.recv() => {
                pong_deadline = None;
                ping_due = Instant::now() + cfg.ping_interval;
                if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) && !control.allow(cfg) {
                    return End::Flooded;
                }
                let text = match incoming(msg) {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(end) => return end,
                };
                match parse_frame(&text) {
                    Ok(ClientFrame::Ack { update_id, status, error, .. }) => {
                        if let Err(why) = check_update_id(&update_id) {
                            return violation("invalid_frame", why);
                        }
                        let error = error.map(|mut e| {
                            if e.len() > MAX_ACK_ERROR {
                                let mut cut = MAX_ACK_ERROR;
                                while !e.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                e.truncate(cut);
                            }
                            e
                        });
                        state.log.record_ack(update_id, sub.orch_hash.clone(), status, error, now_unix());
                        state.metrics.acks.get_or_create(&StatusLabel { status: status.as_str() }).inc();
                    }
                    Ok(ClientFrame::Hello { .. }) => {
                        return violation("unexpected_hello", "hello is only allowed as the first frame");
                    }
                    Err(end) => return end,
                }
            }
            item = rx.recv() => {
                let sent = match item {
                    Ok(Live::Update(p)) => {
                        if p.update.envelope.seq <= sub.seq {
                            continue;
                        }
                        sub.seq = p.update.envelope.seq;
                        if !sub.wants(&p.update) {
                            continue;
                        }
                        deliver(socket, state, sub, p.frame.clone(), p.update_id.clone()).await
                    }
                    Ok(Live::Widened { update: p, from_percent, widen_seq }) => {
                        if widen_seq <= sub.widen_seq {
                            continue;
                        }
                        sub.widen_seq = widen_seq;
                        // An update is announced before any widening of it, so its seq has
                        // been considered by now; anything else is ignored defensively.
                        if p.update.envelope.seq > sub.seq || !sub.newly_admitted(&p.update, from_percent) {
                            continue;
                        }
                        deliver(socket, state, sub, p.frame.clone(), p.update_id.clone()).await
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(orch_hash = %sub.orch_hash, missed, "subscriber lagged; catching up from the log");
                        Box::pin(catch_up(socket, state, sub, rx)).await
                    }
                    Err(RecvError::Closed) => return End::Shutdown,
                };
                if let Err(end) = sent {
                    return end;
                }
            }
            () = sleep_until(wake) => {
                if pong_deadline.is_some() {
                    return End::Reaped;
                }
                if let Err(end) = send(socket, state, Message::Ping(Default::default())).await {
                    return end;
                }
                let now = Instant::now();
                pong_deadline = Some(now + cfg.pong_timeout);
                ping_due = now + cfg.ping_interval;
            }
        }
    }
}

/// Re-joins the live channel and sends, from the log, what the lag skipped: widenings of
/// updates already considered that newly admit this subscriber, then every later update.
async fn catch_up(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &mut Subscriber,
    rx: &mut LiveReceiver,
) -> Result<(), End> {
    state.metrics.lag_catchups.inc();
    let from = Position {
        seq: sub.seq,
        widen_seq: sub.widen_seq,
    };
    let Subscription {
        live: fresh_rx,
        position: pos,
    } = state.bus.subscribe_from(from);
    *rx = fresh_rx;
    let missed = read_missed(state, sub, pos)
        .await
        .map_err(|e| End::Unavailable(e.to_string()))?;
    for u in missed {
        let id = Arc::from(u.envelope.update_id.as_str());
        deliver(socket, state, sub, update_frame(&u.envelope), id).await?;
    }
    sub.seq = sub.seq.max(pos.seq);
    sub.widen_seq = sub.widen_seq.max(pos.widen_seq);
    Ok(())
}

/// What a lagging subscriber skipped, up to `pos` (see [`catch_up`]).
async fn read_missed(
    state: &AppState,
    sub: &Subscriber,
    pos: Position,
) -> Result<Vec<StoredUpdate>, super::Error> {
    let _slot = state.read_slot().await?;
    let mut out: Vec<StoredUpdate> = state
        .log
        .widened_between(sub.seq, sub.widen_seq, pos.widen_seq)
        .await?
        .into_iter()
        .filter(|(u, from)| sub.newly_admitted(u, *from))
        .map(|(u, _)| u)
        .collect();
    let who = sub.snapshot();
    let keep = Box::new(move |u: &StoredUpdate| who.wants(u));
    out.extend(
        state
            .log
            .updates_between(sub.seq, pos.seq, pos.widen_seq, keep)
            .await?,
    );
    Ok(out)
}

/// Sends one frame, giving up after `send_timeout`.
async fn send(socket: &mut WebSocket, state: &AppState, msg: Message) -> Result<(), End> {
    match timeout(state.config.send_timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_write_buffer_full(&e) => Err(End::QueueFull),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::SendTimeout),
    }
}

fn is_write_buffer_full(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
        .is_some_and(|t| matches!(t, tokio_tungstenite::tungstenite::Error::WriteBufferFull(_)))
}

async fn send_frame(
    socket: &mut WebSocket,
    state: &AppState,
    frame: &ServerFrame,
) -> Result<(), End> {
    let text = serde_json::to_string(frame).expect("server frames serialise");
    send(socket, state, Message::Text(text.into())).await
}

/// A frame as a WebSocket text message: the bytes are shared, not copied.
fn text_message(frame: Frame) -> Message {
    let text = Utf8Bytes::try_from(frame.bytes().clone()).expect("frames are UTF-8");
    Message::Text(text)
}

/// Sends an update frame and records the delivery.
async fn deliver(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &Subscriber,
    frame: Frame,
    update_id: Arc<str>,
) -> Result<(), End> {
    send(socket, state, text_message(frame)).await?;
    state
        .log
        .record_delivery(update_id, sub.orch_hash.clone(), now_unix());
    // Counted after queueing, so a count observed implies the row is on its way to the log.
    state.metrics.deliveries.inc();
    Ok(())
}

/// Closes the connection the way `end` calls for.
async fn finish(socket: &mut WebSocket, state: &AppState, end: End) {
    let (code, reason) = match end {
        End::Gone => return,
        End::PeerClosed => {
            let _ = timeout(state.config.close_timeout, socket.flush()).await;
            return;
        }
        End::SendTimeout => {
            state.metrics.send_timeouts.inc();
            tracing::debug!("closing a subscriber that stopped reading");
            return;
        }
        End::Reaped => {
            state.metrics.reaped.inc();
            tracing::debug!("closing a subscriber that did not answer a ping");
            return;
        }
        End::QueueFull => {
            state.metrics.queue_overflows.inc();
            tracing::debug!("closing a subscriber whose write queue is full");
            return;
        }
        End::Flooded => {
            state.metrics.control_floods.inc();
            tracing::debug!("closing a subscriber that floods control frames");
            // A flooder seldom reads: the close frame gets a short chance, then the socket goes.
            let close = Message::Close(Some(CloseFrame {
                code: close_code::POLICY,
                reason: "control frame flood".into(),
            }));
            let _ = timeout(state.config.close_timeout, socket.send(close)).await;
            return;
        }
        End::Shutdown => (close_code::AWAY, "server shutting down"),
        End::Violation { code, detail } => {
            state.metrics.protocol_error(code);
            tracing::debug!(code, %detail, "protocol violation");
            let frame = ServerFrame::Error {
                error: code.to_owned(),
                detail,
            };
            if send_frame(socket, state, &frame).await.is_err() {
                return;
            }
            if code == "frame_too_large" {
                (close_code::SIZE, "frame too large")
            } else {
                (close_code::POLICY, "protocol violation")
            }
        }
        End::Unavailable(detail) => {
            tracing::warn!(%detail, "closing a subscriber: the update log is unavailable");
            let frame = ServerFrame::Error {
                error: "unavailable".to_owned(),
                detail,
            };
            if send_frame(socket, state, &frame).await.is_err() {
                return;
            }
            (close_code::ERROR, "update log unavailable")
        }
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if send(socket, state, close).await.is_err() {
        return;
    }
    // Wait (briefly) for the peer's close so it reads everything before the socket goes.
    let _ = timeout(state.config.close_timeout, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
