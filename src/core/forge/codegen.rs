//! Agent code generation: the description goes to the LLM, the answer becomes
//! `src/generated.rs`, and the crate's own `cargo test` decides whether it is good. Compiler
//! errors and failing tests go back to the LLM for a bounded number of repairs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::shared::llm::{self, ChatRequest, LlmClient, Message};

/// Most characters of `cargo test` output sent back to the LLM.
const FEEDBACK_LIMIT: usize = 6000;
/// Longest a scaffold's `cargo test` may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// What the LLM is asked to write.
pub const SYSTEM_PROMPT: &str = "You write the behaviour module of a small Rust command-line agent. \
Reply with the complete contents of `src/generated.rs` in one ```rust code block and nothing else.\n\
Contract:\n\
- define `pub fn run(input: &str) -> String`: the agent's answer to one input;\n\
- the standard library only: no external crates, no `unsafe`, no network or file access;\n\
- include `#[cfg(test)] mod tests` with at least two unit tests of `run`;\n\
- it is a module of a binary crate (edition 2021) whose main.rs declares `mod generated;`.";

/// One `cargo test` of a scaffold.
#[derive(Debug, Clone, Serialize)]
pub struct TestRun {
    /// The command.
    pub command: String,
    /// Whether it exited 0.
    pub passed: bool,
    /// The `test result:` lines (or the first error when it did not compile).
    pub summary: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Combined output, cut to the part worth reading.
    #[serde(skip)]
    pub output: String,
}

/// Why no usable code came out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The LLM could not be asked.
    #[error("asking the LLM for the agent's code: {0}")]
    Llm(#[from] llm::Error),
    /// Every generation failed its check.
    #[error(
        "the generated code still fails `cargo test` after {attempts} generation(s):\n{errors}"
    )]
    StillFailing {
        /// Generations made.
        attempts: u32,
        /// The last compiler or test errors.
        errors: String,
    },
    /// `cargo` could not be run.
    #[error("running `cargo test` in {dir}: {source}")]
    Cargo {
        /// Directory.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Accepted code.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `src/generated.rs`.
    pub code: String,
    /// The model that wrote it.
    pub model: String,
    /// Generations made.
    pub attempts: u32,
    /// The passing test run.
    pub tests: TestRun,
}

/// The code inside the first fenced block of an answer, or the whole answer.
pub fn extract_code(answer: &str) -> String {
    let Some(start) = answer.find("```") else {
        return answer.trim().to_owned();
    };
    let after = &answer[start + 3..];
    let body = after.split_once('\n').map(|(_, b)| b).unwrap_or("");
    match body.find("```") {
        Some(end) => body[..end].trim_end().to_owned(),
        None => body.trim_end().to_owned(),
    }
}

/// Asks for code, checks it with `check`, and repairs up to `max_repairs` times.
/// `check` writes the candidate into the scaffold (recording the attempt number) and runs
/// its tests.
pub async fn generate<C>(
    llm: &LlmClient,
    name: &str,
    description: &str,
    max_repairs: u32,
    mut check: C,
    progress: &dyn Fn(&str),
) -> Result<Generation, Error>
where
    C: AsyncFnMut(&str, &str, u32) -> Result<TestRun, Error>,
{
    let mut messages = vec![
        Message::system(SYSTEM_PROMPT),
        Message::user(format!(
            "Agent name: {name}\nDescription: {}",
            description.trim()
        )),
    ];
    let mut attempts = 0;
    loop {
        attempts += 1;
        progress(&format!(
            "asking {} for src/generated.rs (generation {attempts})",
            llm.model()
        ));
        let answer = llm
            .chat(ChatRequest::new(messages.clone()).with_temperature(0.2))
            .await?;
        let code = extract_code(&answer.content);
        let failure = if !code.contains("pub fn run") {
            "the answer does not define `pub fn run(input: &str) -> String`".to_owned()
        } else {
            progress("running cargo test on the generated code");
            let run = check(&code, &answer.model, attempts).await?;
            if run.passed {
                return Ok(Generation {
                    code,
                    model: answer.model,
                    attempts,
                    tests: run,
                });
            }
            run.output
        };
        if attempts > max_repairs {
            return Err(Error::StillFailing {
                attempts,
                errors: failure,
            });
        }
        progress(&format!(
            "generation {attempts} failed; sending the errors back"
        ));
        messages.push(Message::assistant(answer.content));
        messages.push(Message::user(format!(
            "`cargo test` failed with that src/generated.rs:\n```\n{}\n```\nReply with the corrected, complete src/generated.rs in one ```rust code block.",
            shorten(&failure, FEEDBACK_LIMIT)
        )));
    }
}

/// Runs `cargo test --offline` in `dir` (short compiler messages, no colour).
pub async fn cargo_test(dir: &Path, timeout: Duration) -> Result<TestRun, Error> {
    let command = "cargo test --offline --message-format short";
    let started = Instant::now();
    let child = tokio::process::Command::new("cargo")
        .args(["test", "--offline", "--message-format", "short"])
        .current_dir(dir)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Cargo {
            dir: dir.display().to_string(),
            source,
        })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|source| Error::Cargo {
            dir: dir.display().to_string(),
            source,
        })?,
        Err(_) => {
            return Ok(TestRun {
                command: command.to_owned(),
                passed: false,
                summary: format!("timed out after {}", humantime::format_duration(timeout)),
                duration_ms: started.elapsed().as_millis() as u64,
                output: String::new(),
            });
        }
    };
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    let passed = out.status.success();
    let results: Vec<&str> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("test result:"))
        .map(str::trim)
        .collect();
    let summary = if !results.is_empty() {
        results.join("; ")
    } else {
        output
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("cargo test failed")
            .trim()
            .to_owned()
    };
    Ok(TestRun {
        command: command.to_owned(),
        passed,
        summary,
        duration_ms: started.elapsed().as_millis() as u64,
        output: relevant_output(&output),
    })
}

/// Compiler diagnostics and test failures, without the progress lines around them.
fn relevant_output(output: &str) -> String {
    let kept: Vec<&str> = output
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("Compiling")
                || t.starts_with("Finished")
                || t.starts_with("Running")
                || t.starts_with("Blocking")
                || t.starts_with("Doc-tests"))
        })
        .collect();
    kept.join("\n")
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}\n… (cut)", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_taken_from_the_first_fence() {
        assert_eq!(
            extract_code("Here:\n```rust\npub fn run(i: &str) -> String { i.into() }\n```\nDone"),
            "pub fn run(i: &str) -> String { i.into() }"
        );
        assert_eq!(extract_code("```\nfn a() {}\n"), "fn a() {}");
        assert_eq!(extract_code("  fn b() {}  "), "fn b() {}");
    }

    #[test]
    fn progress_lines_are_dropped_from_feedback() {
        let out = "   Compiling x v0.1.0\nsrc/generated.rs:1:5: error[E0425]: cannot find function `nope`\n    Finished dev";
        assert_eq!(
            relevant_output(out),
            "src/generated.rs:1:5: error[E0425]: cannot find function `nope`"
        );
    }
}
