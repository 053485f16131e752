//! The GitHub forge against a local server that implements the REST endpoints it uses and
//! git's smart HTTP over real bare repositories.

use std::time::Duration;

use phoenix::core::forge::evolve::{self, EvolveRequest, Status};
use phoenix::core::forge::git::{self, PushError, RefSpec, Token};
use phoenix::core::forge::github::{GithubForge, GithubSettings};
use phoenix::core::forge::scaffold::AgentTier;
use phoenix::core::forge::spawn::{self, SpawnRequest};
use phoenix::core::forge::{CiState, Error, Forge, NewPr, NewRepo};
use serde_json::json;

use crate::support::fake_github::{FakeGithub, TOKEN};

fn settings(fake: &FakeGithub, token: &str) -> GithubSettings {
    GithubSettings {
        api_url: fake.api_url.clone(),
        token: token.to_owned(),
        username: Some("tester".to_owned()),
        org: Some("acme".to_owned()),
        max_rate_wait: Duration::from_secs(3),
        timeout: Duration::from_secs(10),
    }
}

fn forge(fake: &FakeGithub) -> GithubForge {
    GithubForge::new(settings(fake, TOKEN)).unwrap()
}

fn request(repo: &str, note: &str) -> EvolveRequest {
    EvolveRequest {
        repo: repo.to_owned(),
        note: note.to_owned(),
        metrics: [("accuracy".to_owned(), 0.9)].into(),
        require_ci: true,
        require_approval: true,
        wait: true,
        timeout: Duration::from_secs(20),
        poll_initial: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
    }
}

async fn spawn_placeholder(forge: &GithubForge, name: &str, tier: AgentTier) -> spawn::SpawnReport {
    spawn::spawn(
        forge,
        SpawnRequest {
            name: name.to_owned(),
            description: "Counts words".to_owned(),
            tier,
            force: false,
            pr: false,
            testing_mandatory: false,
            codegen: None,
        },
        &|_| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn spawn_and_evolve_through_the_api_with_ci_from_check_runs_and_head_approval() {
    let fake = FakeGithub::start().await;
    let gh = forge(&fake);
    let report = spawn_placeholder(&gh, "reviewer", AgentTier::Paid).await;
    assert!(report.repo.private, "paid agents are private");

    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(create.path, "/api/v3/orgs/acme/repos");
    assert_eq!(create.auth.as_deref(), Some("Bearer test-pat"));
    assert_eq!(create.body["private"], true);
    assert_eq!(create.body["name"], "reviewer");
    let bare = fake.bare("acme/reviewer");
    let main = bare.refname_to_id("refs/heads/main").unwrap();
    assert!(
        git::read_file(&bare, main, "agent.json")
            .unwrap()
            .unwrap()
            .contains("\"paid\"")
    );

    // CI is reported through check runs only; the combined status says "pending" with no
    // statuses, which must not block forever.
    {
        let mut w = fake.world();
        w.check_runs = vec![("test".into(), "completed".into(), Some("success".into()))];
        w.auto_approver = Some("alice".into());
        w.mergeable_unknown = 2;
    }
    let out = evolve::evolve(&gh, &request("reviewer", "Prefer clippy"), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(out.status, Status::Merged);
    assert_eq!(out.ci.unwrap().state, CiState::Success);
    assert_eq!(out.approval.unwrap().approved_by, vec!["alice"]);

    let requests = fake.requests();
    let merge = requests
        .iter()
        .find(|r| r.method == "PUT" && r.path.ends_with("/merge"))
        .unwrap();
    assert_eq!(
        merge.body["sha"].as_str(),
        Some(out.pull_request.head_sha.as_str())
    );
    assert_eq!(merge.body["merge_method"], "merge");
    let pr = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/pulls"))
        .unwrap();
    assert_eq!(pr.body["head"], "playbook/v2");
    assert_eq!(pr.body["base"], "main");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.path.ends_with("/git/refs/heads/playbook/v2"))
    );

    let main = bare.refname_to_id("refs/heads/main").unwrap();
    let playbook = git::read_file(&bare, main, "playbook.yaml")
        .unwrap()
        .unwrap();
    assert!(
        playbook.contains("version: 2") && playbook.contains("Prefer clippy"),
        "{playbook}"
    );

    // A second evolution, resumed after --no-wait, uses the same pull request.
    let mut no_wait = request("reviewer", "Second");
    no_wait.wait = false;
    let first = evolve::evolve(&gh, &no_wait, None, &|_| {}).await.unwrap();
    let again = evolve::evolve(&gh, &request("reviewer", "Second"), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(first.pull_request.number, again.pull_request.number);
    assert!(again.resumed);
    assert_eq!(again.status, Status::Merged);
}

#[tokio::test]
async fn failing_or_missing_ci_and_stale_approvals_block_the_merge() {
    let fake = FakeGithub::start().await;
    let gh = forge(&fake);
    spawn_placeholder(&gh, "agent", AgentTier::Free).await;
    let mut req = request("agent", "Risky");
    req.timeout = Duration::from_millis(400);

    // No CI at all: pending until the timeout, never success.
    let err = evolve::evolve(&gh, &req, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            evolve::Error::Timeout {
                waiting_for: "CI",
                ..
            }
        ),
        "{err}"
    );

    fake.world().check_runs = vec![("test".into(), "completed".into(), Some("failure".into()))];
    let err = evolve::evolve(&gh, &req, None, &|_| {}).await.unwrap_err();
    assert!(matches!(err, evolve::Error::CiFailed { .. }), "{err}");

    // CI passes, but the only approval is for an older commit.
    let repo = gh.repo("agent").await.unwrap().unwrap();
    let pr = gh.open_prs(&repo, None).await.unwrap().remove(0);
    {
        let mut w = fake.world();
        w.check_runs = vec![("test".into(), "completed".into(), Some("success".into()))];
        w.reviews = vec![
            json!({"user": {"login": "bob"}, "state": "APPROVED", "commit_id": "0123456789abcdef0123456789abcdef01234567"}),
        ];
    }
    let approval = gh.approval(&repo, &pr).await.unwrap();
    assert!(!approval.is_approved());
    assert_eq!(approval.stale, vec!["bob"]);
    let err = evolve::evolve(&gh, &req, None, &|_| {}).await.unwrap_err();
    assert!(matches!(err, evolve::Error::Timeout { .. }), "{err}");
    assert!(
        !fake.requests().iter().any(|r| r.path.ends_with("/merge")),
        "never merged"
    );

    // GitHub may still be computing mergeability: that is its own, retryable answer.
    fake.world().mergeable_unknown = 1;
    let fresh = gh.pr(&repo, pr.number).await;
    assert!(fresh.is_ok());
    fake.world().mergeable_unknown = 1;
    let err = gh
        .merge(&repo, &fresh.unwrap(), &pr.head_sha, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MergeabilityPending { .. }), "{err}");

    // A head that moved before the merge (409) is reported as such.
    fake.script(
        "PUT",
        "/merge",
        409,
        vec![],
        json!({"message": "Head branch was modified."}),
    );
    let fresh = gh.pr(&repo, pr.number).await.unwrap();
    let err = gh
        .merge(&repo, &fresh, &fresh.head_sha, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HeadChanged { .. }), "{err}");
}

