//! The learning pipeline's client loop (`phoenix subscribe`) against a scripted WebSocket
//! server that speaks the distributor protocol, driven step by step from the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use phoenix::core::learning::{
    self, Backoff, Error, HeartbeatConfig, LearningPipelineState, SubscribeOptions, Summary,
    UpdateReport,
};
use phoenix::core::shared::client::{ApiClient, ClientOptions};
use phoenix::core::updates::protocol::AckStatus;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::bin::phoenix_async as phoenix;
/// Upper bound on any single wait; tests normally proceed on signals well before it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A scripted distributor: every accepted WebSocket connection is handed to the test.
struct FakeDistributor {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl FakeDistributor {
    async fn start() -> FakeDistributor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/subscribe", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await
                    && tx.send(Conn { ws }).is_err()
                {
                    return;
                }
            }
        });
        FakeDistributor { url, conns }
    }

    async fn accept(&mut self) -> Conn {
        within("a subscriber to connect", self.conns.recv())
            .await
            .expect("listener alive")
    }
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
}

impl Conn {
    /// The next text frame as JSON; `None` once the client has closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            match within("a frame from the subscriber", self.ws.next()).await {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// Reads hello and answers hello_ack; returns the hello.
    async fn handshake(&mut self, tier: &str, replay: usize) -> Value {
        let hello = self.recv().await.expect("hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        self.send(json!({"type": "hello_ack", "orch_hash": "orch_00000000000000aa", "tier": tier, "server_seq": 0, "replay": replay}))
            .await;
        hello
    }

    async fn update(&mut self, envelope: Value) {
        self.send(json!({"type": "update", "update": envelope}))
            .await;
    }

    async fn ack(&mut self) -> Value {
        let ack = self.recv().await.expect("an ack");
        assert_eq!(ack["type"], "ack", "{ack}");
        ack
    }
}

fn envelope(seq: u64, update_type: &str, payload: Value) -> Value {
    json!({
        "update_id": format!("u{seq}"), "seq": seq, "ts_unix": 1_700_000_000 + seq,
        "cascade": true, "update_type": update_type, "tier_required": "free", "payload": payload
    })
}

fn read_state(path: &Path) -> LearningPipelineState {
    serde_json::from_slice(&std::fs::read(path).expect("state file exists"))
        .expect("state file is valid")
}

fn options(url: &str, state: &Path) -> SubscribeOptions {
    let mut o = SubscribeOptions::new(url, "orch-1", "code-gen/rust", state.to_owned());
    o.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    o
}

/// The loop on a task, with a shutdown trigger and the reports it printed.
struct Running {
    stop: oneshot::Sender<()>,
    reports: mpsc::UnboundedReceiver<UpdateReport>,
    task: tokio::task::JoinHandle<Result<Summary, Error>>,
}

fn start(opts: SubscribeOptions) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let (tx, reports) = mpsc::unbounded_channel();
    let task = tokio::spawn(learning::subscribe(
        opts,
        async move {
            let _ = stopped.await;
        },
        move |r: &UpdateReport| {
            let _ = tx.send(r.clone());
        },
    ));
    Running {
        stop,
        reports,
        task,
    }
}

impl Running {
    async fn finish(self) -> (Result<Summary, Error>, Vec<UpdateReport>) {
        let _ = self.stop.send(());
        let result = within("the loop to stop", self.task)
            .await
            .expect("no panic");
        let mut reports = self.reports;
        let mut all = vec![];
        while let Ok(r) = reports.try_recv() {
            all.push(r);
        }
        (result, all)
    }
}

