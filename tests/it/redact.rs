//! `phoenix redact` as a user runs it: text and chat messages in, pseudonyms out, the vault
//! file on disk, reveal with the right key, a clear error with the wrong one.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::bin::phoenix;

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phoenix starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("phoenix runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CHAT: &str = "Hi, I'm Dan Johnson from Globex GmbH. Mail dan.johnson@globex.example or call +44 20 7946 0958.\nCard 4111 1111 1111 1111, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t.\nDan will send it on 2024-03-15 (order 415-555-0132).\n";

#[test]
fn redact_then_reveal_round_trips_through_the_vault() {
    let home = tempfile::tempdir().unwrap();
    let out = run_with_stdin(
        phoenix(home.path()).args(["redact", "--session", "s1", "-"]),
        CHAT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let red = text(&out.stdout);
    assert_eq!(
        red,
        "Hi, I'm USER_A from ORG_ID_A. Mail USER_A_EMAIL or call PHONE_1.\nCard CARD_1, key SECRET_1.\nUSER_A will send it on 2024-03-15 (order 415-555-0132).\n"
    );
    let summary = text(&out.stderr);
    assert!(summary.contains("session s1: replaced 7"), "{summary}");
    for leaked in ["Johnson", "4111", "7946", "sk-proj"] {
        assert!(!red.contains(leaked), "{leaked} leaked");
    }

    // The vault holds no plaintext, and its key file is private.
    let data = home.path().join("data");
    let vault = std::fs::read(data.join("vault.db")).unwrap();
    assert!(!vault.windows(7).any(|w| w == b"Johnson"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("vault.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A later run in the same session keeps the pseudonyms.
    let again = run_with_stdin(
        phoenix(home.path()).args(["redact", "--session", "s1", "--json"]),
        "Dan again, and Priya Patel.",
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(doc["text"], "USER_A again, and USER_B.");
    assert_eq!(doc["replaced"]["person"], 2);
    assert_eq!(doc["session"], "s1");

    let back = run_with_stdin(
        phoenix(home.path()).args(["redact", "--reveal", "--session", "s1"]),
        &red,
    );
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(
        text(&back.stdout),
        CHAT.replacen("\nDan will", "\nDan Johnson will", 1),
        "reveal gives each person's full name"
    );
}

#[test]
fn a_long_text_is_redacted_as_a_stream_with_one_sessions_pseudonyms_and_reveals_back() {
    let home = tempfile::tempdir().unwrap();
    // Several pieces of the stream (64 KiB each), the person named in the first only.
    let mut input = String::from("Hi, I'm Dan Johnson; mail dan.johnson@globex.example.\n\n");
    for i in 0..6000 {
        input.push_str(&format!(
            "line {i}: dan says the build {i} is green, ask Dan.\n"
        ));
    }
    let file = home.path().join("day.log");
    std::fs::write(&file, &input).unwrap();
    let out = phoenix(home.path())
        .args(["redact", "--session", "long"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let red = text(&out.stdout);
    assert!(input.len() > 4 * 64 * 1024);
    assert_eq!(red.lines().count(), input.lines().count());
    assert!(
        red.starts_with("Hi, I'm USER_A; mail USER_A_EMAIL.\n"),
        "{}",
        &red[..80]
    );
    assert!(
        red.ends_with("line 5999: USER_A says the build 5999 is green, ask USER_A.\n"),
        "the last piece still knows the first piece's person"
    );
    assert!(!red.to_lowercase().contains("dan"));
    let back = run_with_stdin(
        phoenix(home.path()).args(["redact", "--reveal", "--session", "long", "-"]),
        &red,
    );
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert!(
        text(&back.stdout).starts_with("Hi, I'm Dan Johnson; mail dan.johnson@globex.example.")
    );
}

#[test]
fn input_that_is_not_utf8_is_refused_and_prints_nothing() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("binary.bin");
    std::fs::write(&file, b"Dan Johnson\n\xff\xfe\x00garbage\n").unwrap();
    let out = phoenix(home.path())
        .args(["redact", "--session", "bin"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing half-redacted is printed");
    let err = text(&out.stderr);
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn wrong_key_is_a_clear_failure_and_reveal_needs_a_session() {
    let home = tempfile::tempdir().unwrap();
    let key_a = "11".repeat(32);
    let out = run_with_stdin(
        phoenix(home.path())
            .env("PHOENIX_VAULT_KEY", &key_a)
            .args(["redact", "--session", "k"]),
        "mail me at a.b@example.com",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !home.path().join("data/vault.key").exists(),
        "env key: no key file"
    );

    let wrong = run_with_stdin(
        phoenix(home.path())
            .env("PHOENIX_VAULT_KEY", "22".repeat(32))
            .args(["redact", "--reveal", "--session", "k"]),
        "EMAIL_1",
    );
    assert_eq!(wrong.status.code(), Some(1));
    let err = text(&wrong.stderr);
    assert!(
        err.contains("the vault key does not match the one this vault was created with"),
        "{err}"
    );
    assert!(wrong.stdout.is_empty(), "nothing revealed with a wrong key");

    let malformed = run_with_stdin(
        phoenix(home.path())
            .env("PHOENIX_VAULT_KEY", "not-a-key")
            .args(["redact", "--session", "k"]),
        "x",
    );
    assert_eq!(malformed.status.code(), Some(1));
    assert!(text(&malformed.stderr).contains("64 hex characters or base64"));

    let no_session = run_with_stdin(phoenix(home.path()).args(["redact", "--reveal"]), "x");
    assert_eq!(no_session.status.code(), Some(2));
}

#[test]
fn chat_messages_with_tool_calls_keep_their_shape() {
    let home = tempfile::tempdir().unwrap();
    let doc = serde_json::json!({"messages": [
        {"role": "user", "content": "I'm Sarah Miller, my IBAN is DE89 3704 0044 0532 0130 00"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "pay", "arguments": "{\"iban\":\"DE89370400440532013000\",\"payee\":\"Sarah Miller\",\"note\":\"for Sarah\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\":true,\"ip\":\"203.0.113.7\"}"}
    ]});
    let out = run_with_stdin(
        phoenix(home.path()).args(["redact", "--format", "messages", "--json", "--session", "m"]),
        &doc.to_string(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ms = &v["messages"]["messages"];
    assert_eq!(ms[0]["content"], "I'm USER_A, my IBAN is IBAN_1");
    let args: serde_json::Value = serde_json::from_str(
        ms[1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        args,
        serde_json::json!({"iban": "IBAN_1", "payee": "USER_A", "note": "for USER_A"})
    );
    let result: serde_json::Value =
        serde_json::from_str(ms[2]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result, serde_json::json!({"ok": true, "ip": "IP_1"}));
    assert_eq!(v["replaced"]["iban"], 2);

    let bad = run_with_stdin(
        phoenix(home.path()).args(["redact", "--format", "messages"]),
        "not json at all",
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[test]
fn revealing_messages_restores_every_string() {
    let home = tempfile::tempdir().unwrap();
    let doc = serde_json::json!([
        {"role": "user", "content": "call me on +1 415 555 0132, Priya Patel"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "dial", "arguments": "{\"phone\":\"+1 415 555 0132\"}"}}]}
    ]);
    let red = run_with_stdin(
        phoenix(home.path()).args(["redact", "--format", "messages", "--session", "r"]),
        &doc.to_string(),
    );
    assert!(red.status.success(), "{}", text(&red.stderr));
    let redacted = text(&red.stdout);
    assert!(
        !redacted.contains("555") && !redacted.contains("Priya"),
        "{redacted}"
    );
    let back = run_with_stdin(
        phoenix(home.path()).args([
            "redact",
            "--reveal",
            "--format",
            "messages",
            "--session",
            "r",
            "--json",
        ]),
        &redacted,
    );
    assert!(back.status.success(), "{}", text(&back.stderr));
    let v: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(v["messages"], doc);
    assert_eq!(v["revealed"], 3);
}

#[test]
fn vault_settings_show_in_config_with_the_key_masked() {
    let home = tempfile::tempdir().unwrap();
    let key = "ab".repeat(32);
    let out = phoenix(home.path())
        .env("PHOENIX_VAULT_KEY", &key)
        .args(["--json", "config", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("PHOENIX_VAULT_KEY_FILE") && shown.contains("pii.vault_path"),
        "{shown}"
    );
    assert!(!shown.contains(&key), "the vault key is masked");
}