#[tokio::test]
async fn api_errors_are_typed_and_rate_limits_are_waited_out() {
    let fake = FakeGithub::start().await;
    let gh = forge(&fake);
    spawn_placeholder(&gh, "taken", AgentTier::Free).await;
    let err = gh
        .create_repo(&NewRepo {
            name: "taken".into(),
            description: String::new(),
            private: false,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RepoExists { .. }), "{err}");

    let bad = GithubForge::new(settings(&fake, "wrong")).unwrap();
    assert!(matches!(
        bad.repo("taken").await.unwrap_err(),
        Error::Unauthorized { .. }
    ));

    fake.script(
        "GET",
        "/repos/acme/taken",
        403,
        vec![],
        json!({"message": "Resource not accessible by integration"}),
    );
    assert!(matches!(
        gh.repo("taken").await.unwrap_err(),
        Error::Forbidden { .. }
    ));

    let reset = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    fake.script(
        "GET",
        "/repos/acme/taken",
        403,
        vec![
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset),
        ],
        json!({"message": "API rate limit exceeded"}),
    );
    let started = std::time::Instant::now();
    assert!(
        gh.repo("taken").await.unwrap().is_some(),
        "answered after the wait"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    fake.script(
        "GET",
        "/repos/acme/taken",
        429,
        vec![("retry-after", "3600".into())],
        json!({"message": "secondary rate limit"}),
    );
    let err = gh.repo("taken").await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { .. }),
        "a wait beyond the bound is an error: {err}"
    );

    // A pull request that already exists for the branch is reused, never duplicated.
    let repo = gh.repo("taken").await.unwrap().unwrap();
    let main = gh.branch_head(&repo, "main").await.unwrap().unwrap();
    gh.create_branch_with_file(&repo, "feature", &main, "notes.txt", "hi\n", "add notes")
        .await
        .unwrap();
    let err = gh
        .create_branch_with_file(&repo, "feature", &main, "notes.txt", "x", "again")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BranchExists { .. }), "{err}");
    let new = NewPr {
        title: "t".into(),
        body: String::new(),
        head: "feature".into(),
        base: "main".into(),
    };
    let first = gh.open_pr(&repo, &new).await.unwrap();
    // Someone opens it between our check and our request: GitHub answers 422.
    fake.script("GET", "/pulls", 200, vec![], json!([]));
    let second = gh.open_pr(&repo, &new).await.unwrap();
    assert_eq!(first.number, second.number);
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pulls"))
        .count();
    assert_eq!(
        creates, 2,
        "the second create got 422 and the existing PR was used"
    );
    assert_eq!(gh.open_prs(&repo, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn pushes_check_every_ref_and_do_not_retry_refused_credentials() {
    let fake = FakeGithub::start().await;
    let gh = forge(&fake);
    let report = spawn_placeholder(&gh, "pushy", AgentTier::Free).await;
    let url = report.repo.clone_url.clone();

    let work = tempfile::tempdir().unwrap();
    let local = git::init(work.path(), false).unwrap();
    std::fs::write(work.path().join("a.txt"), "a").unwrap();
    git::commit_worktree(&local, "main", &[], "unrelated root").unwrap();
    let spec = |src: &str, dst: &str, force| RefSpec {
        src: src.into(),
        dst: dst.into(),
        force,
    };
    let token = Token {
        username: "tester".into(),
        secret: TOKEN.into(),
    };

    // Non-fast-forward without force is refused before anything is sent.
    let err = phoenix::core::forge::smart_http::push(
        work.path(),
        &url,
        &[spec("refs/heads/main", "refs/heads/main", false)],
        Some(&token),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PushError::Rejected { .. }), "{err}");

    // The server's hook declines one ref: that ref's `ng` is reported.
    let hooks = fake.root.join("acme/pushy.git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("update");
    std::fs::write(
        &hook,
        "#!/bin/sh\n[ \"$1\" = refs/heads/protected ] && { echo denied >&2; exit 1; }\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = phoenix::core::forge::smart_http::push(
        work.path(),
        &url,
        &[
            spec("refs/heads/main", "refs/heads/ok", false),
            spec("refs/heads/main", "refs/heads/protected", false),
        ],
        Some(&token),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, PushError::Rejected { reference, .. } if reference == "refs/heads/protected"),
        "{err}"
    );

    // A wrong token fails at once: one request, no loop.
    let before = fake.requests().len();
    let wrong = Token {
        username: "tester".into(),
        secret: "nope".into(),
    };
    let err = phoenix::core::forge::smart_http::push(
        work.path(),
        &url,
        &[spec("refs/heads/main", "refs/heads/x", false)],
        Some(&wrong),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PushError::Auth { .. }), "{err}");
    assert_eq!(fake.requests().len() - before, 1);

    // libgit2's own HTTP transport asks the credential callback again after every 401; the
    // callback answers once, so the push ends instead of looping.
    let before = fake.requests().len();
    let handle = tokio::task::spawn_blocking(move || {
        let local = git2::Repository::open(work.path()).unwrap();
        git::push(
            &local,
            &url,
            &[spec("refs/heads/main", "refs/heads/y", false)],
            Some(&wrong),
        )
    });
    let err = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("no credential loop")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, PushError::Auth { .. }), "{err}");
    assert!(
        fake.requests().len() - before <= 3,
        "{} requests",
        fake.requests().len() - before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_spawns_and_evolves_on_github() {
    let fake = FakeGithub::start().await;
    fake.world().auto_approver = Some("carol".into());
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], with_token: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("PHOENIX_HOME", home.path().join("data"))
            .env("GITHUB_USERNAME", "tester")
            .env("PHOENIX_GITHUB_API_URL", &fake.api_url)
            .env("TESTING_MANDATORY", "false")
            .current_dir(home.path())
            .stdin(std::process::Stdio::null())
            .args(args);
        if with_token {
            cmd.env("GITHUB_PAT", TOKEN);
        }
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };
    let out = run(
        &[
            "spawn-agent",
            "gh-agent",
            "-d",
            "Counts words",
            "--no-llm",
            "--forge",
            "github",
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(2), "no token is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITHUB_PAT"));

    let out = run(
        &[
            "spawn-agent",
            "gh-agent",
            "-d",
            "Counts words",
            "--no-llm",
            "--forge",
            "github",
            "--org",
            "acme",
            "--json",
        ],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["forge"], "github");
    assert_eq!(report["repo"]["full_name"], "acme/gh-agent");

    let out = run(
        &[
            "spawn-agent",
            "gh-agent",
            "-d",
            "Again",
            "--no-llm",
            "--forge",
            "github",
            "--org",
            "acme",
        ],
        true,
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(
        &[
            "evolve-playbook",
            "--repo",
            "gh-agent",
            "--note",
            "Tune",
            "--metric",
            "p95_ms=80",
            "--forge",
            "github",
            "--org",
            "acme",
            "--json",
        ],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "merged");
    assert_eq!(report["approval"]["approved_by"][0], "carol");
    let status = run(
        &[
            "evolve-playbook",
            "status",
            "--repo",
            "gh-agent",
            "1",
            "--forge",
            "github",
            "--org",
            "acme",
            "--json",
        ],
        true,
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pull_request"]["state"], "merged");
}
