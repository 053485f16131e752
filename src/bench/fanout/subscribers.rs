//! The load generator: N WebSocket subscribers on this runtime, each speaking the protocol as
//! `phoenix subscribe` does (hello, hello_ack, then an `applied` ack for every update) and
//! reporting to the benchmark: joins and lost connections as [`Event`]s, acks on the
//! [`AckBoard`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::core::updates::protocol::{AckStatus, ClientFrame, MAX_FRAME_BYTES, ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Agent path every benchmark subscriber reports.
const AGENT_PATH: &str = "bench/fanout";
/// Limit on connecting, upgrading and receiving `hello_ack`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Read buffer of each client (tungstenite's default is 128 KiB, eagerly allocated: 1.3 GB
/// for 10,000 clients). Update frames are a few hundred bytes; larger ones still arrive.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// A subscriber's join or loss.
#[derive(Debug)]
pub(super) enum Event {
    /// The handshake finished (`Ok`) or failed (why).
    Joined(Result<(), String>),
    /// A joined subscriber's connection ended (why).
    Lost(String),
}

/// An `applied` ack a subscriber sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    /// The update's seq.
    pub seq: u64,
    /// Which node (index into the URLs of [`Fleet::launch`]) the subscriber is on.
    pub node: usize,
    /// When the ack frame had been written.
    pub at: Instant,
}

/// Where subscribers post their acks: a shared list, and a wake-up only once the expected
/// number is reached, so 10,000 acks do not wake the benchmark 10,000 times (on a 2-core
/// machine that would be CPU taken from the distributor under test).
pub(super) struct AckBoard {
    acks: Mutex<Vec<Ack>>,
    expected: AtomicUsize,
    reached: Notify,
}

impl AckBoard {
    fn new() -> AckBoard {
        AckBoard {
            acks: Mutex::new(Vec::new()),
            expected: AtomicUsize::new(usize::MAX),
            reached: Notify::new(),
        }
    }

    fn post(&self, ack: Ack) {
        let posted = {
            let mut acks = self.acks.lock().expect("ack board lock");
            acks.push(ack);
            acks.len()
        };
        if posted >= self.expected.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    /// Wakes [`AckBoard::reached`] once `count` acks are posted (`usize::MAX`: never).
    pub fn expect(&self, count: usize) {
        self.expected.store(count, Ordering::Release);
        if self.posted() >= count {
            self.reached.notify_one();
        }
    }

    /// Acks posted and not yet taken.
    pub fn posted(&self) -> usize {
        self.acks.lock().expect("ack board lock").len()
    }

    /// Resolves when the expected count may have been reached (check [`AckBoard::posted`]).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Takes every posted ack.
    pub fn take(&self) -> Vec<Ack> {
        std::mem::take(&mut *self.acks.lock().expect("ack board lock"))
    }
}

/// The running subscribers; dropping it (or [`Fleet::shutdown`]) disconnects them all.
pub(super) struct Fleet {
    tasks: JoinSet<()>,
    /// Joins and losses, in arrival order.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Acks.
    pub acks: Arc<AckBoard>,
}

impl Fleet {
    /// Starts `count` subscribers spread over `urls` (subscriber `i` on node `i % urls.len()`),
    /// at most `parallelism` of them handshaking at once so the listen backlog is never
    /// overrun. Subscriber `i` is orch `bench-orch-<i>`.
    pub fn launch(urls: &[String], count: usize, parallelism: usize) -> Fleet {
        assert!(!urls.is_empty(), "a fleet needs a node to connect to");
        let urls: Vec<Arc<str>> = urls.iter().map(|u| Arc::from(u.as_str())).collect();
        let gate = Arc::new(Semaphore::new(parallelism.max(1)));
        let (tx, events) = mpsc::unbounded_channel();
        let acks = Arc::new(AckBoard::new());
        let mut tasks = JoinSet::new();
        for i in 0..count {
            let node = i % urls.len();
            let (url, gate, tx, acks) =
                (urls[node].clone(), gate.clone(), tx.clone(), acks.clone());
            tasks.spawn(subscriber(url, i, node, gate, tx, acks));
        }
        Fleet {
            tasks,
            events,
            acks,
        }
    }