#[tokio::test]
async fn updates_are_applied_saved_then_acked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut server = FakeDistributor::start().await;
    let mut opts = options(&server.url, &state_path);
    opts.premium_key = Some("premium-key".into());
    let running = start(opts);

    let mut conn = server.accept().await;
    let hello = conn.handshake("premium", 0).await;
    assert_eq!(
        hello,
        json!({"type": "hello", "orch_id": "orch-1", "agent_path": "code-gen/rust", "last_seq": 0, "x402": "premium-key"})
    );
    let mut premium_graft = envelope(
        4,
        "yaml_graft",
        json!({"yaml": "llm:\n  temperature: 0.2\n"}),
    );
    premium_graft["tier_required"] = json!("premium");
    let mut elsewhere = envelope(5, "notice", json!({"message": "not for you"}));
    elsewhere["target_agent_prefix"] = json!("emotional-support");
    let script = [
        (
            envelope(1, "prompt_tweak", json!({"default_prompt": "Be brief."})),
            "applied",
        ),
        (
            envelope(
                2,
                "model_tweak",
                json!({"default_model": "anthropic/claude-3-haiku"}),
            ),
            "applied",
        ),
        (
            envelope(
                3,
                "json_patch",
                json!({"patch": [{"op": "test", "path": "/config/x", "value": 1}]}),
            ),
            "rejected",
        ),
        (premium_graft, "applied"),
        (elsewhere, "skipped"),
    ];
    for (i, (update, status)) in script.iter().enumerate() {
        conn.update(update.clone()).await;
        let ack = conn.ack().await;
        let seq = i as u64 + 1;
        assert_eq!(ack["update_id"], format!("u{seq}"));
        assert_eq!(ack["seq"], seq);
        assert_eq!(ack["status"], *status, "{ack}");
        assert_eq!(ack["error"].is_null(), *status == "applied", "{ack}");
        // The state was on disk before the ack was sent.
        let on_disk = read_state(&state_path);
        assert_eq!(on_disk.last_seq, seq);
        assert_eq!(
            on_disk.last_error.is_some(),
            seq == 3,
            "{:?}",
            on_disk.last_error
        );
    }

    let (result, reports) = running.finish().await;
    assert_eq!(
        result.unwrap(),
        Summary {
            applied: 3,
            rejected: 1,
            skipped: 1,
            last_seq: 5
        }
    );
    let order: Vec<(u64, AckStatus)> = reports.iter().map(|r| (r.seq, r.status)).collect();
    assert_eq!(
        order,
        [
            (1, AckStatus::Applied),
            (2, AckStatus::Applied),
            (3, AckStatus::Rejected),
            (4, AckStatus::Applied),
            (5, AckStatus::Skipped)
        ]
    );
    let state = read_state(&state_path);
    assert_eq!(state.overrides.default_prompt.as_deref(), Some("Be brief."));
    assert_eq!(
        state.overrides.default_model.as_deref(),
        Some("anthropic/claude-3-haiku")
    );
    assert_eq!(
        Value::Object(state.config_json),
        json!({"llm": {"temperature": 0.2}})
    );
    assert_eq!(state.orch_hash.as_deref(), Some("orch_00000000000000aa"));
    assert_eq!(state.last_update_id.as_deref(), Some("u4"));
    assert_eq!(state.history.len(), 3);
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_from_last_seq_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut server = FakeDistributor::start().await;
    let running = start(options(&server.url, &state_path));

    let mut first = server.accept().await;
    assert_eq!(first.handshake("free", 0).await["last_seq"], 0);
    first
        .update(envelope(1, "prompt_tweak", json!({"default_prompt": "A"})))
        .await;
    first
        .update(envelope(2, "yaml_graft", json!({"yaml": "retries: 3\n"})))
        .await;
    assert_eq!(first.ack().await["status"], "applied");
    assert_eq!(first.ack().await["status"], "applied");
    drop(first);

    let mut second = server.accept().await;
    assert_eq!(
        second.handshake("free", 2).await["last_seq"],
        2,
        "resumes after what it saw"
    );
    // A server that resends the seam update gets it acked as skipped, not applied twice.
    second
        .update(envelope(2, "yaml_graft", json!({"yaml": "retries: 3\n"})))
        .await;
    second
        .update(envelope(3, "rollback", json!({"update_id": "u1"})))
        .await;
    let (dup, rollback) = (second.ack().await, second.ack().await);
    assert_eq!(
        (dup["status"].as_str(), dup["seq"].as_u64()),
        (Some("skipped"), Some(2)),
        "{dup}"
    );
    assert_eq!(rollback["status"], "applied", "{rollback}");

    let (result, _) = running.finish().await;
    assert_eq!(result.unwrap().last_seq, 3);
    let state = read_state(&state_path);
    assert_eq!(state.overrides.default_prompt, None, "u1 rolled back");
    assert_eq!(
        Value::Object(state.config_json),
        json!({"retries": 3}),
        "u2 kept"
    );
}

