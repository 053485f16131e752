//! Where the Telemetrist finds completed conversations: a directory the agents (the seed's
//! Context Manager) write to. `*.json` files hold one conversation object, `*.jsonl` files
//! one per line; a conversation is taken only once it says `"ready_to_log": true`.
//!
//! Files are read as they are on disk at scan time. Text that is not JSON yet (a file still
//! being written, a last line without its end) is passed over quietly and looked at again
//! on the next scan; a complete, ready conversation that breaks the wire rules is reported.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core::telemetry::conversation::{Conversation, decode_conversation};

/// The flag a conversation carries once it is complete and may be logged.
pub const READY_FLAG: &str = "ready_to_log";

/// Why the source could not be scanned.
#[derive(Debug, thiserror::Error)]
#[error("conversation source {path}: {source}")]
pub struct Error {
    /// Directory or file.
    pub path: PathBuf,
    /// Cause.
    pub source: std::io::Error,
}

/// A conversation ready to be redacted and sent.
#[derive(Debug, Clone)]
pub struct Found {
    /// The conversation, validated, still with its personal data.
    pub conversation: Conversation,
    /// Where it was: `file` or `file:line`.
    pub origin: String,
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files looked at.
    pub files: usize,
    /// Ready conversations not known to the spool, in file-name and line order.
    pub ready: Vec<Found>,
    /// Conversations not flagged `ready_to_log: true` yet.
    pub not_ready: usize,
    /// Ready conversations already spooled, sent or quarantined.
    pub known: usize,
    /// Files or lines that are not JSON (yet): retried next scan.
    pub incomplete: Vec<String>,
    /// Ready conversations that break the wire rules: `origin: field: why`.
    pub invalid: Vec<String>,
}

/// Scans `dir` (not its subdirectories). `is_known(id)` says whether a conversation id is
/// already spooled, sent or quarantined; those are counted and not decoded again.
pub fn scan<E>(dir: &Path, mut is_known: impl FnMut(&str) -> Result<bool, E>) -> Result<Scan, E>
where
    E: From<Error>,
{
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(extension(p), Some("json" | "jsonl")) && p.is_file())
        .collect();
    files.sort();
    let mut scan = Scan::default();
    for path in files {
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            // Gone between listing and reading (moved away by its writer): next scan.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e).into()),
        };
        scan.files += 1;
        let name = path.display().to_string();
        if extension(&path) == Some("json") {
            consider(&text, 0, None, name, &mut scan, &mut is_known)?;
        } else {
            let complete_end = text.ends_with('\n');
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let last_unfinished = i + 1 == lines.len() && !complete_end;
                if last_unfinished && serde_json::from_str::<Value>(line).is_err() {
                    scan.incomplete.push(format!("{name}:{}", i + 1));
                    continue;
                }
                let origin = format!("{name}:{}", i + 1);
                consider(line, i, Some(i + 1), origin, &mut scan, &mut is_known)?;
            }
        }
    }
    Ok(scan)
}

/// Sorts one document into ready, not ready, known, incomplete or invalid.
fn consider<E>(
    text: &str,
    index: usize,
    line: Option<usize>,
    origin: String,
    scan: &mut Scan,
    is_known: &mut impl FnMut(&str) -> Result<bool, E>,
) -> Result<(), E> {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        tracing::debug!(%origin, "not JSON (yet); looking again next scan");
        scan.incomplete.push(origin);
        return Ok(());
    };
    if doc.get(READY_FLAG) != Some(&Value::Bool(true)) {
        scan.not_ready += 1;
        return Ok(());
    }
    if let Some(id) = doc.get("conversation_id").and_then(Value::as_str)
        && is_known(id)?
    {
        scan.known += 1;
        return Ok(());
    }
    match decode_conversation(text, index, line) {
        Ok(conversation) => scan.ready.push(Found {
            conversation,
            origin,
        }),
        Err(e) => scan
            .invalid
            .push(format!("{origin}: field `{}`: {}", e.field, e.message)),
    }
    Ok(())
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(id: &str, ready: bool) -> String {
        format!(
            r#"{{"conversation_id":"{id}","ready_to_log":{ready},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    }

    fn scan_ok(dir: &Path, known: &[&str]) -> Scan {
        scan::<Error>(dir, |id| Ok(known.contains(&id))).unwrap()
    }

    fn ready_ids(s: &Scan) -> Vec<&str> {
        s.ready
            .iter()
            .map(|f| f.conversation.conversation_id.as_str())
            .collect()
    }

    #[test]
    fn only_ready_conversations_not_known_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.json"), conv("a", true)).unwrap();
        std::fs::write(d.join("b.json"), conv("b", false)).unwrap();
        std::fs::write(
            d.join("c.jsonl"),
            format!(
                "{}\n\n{}\n{}\n",
                conv("c1", true),
                conv("c2", false),
                conv("c3", true)
            ),
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), conv("x", true)).unwrap();
        std::fs::create_dir(d.join("sub.json")).unwrap();
        let s = scan_ok(d, &["c3"]);
        assert_eq!(ready_ids(&s), ["a", "c1"]);
        assert_eq!((s.files, s.not_ready, s.known), (3, 2, 1));
        assert_eq!(
            s.ready[1].origin,
            format!("{}:1", d.join("c.jsonl").display())
        );
        assert!(s.incomplete.is_empty() && s.invalid.is_empty());
    }

    #[test]
    fn half_written_files_wait_and_broken_conversations_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let whole = conv("h", true);
        std::fs::write(d.join("h.json"), &whole[..whole.len() / 2]).unwrap();
        let line = conv("l2", true);
        std::fs::write(
            d.join("l.jsonl"),
            format!("{}\n{}", conv("l1", true), &line[..20]),
        )
        .unwrap();
        std::fs::write(
            d.join("z.json"),
            r#"{"conversation_id":"z","ready_to_log":true,"messages":[]}"#,
        )
        .unwrap();
        let s = scan_ok(d, &[]);
        assert_eq!(ready_ids(&s), ["l1"]);
        assert_eq!(s.incomplete.len(), 2, "{:?}", s.incomplete);
        assert_eq!(s.invalid.len(), 1);
        assert!(s.invalid[0].contains("field `messages`"), "{:?}", s.invalid);

        std::fs::write(d.join("h.json"), &whole).unwrap();
        std::fs::write(d.join("l.jsonl"), format!("{}\n{line}\n", conv("l1", true))).unwrap();
        let s = scan_ok(d, &["l1"]);
        assert_eq!(ready_ids(&s), ["h", "l2"]);
        assert!(s.incomplete.is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err =
            scan::<Error>(Path::new("/nonexistent/conversations"), |_| Ok(false)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/conversations"));
    }
}
