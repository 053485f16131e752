//! Telemetry hooks of the Phoenix agent template: `log_telemetry()` sends one envelope to the
//! Vital Pulse collector at `$TELEMETRIST_URL/ingest`.
//!
//! Standard library only, so the agent builds offline: a plain HTTP/1.1 POST over
//! `std::net`. Telemetry never stops the agent: failures are reported on stderr and dropped.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The agent's name, sent as `agent_path`.
pub const AGENT_NAME: &str = "{{name}}";
/// How long one telemetry POST may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `{orch_id?, agent_path, ts_unix, kind, level, tags, payload}` to the telemetrist
/// named by `TELEMETRIST_URL`; does nothing when it is unset.
pub fn log_telemetry(kind: &str, level: &str, payload: &[(&str, &str)]) {
    let Ok(url) = std::env::var("TELEMETRIST_URL") else {
        return;
    };
    if url.trim().is_empty() {
        return;
    }
    let orch_id = std::env::var("PHOENIX_ORCH_ID").ok();
    let body = envelope(orch_id.as_deref(), kind, level, payload, now_unix());
    if let Err(e) = post(&url, "/ingest", &body) {
        eprintln!("telemetry: not sent to {url}: {e}");
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The seed's `TelemetryEnvelope` as JSON text.
pub fn envelope(
    orch_id: Option<&str>,
    kind: &str,
    level: &str,
    payload: &[(&str, &str)],
    ts_unix: u64,
) -> String {
    let mut out = String::from("{");
    if let Some(id) = orch_id {
        out.push_str(&format!("\"orch_id\":{},", json_string(id)));
    }
    out.push_str(&format!(
        "\"agent_path\":{},\"ts_unix\":{ts_unix},\"kind\":{},\"level\":{},\"tags\":[\"agent\",{}],\"payload\":{{",
        json_string(AGENT_NAME),
        json_string(kind),
        json_string(level),
        json_string(AGENT_NAME)
    ));
    let fields: Vec<String> = payload
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    out.push_str(&fields.join(","));
    out.push_str("}}");
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `http://host[:port][/base]` split into the address and the path prefix.
pub fn parse_http_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .trim()
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported by the template agent".to_owned())?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    let host = authority.to_owned();
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, host, base.to_owned()))
}

fn post(url: &str, path: &str, body: &str) -> Result<(), String> {
    let (addr, host, base) = parse_http_url(url)?;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr} does not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!(
        "POST {base}{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("the telemetrist answered HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn envelope_is_escaped_json_with_the_seed_fields() {
        let e = envelope(Some("orch-1"), "agent_boot", "info", &[("note", "say \"hi\"\n")], 42);
        assert!(e.starts_with("{\"orch_id\":\"orch-1\",\"agent_path\":"));
        assert!(e.contains("\"ts_unix\":42,\"kind\":\"agent_boot\",\"level\":\"info\""));
        assert!(e.contains("\"note\":\"say \\\"hi\\\"\\n\""));
        assert!(e.ends_with("}}"));
    }

    #[test]
    fn urls_are_split_and_https_is_refused() {
        let (addr, host, base) = parse_http_url("http://127.0.0.1:5002/").unwrap();
        assert_eq!((addr.as_str(), host.as_str(), base.as_str()), ("127.0.0.1:5002", "127.0.0.1:5002", ""));
        let (addr, _, base) = parse_http_url("http://collector/api").unwrap();
        assert_eq!((addr.as_str(), base.as_str()), ("collector:80", "/api"));
        assert!(parse_http_url("https://collector").is_err());
    }

    #[test]
    fn telemetry_is_posted_to_ingest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&received).ends_with("}}") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
            String::from_utf8(received).unwrap()
        });
        post(&url, "/ingest", &envelope(None, "agent_boot", "info", &[], 1)).unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /ingest HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\"kind\":\"agent_boot\""), "{request}");
    }
}