#[tokio::test]
async fn transient_server_errors_reconnect_and_fatal_ones_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeDistributor::start().await;
    let running = start(options(&server.url, &dir.path().join("state.json")));

    let mut first = server.accept().await;
    first.handshake("free", 0).await;
    first
        .send(json!({"type": "error", "error": "shutting_down", "detail": "restarting"}))
        .await;
    let mut second = server.accept().await;
    second.recv().await.expect("hello again");
    second
        .send(json!({"type": "error", "error": "invalid_agent_path", "detail": "bad path"}))
        .await;

    let result = within("the loop to give up", running.task).await.unwrap();
    assert!(
        matches!(&result, Err(Error::Fatal { code, .. }) if code == "invalid_agent_path"),
        "{result:?}"
    );
}

#[tokio::test]
async fn once_reports_a_stalled_replay_and_rejects_updates_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut server = FakeDistributor::start().await;
    let mut opts = options(&server.url, &state_path);
    opts.once = true;
    opts.connect_timeout = Duration::from_millis(300);
    let running = start(opts);

    let mut conn = server.accept().await;
    conn.handshake("free", 3).await;
    // A type from a newer distributor: acked rejected, so it is neither lost nor resent.
    conn.update(envelope(1, "teleport", json!({"to": "mars"})))
        .await;
    let ack = conn.ack().await;
    assert_eq!(
        (ack["update_id"].as_str(), ack["status"].as_str()),
        (Some("u1"), Some("rejected")),
        "{ack}"
    );
    conn.update(envelope(2, "prompt_tweak", json!({"default_prompt": "A"})))
        .await;
    assert_eq!(conn.ack().await["status"], "applied");
    // The third announced update never comes.
    let result = within("the loop to give up", running.task).await.unwrap();
    assert!(
        matches!(&result, Err(Error::ConnectionLost { detail, .. }) if detail.contains("stalled")),
        "{result:?}"
    );
    let state = read_state(&state_path);
    assert_eq!(
        (state.last_seq, state.overrides.default_prompt.as_deref()),
        (2, Some("A"))
    );
}

