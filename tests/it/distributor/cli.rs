//! `phoenix publish` and `phoenix serve distributor` as a user runs them.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::*;

use crate::support::bin::phoenix_async as phoenix;

async fn run(cmd: &mut Command) -> Output {
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("phoenix finishes")
        .expect("phoenix runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[tokio::test]
async fn publish_commands_publish_list_widen_roll_back_and_report_status() {
    let d = TestDistributor::start(DistributorConfig {
        admin_token: Some("tok".into()),
        ..DistributorConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (mut sub, _) = d.subscribe("orch-rust", "code-gen/rust", 0).await;
    let conn = ["--url", d.url.as_str(), "--token", "tok"];

    let out = run(phoenix(home.path())
        .args([
            "publish",
            "prompt-tweak",
            "--prompt",
            "Be precise.",
            "--target-prefix",
            "code-gen",
            "--rollout-percent",
            "10",
            "--json",
        ])
        .args(conn))
    .await;
    let first = json_out(&out);
    assert_eq!(
        (first["seq"].as_u64(), first["rollout_percent"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(first["payload"]["default_prompt"], "Be precise.");

    // The default URL is derived from PULSE_DISTRIBUTOR_URL, the token from the env.
    let out = run(phoenix(home.path())
        .args(["publish", "notice", "--message", "hello fleet"])
        .env("PULSE_DISTRIBUTOR_URL", &d.ws_url)
        .env("PHOENIX_ADMIN_TOKEN", "tok"))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Published notice"),
        "{}",
        text(&out.stdout)
    );

    let mut patch = phoenix(home.path());
    patch
        .args([
            "publish",
            "json-patch",
            "--patch",
            "-",
            "--no-cascade",
            "--target-prefix",
            "code-gen/rust",
            "--json",
        ])
        .args(conn)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = patch.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stdin,
        br#"[{"op": "add", "path": "/config/retries", "value": 3}]"#,
    )
    .await
    .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let third = json_out(&out);
    assert_eq!(third["cascade"], false);
    assert_eq!(third["payload"]["patch"][0]["path"], "/config/retries");

    let yaml = home.path().join("graft.yaml");
    std::fs::write(&yaml, "llm:\n  temperature: 0.2\n").unwrap();
    let out = run(phoenix(home.path())
        .args(["publish", "yaml-graft", "--file"])
        .arg(&yaml)
        .args(["--tier", "free", "--json"])
        .args(conn))
    .await;
    assert_eq!(json_out(&out)["update_type"], "yaml_graft");

    // Widening: refused when not wider (exit 4), then accepted.
    let first_id = first["update_id"].as_str().unwrap();
    let out = run(phoenix(home.path())
        .args(["publish", "widen", first_id, "--percent", "10"])
        .args(conn))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not above the current rollout"),
        "{}",
        text(&out.stderr)
    );
    let out = run(phoenix(home.path())
        .args(["publish", "widen", first_id, "--percent", "100"])
        .args(conn))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("from 10% to 100%"),
        "{}",
        text(&out.stdout)
    );

    // The subscriber got each update meant for it exactly once: the first one in order
    // when its bucket was under 10%, else when the widening admitted it.
    let got = sub.updates(4).await;
    let first_got = got.iter().find(|u| u["seq"] == 1).unwrap().clone();
    if rollout_bucket(first_id, &d.orch_hash("orch-rust")) < 10 {
        assert_eq!(seqs(&got), [1, 2, 3, 4]);
    } else {
        assert_eq!(seqs(&got), [2, 3, 4, 1]);
        assert_eq!(first_got["rollout_percent"], 100);
    }
    sub.ack(&first_got, "rejected", Some("prompt too short"))
        .await;
    eventually("the ack is read", || async { acks_seen(&d) == 1 }).await;
    d.state.log.flush().await;

    let out = run(phoenix(home.path())
        .args(["publish", "status", "1", "--json"])
        .args(conn))
    .await;
    let status = json_out(&out);
    assert_eq!(status["update_id"], first["update_id"]);
    assert_eq!(
        (status["targeted"].as_u64(), status["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let out = run(phoenix(home.path())
        .args(["publish", "status", first_id])
        .args(conn))
    .await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("targeted 1") && shown.contains("rejected 1"),
        "{shown}"
    );
    assert!(shown.contains("prompt too short"), "{shown}");

    let out = run(phoenix(home.path())
        .args(["publish", "rollback", "1", "--json"])
        .args(conn))
    .await;
    let rollback = json_out(&out);
    assert_eq!(rollback["payload"]["update_id"], first["update_id"]);
    assert_eq!(rollback["target_agent_prefix"], "code-gen");

    let out = run(phoenix(home.path())
        .args(["publish", "list", "--limit", "3", "--json"])
        .args(conn))
    .await;
    let list = json_out(&out);
    assert_eq!(list["count"], 3);
    assert_eq!(list["updates"][0]["update_type"], "rollback");
    let out = run(phoenix(home.path()).args(["publish", "list"]).args(conn)).await;
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("yaml_graft"),
        "{}",
        text(&out.stdout)
    );

    // Exit codes: rejected 4, invalid locally 2, unreachable 3.
    let out = run(phoenix(home.path()).args([
        "publish",
        "notice",
        "--message",
        "m",
        "--url",
        d.url.as_str(),
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "no token: {}",
        text(&out.stderr)
    );
    let out = run(phoenix(home.path())
        .args(["publish", "rollback", "999"])
        .args(conn))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("payload.update_id"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(home.path().join("bad.json"), "{not json").unwrap();
    let out = run(phoenix(home.path())
        .args(["publish", "json-patch", "--patch", "bad.json"])
        .args(conn))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    std::fs::write(
        home.path().join("outside.json"),
        r#"[{"op": "add", "path": "/secrets", "value": 1}]"#,
    )
    .unwrap();
    let out = run(phoenix(home.path())
        .args(["publish", "json-patch", "--patch", "outside.json"])
        .args(conn))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("payload.patch"),
        "{}",
        text(&out.stderr)
    );
    let out = run(phoenix(home.path()).args([
        "publish",
        "list",
        "--url",
        "http://127.0.0.1:9",
        "--timeout",
        "2s",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// Starts `phoenix serve ...` and returns it with its first `n` announce lines.
async fn serve(home: &Path, args: &[&str], n: usize) -> (Child, Vec<Value>) {
    let mut child = phoenix(home)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for _ in 0..n {
        let line = tokio::time::timeout(GUARD, lines.next_line())
            .await
            .expect("announce line in time")
            .unwrap()
            .expect("an announce line");
        events.push(
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("announce line: {line:?}")),
        );
    }
    (child, events)
}

async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(GUARD, child.wait())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn serve_distributor_announces_its_urls_serves_and_stops_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path()).args(["serve", "distributor", "--bind", "0.0.0.0:0"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("without authentication"),
        "{}",
        text(&out.stderr)
    );

    let (child, events) = serve(
        home.path(),
        &["distributor", "--bind", "127.0.0.1:0", "--json"],
        1,
    )
    .await;
    let event = &events[0];
    assert_eq!(
        (event["event"].as_str(), event["service"].as_str()),
        (Some("listening"), Some("distributor"))
    );
    let ws_url = event["url"].as_str().unwrap();
    assert!(
        ws_url.starts_with("ws://127.0.0.1:") && ws_url.ends_with("/subscribe"),
        "{event}"
    );
    let http_url = event["http_url"].as_str().unwrap();
    let mut sub = Subscriber::connect(ws_url, None, None).await;
    assert_eq!(sub.hello("orch-1", "root", 0, None).await["server_seq"], 0);
    let resp = reqwest::Client::new()
        .post(format!("{http_url}/publish"))
        .body(r#"{"update_type": "notice", "payload": {"message": "m"}}"#)
        .send()
        .await
        .unwrap();
    let (status, envelope) = status_and_json(resp).await;
    assert_eq!(status, 200, "{envelope}");
    assert_eq!(sub.next_update().await, envelope);
    let (status, close) = tokio::join!(terminate(child), sub.expect_close());
    assert!(
        status.success(),
        "SIGTERM ends the distributor with exit 0, got {status:?}"
    );
    assert_eq!(close.expect("a close frame").code, CloseCode::Away);
    assert!(home.path().join("data/distributor.db").exists());
}

#[tokio::test]
async fn serve_all_runs_the_collector_and_the_distributor_in_one_process() {
    let home = tempfile::tempdir().unwrap();
    let (child, events) = serve(
        home.path(),
        &[
            "all",
            "--bind",
            "127.0.0.1:0",
            "--distributor-bind",
            "127.0.0.1:0",
            "--json",
        ],
        2,
    )
    .await;
    assert_eq!(
        events[0]["service"], "collector",
        "the collector's line comes first"
    );
    assert_eq!(events[1]["service"], "distributor");
    let collector = events[0]["url"].as_str().unwrap();
    let health = reqwest::get(format!("{collector}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let mut sub = Subscriber::connect(events[1]["url"].as_str().unwrap(), None, None).await;
    let ack = sub.hello("orch-1", "root", 0, None).await;
    // One key file: the distributor hashes an orch the way the collector does.
    let resp = reqwest::Client::new()
        .post(format!("{collector}/ingest"))
        .json(&json!({"orch_id": "orch-1", "kind": "orch_heartbeat", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stored: Value = reqwest::get(format!("{collector}/telemetry?kind=orch_heartbeat"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["records"][0]["orch_hash"], ack["orch_hash"]);
    let (status, _) = tokio::join!(terminate(child), sub.expect_close());
    assert!(status.success(), "{status:?}");
    let ids: HashSet<_> = events
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn off_loopback_the_distributor_wants_agent_tokens_and_a_token_for_reads() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config/phoenix");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("phoenix.toml"),
        "[distributor]\nadmin_token = \"admin-token-0123456789\"\n",
    )
    .unwrap();
    let (child, events) = serve(
        home.path(),
        &["distributor", "--bind", "0.0.0.0:0", "--json"],
        1,
    )
    .await;
    let port = events[0]["url"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .trim_end_matches("/subscribe")
        .to_owned();
    let ws_url = format!("ws://127.0.0.1:{port}/subscribe");
    let http_url = format!("http://127.0.0.1:{port}");

    let mut anonymous = Subscriber::connect(&ws_url, None, None).await;
    anonymous
        .send_json(&json!({"type": "hello", "orch_id": "orch-9", "agent_path": "root"}))
        .await;
    anonymous.expect_error_and_close("unauthorized").await;
    let (status, _) =
        status_and_json(reqwest::get(format!("{http_url}/updates")).await.unwrap()).await;
    assert_eq!(status, 401, "reads need the admin token off loopback");

    // The operator issues a token; the agent subscribes with it.
    let out = run(phoenix(home.path()).args(["agents", "token", "orch-9"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let out = run(phoenix(home.path())
        .args([
            "subscribe",
            "--orch-id",
            "orch-9",
            "--agent-path",
            "root",
            "--once",
        ])
        .args(["--url", ws_url.as_str(), "--json"])
        .env("PHOENIX_AGENT_TOKEN", &token))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A wrong token is refused for good (exit 1, the server's reason on stderr).
    let out = run(phoenix(home.path())
        .args([
            "subscribe",
            "--orch-id",
            "orch-9",
            "--agent-path",
            "root",
            "--once",
        ])
        .args(["--url", ws_url.as_str(), "--token", "phx_agent_wrong"]))
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    assert!(terminate(child).await.success());
}
