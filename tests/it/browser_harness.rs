//! The real-browser harness (`support::browser`) against a tiny axum site of the test's own:
//! reading text, waiting for what scripts change, console errors, forms, cookies and
//! screenshots. Without Chromium and chromedriver each test returns early, after the harness
//! said why (`.ci/run` installs them and sets `PHOENIX_REQUIRE_BROWSER=1`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, Html, IntoResponse};
use axum::routing::get;
use futures_util::FutureExt as _;
use serde::Deserialize;

use crate::support::browser::{Browser, DEFAULT_WAIT};

/// What the site's form handler received.
type Posted = Arc<Mutex<Vec<String>>>;

/// A page with `body`, an empty favicon (no 404 in the console) and a title.
fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>harness</title>\
         <link rel=icon href=\"data:,\"></head><body>{body}</body></html>"
    ))
}

#[derive(Deserialize)]
struct Note {
    note: String,
}

async fn post_form(State(posted): State<Posted>, Form(form): Form<Note>) -> Html<String> {
    posted.lock().unwrap().push(form.note.clone());
    page(&format!(
        "<p id=got>got: {}</p>",
        form.note.replace('<', "&lt;")
    ))
}

async fn set_cookie() -> impl IntoResponse {
    (
        AppendHeaders([(
            SET_COOKIE,
            "phoenix_session=s3cr3t; HttpOnly; Path=/; SameSite=Lax",
        )]),
        page("<p id=done>cookie set</p>"),
    )
}

/// Starts the site on 127.0.0.1:0 and returns its base URL and what its form received.
async fn site() -> (String, Posted) {
    let posted = Posted::default();
    let app = Router::new()
        .route(
            "/text",
            get(|| async {
                page("<h1 id=title>Vital Pulse</h1><p class=lead>12 agents <b>online</b></p>")
            }),
        )
        .route(
            "/button",
            get(|| async {
                page(
                    "<p id=out>idle</p><button id=go>Go</button><script>\
                     document.getElementById('go').addEventListener('click', () => \
                     setTimeout(() => { document.getElementById('out').textContent = \
                     'clicked'; }, 300));</script>",
                )
            }),
        )
        .route(
            "/throws",
            get(|| async {
                page("<p>broken</p><script>throw new Error('harness-boom-42');</script>")
            }),
        )
        .route(
            "/form",
            get(|| async {
                page(
                    "<form id=f method=post action=/form><input name=note id=note value=old>\
                     <button type=submit>Save</button></form>",
                )
            })
            .post(post_form),
        )
        .route("/cookie", get(set_cookie))
        .with_state(posted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the site");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), posted)
}

#[tokio::test]
async fn reads_the_text_and_url_of_a_clean_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, _) = site().await;
    browser.goto(&format!("{base}/text")).await;
    assert_eq!(browser.text("#title").await, "Vital Pulse");
    assert_eq!(browser.text("p.lead").await, "12 agents online");
    assert!(browser.page_text().await.contains("Vital Pulse"));
    assert_eq!(browser.try_text("#missing").await, None);
    assert_eq!(browser.current_url().await.path(), "/text");
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn waits_for_what_a_script_changes_without_a_reload() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, _) = site().await;
    browser.goto(&format!("{base}/button")).await;
    assert_eq!(browser.text("#out").await, "idle");
    browser.click("#go").await;
    browser
        .wait_until("#out to say clicked", DEFAULT_WAIT, async |b| {
            b.text("#out").await == "clicked"
        })
        .await;
    let text = browser
        .wait_for_text("#out", |t| t.starts_with("click"))
        .await;
    assert_eq!(text, "clicked");

    // A condition that never holds panics with what it waited for and the page's text.
    let timed_out = std::panic::AssertUnwindSafe(browser.wait_until(
        "the moon",
        Duration::from_millis(300),
        async |_| false,
    ))
    .catch_unwind()
    .await
    .expect_err("the wait must time out");
    let message = timed_out
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("waiting for the moon"), "{message}");
    assert!(message.contains("clicked"), "{message}");
    assert!(message.contains("/button"), "{message}");
}

#[tokio::test]
async fn a_throwing_script_shows_in_console_errors() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, _) = site().await;
    browser.goto(&format!("{base}/throws")).await;
    let errors = browser.console_errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("harness-boom-42"), "{errors:?}");
    assert!(errors[0].contains("/throws"), "{errors:?}");
    // Read again: still there (the harness keeps what the log gave it).
    assert_eq!(browser.console_errors().await, errors);
}

#[tokio::test]
async fn submits_a_form_and_the_server_sees_the_value() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, posted) = site().await;
    browser.goto(&format!("{base}/form")).await;
    browser.fill("#note", "rollout to 25% of tier-2").await;
    browser.submit("#f").await;
    let got = browser.wait_for_text("#got", |t| !t.is_empty()).await;
    assert_eq!(got, "got: rollout to 25% of tier-2");
    assert_eq!(
        *posted.lock().unwrap(),
        vec!["rollout to 25% of tier-2".to_owned()]
    );
    assert_eq!(browser.current_url().await.path(), "/form");
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn sees_an_http_only_cookie() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, _) = site().await;
    browser.goto(&format!("{base}/cookie")).await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.name() == "phoenix_session")
        .unwrap_or_else(|| panic!("no phoenix_session cookie in {cookies:?}"));
    assert_eq!(session.value(), "s3cr3t");
    assert_eq!(session.http_only(), Some(true));
    // Scripts cannot see it.
    let visible = browser.execute("return document.cookie;", vec![]).await;
    assert_eq!(visible, "");
}

#[tokio::test]
async fn writes_a_png_screenshot() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (base, _) = site().await;
    browser.goto(&format!("{base}/text")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shots/nested/text.png");
    browser.screenshot(&path).await;
    let png = std::fs::read(&path).expect("the screenshot file");
    assert!(png.len() > 1000, "{} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