/// A fake collector: records every `/ingest` body; the first request never gets an answer.
async fn hanging_collector() -> (String, mpsc::UnboundedReceiver<Value>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let first = Arc::new(AtomicBool::new(true));
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (tx, first) = (tx.clone(), first.clone());
            async move {
                let _ = tx.send(body);
                if first.swap(false, Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                axum::Json(json!({"accepted": 1, "ids": ["x"]}))
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn heartbeats_reach_the_collector_without_holding_up_updates() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeDistributor::start().await;
    let (collector, mut heartbeats) = hanging_collector().await;
    let interval = Duration::from_secs(1);
    let mut opts = options(&server.url, &dir.path().join("state.json"));
    opts.heartbeat = Some(HeartbeatConfig {
        client: ApiClient::new(&ClientOptions {
            base_url: collector,
            token: None,
            ca_cert: None,
            timeout: interval,
        })
        .unwrap(),
        orch_id: "orch-1".into(),
        agent_path: "code-gen/rust".into(),
        master_mode: true,
        template_version: "7".into(),
        interval,
    });
    let running = start(opts);

    let first = within("the first heartbeat", heartbeats.recv())
        .await
        .unwrap();
    assert_eq!(first["kind"], "orch_heartbeat");
    assert_eq!(first["orch_id"], "orch-1");
    assert_eq!(first["agent_path"], "code-gen/rust");
    assert_eq!(first["level"], "info");
    assert_eq!(
        first["payload"],
        json!({"master_mode": true, "template_version": "7", "interval_secs": 1, "last_seq": 0, "last_update_id": null})
    );
    // That request is still hanging; updates flow regardless.
    let mut conn = server.accept().await;
    conn.handshake("free", 0).await;
    conn.update(envelope(1, "prompt_tweak", json!({"default_prompt": "A"})))
        .await;
    conn.update(envelope(2, "notice", json!({"message": "hi"})))
        .await;
    assert_eq!(conn.ack().await["status"], "applied");
    assert_eq!(conn.ack().await["status"], "applied");
    // The next heartbeat (after the hung one timed out) carries the progress.
    loop {
        let hb = within("a heartbeat with the new progress", heartbeats.recv())
            .await
            .unwrap();
        if hb["payload"]["last_seq"] == 2 {
            assert_eq!(hb["payload"]["last_update_id"], "u2");
            break;
        }
    }
    running.finish().await.0.unwrap();
}

/// `phoenix subscribe` as orch-1 at code-gen/rust against `url`, state in `state`.
pub(crate) fn subscribe_args(url: &str, state: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "subscribe",
        "--orch-id",
        "orch-1",
        "--agent-path",
        "code-gen/rust",
        "--url",
        url,
        "--state",
    ]
    .map(String::from)
    .to_vec();
    args.push(state.display().to_string());
    args
}

#[tokio::test]
async fn once_applies_the_replay_runs_the_hook_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let state_path: PathBuf = home.path().join("agent/state.json");
    let hook_out = home.path().join("hook.json");
    let hook_env = home.path().join("hook.env");
    let mut server = FakeDistributor::start().await;
    let hook = format!(
        "cat > {}; echo \"$PHOENIX_STATE_FILE $PHOENIX_UPDATE_ID\" >> {}",
        hook_out.display(),
        hook_env.display()
    );
    let child = phoenix(home.path())
        .args(subscribe_args(&server.url, &state_path))
        .args(["--once", "--json", "--exec", &hook])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut conn = server.accept().await;
    conn.handshake("free", 3).await;
    conn.update(envelope(1, "prompt_tweak", json!({"default_prompt": "A"})))
        .await;
    conn.update(envelope(
        2,
        "json_patch",
        json!({"patch": [{"op": "add", "path": "/config/a", "value": 1}]}),
    ))
    .await;
    conn.update(envelope(
        3,
        "json_patch",
        json!({"patch": [{"op": "remove", "path": "/config/nope"}]}),
    ))
    .await;
    for _ in 0..3 {
        conn.ack().await;
    }
    assert!(
        conn.recv().await.is_none(),
        "the client closes after the replay"
    );
    let out = within("phoenix to exit", child.wait_with_output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        json!({"update_id": "u1", "seq": 1, "update_type": "prompt_tweak", "status": "applied", "error": null})
    );
    assert_eq!(lines[2]["status"], "rejected");

    let on_disk = std::fs::read(&state_path).unwrap();
    let state: LearningPipelineState = serde_json::from_slice(&on_disk).unwrap();
    assert_eq!(state.overrides.default_prompt.as_deref(), Some("A"));
    assert_eq!(Value::Object(state.config_json.clone()), json!({"a": 1}));
    assert_eq!(state.last_seq, 3);
    assert!(state.last_error.is_some());
    // The hook ran once per applied update, the last time with the state as saved then.
    let after_u2: Value = serde_json::from_slice(&std::fs::read(&hook_out).unwrap()).unwrap();
    assert_eq!(after_u2["config_json"], json!({"a": 1}));
    assert_eq!(after_u2["last_update_id"], "u2");
    let env = std::fs::read_to_string(&hook_env).unwrap();
    let path = state_path.display();
    assert_eq!(env, format!("{path} u1\n{path} u2\n"));

    // A second run resumes from last_seq and, with nothing pending, exits at once.
    let child = phoenix(home.path())
        .args(subscribe_args(&server.url, &state_path))
        .arg("--once")
        .output();
    let server_side = async {
        let mut conn = server.accept().await;
        assert_eq!(conn.handshake("free", 0).await["last_seq"], 3);
    };
    let (out, ()) = tokio::join!(child, server_side);
    let out = out.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("0 applied, 0 rejected, 0 skipped; last seq 3")
    );

    // `show` prints the state for people, and as JSON.
    let out = phoenix(home.path())
        .args(["subscribe", "show", "--state"])
        .arg(&state_path)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "Prompt       A",
        "Last update  json_patch u2",
        "Last error   json_patch u3",
        "  a: 1",
        "add /config/a",
        "in effect",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let out = phoenix(home.path())
        .args(["subscribe", "show", "--json", "--state"])
        .arg(&state_path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::from_slice::<Value>(&on_disk).unwrap()
    );
}

