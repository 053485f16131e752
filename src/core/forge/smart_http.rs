//! `git push` over the smart HTTP protocol, for remotes reached over HTTPS (GitHub).
//!
//! libgit2's own HTTPS transport needs OpenSSL, while Phoenix speaks TLS through rustls with
//! the ring provider only; and a custom libgit2 transport needs `unsafe`, which this crate
//! forbids. So git2 builds the pack and this module sends it: one `GET info/refs`, one
//! `POST git-receive-pack`, with the token sent once as Basic credentials. A refused token
//! fails at once instead of being offered again, and every ref's `ok`/`ng` line in the
//! server's report is checked.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use git2::{Oid, Repository};

use crate::core::forge::git::{PushError, RefSpec, Token};

const ZERO: &str = "0000000000000000000000000000000000000000";

fn protocol(url: &str, detail: impl Into<String>) -> PushError {
    PushError::Protocol {
        url: url.to_owned(),
        detail: detail.into(),
    }
}

/// Splits pkt-line data into its lines; flush packets are dropped.
pub fn pkt_lines(mut data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err("truncated pkt-line".to_owned());
        }
        let len = std::str::from_utf8(&data[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| "bad pkt-line length".to_owned())?;
        if len == 0 || len == 1 || len == 2 {
            data = &data[4..];
            continue;
        }
        if len < 4 || len > data.len() {
            return Err("bad pkt-line length".to_owned());
        }
        out.push(data[4..len].to_vec());
        data = &data[len..];
    }
    Ok(out)
}

fn pkt(line: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", line.len() + 4).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out
}

/// Remote refs and capabilities from a receive-pack advertisement.
fn parse_advertisement(body: &[u8]) -> Result<(HashMap<String, String>, Vec<String>), String> {
    let mut refs = HashMap::new();
    let mut caps = Vec::new();
    for (i, line) in pkt_lines(body)?.into_iter().enumerate() {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        if i == 0 && text.starts_with("# service=") {
            continue;
        }
        let (reference, extra) = match text.split_once('\0') {
            Some((r, c)) => (r, Some(c)),
            None => (text, None),
        };
        if let Some(c) = extra {
            caps = c.split_whitespace().map(str::to_owned).collect();
        }
        if let Some((sha, name)) = reference.split_once(' ')
            && sha != ZERO
        {
            refs.insert(name.to_owned(), sha.to_owned());
        }
    }
    Ok((refs, caps))
}

