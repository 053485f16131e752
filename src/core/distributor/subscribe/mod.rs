//! `GET /subscribe`: one task per WebSocket connection. Depends on the distributor's state,
//! bus and log trait, and on the update protocol; [`hello`] reads the first frame, [`replay`]
//! what the log holds for the subscriber, [`live`] the live loop and the frame writer.
//!
//! hello → hello_ack → replay from the log → live updates; acks are recorded as they come.
//! The connection holds a position `(seq, widen_seq)`: every update up to `seq` and every widening
//! up to `widen_seq` has been considered for it, so live items at or below it are dropped and a
//! subscriber that lags behind the bounded live channel is caught up from the log from there.
//! A subscriber that stops reading is closed after `send_timeout` (it resumes from its
//! `last_seq` when it reconnects), so it never holds more than one frame of server memory.

mod hello;
mod live;
mod replay;

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

use hello::{incoming, parse_frame, wait_hello};
use live::{deliver, live, send, send_frame};
use replay::{catch_up, read_replay};

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