    /// Disconnects every subscriber and waits until their sockets are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// The orch id of subscriber `index`.
pub(super) fn orch_id(index: usize) -> String {
    format!("bench-orch-{index:05}")
}

async fn subscriber(
    url: Arc<str>,
    index: usize,
    node: usize,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    acks: Arc<AckBoard>,
) {
    let joined = {
        let _permit = gate.acquire().await.expect("the gate is never closed");
        // Boxed: the handshake's state is freed once done instead of living on in the task.
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(handshake(&url, index)))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no hello_ack within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })
    };
    let mut ws = match joined {
        Ok(ws) => ws,
        Err(why) => {
            let _ = events.send(Event::Joined(Err(why)));
            return;
        }
    };
    let _ = events.send(Event::Joined(Ok(())));
    let why = ack_updates(&mut ws, node, &acks).await;
    let _ = events.send(Event::Lost(why));
}

/// Connects, says hello (nothing applied yet) and waits for `hello_ack`.
async fn handshake(url: &str, index: usize) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let hello = ClientFrame::Hello {
        orch_id: orch_id(index),
        agent_path: AGENT_PATH.to_owned(),
        last_seq: 0,
        x402: None,
        token: None,
    };
    ws.send(Message::text(to_json(&hello)))
        .await
        .map_err(|e| format!("sending hello: {e}"))?;
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err("the distributor closed the connection before hello_ack".to_owned());
            }
            Some(Err(e)) => return Err(format!("waiting for hello_ack: {e}")),
            Some(Ok(_)) => continue,
        };
        return match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::HelloAck { .. }) => Ok(ws),
            Ok(ServerFrame::Error { error, detail }) => Err(format!("refused: {error}: {detail}")),
            Ok(ServerFrame::Update { .. }) => Err("an update arrived before hello_ack".to_owned()),
            Err(e) => Err(format!("unreadable frame instead of hello_ack: {e}")),
        };
    }
}

/// The part of a server frame a subscriber needs to ack it, read without building the
/// envelope: the benchmark's own parsing should take as little CPU from the distributor as
/// possible.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    update: Option<UpdateHead<'a>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UpdateHead<'a> {
    #[serde(borrow)]
    update_id: Cow<'a, str>,
    seq: u64,
}

/// Acks every update `applied` until the connection ends; returns why it ended.
async fn ack_updates(ws: &mut Socket, node: usize, acks: &AckBoard) -> String {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| format!(" ({} {})", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return format!("the distributor closed the connection{why}");
            }
            None => return "the connection ended".to_owned(),
            Some(Err(e)) => return e.to_string(),
            // Pings are answered by the WebSocket layer.
            Some(Ok(_)) => continue,
        };
        let head = match serde_json::from_str::<FrameHead<'_>>(&text) {
            Ok(head) => head,
            Err(e) => return format!("unreadable frame: {e}"),
        };
        let update = match (head.kind, head.update) {
            ("update", Some(update)) => update,
            ("error", _) => {
                let error = head.error.unwrap_or_default();
                let detail = head.detail.unwrap_or_default();
                return format!("distributor error {error}: {detail}");
            }
            ("hello_ack", _) => continue,
            (kind, _) => return format!("unexpected {kind:?} frame"),
        };
        let ack = ClientFrame::Ack {
            update_id: update.update_id.into_owned(),
            seq: update.seq,
            status: AckStatus::Applied,
            error: None,
        };
        if let Err(e) = ws.send(Message::text(to_json(&ack))).await {
            return format!("sending an ack: {e}");
        }
        acks.post(Ack {
            seq: update.seq,
            node,
            at: Instant::now(),
        });
    }
}

fn to_json(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("frames are plain JSON")
}
