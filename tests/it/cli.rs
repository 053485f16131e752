//! CLI behaviour as a user meets it: help, exit codes, generated files, and the real binary
//! serving and talking to itself.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::support::bin::phoenix;

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("phoenix runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn generated_completions_and_man_pages_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    let mut expected = Vec::new();
    for (name, body) in phoenix::cmd::completions::files() {
        expected.push(root.join("completions").join(name));
        let path = expected.last().unwrap();
        if std::fs::read(path).ok().as_deref() != Some(body.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    for (name, body) in phoenix::cmd::man::files().unwrap() {
        expected.push(root.join("man").join(name));
        let path = expected.last().unwrap();
        if std::fs::read(path).ok().as_deref() != Some(body.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    for dir in ["completions", "man"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if !expected.contains(&path) {
                stale.push(format!("{} (no longer generated)", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {stale:?}\nregenerate with: cargo run -- completions --out-dir completions && cargo run -- man --out-dir man"
    );
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path()).arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for line in [
        "3  server unreachable",
        "4  request rejected by the server (4xx)",
        "5  partial success",
    ] {
        assert!(help.contains(line), "{help}");
    }
    let out = run(phoenix(home.path()).arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(phoenix(home.path()).args(["ingest", "--kind", "k", "--payload", "{not json"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--payload is not valid JSON"),
        "{}",
        text(&out.stderr)
    );
    let out = run(phoenix(home.path()).args(["analyze", "--last-n", "0"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_collector_exits_3_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens there.
    let out = run(phoenix(home.path()).args([
        "analyze",
        "--url",
        "http://127.0.0.1:9",
        "--timeout",
        "2s",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach http://127.0.0.1:9/analyze"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn config_show_layers_sources_and_masks_secrets() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("phoenix.toml"),
        "[collector]\nretention_days = 30\n",
    )
    .unwrap();
    let out = run(phoenix(home.path())
        .args(["config", "show", "--json"])
        .env("TELEMETRIST_BIND", "127.0.0.1:7777")
        .env("OPENROUTER_API_KEY", "sk-or-v1-verysecretvalue"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |key: &str| {
        doc["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(find("collector.bind")["source"], "env");
    assert_eq!(find("collector.bind")["value"], "127.0.0.1:7777");
    assert_eq!(find("collector.retention_days")["source"], "file");
    assert_eq!(find("collector.url")["source"], "default");
    assert!(!text(&out.stdout).contains("verysecretvalue"));

    std::fs::write(
        home.path().join("phoenix.toml"),
        "[collector]\nretension_days = 30\n",
    )
    .unwrap();
    let out = run(phoenix(home.path()).args(["config", "show"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown key `collector.retension_days`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn non_loopback_bind_without_tokens_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = run(phoenix(home.path()).args(["serve", "collector", "--bind", "0.0.0.0:0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("without authentication"),
        "{}",
        text(&out.stderr)
    );
}

/// The real binary serving on an ephemeral port; stopped with SIGTERM.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(home: &Path, extra: &[&str]) -> Server {
        let mut child = phoenix(home)
            .args([
                "serve",
                "all",
                "--bind",
                "127.0.0.1:0",
                "--distributor-bind",
                "127.0.0.1:0",
                "--json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("announce line: {line:?}"));
        Server {
            child,
            url: event["url"].as_str().unwrap().to_owned(),
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

#[test]
fn the_binary_serves_ingests_analyzes_and_stops_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[]);
    let url = server.url.clone();

    let events = home.path().join("events.ndjson");
    let mut lines = String::new();
    for i in 0..30 {
        lines.push_str(&format!(
            "{{\"orch_id\":\"orch-{}\",\"agent_path\":\"code-gen/rust\",\"kind\":\"skill_execution\",\"level\":\"info\",\"payload\":{{\"response_time\":{}}}}}\n",
            i % 3,
            100 + i
        ));
    }
    lines.push_str("{\"kind\":\"broken\",\"ts_unix\":\"yesterday\"}\n");
    std::fs::write(&events, lines).unwrap();

    let out = run(phoenix(home.path())
        .args(["ingest", "--url", &url, "--file"])
        .arg(&events)
        .args(["--batch-size", "7", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(5),
        "one bad line of 31 is a partial success: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accepted"], 30);
    assert_eq!(report["rejected"], 1);
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .contains("line 31: field `ts_unix`"),
        "{report}"
    );

    let out = run(phoenix(home.path()).args([
        "ingest",
        "--url",
        &url,
        "--kind",
        "orch_heartbeat",
        "--orch-id",
        "orch-1",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(phoenix(home.path()).args([
        "analyze",
        "--url",
        &url,
        "--last-n",
        "500",
        "--focus",
        "performance",
        "--json",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let insight: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(insight["tier"], "free");
    assert_eq!(insight["clamped"], true);
    assert_eq!(insight["records_analyzed"], 31);
    assert_eq!(insight["source"], "heuristic");

    let out = run(phoenix(home.path()).args(["analyze", "--url", &url]));
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("response_time"),
        "{}",
        text(&out.stdout)
    );

    let out = run(phoenix(home.path()).args(["insights", "--url", &url, "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["count"], 2);

    let out = run(phoenix(home.path()).args([
        "telemetry",
        "query",
        "--url",
        &url,
        "--orch",
        "orch-1",
        "--json",
    ]));
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // orch-1 sent 10 skill records and one heartbeat; the raw id is never echoed back.
    assert_eq!(page["count"], 11);
    assert!(!text(&out.stdout).contains("\"orch-1\""));

    let out =
        run(phoenix(home.path()).args(["ingest", "--url", &url, "--kind", "x", "--level", "loud"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "invalid events are caught before sending"
    );

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM ends the server with exit 0, got {status:?}"
    );
}

#[test]
fn https_with_a_private_ca() {
    let home = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = home.path().join("cert.pem");
    let key = home.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        home.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    let out = run(phoenix(home.path())
        .args([
            "ingest",
            "--url",
            &server.url,
            "--kind",
            "tls_probe",
            "--ca-cert",
        ])
        .arg(&cert));
    assert!(
        out.status.success(),
        "trusted via --ca-cert: {}",
        text(&out.stderr)
    );

    // Without the CA the certificate is not trusted: the client cannot establish the channel.
    let out = run(phoenix(home.path()).args([
        "ingest",
        "--url",
        &server.url,
        "--kind",
        "tls_probe",
        "--retries",
        "0",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).to_lowercase().contains("certificate"),
        "{}",
        text(&out.stderr)
    );

    let plain = server.url.replace("https://", "http://");
    let out = run(phoenix(home.path()).args([
        "ingest",
        "--url",
        &plain,
        "--kind",
        "tls_probe",
        "--retries",
        "0",
        "--timeout",
        "3s",
    ]));
    assert_ne!(
        out.status.code(),
        Some(0),
        "plain HTTP to an HTTPS listener must fail"
    );
    assert!(server.stop().success());
}

/// `rust-version` is the newest any locked dependency needs (on this platform), and the
/// README's set-up names the same toolchain: a user on an older one gets cargo's clear
/// "requires rustc X" instead of a wall of compile errors.
#[test]
fn rust_version_covers_the_locked_dependencies_and_readme_names_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let host = text(
        &Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
            .arg("-vV")
            .output()
            .expect("rustc -vV")
            .stdout,
    );
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc names its host")
        .to_owned();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |s: &str| -> Vec<u64> {
        let mut v: Vec<u64> = s.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        v.resize(3, 0);
        v
    };
    let in_build: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let mut ours = None;
    let mut needed: Vec<(Vec<u64>, String)> = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        if p["name"] == "phoenix" {
            ours = Some(rv.to_owned());
        } else if in_build.contains(p["id"].as_str().unwrap()) {
            let name = p["name"].as_str().unwrap_or_default();
            let v = p["version"].as_str().unwrap_or_default();
            needed.push((version(rv), format!("{name} {v}")));
        }
    }
    let ours = ours.expect("Cargo.toml sets rust-version");
    needed.sort();
    let (newest, who) = needed.last().expect("dependencies declare rust-version");
    assert!(
        version(&ours) >= *newest,
        "rust-version {ours} is older than {who} needs ({newest:?})"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust toolchain ({ours}+")),
        "README's set-up must name rust-version {ours}"
    );
}

/// The certificate `openssl req -x509` makes carries `CA:TRUE`, which webpki refuses as a
/// server's own; given with `--ca-cert` it is pinned, as `curl --cacert` accepts it.
#[test]
fn a_self_signed_certificate_made_with_openssl_works_with_ca_cert() {
    let home = tempfile::tempdir().unwrap();
    let (cert, key) = (home.path().join("c.pem"), home.path().join("k.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        // No openssl here: the same kind of certificate (self-signed, CA:TRUE, IP SAN).
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pair = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, params.self_signed(&pair).unwrap().pem()).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        eprintln!("openssl is not available; testing an rcgen certificate of the same kind");
    }
    let server = Server::start(
        home.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let out = run(phoenix(home.path())
        .args([
            "ingest",
            "--url",
            &server.url,
            "--kind",
            "pinned",
            "--ca-cert",
        ])
        .arg(&cert));
    assert!(
        out.status.success(),
        "pinned via --ca-cert: {}",
        text(&out.stderr)
    );
    let out = run(phoenix(home.path())
        .args([
            "telemetry",
            "query",
            "--url",
            &server.url,
            "--json",
            "--ca-cert",
        ])
        .arg(&cert));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pinned"),
        "{}",
        text(&out.stdout)
    );
    assert!(server.stop().success());
}

/// Under `--json` a failure is still one JSON document on stdout, with the exit code in it.
#[test]
fn json_failures_are_one_document_on_stdout() {
    let home = tempfile::tempdir().unwrap();
    let doc = |args: &[&str]| {
        let out = run(phoenix(home.path()).args(args));
        let stdout = text(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout:?}"));
        assert_eq!(
            v["exit_code"].as_i64(),
            out.status.code().map(i64::from),
            "{v}"
        );
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        v
    };
    let v = doc(&[
        "--json",
        "analyze",
        "--url",
        "http://127.0.0.1:9",
        "--timeout",
        "2s",
    ]);
    assert_eq!(
        (v["error"].as_str(), v["exit_code"].as_i64()),
        (Some("unreachable"), Some(3))
    );
    let v = doc(&["--json", "ingest", "--no-such-flag"]);
    assert_eq!(
        (v["error"].as_str(), v["exit_code"].as_i64()),
        (Some("usage"), Some(2))
    );
    let v = doc(&["--json", "completions", "bash"]);
    assert_eq!(v["exit_code"], 2);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("--json does not apply"),
        "{v}"
    );
    let v = doc(&["--json", "man"]);
    assert_eq!(v["exit_code"], 2);

    // A refusal carries the server's code and status.
    let server = Server::start(home.path(), &[]);
    let v = doc(&[
        "--json",
        "ingest",
        "--url",
        &server.url,
        "--kind",
        "x",
        "--level",
        "loud",
    ]);
    assert_eq!(
        v["exit_code"], 2,
        "an invalid event given on the command line: {v}"
    );
    let long_focus = "f".repeat(300);
    let v = doc(&[
        "--json",
        "analyze",
        "--url",
        &server.url,
        "--focus",
        &long_focus,
    ]);
    assert_eq!(
        (
            v["error"].as_str(),
            v["status"].as_u64(),
            v["exit_code"].as_i64()
        ),
        (Some("invalid_request"), Some(400), Some(4)),
        "{v}"
    );
    assert!(server.stop().success());
}
