//! A real browser for the tests: headless Chromium driven through chromedriver with
//! fantoccini (WebDriver over plain HTTP on 127.0.0.1).
//!
//! [`Browser::start`] finds `chromium` and `chromedriver` (`PHOENIX_CHROMIUM` /
//! `PHOENIX_CHROMEDRIVER`, else the PATH). Without them it says once, on stderr past the test
//! harness's capture, that the browser tests were not run and why, and returns `None`: the
//! test returns early. With `PHOENIX_REQUIRE_BROWSER=1` (`.ci/run` sets it) it panics instead,
//! so CI never skips them silently. A browser that is there but fails to start is a failure,
//! never a skip.
//!
//! Each `Browser` has a chromedriver of its own on a free port, in a process group of its own,
//! with a temporary profile and HOME. Dropping it ends the WebDriver session (Chromium quits),
//! kills the process group, kills any process still naming the temporary directory (Chromium's
//! crashpad handlers leave the group) and removes the directory: no Chromium outlives a test,
//! panicking or not.
//!
//! Console errors come from chromedriver's browser log (`goog:loggingPrefs` `browser: ALL`,
//! read with the non-W3C `POST /session/{id}/se/log {"type":"browser"}`, which chromedriver
//! 156 answers in a W3C session): the `SEVERE` entries, i.e. `console.error` calls, uncaught
//! exceptions, failed resource loads and CSP violations, including those from before any of
//! the page's scripts ran, which an injected `window.onerror` would miss. Nothing is filtered:
//! a page without an icon logs its `/favicon.ico` 404 too (serve one, or link `data:,`).
//!
//! The helpers panic with the CSS selector, the URL and what went wrong: a test reads as the
//! steps a person takes.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use url::Url;

/// How long [`Browser::wait_for_text`] waits.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// How often the waits look at the page again.
const POLL: Duration = Duration::from_millis(100);
/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY: Duration = Duration::from_secs(10);
/// The window every test sees.
const WINDOW: &str = "--window-size=1280,900";

/// A headless Chromium of the test's own; see the module docs.
pub struct Browser {
    client: Client,
    session_id: String,
    port: u16,
    /// Every SEVERE browser-log entry read so far (the log is drained on each read).
    errors: Mutex<Vec<String>>,
    /// Dropped after the session ends: kills chromedriver's group, removes the directory.
    driver: Driver,
}

/// Where the browser is, or why it is not there.
fn locate() -> Result<(PathBuf, PathBuf), String> {
    let chromedriver = find_binary("PHOENIX_CHROMEDRIVER", &["chromedriver"])?;
    let chromium = find_binary(
        "PHOENIX_CHROMIUM",
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
    )?;
    Ok((chromium, chromedriver))
}

/// `var` when set (it must name an executable file), else the first of `names` on the PATH.
fn find_binary(var: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{var}={} is not an executable file",
                path.display()
            ))
        };
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&dirs) {
        for name in names {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no {} on the PATH and {var} is not set",
        names.join(" / ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The browser is absent: panic under `PHOENIX_REQUIRE_BROWSER=1`, else say so once.
fn absent(why: &str) {
    const HOW: &str = "install Debian's chromium and chromium-driver, as .ci/run does, or set \
                       PHOENIX_CHROMIUM and PHOENIX_CHROMEDRIVER";
    if std::env::var("PHOENIX_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("PHOENIX_REQUIRE_BROWSER=1 and no browser to run the browser tests: {why} ({HOW})");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: the browser tests were skipped: {why} ({HOW})"
        );
    });
}

/// chromedriver, its process group and the temporary directory (profile and HOME).
struct Driver {
    child: Child,
    dir: TempDir,
}

impl Driver {
    fn spawn(chromedriver: &Path, port: u16, dir: TempDir) -> Driver {
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("create the browser's HOME");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            // Chromium inherits these: its config, cache and crash database (whose handler
            // leaves the process group) all name the temporary directory.
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        Driver { child, dir }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process, kill_process_group};
        if let Some(group) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever left the group (crashpad handlers) still names the directory.
        let marker = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        let me = std::process::id();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if memchr::memmem::find(&cmdline, &marker).is_some()
                    && let Some(pid) = Pid::from_raw(pid as i32)
                {
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
        }
    }
}

