//! The dashboard in a real headless Chromium (chromedriver): the pages update live without
//! a reload, the login works, no console errors, and a screenshot of each page is written
//! to `target/dashboard-screenshots/` (with `PHOENIX_UPDATE_SCREENSHOTS=1` also to
//! `docs/dashboard/`, the README's pictures).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use phoenix::core::collector::CollectorConfig;
use serde_json::{Value, json};

use crate::support::bin::phoenix_async;
use crate::support::browser::Browser;
use crate::support::dashboard::{Board, Reads};

const WAIT: Duration = Duration::from_secs(20);

fn llm_call(orch: &str, agent: &str, model: &str, ms: u64, level: &str) -> Value {
    json!({
        "kind": "llm_call", "orch_id": orch, "agent_path": agent, "level": level,
        "payload": {"model": model, "response_time": ms, "tokens": {"input": 120, "output": 30}}
    })
}

/// A fleet's worth of telemetry: three agent paths, two models, some errors, heartbeats.
fn fleet_batch(n: usize) -> Value {
    let agents = ["support/triage", "support/billing", "sales/outreach"];
    let models = ["gpt-4o-mini", "claude-haiku"];
    let mut batch = Vec::new();
    for i in 0..n {
        let level = if i % 9 == 0 { "error" } else { "info" };
        batch.push(llm_call(
            &format!("orch-{}", i % 6),
            agents[i % 3],
            models[i % 2],
            80 + (i as u64 * 37) % 900,
            level,
        ));
    }
    for o in 0..6 {
        batch.push(
            json!({"kind": "orch_heartbeat", "orch_id": format!("orch-{o}"),
            "agent_path": agents[o % 3], "payload": {"last_seq": 0}}),
        );
    }
    Value::Array(batch)
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/dashboard-screenshots")
        .join(format!("{name}.png"))
}

async fn screenshot(browser: &Browser, name: &str) {
    let path = screenshot_path(name);
    browser.screenshot(&path).await;
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    if std::env::var_os("PHOENIX_UPDATE_SCREENSHOTS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("{name}.png")), png).unwrap();
    }
}

async fn assert_no_console_errors(browser: &Browser) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// The `points` of a chart's line.
async fn chart_points(browser: &Browser, id: &str) -> String {
    let v = browser
        .execute(
            &format!(
                "return document.querySelector('#{id} polyline.line').getAttribute('points');"
            ),
            vec![],
        )
        .await;
    v.as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_fleet_page_moves_as_events_arrive_and_reconnects_after_a_restart() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    board.collector.ingest_ok(&fleet_batch(60)).await;

    browser.goto(&board.page("/")).await;
    browser.wait_for_text("#events-hour", |t| t == "66").await;
    browser.wait_for_text("#live-status", |t| t == "live").await;
    browser.wait_for_text("#orchs-seen", |t| t == "6").await;
    let before = chart_points(&browser, "chart-events").await;
    // Marks this page: a reload would lose it.
    browser.execute("window.phoenixMark = 42;", vec![]).await;

    board.collector.ingest_ok(&fleet_batch(30)).await;
    browser.wait_for_text("#events-hour", |t| t == "102").await;
    let after = chart_points(&browser, "chart-events").await;
    assert_ne!(before, after, "the chart moved");
    assert_eq!(
        browser.execute("return window.phoenixMark;", vec![]).await,
        json!(42),
        "no reload"
    );
    let page = browser.page_text().await;
    for expected in [
        "support/triage",
        "sales/outreach",
        "gpt-4o-mini",
        "claude-haiku",
    ] {
        assert!(page.contains(expected), "{expected} on the page");
    }
    assert!(!page.contains("orch-1"), "raw ORCH ids never shown");
    assert_no_console_errors(&browser).await;
    screenshot(&browser, "fleet").await;

    // The server goes away: the page says so, and comes back live on its own.
    board.restart_collector(Duration::from_secs(1)).await;
    browser
        .wait_until("the page to notice and reconnect", WAIT, async |b| {
            b.text("#live-status").await == "live"
                && b.execute("return window.phoenixMark;", vec![]).await == json!(42)
        })
        .await;
    board.collector.ingest_ok(&fleet_batch(3)).await;
    browser.wait_for_text("#events-hour", |t| t == "111").await;
}

