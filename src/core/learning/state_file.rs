//! The state file: JSON, replaced atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old state or the new one, never half of each.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Error;
use super::state::{LearningPipelineState, STATE_FORMAT};

/// `<data_dir>/learning/<orch id>.json`, with the id made safe as a file name.
pub fn default_path(data_dir: &Path, orch_id: &str) -> PathBuf {
    data_dir
        .join("learning")
        .join(format!("{}.json", file_stem(orch_id)))
}

/// The orch id itself when it is a plain file name; otherwise a cleaned version plus a
/// short hash of the original, so two ids never share a file.
fn file_stem(orch_id: &str) -> String {
    let clean: String = orch_id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == orch_id && !clean.starts_with('.') && !clean.is_empty() {
        return clean;
    }
    let digest = Sha256::digest(orch_id.as_bytes());
    format!(
        "{}-{}",
        clean.trim_start_matches('.'),
        hex::encode(&digest[..4])
    )
}

/// Reads a state file; `None` when it does not exist.
pub fn load(path: &Path) -> Result<Option<LearningPipelineState>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateIo {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |message: String| Error::CorruptState {
        path: path.to_owned(),
        message,
    };
    let state: LearningPipelineState =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.format > STATE_FORMAT {
        return Err(corrupt(format!(
            "format {} was written by a newer phoenix (this one reads format {STATE_FORMAT})",
            state.format
        )));
    }
    Ok(Some(state))
}

/// The state for `orch_id` at `agent_path`: the file's, or a fresh one when there is no
/// file. A file that belongs to another orch or path is an error, not something to reuse.
pub fn load_for(
    path: &Path,
    orch_id: &str,
    agent_path: &str,
) -> Result<LearningPipelineState, Error> {
    match load(path)? {
        None => Ok(LearningPipelineState::new(orch_id, agent_path)),
        Some(s) if s.orch_id == orch_id && s.agent_path == agent_path => Ok(s),
        Some(s) => Err(Error::StateMismatch {
            path: path.to_owned(),
            found: format!("{} at {}", s.orch_id, s.agent_path),
            wanted: format!("{orch_id} at {agent_path}"),
        }),
    }
}

/// Replaces the state file atomically and durably.
pub fn save(path: &Path, state: &LearningPipelineState) -> Result<(), Error> {
    write(path, &encode(state))
}

/// The state file's content for `state` (pretty JSON, as `--exec` hooks also receive it).
pub fn encode(state: &LearningPipelineState) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).expect("the state is plain JSON");
    bytes.push(b'\n');
    bytes
}

/// Replaces the state file with `bytes` (from [`encode`]) atomically and durably.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes).map_err(|source| Error::StateIo {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shared::tier::Tier;
    use crate::core::updates::protocol::AckStatus;
    use crate::core::updates::{Audience, UpdateEnvelope, UpdateType};
    use serde_json::json;

    #[test]
    fn file_names_are_safe_and_distinct() {
        let dir = Path::new("/data");
        assert_eq!(
            default_path(dir, "orch-1"),
            PathBuf::from("/data/learning/orch-1.json")
        );
        let a = default_path(dir, "a/b");
        let b = default_path(dir, "a_b");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/data/learning")));
        for odd in ["../../etc/passwd", "..", "", "ørch 1"] {
            let p = default_path(dir, odd);
            assert_eq!(p.parent(), Some(Path::new("/data/learning")), "{odd}");
            assert!(
                !p.file_name().unwrap().to_string_lossy().starts_with('.'),
                "{odd}"
            );
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut state = load_for(&path, "orch-1", "code-gen/rust").unwrap();
        let update = UpdateEnvelope {
            update_id: "u1".into(),
            seq: 7,
            ts_unix: 1,
            target_orch: None,
            target_agent_prefix: None,
            cascade: true,
            update_type: UpdateType::YamlGraft,
            tier_required: Tier::Free,
            payload: json!({"yaml": "a: {b: 1}\n"}),
            rollout_percent: None,
        };
        let who = Audience {
            orch_id: Some("orch-1"),
            orch_hash: "orch_x",
            agent_path: "code-gen/rust",
            tier: Tier::Free,
        };
        assert_eq!(state.apply(&update, &who).status, AckStatus::Applied);
        save(&path, &state).unwrap();
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state.clone()));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(text["config_json"], json!({"a": {"b": 1}}));
        assert_eq!(text["last_seq"], 7);
        assert_eq!(
            text["overrides"],
            json!({"default_prompt": null, "default_model": null})
        );
        // Another orch's file is not reused.
        let err = load_for(&path, "orch-2", "code-gen/rust").unwrap_err();
        assert!(matches!(err, Error::StateMismatch { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for garbage in [
            "{\"format\": 1, \"orch_id\": ",
            "[]",
            "{\"format\": 99, \"orch_id\": \"o\", \"agent_path\": \"a\", \"overrides\": {}, \"config_json\": {}}",
        ] {
            std::fs::write(&path, garbage).unwrap();
            let err = load_for(&path, "o", "a").unwrap_err();
            assert!(matches!(err, Error::CorruptState { .. }), "{err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), garbage);
        }
    }
}