/// Pushes `specs` from the repository at `local` to the smart HTTP remote `url`.
pub async fn push(
    local: &Path,
    url: &str,
    specs: &[RefSpec],
    token: Option<&Token>,
    timeout: Duration,
) -> Result<(), PushError> {
    let url = url.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .user_agent(concat!("git/2.0 phoenix/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .build()
        .map_err(|e| protocol(url, e.to_string()))?;
    let auth = |req: reqwest::RequestBuilder| match token {
        Some(t) => req.basic_auth(&t.username, Some(&t.secret)),
        None => req,
    };
    let adv = auth(http.get(format!("{url}/info/refs?service=git-receive-pack")))
        .send()
        .await
        .map_err(|e| protocol(url, format!("cannot reach the remote: {e}")))?;
    check_status(url, adv.status())?;
    let body = adv
        .bytes()
        .await
        .map_err(|e| protocol(url, e.to_string()))?;
    let (remote, caps) = parse_advertisement(&body).map_err(|e| protocol(url, e))?;

    let (commands, pack) = {
        let repo = Repository::open(local).map_err(|source| PushError::Git {
            url: url.to_owned(),
            source,
        })?;
        plan(&repo, url, specs, &remote)?
    };
    if commands.is_empty() {
        return Ok(());
    }
    let mut request = Vec::new();
    for (i, (old, new, dst)) in commands.iter().enumerate() {
        let line = if i == 0 {
            let mut wanted = vec!["report-status"];
            if caps.iter().any(|c| c == "ofs-delta") {
                wanted.push("ofs-delta");
            }
            format!("{old} {new} {dst}\0{} agent=phoenix\n", wanted.join(" "))
        } else {
            format!("{old} {new} {dst}\n")
        };
        request.extend(pkt(&line));
    }
    request.extend_from_slice(b"0000");
    request.extend(pack);
    let resp = auth(http.post(format!("{url}/git-receive-pack")))
        .header("Content-Type", "application/x-git-receive-pack-request")
        .header("Accept", "application/x-git-receive-pack-result")
        .body(request)
        .send()
        .await
        .map_err(|e| protocol(url, format!("sending the pack: {e}")))?;
    check_status(url, resp.status())?;
    let report = resp
        .bytes()
        .await
        .map_err(|e| protocol(url, e.to_string()))?;
    check_report(url, &report, commands.iter().map(|(_, _, d)| d.as_str()))
}

fn check_status(url: &str, status: reqwest::StatusCode) -> Result<(), PushError> {
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(PushError::Auth {
            url: url.to_owned(),
        }),
        s => Err(protocol(url, format!("the remote answered HTTP {s}"))),
    }
}

type Command = (String, String, String);

/// The ref updates to send and the pack holding what the remote lacks.
fn plan(
    repo: &Repository,
    url: &str,
    specs: &[RefSpec],
    remote: &HashMap<String, String>,
) -> Result<(Vec<Command>, Vec<u8>), PushError> {
    let git = |source: git2::Error| PushError::Git {
        url: url.to_owned(),
        source,
    };
    let mut commands = Vec::new();
    let mut walk = repo.revwalk().map_err(git)?;
    for spec in specs {
        let new = repo.refname_to_id(&spec.src).map_err(git)?;
        let old = remote.get(&spec.dst).cloned();
        if old.as_deref() == Some(new.to_string().as_str()) {
            continue;
        }
        if let Some(old_sha) = &old
            && !spec.force
        {
            let fast_forward = Oid::from_str(old_sha)
                .ok()
                .filter(|o| repo.find_commit(*o).is_ok())
                .is_some_and(|o| repo.graph_descendant_of(new, o).unwrap_or(false));
            if !fast_forward {
                return Err(PushError::Rejected {
                    reference: spec.dst.clone(),
                    reason: "non-fast-forward (the remote has commits this push would drop)".into(),
                });
            }
        }
        walk.push(new).map_err(git)?;
        commands.push((
            old.unwrap_or_else(|| ZERO.to_owned()),
            new.to_string(),
            spec.dst.clone(),
        ));
    }
    for sha in remote.values() {
        if let Ok(oid) = Oid::from_str(sha)
            && repo.find_commit(oid).is_ok()
        {
            walk.hide(oid).map_err(git)?;
        }
    }
    let mut builder = repo.packbuilder().map_err(git)?;
    builder.insert_walk(&mut walk).map_err(git)?;
    let mut buf = git2::Buf::new();
    builder.write_buf(&mut buf).map_err(git)?;
    Ok((commands, buf.to_vec()))
}

/// Every pushed ref must come back `ok`.
fn check_report<'a>(
    url: &str,
    report: &[u8],
    refs: impl Iterator<Item = &'a str>,
) -> Result<(), PushError> {
    let lines = pkt_lines(report).map_err(|e| protocol(url, e))?;
    let mut ok = Vec::new();
    for line in &lines {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if let Some(status) = text.strip_prefix("unpack ") {
            if status != "ok" {
                return Err(protocol(
                    url,
                    format!("the remote could not unpack: {status}"),
                ));
            }
        } else if let Some(rest) = text.strip_prefix("ng ") {
            let (reference, reason) = rest.split_once(' ').unwrap_or((rest, "rejected"));
            return Err(PushError::Rejected {
                reference: reference.to_owned(),
                reason: reason.to_owned(),
            });
        } else if let Some(reference) = text.strip_prefix("ok ") {
            ok.push(reference.to_owned());
        }
    }
    for reference in refs {
        if !ok.iter().any(|r| r == reference) {
            return Err(PushError::Rejected {
                reference: reference.to_owned(),
                reason: "the remote did not confirm the update".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisements_and_reports_are_read() {
        let mut adv = pkt("# service=git-receive-pack\n");
        adv.extend_from_slice(b"0000");
        adv.extend(pkt(&format!(
            "{} refs/heads/main\0report-status ofs-delta\n",
            "a".repeat(40)
        )));
        adv.extend(pkt(&format!("{} refs/heads/dev\n", "b".repeat(40))));
        adv.extend_from_slice(b"0000");
        let (refs, caps) = parse_advertisement(&adv).unwrap();
        assert_eq!(refs["refs/heads/main"], "a".repeat(40));
        assert_eq!(refs.len(), 2);
        assert!(caps.contains(&"report-status".to_owned()));

        let mut report = pkt("unpack ok\n");
        report.extend(pkt("ok refs/heads/main\n"));
        report.extend(pkt("ng refs/heads/dev pre-receive hook declined\n"));
        report.extend_from_slice(b"0000");
        let err = check_report(
            "u",
            &report,
            ["refs/heads/main", "refs/heads/dev"].into_iter(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PushError::Rejected { reference, reason } if reference == "refs/heads/dev" && reason == "pre-receive hook declined"),
            "{err}"
        );
        let mut partial = pkt("unpack ok\n");
        partial.extend_from_slice(b"0000");
        assert!(check_report("u", &partial, ["refs/heads/main"].into_iter()).is_err());
    }
}
