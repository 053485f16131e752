//! The web dashboard over HTTP: what each page shows, that the live stream pushes changes,
//! access (login, session cookie, CSRF, X402), and that no raw ORCH id or PII value is
//! ever shown. The browser tests (`dashboard_browser.rs`) drive the same pages in Chromium.

use std::time::Duration;

use phoenix::core::collector::CollectorConfig;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::support::dashboard::{Board, Reads};
use crate::support::distributor::eventually;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let resp = client().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The text of the element with `id` (its first text node run, tags stripped).
fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(html[start..end].to_owned())
}

fn llm_call(orch: &str, agent: &str, model: &str, ms: u64, level: &str) -> Value {
    json!({
        "kind": "llm_call", "orch_id": orch, "agent_path": agent, "level": level,
        "payload": {"model": model, "response_time": ms, "tokens": {"input": 100, "output": 20}}
    })
}

fn heartbeat(orch: &str, agent: &str) -> Value {
    json!({"kind": "orch_heartbeat", "orch_id": orch, "agent_path": agent, "payload": {"last_seq": 0}})
}

#[tokio::test]
async fn the_fleet_page_counts_what_was_ingested_by_agent_and_model_and_never_shows_raw_ids() {
    let board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    let c = &board.collector;
    let mut batch = Vec::new();
    for i in 0..30 {
        let level = if i % 10 == 0 { "error" } else { "info" };
        batch.push(llm_call(
            "orch-alpha-raw",
            "support/triage",
            "model-a",
            100 + i,
            level,
        ));
    }
    for i in 0..10 {
        batch.push(llm_call(
            "orch-beta-raw",
            "sales/outreach",
            "model-b",
            900 + i,
            "info",
        ));
    }
    batch.push(heartbeat("orch-alpha-raw", "support/triage"));
    batch.push(heartbeat("orch-beta-raw", "sales/outreach"));
    // An ORCH whose newest heartbeat is older than the stale age (15 min by default).
    let mut old = heartbeat("orch-gamma-raw", "sales/outreach");
    old["ts_unix"] = json!(phoenix::core::telemetry::now_unix() - 7200);
    batch.push(old);
    c.ingest_ok(&Value::Array(batch)).await;

    let (status, html) = get(&board.page("/")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(element_text(&html, "events-hour").as_deref(), Some("42"));
    assert_eq!(element_text(&html, "orchs-seen").as_deref(), Some("3"));
    assert_eq!(element_text(&html, "orchs-healthy").as_deref(), Some("2"));
    assert_eq!(element_text(&html, "orchs-stale").as_deref(), Some("1"));
    assert_eq!(element_text(&html, "error-rate").as_deref(), Some("7.1%"));
    for expected in [
        "support/triage",
        "sales/outreach",
        "model-a",
        "model-b",
        "llm_call",
    ] {
        assert!(html.contains(expected), "{expected} missing");
    }
    // p50 of model-b's latencies (900..909 ms) is within a histogram bucket of the truth.
    assert!(html.contains(" ms<") || html.contains(" s<"));
    assert!(!html.contains("orch-alpha-raw") && !html.contains("orch-beta-raw"));
    let orchs = &html[html.find("id=\"fleet-orchs\"").unwrap()..];
    let sales = &orchs[orchs.find("<td>sales/outreach</td>").unwrap()..];
    assert!(
        sales.starts_with("<td>sales/outreach</td><td class=\"num\">2</td><td class=\"num good\">1</td><td class=\"num bad\">1</td>"),
        "{sales}"
    );

    // The last events take GET /telemetry's filters from the URL.
    let (status, filtered) = get(&board.page("/?agent_prefix=sales&level=info")).await;
    assert_eq!(status, 200);
    let table = &filtered[filtered.find("id=\"events-table\"").unwrap()..];
    assert!(table.contains("sales/outreach") && !table.contains("support/triage"));
    assert!(
        filtered.contains(
            "data-stream=\"/ui/stream?page=fleet&amp;level=info&amp;agent_prefix=sales\""
        )
    );
    let (status, bad) = get(&board.page("/?level=loud")).await;
    assert_eq!(status, 400);
    assert!(bad.contains("unknown level"), "{bad}");

    // The figures are stored, not kept in memory: a restart shows them again.
    let dir = board.collector.stop().await;
    let c =
        crate::support::collector::TestCollector::start_in(dir, CollectorConfig::default()).await;
    let cells = c
        .state
        .store
        .cells(phoenix::core::store::rollup::CellRange {
            since: 0,
            until: i64::MAX,
        })
        .await
        .unwrap();
    assert_eq!(cells.iter().map(|r| r.cell.records).sum::<u64>(), 43);
    assert_eq!(cells.iter().map(|r| r.cell.errors).sum::<u64>(), 3);
    let orchs = c.state.store.orchs_seen(10).await.unwrap();
    assert_eq!(orchs.len(), 3);
    c.stop().await;
}

/// Reads the SSE stream until an event whose data contains `needle`.
async fn next_event_with(resp: &mut reqwest::Response, buf: &mut String, needle: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if event.contains(needle) {
                    return event;
                }
            }
            let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event with {needle:?}; got so far: {buf}"))
}

