//! `phoenix spawn-agent` and `phoenix evolve-playbook` end to end on the local forge: the real
//! binary, real git repositories, a fake LLM, and the local CI running real commands.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use phoenix::core::forge::evolve::{self, EvolveRequest, Status};
use phoenix::core::forge::git::RefSpec;
use phoenix::core::forge::local::LocalForge;
use phoenix::core::forge::playbook::Playbook;
use phoenix::core::forge::{
    Approval, CiReport, Error, Forge, ForgeKind, NewPr, NewRepo, PullRequest, Repo,
};
use serde_json::Value;

use crate::support::fake_llm::{FakeLlm, Reply};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

const GOOD_CODE: &str = "```rust
/// Counts the words of the input.
pub fn run(input: &str) -> String {
    format!(\"{} word(s)\", input.split_whitespace().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(run(\"a b c\"), \"3 word(s)\");
    }

    #[test]
    fn empty_input_has_no_words() {
        assert_eq!(run(\"\"), \"0 word(s)\");
    }
}
```";

const BAD_CODE: &str = "```rust
pub fn run(input: &str) -> String {
    count_words_quickly(input)
}
```";

/// A temporary Phoenix home; `cargo` keeps working because its own homes are passed through.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn forge(&self) -> LocalForge {
        LocalForge::new(self.path().join("data/forge"), None)
    }

    fn bare(&self, name: &str) -> PathBuf {
        self.path().join(format!("data/forge/{name}.git"))
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("PHOENIX_HOME", self.path().join("data"))
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .current_dir(self.path())
            .stdin(Stdio::null());
        for var in ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        if std::env::var("CARGO_HOME").is_err()
            && let Ok(h) = std::env::var("HOME")
        {
            cmd.env("CARGO_HOME", Path::new(&h).join(".cargo"));
            cmd.env("RUSTUP_HOME", Path::new(&h).join(".rustup"));
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("phoenix runs")
    }

    /// Spawns a placeholder agent without running cargo.
    fn spawn_placeholder(&self, name: &str) {
        let out = self.run(
            &[
                "spawn-agent",
                name,
                "--description",
                "Counts words",
                "--no-llm",
            ],
            &[("TESTING_MANDATORY", "false")],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn main_playbook(&self, name: &str) -> Playbook {
        let repo = git2::Repository::open_bare(self.bare(name)).unwrap();
        let main = repo.refname_to_id("refs/heads/main").unwrap();
        let text = phoenix::core::forge::git::read_file(&repo, main, "playbook.yaml")
            .unwrap()
            .unwrap();
        Playbook::parse(&text).unwrap()
    }

    fn pr_records(&self, name: &str) -> Vec<Value> {
        self.forge()
            .records(name)
            .unwrap()
            .into_iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

const NO_APPROVAL: (&str, &str) = ("REQUIRE_HUMAN_PR_APPROVAL", "false");

/// The one test that compiles agents: a generation repaired from compiler errors, the
/// agent's own tests before the push, and the local CI's default `cargo test --offline` on
/// an evolution of the spawned agent.
#[tokio::test(flavor = "multi_thread")]
async fn spawn_repairs_generated_code_and_the_agent_passes_its_own_ci() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(BAD_CODE));
    fake.push(Reply::text(GOOD_CODE));
    let home = Home::new();
    let target = home.path().join("cargo-target");
    let target = target.to_str().unwrap().to_owned();
    let llm_env = [
        ("PHOENIX_LLM_BASE_URL", fake.base_url.as_str()),
        ("PHOENIX_LLM_MODEL", "fake/coder"),
        ("CARGO_TARGET_DIR", target.as_str()),
    ];
    let h = &home;
    let out = tokio::task::block_in_place(|| {
        h.run(
            &[
                "spawn-agent",
                "word-counter",
                "--description",
                "Counts the words of its input",
                "--json",
            ],
            &llm_env,
        )
    });
    let report = json(&out);
    assert_eq!(report["generated"]["mode"], "llm");
    assert_eq!(report["generated"]["attempts"], 2);
    assert_eq!(report["tests"]["passed"], true);
    assert!(
        report["tests"]["summary"]
            .as_str()
            .unwrap()
            .contains("passed"),
        "{report}"
    );
    assert_eq!(report["repo"]["private"], false);

    // The repair request carried the compiler's complaint about the first answer.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let repair = requests[1]["messages"].to_string();
    assert!(repair.contains("count_words_quickly"), "{repair}");
    assert!(
        repair.contains("E0425"),
        "compiler error code sent back: {repair}"
    );

    let repo = git2::Repository::open_bare(home.bare("word-counter")).unwrap();
    let main = repo.refname_to_id("refs/heads/main").unwrap();
    let read = |p: &str| {
        phoenix::core::forge::git::read_file(&repo, main, p)
            .unwrap()
            .unwrap()
    };
    assert!(read("src/generated.rs").contains("split_whitespace"));
    let agent: Value = serde_json::from_str(&read("agent.json")).unwrap();
    assert_eq!(agent["generated"]["mode"], "llm");
    assert_eq!(agent["tier"], "free");
    assert!(read("Cargo.lock").contains("word-counter"));
    assert!(read(".github/workflows/ci.yml").contains("${{ runner.os }}"));

    // Evolve with CI mandated and the repository's own test command.
    let out = tokio::task::block_in_place(|| {
        h.run(
            &[
                "evolve-playbook",
                "--repo",
                "word-counter",
                "--note",
                "Count faster",
                "--json",
            ],
            &[
                NO_APPROVAL,
                ("MANDATE_GITHUB_CI", "true"),
                ("CARGO_TARGET_DIR", target.as_str()),
            ],
        )
    });
    let report = json(&out);
    assert_eq!(report["status"], "merged");
    assert_eq!(report["ci"]["state"], "success");
    assert!(
        report["ci"]["checks"][0]["name"]
            .as_str()
            .unwrap()
            .contains("cargo test --offline"),
        "{report}"
    );
    assert_eq!(home.main_playbook("word-counter").version(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_gives_up_after_the_allowed_repairs_and_pushes_nothing() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::text(BAD_CODE));
    let home = Home::new();
    let target = home.path().join("cargo-target");
    let h = &home;
    let out = tokio::task::block_in_place(|| {
        h.run(
            &[
                "spawn-agent",
                "broken",
                "-d",
                "Never compiles",
                "--max-repairs",
                "1",
            ],
            &[
                ("PHOENIX_LLM_BASE_URL", fake.base_url.as_str()),
                ("PHOENIX_LLM_MODEL", "fake/coder"),
                ("CARGO_TARGET_DIR", target.to_str().unwrap()),
            ],
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("after 2 generation(s)"), "{stderr}");
    assert!(
        stderr.contains("count_words_quickly"),
        "errors shown: {stderr}"
    );
    assert_eq!(fake.hits(), 2);
    assert!(!home.bare("broken").exists(), "nothing may be pushed");
}

#[test]
fn spawn_placeholder_refuses_existing_names_unless_forced_and_can_open_a_pr() {
    let home = Home::new();
    let quick = [("TESTING_MANDATORY", "false")];

    let out = home.run(&["spawn-agent", "notes", "-d", "Summarises notes"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no LLM configured is a usage error"
    );
    assert!(
        text(&out.stderr).contains("--no-llm"),
        "{}",
        text(&out.stderr)
    );

    let report = json(&home.run(
        &[
            "spawn-agent",
            "notes",
            "-d",
            "Summarises notes",
            "--no-llm",
            "--tier",
            "paid",
            "--json",
        ],
        &quick,
    ));
    assert_eq!(report["generated"]["mode"], "placeholder");
    assert_eq!(report["repo"]["private"], true);
    assert!(report["tests"].is_null());
    let repo = git2::Repository::open_bare(home.bare("notes")).unwrap();
    let first = repo.refname_to_id("refs/heads/main").unwrap();
    let generated = phoenix::core::forge::git::read_file(&repo, first, "src/generated.rs")
        .unwrap()
        .unwrap();
    assert!(generated.starts_with("//! PLACEHOLDER"), "{generated}");

    let out = home.run(&["spawn-agent", "notes", "-d", "Again", "--no-llm"], &quick);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), first);

    let out = home.run(
        &[
            "spawn-agent",
            "notes",
            "-d",
            "Again",
            "--no-llm",
            "--force",
            "--pr",
        ],
        &quick,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report = json(&home.run(
        &[
            "spawn-agent",
            "notes",
            "-d",
            "Again",
            "--no-llm",
            "--force",
            "--json",
        ],
        &quick,
    ));
    assert_eq!(report["replaced"], true);
    assert_ne!(repo.refname_to_id("refs/heads/main").unwrap(), first);

    let out = home.run(&["spawn-agent", "Bad Name", "-d", "x", "--no-llm"], &quick);
    assert_eq!(out.status.code(), Some(2));

    let report = json(&home.run(
        &[
            "spawn-agent",
            "reviewed",
            "-d",
            "Via a PR",
            "--no-llm",
            "--pr",
            "--json",
        ],
        &quick,
    ));
    assert_eq!(report["pull_request"]["number"], 1);
    assert_eq!(report["pull_request"]["head_branch"], "phoenix/scaffold");
    let repo = git2::Repository::open_bare(home.bare("reviewed")).unwrap();
    let main = repo.refname_to_id("refs/heads/main").unwrap();
    assert!(
        phoenix::core::forge::git::read_file(&repo, main, "playbook.yaml")
            .unwrap()
            .is_none()
    );
    let head = repo.refname_to_id("refs/heads/phoenix/scaffold").unwrap();
    assert!(
        phoenix::core::forge::git::read_file(&repo, head, "playbook.yaml")
            .unwrap()
            .is_some()
    );
}

#[test]
fn evolving_twice_with_and_without_approval() {
    let home = Home::new();
    home.spawn_placeholder("agent-a");

    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-a",
            "--note",
            "Shorter answers",
            "--metric",
            "latency_ms=120",
            "--json",
        ],
        &[NO_APPROVAL],
    ));
    assert_eq!(report["status"], "merged");
    assert_eq!(
        (
            report["from_version"].as_u64(),
            report["to_version"].as_u64()
        ),
        (Some(1), Some(2))
    );

    // Approval required (the default): without a TTY the run waits, then times out.
    let out = home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-a",
            "--note",
            "Cite sources",
            "--metric",
            "accuracy=0.93",
            "--timeout",
            "300ms",
            "--poll",
            "50ms",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("waiting for an approval"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        home.main_playbook("agent-a").version(),
        2,
        "nothing merged without approval"
    );

    let status = json(&home.run(
        &[
            "evolve-playbook",
            "status",
            "--repo",
            "agent-a",
            "2",
            "--json",
        ],
        &[],
    ));
    assert_eq!(status["pull_request"]["state"], "open");
    assert_eq!(status["version"], 3);
    assert!(
        status["approval"]["approved_by"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let out = home.run(
        &[
            "evolve-playbook",
            "approve",
            "--repo",
            "agent-a",
            "2",
            "--by",
            "alice",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-a",
            "--note",
            "Cite sources",
            "--metric",
            "accuracy=0.93",
            "--json",
        ],
        &[],
    ));
    assert_eq!(report["status"], "merged");
    assert_eq!(report["resumed"], true);
    assert_eq!(report["pull_request"]["number"], 2);
    assert_eq!(report["approval"]["approved_by"][0], "alice");

    let playbook = home.main_playbook("agent-a");
    assert_eq!(playbook.version(), 3);
    assert_eq!(playbook.updates(), vec!["Shorter answers", "Cite sources"]);
    assert_eq!(playbook.telemetry()["latency_ms"], 120.0);
    assert_eq!(playbook.telemetry()["accuracy"], 0.93);
    assert_eq!(
        home.pr_records("agent-a").len(),
        2,
        "one pull request per evolution"
    );
}

#[test]
fn failing_ci_blocks_the_merge_until_it_passes() {
    let home = Home::new();
    home.spawn_placeholder("agent-ci");
    let failing = [
        NO_APPROVAL,
        ("MANDATE_GITHUB_CI", "true"),
        (
            "PHOENIX_LOCAL_CI_COMMAND",
            "echo 'test playbook ... FAILED'; exit 101",
        ),
    ];
    let out = home.run(
        &["evolve-playbook", "--repo", "agent-ci", "--note", "Risky"],
        &failing,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("CI failed on pull request #1"), "{stderr}");
    assert!(
        stderr.contains("test playbook ... FAILED"),
        "the log is shown: {stderr}"
    );
    assert_eq!(home.main_playbook("agent-ci").version(), 1);

    // The PR stayed open; a passing CI command lets the same evolution merge.
    let passing = [
        NO_APPROVAL,
        ("MANDATE_GITHUB_CI", "true"),
        (
            "PHOENIX_LOCAL_CI_COMMAND",
            "grep -q 'version: 2' playbook.yaml",
        ),
    ];
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-ci",
            "--note",
            "Risky",
            "--json",
        ],
        &passing,
    ));
    assert_eq!(report["status"], "merged");
    assert_eq!(report["ci"]["state"], "success");
    assert_eq!(report["pull_request"]["number"], 1);
}

#[tokio::test]
async fn stale_approvals_do_not_count() {
    let home = Home::new();
    home.spawn_placeholder("agent-s");
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-s",
            "--note",
            "Be brief",
            "--no-wait",
            "--json",
        ],
        &[],
    ));
    assert_eq!(report["status"], "awaiting_approval");
    let out = home.run(
        &[
            "evolve-playbook",
            "approve",
            "--repo",
            "agent-s",
            "1",
            "--by",
            "bob",
        ],
        &[],
    );
    assert!(out.status.success());

    // Someone pushes to the PR branch after the approval.
    let repo = git2::Repository::open_bare(home.bare("agent-s")).unwrap();
    let head = repo.refname_to_id("refs/heads/playbook/v2").unwrap();
    let text_now = phoenix::core::forge::git::read_file(&repo, head, "playbook.yaml")
        .unwrap()
        .unwrap();
    let changed = format!("{text_now}extra: true\n");
    let new = phoenix::core::forge::git::commit_replacing_file(
        &repo,
        head,
        "playbook.yaml",
        &changed,
        "sneaky",
    )
    .unwrap();
    repo.reference("refs/heads/playbook/v2", new, true, "push")
        .unwrap();

    let status = json(&home.run(
        &[
            "evolve-playbook",
            "status",
            "--repo",
            "agent-s",
            "1",
            "--json",
        ],
        &[],
    ));
    assert!(
        status["approval"]["approved_by"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(status["approval"]["stale"][0], "bob");
    let out = home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-s",
            "--note",
            "Be brief",
            "--timeout",
            "200ms",
            "--poll",
            "50ms",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(home.main_playbook("agent-s").version(), 1);
}

#[tokio::test]
async fn an_interrupted_evolution_resumes_instead_of_opening_another_pr() {
    let home = Home::new();
    home.spawn_placeholder("agent-r");
    let forge = home.forge();
    let repo = forge.repo("agent-r").await.unwrap().unwrap();

    // The first run died after creating its branch, before opening the pull request.
    let main = forge.branch_head(&repo, "main").await.unwrap().unwrap();
    let evolved = home
        .main_playbook("agent-r")
        .evolved("Resume me", &Default::default())
        .to_yaml()
        .unwrap();
    forge
        .create_branch_with_file(
            &repo,
            "playbook/v2",
            &main,
            "playbook.yaml",
            &evolved,
            "Playbook v2: Resume me",
        )
        .await
        .unwrap();

    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-r",
            "--note",
            "Resume me",
            "--no-wait",
            "--json",
        ],
        &[],
    ));
    assert_eq!(report["pull_request"]["number"], 1);
    assert_eq!(report["pull_request"]["head_branch"], "playbook/v2");
    // Interrupted again while waiting; the next run continues PR #1.
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-r",
            "--note",
            "Resume me",
            "--json",
        ],
        &[NO_APPROVAL],
    ));
    assert_eq!(report["resumed"], true);
    assert_eq!(report["pull_request"]["number"], 1);
    assert_eq!(report["status"], "merged");
    assert_eq!(home.pr_records("agent-r").len(), 1);
    assert_eq!(home.main_playbook("agent-r").updates(), vec!["Resume me"]);

    // A different note while another branch of the same version has no PR: a clear error.
    let main = forge.branch_head(&repo, "main").await.unwrap().unwrap();
    let other = home
        .main_playbook("agent-r")
        .evolved("Someone else", &Default::default());
    forge
        .create_branch_with_file(
            &repo,
            "playbook/v3",
            &main,
            "playbook.yaml",
            &other.to_yaml().unwrap(),
            "x",
        )
        .await
        .unwrap();
    let out = home.run(
        &["evolve-playbook", "--repo", "agent-r", "--note", "Mine"],
        &[NO_APPROVAL],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("branch playbook/v3 exists"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_pr_left_behind_by_a_moved_main_is_rebuilt_not_lost() {
    let home = Home::new();
    home.spawn_placeholder("agent-m");
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-m",
            "--note",
            "Mine",
            "--metric",
            "speed=3",
            "--no-wait",
            "--json",
        ],
        &[],
    ));
    assert_eq!(report["pull_request"]["number"], 1);

    // Meanwhile another change to the playbook lands on main through its own pull request.
    let forge = home.forge();
    let repo = forge.repo("agent-m").await.unwrap().unwrap();
    let main = forge.branch_head(&repo, "main").await.unwrap().unwrap();
    let theirs = home
        .main_playbook("agent-m")
        .evolved("Theirs", &Default::default());
    let head = forge
        .create_branch_with_file(
            &repo,
            "hotfix",
            &main,
            "playbook.yaml",
            &theirs.to_yaml().unwrap(),
            "hotfix",
        )
        .await
        .unwrap();
    let pr = forge
        .open_pr(
            &repo,
            &NewPr {
                title: "hotfix".into(),
                body: String::new(),
                head: "hotfix".into(),
                base: "main".into(),
            },
        )
        .await
        .unwrap();
    forge
        .merge(&repo, &pr, &head, "Merge hotfix")
        .await
        .unwrap();

    // An unrelated evolution goes ahead on the new main...
    let out = home.run(
        &["evolve-playbook", "--repo", "agent-m", "--note", "Third"],
        &[NO_APPROVAL],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "v3 is free: {}",
        text(&out.stderr)
    );
    // ...and the original run, re-run, rebuilds on the new main instead of overwriting it.
    let report = json(&home.run(
        &[
            "evolve-playbook",
            "--repo",
            "agent-m",
            "--note",
            "Mine",
            "--json",
        ],
        &[NO_APPROVAL],
    ));
    assert_eq!(report["status"], "merged");
    assert_eq!(report["superseded"][0], 1);
    let playbook = home.main_playbook("agent-m");
    assert_eq!(playbook.updates(), vec!["Theirs", "Third", "Mine"]);
    assert_eq!(playbook.version(), 4);
    assert_eq!(
        playbook.telemetry()["speed"],
        3.0,
        "the metrics travel with the rebuilt change"
    );
    let closed = forge.record("agent-m", 1).unwrap();
    assert_eq!(serde_json::to_value(closed.pr.state).unwrap(), "closed");
    assert!(closed.closed_comment.unwrap().contains("Superseded by"));
}

#[test]
fn concurrent_evolutions_never_lose_an_update() {
    let home = Home::new();
    home.spawn_placeholder("agent-c");
    let notes = ["alpha", "beta", "gamma"];
    let children: Vec<_> = notes
        .iter()
        .map(|note| {
            let mut cmd = home.cmd();
            cmd.args([
                "evolve-playbook",
                "--repo",
                "agent-c",
                "--note",
                note,
                "--json",
            ])
            .env(NO_APPROVAL.0, NO_APPROVAL.1)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut merged = Vec::new();
    for (note, child) in notes.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => merged.push(*note),
            Some(1) => assert!(
                text(&out.stderr).contains("already evolving"),
                "a failed evolution says why: {}",
                text(&out.stderr)
            ),
            other => panic!("exit {other:?}: {}", text(&out.stderr)),
        }
    }
    assert!(!merged.is_empty());
    let playbook = home.main_playbook("agent-c");
    assert_eq!(playbook.version() as usize, 1 + merged.len());
    let mut updates = playbook.updates();
    updates.sort();
    merged.sort();
    assert_eq!(updates, merged, "every reported merge is on main");
}

/// The local forge, except that the first branch it is asked to create loses the race to
/// another evolution, which merges (deleting its branch) before the loser looks at it.
struct LosesTheFirstBranch {
    inner: LocalForge,
    lost: Cell<bool>,
}

impl Forge for LosesTheFirstBranch {
    fn kind(&self) -> ForgeKind {
        self.inner.kind()
    }
    async fn repo(&self, name: &str) -> Result<Option<Repo>, Error> {
        self.inner.repo(name).await
    }
    async fn create_repo(&self, new: &NewRepo) -> Result<Repo, Error> {
        self.inner.create_repo(new).await
    }
    async fn push(&self, repo: &Repo, local: &Path, specs: &[RefSpec]) -> Result<(), Error> {
        self.inner.push(repo, local, specs).await
    }
    async fn branch_head(&self, repo: &Repo, branch: &str) -> Result<Option<String>, Error> {
        self.inner.branch_head(repo, branch).await
    }
    async fn read_file(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error> {
        self.inner.read_file(repo, sha, path).await
    }
    async fn create_branch_with_file(
        &self,
        repo: &Repo,
        branch: &str,
        base_sha: &str,
        path: &str,
        contents: &str,
        message: &str,
    ) -> Result<String, Error> {
        if self.lost.replace(true) {
            return (self.inner)
                .create_branch_with_file(repo, branch, base_sha, path, contents, message)
                .await;
        }
        let theirs = evolve::evolve(&self.inner, &request(&repo.name, "Theirs"), None, &|_| {})
            .await
            .unwrap();
        assert_eq!(theirs.pull_request.head_branch, branch);
        Err(Error::BranchExists {
            repo: repo.name.clone(),
            branch: branch.to_owned(),
        })
    }
    async fn delete_branch(&self, repo: &Repo, branch: &str, sha: &str) -> Result<(), Error> {
        self.inner.delete_branch(repo, branch, sha).await
    }
    async fn open_prs(&self, repo: &Repo, head: Option<&str>) -> Result<Vec<PullRequest>, Error> {
        self.inner.open_prs(repo, head).await
    }
    async fn open_pr(&self, repo: &Repo, new: &NewPr) -> Result<PullRequest, Error> {
        self.inner.open_pr(repo, new).await
    }
    async fn pr(&self, repo: &Repo, number: u64) -> Result<PullRequest, Error> {
        self.inner.pr(repo, number).await
    }
    async fn close_pr(&self, repo: &Repo, number: u64, comment: &str) -> Result<(), Error> {
        self.inner.close_pr(repo, number, comment).await
    }
    async fn ci(&self, repo: &Repo, pr: &PullRequest, budget: Duration) -> Result<CiReport, Error> {
        self.inner.ci(repo, pr, budget).await
    }
    async fn approval(&self, repo: &Repo, pr: &PullRequest) -> Result<Approval, Error> {
        self.inner.approval(repo, pr).await
    }
    async fn approve(&self, repo: &Repo, number: u64, by: &str) -> Result<PullRequest, Error> {
        self.inner.approve(repo, number, by).await
    }
    async fn merge(
        &self,
        repo: &Repo,
        pr: &PullRequest,
        expected_head: &str,
        message: &str,
    ) -> Result<String, Error> {
        self.inner.merge(repo, pr, expected_head, message).await
    }
}

fn request(repo: &str, note: &str) -> EvolveRequest {
    EvolveRequest {
        repo: repo.to_owned(),
        note: note.to_owned(),
        metrics: Default::default(),
        require_ci: false,
        require_approval: false,
        wait: true,
        timeout: Duration::from_secs(20),
        poll_initial: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
    }
}

/// One interleaving of `concurrent_evolutions_never_lose_an_update`, made deterministic: the
/// branch this run could not create is gone (merged) by the time it reads it. That used to
/// read the missing branch as the commit "" ("unable to parse OID - too short").
#[tokio::test]
async fn a_run_that_lost_its_branch_to_a_merged_evolution_builds_on_the_merge() {
    let home = Home::new();
    home.spawn_placeholder("agent-l");
    let forge = LosesTheFirstBranch {
        inner: home.forge(),
        lost: Cell::new(false),
    };
    let report = evolve::evolve(&forge, &request("agent-l", "Mine"), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.status, Status::Merged);
    assert_eq!((report.from_version, report.to_version), (2, 3));
    let playbook = home.main_playbook("agent-l");
    assert_eq!(playbook.updates(), vec!["Theirs", "Mine"]);
    assert_eq!(playbook.version(), 3);
}