#[tokio::test]
async fn the_page_says_reconnecting_while_the_server_is_down() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    browser.goto(&board.page("/")).await;
    browser.wait_for_text("#live-status", |t| t == "live").await;
    let stopping = board.restart_collector(Duration::from_secs(4));
    let watch = browser.wait_for_text("#live-status", |t| t == "reconnecting…");
    let ((), status) = tokio::join!(stopping, watch);
    assert_eq!(status, "reconnecting…");
    browser.wait_for_text("#live-status", |t| t == "live").await;
}

#[tokio::test]
async fn an_update_converges_on_its_page_as_a_real_phoenix_subscribe_applies_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    let d = &board.distributor;
    let first = d
        .publish_ok(
            &json!({"update_type": "prompt_tweak", "target_agent_prefix": "support",
            "payload": {"default_prompt": "Answer in two sentences."}}),
        )
        .await;
    let id = first["update_id"].as_str().unwrap().to_owned();

    browser.goto(&board.page("/ui/updates")).await;
    browser.wait_for_text("#live-status", |t| t == "live").await;
    browser
        .wait_for_text("#updates-table", |t| t.contains("prompt_tweak"))
        .await;
    // A new update appears on the list without a reload.
    d.publish_ok(&json!({"update_type": "notice", "payload": {"message": "maintenance at 18:00"}}))
        .await;
    browser
        .wait_for_text("#updates-table", |t| t.contains("notice"))
        .await;
    screenshot(&browser, "updates").await;

    browser
        .goto(&board.page(&format!("/ui/updates/{id}")))
        .await;
    browser.wait_for_text("#live-status", |t| t == "live").await;
    browser.wait_for_text("#count-applied", |t| t == "0").await;
    browser.execute("window.phoenixMark = 7;", vec![]).await;

    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("agent/state.json");
    let mut agent = phoenix_async(home.path())
        .args([
            "subscribe",
            "--orch-id",
            "orch-browser",
            "--agent-path",
            "support/triage",
        ])
        .args(["--url", &d.ws_url, "--state"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    browser.wait_for_text("#count-applied", |t| t == "1").await;
    browser
        .wait_for_text("#count-delivered", |t| t == "1")
        .await;
    assert_eq!(
        browser.execute("return window.phoenixMark;", vec![]).await,
        json!(7),
        "no reload"
    );
    assert!(
        browser
            .page_text()
            .await
            .contains("Answer in two sentences.")
    );
    assert_no_console_errors(&browser).await;
    screenshot(&browser, "update").await;
    let _ = agent.kill().await;
}

#[tokio::test]
async fn with_tokens_the_browser_logs_in_and_a_wrong_token_is_refused() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let config = CollectorConfig {
        ingest_tokens: vec!["ingest-secret".into()],
        premium_key: Some("x402-key".into()),
        ..CollectorConfig::default()
    };
    let board = Board::start(config, Some("admin-secret"), Reads::Local).await;
    let ingest = board
        .collector
        .client()
        .post(board.page("/ingest"))
        .bearer_auth("ingest-secret")
        .json(&fleet_batch(12))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 200);

    browser.goto(&board.page("/ui/privacy")).await;
    let url = browser.current_url().await;
    assert_eq!(url.path(), "/ui/login");
    assert_eq!(url.query(), Some("next=/ui/privacy"));
    screenshot(&browser, "login").await;

    browser.fill("#token", "not-the-token").await;
    browser.click("#login").await;
    browser
        .wait_for_text(".error", |t| t.contains("not accepted"))
        .await;
    assert_eq!(browser.current_url().await.path(), "/ui/login");

    browser.fill("#token", "admin-secret").await;
    browser.click("#login").await;
    browser.wait_for("#conversations-stored").await;
    assert_eq!(browser.current_url().await.path(), "/ui/privacy");
    let session = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c.name() == "phoenix_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    assert_eq!(
        browser.execute("return document.cookie;", vec![]).await,
        json!(""),
        "scripts cannot read the session"
    );
    screenshot(&browser, "privacy").await;

    browser.goto(&board.page("/")).await;
    browser.wait_for_text("#events-hour", |t| t == "18").await;

    // Analyze now, from the form: the new insight is shown first, highlighted.
    browser.goto(&board.page("/ui/insights")).await;
    browser.fill("input[name=focus]", "errors").await;
    browser.click("form.analyze button").await;
    browser.wait_for("article.insight.highlight").await;
    browser
        .wait_for_text("article.insight.highlight", |t| t.contains("errors"))
        .await;
    assert_no_console_errors(&browser).await;
    screenshot(&browser, "insights").await;
}
