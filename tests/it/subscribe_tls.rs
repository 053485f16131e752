//! `phoenix subscribe` over wss:// and its heartbeats over https://, against the real binary
//! serving with a certificate issued by a private CA.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use phoenix::core::learning::LearningPipelineState;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::subscribe::subscribe_args;
use crate::support::bin::phoenix_async as phoenix;
/// Upper bound on any single wait.
const PATIENCE: Duration = Duration::from_secs(30);

async fn output(cmd: &mut Command) -> Output {
    tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("phoenix finishes in time")
        .expect("phoenix runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A private CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn private_ca(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Phoenix test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, server.pem()).unwrap();
    std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
    pki
}

/// `phoenix serve all` with TLS on both listeners.
struct Servers {
    child: Child,
    collector: String,
    /// `wss://…/subscribe`.
    distributor: String,
}

impl Servers {
    async fn start(home: &Path, pki: &Pki) -> Servers {
        let mut child = phoenix(home)
            .args([
                "serve",
                "all",
                "--bind",
                "127.0.0.1:0",
                "--distributor-bind",
                "127.0.0.1:0",
                "--json",
                "--tls-cert",
            ])
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut collector, mut distributor) = (None, None);
        while collector.is_none() || distributor.is_none() {
            let line = tokio::time::timeout(PATIENCE, lines.next_line())
                .await
                .expect("the servers announce themselves")
                .unwrap()
                .expect("an announce line");
            let event: Value = serde_json::from_str(&line).unwrap();
            let url = event["url"].as_str().unwrap().to_owned();
            match event["service"].as_str() {
                Some("collector") => collector = Some(url),
                Some("distributor") => distributor = Some(url),
                _ => panic!("unexpected announce line {line}"),
            }
        }
        let servers = Servers {
            child,
            collector: collector.unwrap(),
            distributor: distributor.unwrap(),
        };
        assert!(
            servers.distributor.starts_with("wss://127.0.0.1:"),
            "{}",
            servers.distributor
        );
        assert!(
            servers.collector.starts_with("https://127.0.0.1:"),
            "{}",
            servers.collector
        );
        servers
    }
}

fn assert_untrusted(out: &Output) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");
}

async fn kill_term(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
}

#[tokio::test]
async fn subscribe_over_wss_trusts_a_private_ca_given_with_ca_cert() {
    let home = tempfile::tempdir().unwrap();
    let pki = private_ca(home.path());
    let mut servers = Servers::start(home.path(), &pki).await;
    let state = home.path().join("agent/state.json");

    // Publishing over https:// needs the CA as well, and says so without it.
    let out = output(
        phoenix(home.path())
            .args(["publish", "prompt-tweak", "--prompt", "Be kind.", "--url"])
            .arg(&servers.distributor),
    )
    .await;
    assert_untrusted(&out);
    let out = output(
        phoenix(home.path())
            .args(["publish", "prompt-tweak", "--prompt", "Be kind.", "--json"])
            .arg("--url")
            .arg(&servers.distributor)
            .arg("--ca-cert")
            .arg(&pki.ca),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();

    let out = output(
        phoenix(home.path())
            .args(subscribe_args(&servers.distributor, &state))
            .args(["--once", "--json", "--ca-cert"])
            .arg(&pki.ca),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["update_id"], published["update_id"]);
    assert_eq!(report["status"], "applied");
    let saved: LearningPipelineState =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved.overrides.default_prompt.as_deref(), Some("Be kind."));
    assert_eq!(saved.last_seq, published["seq"].as_u64().unwrap());

    // PHOENIX_CA_CERT works as well as the flag; the running loop's heartbeats reach the
    // https:// collector with the same CA.
    let daemon = phoenix(home.path())
        .args(subscribe_args(&servers.distributor, &state))
        .args(["--heartbeat-interval", "1s", "--telemetrist-url"])
        .arg(&servers.collector)
        .env("PHOENIX_CA_CERT", &pki.ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out = output(
            phoenix(home.path())
                .args(["telemetry", "query", "--json", "--url"])
                .arg(&servers.collector)
                .arg("--ca-cert")
                .arg(&pki.ca),
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let page: Value = serde_json::from_slice(&out.stdout).unwrap();
        if page["count"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(page["records"][0]["kind"], "orch_heartbeat", "{page}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill_term(&daemon).await;
    let status = tokio::time::timeout(PATIENCE, daemon.wait_with_output())
        .await
        .unwrap()
        .unwrap()
        .status;
    assert!(status.success(), "SIGTERM ends the subscriber with exit 0");

    kill_term(&servers.child).await;
    let status = tokio::time::timeout(PATIENCE, servers.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn an_untrusted_distributor_certificate_stops_subscribe_with_exit_3() {
    let home = tempfile::tempdir().unwrap();
    let pki = private_ca(home.path());
    let servers = Servers::start(home.path(), &pki).await;
    let state = home.path().join("state.json");

    let out = output(
        phoenix(home.path())
            .args(subscribe_args(&servers.distributor, &state))
            .arg("--once"),
    )
    .await;
    assert_untrusted(&out);
    assert!(
        stderr(&out).contains(&servers.distributor),
        "{}",
        stderr(&out)
    );

    // Without --once the loop does not retry a certificate it will never trust: it stops.
    let out = output(
        phoenix(home.path())
            .args(subscribe_args(&servers.distributor, &state))
            .arg("--no-heartbeat"),
    )
    .await;
    assert_untrusted(&out);
    assert!(!stderr(&out).contains("reconnecting"), "{}", stderr(&out));

    // A CA file that cannot be used is a usage error, found before connecting.
    let missing = home.path().join("missing.pem");
    let out = output(
        phoenix(home.path())
            .args(subscribe_args(&servers.distributor, &state))
            .args(["--once", "--ca-cert"])
            .arg(&missing),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read CA certificate"),
        "{}",
        stderr(&out)
    );
    let out = output(
        phoenix(home.path())
            .args(subscribe_args(&servers.distributor, &state))
            .args(["--once", "--ca-cert"])
            .arg(&pki.key),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("contains no PEM CA certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!state.exists(), "nothing was applied");
}