#[tokio::test]
async fn the_live_stream_pushes_the_fragments_that_changed_and_ends_at_shutdown() {
    let board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    let c = &board.collector;
    c.ingest_ok(&llm_call("o1", "a/b", "m", 10, "info")).await;
    let mut resp = client()
        .get(board.page("/ui/stream?page=fleet"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buf = String::new();
    let first = next_event_with(&mut resp, &mut buf, "event: fragments").await;
    assert!(first.contains("retry: 5000"), "{first}");
    assert!(first.contains("fleet-stats") && first.contains("fleet-charts"));
    assert!(first.contains(r#"id=\"events-hour\">1<"#), "{first}");

    c.ingest_ok(&json!([
        llm_call("o1", "a/b", "m", 10, "info"),
        llm_call("o1", "a/b", "m", 10, "info")
    ]))
    .await;
    let next = next_event_with(&mut resp, &mut buf, r#"id=\"events-hour\">3<"#).await;
    // Only what changed: the ORCH table (no heartbeat yet) is the same and not sent again.
    assert!(!next.contains("fleet-orchs"), "{next}");

    let bad = client()
        .get(board.page("/ui/stream?page=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Shutdown ends the stream instead of waiting on it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), board.collector.stop()).await;
    assert!(stopped.is_ok(), "the collector stops with a stream open");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ends at shutdown");
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"));
    let start = at + name.len() + 15;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Logs in through the form; the session cookie (`name=value`).
async fn log_in(board: &Board, token: &str) -> (u16, Option<String>, String) {
    let http = client();
    let form = http
        .get(board.page("/ui/login?next=/ui/updates"))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_of(&form, "phoenix_login").expect("login cookie");
    let html = form.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    let cookie = login_cookie.split(';').next().unwrap().to_owned();
    let resp = http
        .post(board.page("/ui/login"))
        .header("cookie", &cookie)
        .form(&[("token", token), ("csrf", &csrf), ("next", "/ui/updates")])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let session = cookie_of(&resp, "phoenix_session");
    (status, session, location)
}

#[tokio::test]
async fn with_tokens_every_page_needs_a_login_and_the_session_cookie_is_strict() {
    let config = CollectorConfig {
        ingest_tokens: vec!["ingest-secret".into()],
        ..CollectorConfig::default()
    };
    let board = Board::start(config, Some("admin-secret"), Reads::Local).await;
    let http = client();

    for path in [
        "/",
        "/ui/insights",
        "/ui/updates",
        "/ui/privacy",
        "/ui/updates/x",
    ] {
        let resp = http.get(board.page(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        let to = resp.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/ui/login?next="), "{to}");
    }
    let stream = http
        .get(board.page("/ui/stream?page=fleet"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 401);
    // The login form and assets are open; the API stays behind its own bearer check.
    assert_eq!(get(&board.page("/ui/login")).await.0, 200);
    assert_eq!(get(&board.page("/ui/assets/app.js")).await.0, 200);

    let (status, session, location) = log_in(&board, "wrong").await;
    assert_eq!(status, 200, "the form again, with the message");
    assert!(session.is_none());
    assert!(location.is_empty());

    // A login post without the form's CSRF token is refused.
    let resp = http
        .post(board.page("/ui/login"))
        .form(&[("token", "ingest-secret"), ("csrf", "00"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(cookie_of(&resp, "phoenix_session").is_none());

    let (status, session, location) = log_in(&board, "ingest-secret").await;
    assert_eq!(status, 303);
    assert_eq!(location, "/ui/updates");
    let session = session.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(session.contains(attr), "{attr} missing in {session}");
    }
    let cookie = session.split(';').next().unwrap().to_owned();
    let page = http
        .get(board.page("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"].to_str().unwrap(), "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Log out"));
    // A tampered cookie is no session.
    let forged = format!("{}0", cookie);
    let resp = http
        .get(board.page("/"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // The API's bearer token works as well (scripts, curl).
    let resp = http
        .get(board.page("/ui/privacy"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // An open redirect through `next` is not possible.
    let resp = http
        .get(board.page("/ui/login?next=//evil.example/x"))
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("name=\"next\" value=\"/\""), "{html}");
}

/// Posts the "Analyze now" form with `fields`, from `origin` when given.
async fn post_analyze(
    board: &Board,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(board.page("/ui/analyze")).form(fields);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn analyze_now_needs_the_forms_csrf_token_and_the_x402_key_for_premium() {
    let config = CollectorConfig {
        premium_key: Some("x402-key".into()),
        ..CollectorConfig::default()
    };
    let board = Board::start(config, None, Reads::Local).await;
    board
        .collector
        .ingest_ok(&json!([
            llm_call("o1", "a/b", "m", 10, "info"),
            llm_call("o2", "a/c", "m", 20, "error")
        ]))
        .await;
    let http = client();
    let html = http
        .get(board.page("/ui/insights"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("No insight yet"));
    assert!(
        html.contains("value=\"premium\""),
        "the premium tier is offered"
    );
    let csrf = hidden(&html, "csrf");

    let resp = post_analyze(
        &board,
        None,
        &[("csrf", "nope"), ("last_n", "10"), ("tier", "free")],
    )
    .await;
    assert_eq!(resp.status(), 403);
    let resp = post_analyze(
        &board,
        Some("http://evil.example"),
        &[("csrf", csrf.as_str()), ("last_n", "10"), ("tier", "free")],
    )
    .await;
    assert_eq!(resp.status(), 403, "a cross-site post is refused");
    let resp = post_analyze(
        &board,
        None,
        &[
            ("csrf", csrf.as_str()),
            ("last_n", "10"),
            ("tier", "premium"),
            ("x402", "wrong"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 402);
    assert!(resp.text().await.unwrap().contains("needs the X402 key"));
    let resp = post_analyze(
        &board,
        None,
        &[("csrf", csrf.as_str()), ("last_n", "ten"), ("tier", "free")],
    )
    .await;
    assert_eq!(resp.status(), 400);

    let resp = post_analyze(
        &board,
        None,
        &[
            ("csrf", csrf.as_str()),
            ("last_n", "10"),
            ("focus", "errors"),
            ("tier", "free"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let to = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/ui/insights?id="), "{to}");
    let (status, html) = get(&board.page(&to)).await;
    assert_eq!(status, 200);
    assert!(html.contains("class=\"insight highlight\""), "{html}");
    assert!(html.contains("errors"));

    // Premium with the key: stored as premium, and (without the admin's session) withheld
    // from the list like GET /insights withholds it.
    let resp = post_analyze(
        &board,
        None,
        &[
            ("csrf", csrf.as_str()),
            ("last_n", "10"),
            ("tier", "premium"),
            ("x402", "x402-key"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let insights = board.collector.get_json("/insights").await;
    let tiers: Vec<&str> = insights["insights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tier"].as_str().unwrap())
        .collect();
    assert!(tiers.contains(&"free"));
    let (_, html) = get(&board.page("/ui/insights")).await;
    assert!(html.contains("premium insight(s) withheld"), "{html}");
}

async fn updates_show_convergence(reads: Reads) {
    let board = Board::start(CollectorConfig::default(), Some("adm"), reads).await;
    let d = &board.distributor;
    let raw = "orch-target-raw-id";
    let update = d
        .publish_ok(&json!({"update_type": "prompt_tweak", "target_orch": raw, "payload": {"default_prompt": "be brief"}}))
        .await;
    let id = update["update_id"].as_str().unwrap().to_owned();
    let premium = d
        .publish_ok(&json!({"update_type": "notice", "tier_required": "premium", "payload": {"message": "secret plan"}}))
        .await;

    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth("adm");
    let list = auth(client().get(board.page("/ui/updates")))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let html = list.text().await.unwrap();
    assert!(html.contains(&id) && html.contains("prompt_tweak"));
    assert!(!html.contains(raw), "the raw target id is never shown");
    assert!(html.contains(&d.orch_hash(raw)[..14]));

    // An ORCH applies it: the update's page shows it delivered and applied.
    let (mut sub, _) = d.subscribe(raw, "support/triage", 0).await;
    let got = sub.next_update().await;
    assert_eq!(got["update_id"], id);
    sub.ack(&got, "applied", None).await;
    let page = board.page(&format!("/ui/updates/{id}"));
    eventually("the page shows the ack", || {
        let page = page.clone();
        async move {
            let html = client()
                .get(&page)
                .bearer_auth("adm")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            element_text(&html, "count-applied").as_deref() == Some("1")
        }
    })
    .await;
    let html = auth(client().get(&page))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(element_text(&html, "count-delivered").as_deref(), Some("1"));
    assert!(html.contains("be brief"), "the admin sees the payload");
    assert!(!html.contains(raw));

    // A rollback shows in the history.
    d.publish_ok(&json!({"update_type": "rollback", "payload": {"update_id": id}}))
        .await;
    let html = auth(client().get(&page))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("rolled back by"), "{html}");

    // Without the admin token (no tokens on the collector: the page is open) a premium
    // payload is withheld.
    let premium_page = board.page(&format!(
        "/ui/updates/{}",
        premium["update_id"].as_str().unwrap()
    ));
    let (status, html) = get(&premium_page).await;
    assert_eq!(status, 200);
    assert!(!html.contains("secret plan"), "{html}");
    assert!(html.contains("premium payload withheld"));
    let (status, _) = get(&board.page("/ui/updates/no-such-update")).await;
    assert_eq!(status, 404);
    sub.close().await;
}

#[tokio::test]
async fn the_updates_pages_show_convergence_reading_the_distributor_directly() {
    updates_show_convergence(Reads::Local).await;
}

#[tokio::test]
async fn the_updates_pages_show_convergence_reading_the_distributor_over_http() {
    updates_show_convergence(Reads::Http).await;
}

#[tokio::test]
async fn the_privacy_page_counts_refusals_by_type_and_never_shows_a_value() {
    let board = Board::start(CollectorConfig::default(), None, Reads::Local).await;
    let email = "jane.roe.private@example.org";
    let (status, _) = board
        .collector
        .ingest_conversations(&json!({
            "conversation_id": "c-1",
            "messages": [
                {"role": "user", "content": format!("mail me at {email}")},
                {"role": "assistant", "content": "ok"}
            ]
        }))
        .await;
    assert_eq!(status, 422);
    let (status, html) = get(&board.page("/ui/privacy")).await;
    assert_eq!(status, 200);
    assert_eq!(
        element_text(&html, "conversations-refused").as_deref(),
        Some("1")
    );
    let row = &html[html.find("<td>email</td>").expect("an email row")..];
    assert!(
        row.starts_with("<td>email</td><td class=\"num\">1</td>"),
        "{row}"
    );
    assert!(!html.contains(email) && !html.contains("jane"));
}

/// The `--json` announce lines of a `phoenix serve …` child, until `n` are read.
async fn announced(child: &mut tokio::process::Child, n: usize) -> Vec<Value> {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for _ in 0..n {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("announced in time")
            .unwrap()
            .expect("an announce line");
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    events
}

fn stop(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
}

#[tokio::test]
async fn serve_all_announces_the_dashboard_and_no_dashboard_turns_it_off() {
    use crate::support::bin::{phoenix, phoenix_async};
    let home = tempfile::tempdir().unwrap();
    let mut child = phoenix_async(home.path())
        .args([
            "serve",
            "all",
            "--bind",
            "127.0.0.1:0",
            "--distributor-bind",
            "127.0.0.1:0",
        ])
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = announced(&mut child, 3).await;
    let services: Vec<&str> = events
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["collector", "distributor", "dashboard"]);
    let dashboard = events[2]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        dashboard,
        format!("{}/", events[0]["url"].as_str().unwrap())
    );
    let (status, html) = get(&dashboard).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"events-hour\""));
    // serve all reads its own distributor: an update published there shows.
    let distributor = events[1]["http_url"].as_str().unwrap();
    let resp = client()
        .post(format!("{distributor}/publish"))
        .json(&json!({"update_type": "notice", "payload": {"message": "from the binary"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, html) = get(&format!("{dashboard}ui/updates")).await;
    assert!(html.contains("notice"), "{html}");
    stop(&child);
    assert!(child.wait().await.unwrap().success());

    let mut child = phoenix_async(home.path())
        .args([
            "serve",
            "collector",
            "--bind",
            "127.0.0.1:0",
            "--no-dashboard",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = announced(&mut child, 1).await;
    let url = events[0]["url"].as_str().unwrap();
    assert_eq!(get(&format!("{url}/")).await.0, 404);
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    stop(&child);
    assert!(child.wait().await.unwrap().success());

    let out = phoenix(home.path())
        .args(["serve", "all", "--distributor-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve collector"));
}