/// A port nobody listens on right now (chromedriver binds it a moment later; a lost race
/// shows as chromedriver exiting, and [`Browser::start`] tries another).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls chromedriver's `/status` with a short backoff until it says ready. `Err` when
/// chromedriver exited (the port was taken); panics after [`DRIVER_READY`].
async fn wait_ready(driver: &mut Driver, port: u16) -> Result<(), std::process::ExitStatus> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .no_proxy()
        .build()
        .expect("HTTP client");
    let url = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + DRIVER_READY;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(status) = driver.exited() {
            return Err(status);
        }
        let last = match http.get(&url).send().await {
            Ok(resp) => match resp.json::<Value>().await {
                Ok(body) if body["value"]["ready"] == json!(true) => return Ok(()),
                Ok(body) => body.to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!("chromedriver on port {port} was not ready within {DRIVER_READY:?}: {last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The capabilities of every session: headless Chromium at `chromium`, profile in `profile`,
/// the browser log on.
fn capabilities(chromium: &Path, profile: &Path) -> Capabilities {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                WINDOW,
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the `browser` log: the entries since the
/// last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &Url, session_id: Option<&str>) -> Result<Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

impl Browser {
    /// A fresh headless Chromium, or `None` (after saying why, once) when there is none to be
    /// had; see the module docs.
    pub async fn start() -> Option<Browser> {
        let (chromium, chromedriver) = match locate() {
            Ok(found) => found,
            Err(why) => {
                absent(&why);
                return None;
            }
        };
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix("phoenix-browser-")
                .tempdir()
                .expect("temporary directory for the browser");
            let port = free_port();
            let mut driver = Driver::spawn(&chromedriver, port, dir);
            match wait_ready(&mut driver, port).await {
                Ok(()) => break (driver, port),
                Err(status) if attempt < 3 => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "chromedriver on port {port} exited ({status}); trying another port"
                    );
                }
                Err(status) => panic!(
                    "{} exited ({status}) before it was ready, {attempt} times",
                    chromedriver.display()
                ),
            }
        };
        let profile = driver.dir.path().join("profile");
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(&chromium, &profile))
            .connect(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {} headless: {e}",
                    chromium.display()
                )
            });
        let session_id = client
            .session_id()
            .await
            .expect("session id")
            .expect("a W3C session has an id");
        Some(Browser {
            client,
            session_id,
            port,
            errors: Mutex::new(Vec::new()),
            driver,
        })
    }

    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The URL the browser is on.
    pub async fn current_url(&self) -> Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The first element matching `css`; panics when there is none.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!(
                "{}",
                self.describe(&format!("no element `{css}` ({e})")).await
            ),
        }
    }

    /// The first element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Some(element),
            Err(e) if e.is_no_such_element() => None,
            Err(e) => panic!("find `{css}`: {e}"),
        }
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find all `{css}`: {e}"))
    }

    /// The rendered text of the first element matching `css`; panics when there is none.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of `{css}`: {e}"))
    }

    /// The rendered text of the first element matching `css`, or `None` when there is none
    /// (or it went between the look-up and the read).
    pub async fn try_text(&self, css: &str) -> Option<String> {
        self.try_find(css).await?.text().await.ok()
    }

    /// The rendered text of the whole page (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        let text = self
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` as a function body (`arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run script {script:?}: {e}"))
    }

    /// Polls `condition` every ~100 ms until it holds; after `timeout` panics with `desc`, the
    /// URL and the page's text. The page is not reloaded: the condition sees what scripts did.
    ///
    /// `browser.wait_until("the counter to reach 2", DEFAULT_WAIT, async |b| b.text("#n").await == "2").await`
    pub async fn wait_until(
        &self,
        desc: &str,
        timeout: Duration,
        mut condition: impl AsyncFnMut(&Browser) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self).await {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}",
                    self.describe(&format!("timed out after {timeout:?} waiting for {desc}"))
                        .await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (up to [`DEFAULT_WAIT`]) until an element matches `css` and its text satisfies
    /// `predicate`, and returns that text.
    pub async fn wait_for_text(&self, css: &str, predicate: impl Fn(&str) -> bool) -> String {
        let mut seen = None;
        self.wait_until(
            &format!("the text of `{css}` to match"),
            DEFAULT_WAIT,
            async |b| match b.try_text(css).await {
                Some(text) if predicate(&text) => {
                    seen = Some(text);
                    true
                }
                _ => false,
            },
        )
        .await;
        seen.expect("the condition held")
    }

    /// Waits (up to [`DEFAULT_WAIT`]) until an element matches `css`, and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        let mut found = None;
        self.wait_until(&format!("an element `{css}`"), DEFAULT_WAIT, async |b| {
            found = b.try_find(css).await;
            found.is_some()
        })
        .await;
        found.expect("the condition held")
    }

    /// Replaces the value of the field matching `css` with `value`, typed as keys.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear `{css}`: {e}"));
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Submits the form matching `css` as a person would: clicks its first submit button, or
    /// (without one) `requestSubmit()`s it, so submit handlers and validation run either way.
    /// A navigation it starts has happened when this returns (chromedriver waits for it).
    pub async fn submit(&self, form_css: &str) {
        let form = self.find(form_css).await;
        let button = form
            .find(Locator::Css(
                "button[type=submit], button:not([type]), input[type=submit], input[type=image]",
            ))
            .await;
        match button {
            Ok(button) => button
                .click()
                .await
                .unwrap_or_else(|e| panic!("click the submit button of `{form_css}`: {e}")),
            Err(e) if e.is_no_such_element() => {
                let form = serde_json::to_value(&form).expect("element reference");
                self.execute("arguments[0].requestSubmit();", vec![form])
                    .await;
            }
            Err(e) => panic!("find the submit button of `{form_css}`: {e}"),
        }
    }

    /// Every `SEVERE` entry of the browser's console log since the browser started (uncaught
    /// exceptions, `console.error`, failed loads), as chromedriver words them:
    /// `"<url> <line>:<col> Uncaught Error: boom"`. See the module docs.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("read the browser log: {e}"));
        let mut errors = self.errors.lock().unwrap();
        for entry in entries.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                errors.push(
                    entry["message"]
                        .as_str()
                        .map_or_else(|| entry.to_string(), str::to_owned),
                );
            }
        }
        errors.clone()
    }

    /// Saves a PNG of the window at `path`, creating its directory.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The cookies of the current page's site, HttpOnly ones included.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client.get_all_cookies().await.expect("read cookies")
    }

    /// `what`, the URL and the page's text, for a panic message.
    async fn describe(&self, what: &str) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(no URL: {e})"),
        };
        let text = match self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
        {
            Ok(text) => text.as_str().unwrap_or_default().to_owned(),
            Err(e) => format!("(no text: {e})"),
        };
        format!("{what}\n  at {url}\n  page text:\n{text}")
    }
}

impl Drop for Browser {
    /// Ends the session so Chromium quits cleanly (a blocking `DELETE /session/{id}`: no
    /// runtime is needed, and drop may run while unwinding); then `driver` kills the rest.
    fn drop(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.session_id, self.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            // chromedriver answers once Chromium has quit (and may keep the connection open):
            // the first bytes of the answer are all there is to wait for.
            let mut answer = [0; 512];
            let _ = stream.read(&mut answer);
        }
    }
}