#[tokio::test]
async fn once_exits_3_when_the_distributor_is_unreachable() {
    let home = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/subscribe", closed.local_addr().unwrap());
    drop(closed);
    let out = phoenix(home.path())
        .args(subscribe_args(&url, &home.path().join("s.json")))
        .arg("--once")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[tokio::test]
async fn a_corrupt_state_file_is_refused_and_kept() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("s.json");
    std::fs::write(&state, "{not json").unwrap();
    let out = phoenix(home.path())
        .args(subscribe_args("ws://127.0.0.1:9/subscribe", &state))
        .arg("--once")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a valid learning state"));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{not json");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_subscriber_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let state_path = home.path().join("s.json");
    let mut server = FakeDistributor::start().await;
    let child = phoenix(home.path())
        .args(subscribe_args(&server.url, &state_path))
        .arg("--no-heartbeat")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.handshake("free", 0).await;
    conn.update(envelope(1, "model_tweak", json!({"default_model": "m"})))
        .await;
    conn.ack().await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = within("phoenix to stop", child.wait_with_output())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("applied model_tweak u1 seq 1\n"),
        "{stdout}"
    );
    assert_eq!(
        read_state(&state_path).overrides.default_model.as_deref(),
        Some("m")
    );
}

#[tokio::test]
async fn update_ids_a_server_should_never_send_are_neither_acked_nor_printed() {
    let home = tempfile::tempdir().unwrap();
    let state_path: PathBuf = home.path().join("state.json");
    let mut server = FakeDistributor::start().await;
    let child = phoenix(home.path())
        .args(subscribe_args(&server.url, &state_path))
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.handshake("free", 3).await;
    // A 100 KB id with a newline and a terminal escape, a short id with an escape, then a
    // sound update: only the last is applied and acked.
    let long = format!("{}\nFAKE LINE\u{1b}[2J", "x".repeat(100_000));
    let mut bad = envelope(1, "notice", json!({"message": "m"}));
    bad["update_id"] = json!(long);
    conn.update(bad).await;
    let mut escape = envelope(2, "prompt_tweak", json!({"default_prompt": "evil"}));
    escape["update_id"] = json!("u2\u{1b}]0;owned\u{7}");
    conn.update(escape).await;
    conn.update(envelope(
        3,
        "prompt_tweak",
        json!({"default_prompt": "good"}),
    ))
    .await;
    let ack = conn.ack().await;
    assert_eq!(
        ack["update_id"], "u3",
        "the invalid ones are not acked: {ack}"
    );
    let out = within("phoenix to exit", child.wait_with_output())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains("FAKE LINE"), "{shown}");
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(shown.len() < 10_000, "the long id is not printed");
    }
    assert!(stdout.contains("applied prompt_tweak u3 seq 3"), "{stdout}");
    let state = read_state(&state_path);
    assert_eq!(state.overrides.default_prompt.as_deref(), Some("good"));
    assert_eq!(state.last_seq, 3);
}
