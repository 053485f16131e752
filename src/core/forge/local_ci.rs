//! CI of the local forge: check out a commit into a fresh directory, run the repository's
//! test command there with a time limit, and record the verdict and the log beside the
//! repository so a commit is tested once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::write_atomic;
use super::{Check, CiReport, CiState, Error};
use crate::core::forge::git;

/// Used when neither the settings nor `agent.json` name a test command.
pub const DEFAULT_TEST_COMMAND: &str = "cargo test --offline";
/// Lines of output kept in a failure summary.
const SUMMARY_LINES: usize = 30;

/// The stored result of one CI run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CiRecord {
    /// Commit tested.
    pub sha: String,
    /// Verdict.
    pub state: CiState,
    /// Command run (with `sh -c`).
    pub command: String,
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Run time.
    pub duration_ms: u64,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
    /// Tail of the output.
    pub summary: String,
}

impl CiRecord {
    fn report(&self) -> CiReport {
        CiReport {
            sha: self.sha.clone(),
            state: self.state,
            checks: vec![Check {
                name: format!("local: {}", self.command),
                state: self.state,
                details: Some(self.log.display().to_string()),
            }],
            summary: self.summary.clone(),
        }
    }
}

/// The recorded result for `sha`, if CI ran on it.
pub fn recorded(ci_dir: &Path, sha: &str) -> Option<CiReport> {
    read_record(ci_dir, sha).map(|r| r.report())
}

fn read_record(ci_dir: &Path, sha: &str) -> Option<CiRecord> {
    let text = std::fs::read(ci_dir.join(format!("{sha}.json"))).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Runs CI on `sha` of the bare repository `bare`, unless a result for the same command is
/// recorded already.
/// A run that does not finish within `budget` is killed and reported as pending (nothing
/// is recorded, so a later, longer wait runs it again).
pub async fn run(
    bare: &Path,
    ci_dir: &Path,
    sha: &str,
    command_override: Option<&str>,
    budget: Duration,
) -> Result<CiReport, Error> {
    let checkout = tempfile::Builder::new()
        .prefix("phoenix-ci-")
        .tempdir()
        .map_err(Error::io("creating a CI checkout directory"))?;
    let command = {
        let repo = git2::Repository::open_bare(bare)?;
        let oid = git2::Oid::from_str(sha)?;
        let command = match command_override {
            Some(c) => c.to_owned(),
            None => git::read_file(&repo, oid, "agent.json")?
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("test_command")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_TEST_COMMAND.to_owned()),
        };
        // A commit is tested once per command: a recorded verdict stands until the command
        // changes.
        if let Some(record) = read_record(ci_dir, sha).filter(|r| r.command == command) {
            return Ok(record.report());
        }
        let commit = repo.find_commit(oid)?;
        let mut opts = git2::build::CheckoutBuilder::new();
        opts.target_dir(checkout.path())
            .force()
            .recreate_missing(true);
        repo.checkout_tree(commit.as_object(), Some(&mut opts))?;
        command
    };
    tracing::info!(sha, command, dir = %checkout.path().display(), "running local CI");
    let started = Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(checkout.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io(format!("starting CI command `{command}`")))?;
    let output = match tokio::time::timeout(budget, child.wait_with_output()).await {
        Ok(out) => out.map_err(Error::io(format!("running CI command `{command}`")))?,
        Err(_) => {
            return Ok(CiReport {
                sha: sha.to_owned(),
                state: CiState::Pending,
                checks: Vec::new(),
                summary: format!(
                    "`{command}` did not finish within {}",
                    humantime::format_duration(budget)
                ),
            });
        }
    };
    let mut log = output.stdout;
    log.extend_from_slice(&output.stderr);
    let log_path = ci_dir.join(format!("{sha}.log"));
    write_atomic(&log_path, &log)?;
    let state = if output.status.success() {
        CiState::Success
    } else {
        CiState::Failure
    };
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(SUMMARY_LINES)..].join("\n");
    let summary = match state {
        CiState::Success => format!("`{command}` passed"),
        _ => format!(
            "`{command}` failed ({}):\n{tail}",
            output
                .status
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "killed".to_owned())
        ),
    };
    let record = CiRecord {
        sha: sha.to_owned(),
        state,
        command,
        exit_code: output.status.code(),
        duration_ms: started.elapsed().as_millis() as u64,
        log: log_path,
        summary,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Io {
        context: "encoding the CI record".to_owned(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&ci_dir.join(format!("{sha}.json")), &json)?;
    Ok(record.report())
}
