//! The evolution pipeline: every change to a playbook goes through a branch
//! (`playbook/v<N+1>`), a pull request, CI and (by default) a human approval, then a merge.
//!
//! Resuming: a run looks for an open playbook pull request whose last update is its own note
//! and carries on with it, so re-running an interrupted command never opens a second one.
//! Concurrency: a second evolution of the same version fails naming the open pull request;
//! when `main` moved under a pull request (another evolution merged), the change is rebuilt
//! on the new `main` as a new pull request and the old one is closed as superseded. `main`
//! only ever moves by a merge that checks the head it approved, so no update is lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::forge::playbook::{self, Playbook};
use crate::core::forge::{self, Approval, CiReport, CiState, Forge, NewPr, PullRequest, Repo};

/// The playbook file at the root of an agent repository.
pub const PLAYBOOK_PATH: &str = "playbook.yaml";
/// Prefix of evolution branches.
pub const BRANCH_PREFIX: &str = "playbook/v";
/// Rebuilds on a moved `main` before giving up.
const MAX_REBUILDS: u32 = 5;
/// Looks for the pull request of a branch that another run just created.
const ORPHAN_CHECKS: u32 = 10;

/// One evolution.
#[derive(Debug, Clone)]
pub struct EvolveRequest {
    /// Repository name.
    pub repo: String,
    /// Appended to `updates`.
    pub note: String,
    /// Merged into `telemetry`.
    pub metrics: BTreeMap<String, f64>,
    /// Wait for CI to pass before merging (`MANDATE_GITHUB_CI`).
    pub require_ci: bool,
    /// Wait for an approval of the head commit (`REQUIRE_HUMAN_PR_APPROVAL`).
    pub require_approval: bool,
    /// `false`: open the pull request and return.
    pub wait: bool,
    /// Bound on the whole wait for CI, approval and mergeability.
    pub timeout: Duration,
    /// First poll interval; doubles up to `poll_max`.
    pub poll_initial: Duration,
    /// Longest poll interval.
    pub poll_max: Duration,
}

/// Where an evolution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Merged into main.
    Merged,
    /// Open; CI has not passed yet.
    AwaitingCi,
    /// Open; waiting for an approval of the head commit.
    AwaitingApproval,
    /// Open and ready to merge (nothing required is missing).
    Ready,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct EvolveReport {
    /// Repository.
    pub repo: String,
    /// The pull request.
    pub pull_request: PullRequest,
    /// Version on main before.
    pub from_version: u32,
    /// Version the pull request sets.
    pub to_version: u32,
    /// Whether an open pull request of an earlier run was continued.
    pub resumed: bool,
    /// Pull requests closed because main moved under them.
    pub superseded: Vec<u64>,
    /// CI, when it was consulted.
    pub ci: Option<CiReport>,
    /// Reviews, when they were consulted.
    pub approval: Option<Approval>,
    /// Where things stand.
    pub status: Status,
    /// The merge commit.
    pub merge_sha: Option<String>,
}

/// Why an evolution stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The forge.
    #[error(transparent)]
    Forge(#[from] forge::Error),
    /// The playbook on a branch cannot be read.
    #[error("{context}: {source}")]
    Playbook {
        /// Which commit.
        context: String,
        /// Cause.
        source: playbook::Error,
    },
    /// No such repository.
    #[error("repository {0} not found on the forge")]
    RepoNotFound(String),
    /// The repository has no main branch or no playbook.
    #[error("{0}")]
    NoPlaybook(String),
    /// Another evolution of the same version is open.
    #[error(
        "pull request #{number} ({branch}) is already evolving {repo} to version {version} with the note {other_note:?}; merge or close it, then run again"
    )]
    Conflict {
        /// Repository.
        repo: String,
        /// Its number.
        number: u64,
        /// Its branch.
        branch: String,
        /// The version it sets.
        version: u32,
        /// Its note.
        other_note: String,
    },
    /// A branch of the target version exists without a pull request.
    #[error(
        "branch {branch} exists in {repo} with another change and no open pull request (left by an interrupted run?); delete the branch, then run again"
    )]
    OrphanBranch {
        /// Repository.
        repo: String,
        /// Branch.
        branch: String,
    },
    /// CI failed: the pull request stays open and unmerged.
    #[error("CI failed on pull request #{number}; it was not merged:\n{summary}")]
    CiFailed {
        /// PR number.
        number: u64,
        /// The failure.
        summary: String,
    },
    /// The operator said no.
    #[error("approval of pull request #{0} was declined; it stays open and unmerged")]
    Declined(u64),
    /// The wait ran out.
    #[error(
        "timed out after {} waiting for {waiting_for} on pull request #{number} ({url}); it stays open: run the same command again to continue",
        humantime::format_duration(*.after)
    )]
    Timeout {
        /// PR number.
        number: u64,
        /// Its URL.
        url: String,
        /// What was missing.
        waiting_for: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Main kept moving.
    #[error("main kept moving: gave up after rebuilding the change {0} times")]
    TooManyRebuilds(u32),
}

/// Asks a person to approve; `None` when nobody can be asked (no TTY).
pub type Approver<'a> = Option<&'a dyn Fn(&PullRequest, &Playbook) -> bool>;

async fn playbook_at<F: Forge>(
    forge: &F,
    repo: &Repo,
    sha: &str,
    what: &str,
) -> Result<Playbook, Error> {
    let text = forge
        .read_file(repo, sha, PLAYBOOK_PATH)
        .await?
        .ok_or_else(|| Error::NoPlaybook(format!("{what} ({sha}) has no {PLAYBOOK_PATH}")))?;
    Playbook::parse(&text).map_err(|source| Error::Playbook {
        context: format!("{what} ({sha})"),
        source,
    })
}

/// Whether `head` is exactly `base` evolved once.
fn builds_on(head: &Playbook, base: &Playbook) -> bool {
    let mut updates = head.updates();
    updates.pop();
    head.version() == base.version() + 1 && updates == base.updates()
}

/// The version an evolution branch sets.
pub fn branch_version(branch: &str) -> Option<u32> {
    branch.strip_prefix(BRANCH_PREFIX)?.parse().ok()
}

struct Prepared {
    pr: PullRequest,
    head: Playbook,
    resumed: bool,
}

/// Runs one evolution; `progress` hears about each step.
pub async fn evolve<F: Forge>(
    forge: &F,
    req: &EvolveRequest,
    approver: Approver<'_>,
    progress: &dyn Fn(&str),
) -> Result<EvolveReport, Error> {
    let repo = forge
        .repo(&req.repo)
        .await?
        .ok_or_else(|| Error::RepoNotFound(req.repo.clone()))?;
    let deadline = Instant::now() + req.timeout;
    let mut superseded = Vec::new();
    let mut rebuilds = 0;
    loop {
        let main_sha = forge
            .branch_head(&repo, &repo.default_branch)
            .await?
            .ok_or_else(|| {
                Error::NoPlaybook(format!(
                    "{} has no {} branch",
                    repo.name, repo.default_branch
                ))
            })?;
        let main = playbook_at(forge, &repo, &main_sha, &repo.default_branch).await?;
        let Some(Prepared { pr, head, resumed }) = prepare(
            forge,
            &repo,
            req,
            &main_sha,
            &main,
            &mut superseded,
            progress,
        )
        .await?
        else {
            rebuilds += 1;
            if rebuilds > MAX_REBUILDS {
                return Err(Error::TooManyRebuilds(MAX_REBUILDS));
            }
            continue;
        };
        let mut report = EvolveReport {
            repo: repo.name.clone(),
            from_version: main.version(),
            to_version: head.version(),
            pull_request: pr.clone(),
            resumed,
            superseded: superseded.clone(),
            ci: None,
            approval: None,
            status: Status::Ready,
            merge_sha: None,
        };
        if !req.wait {
            report.status = if req.require_ci {
                Status::AwaitingCi
            } else if req.require_approval && !forge.approval(&repo, &pr).await?.is_approved() {
                Status::AwaitingApproval
            } else {
                Status::Ready
            };
            return Ok(report);
        }

        let mut delay = req.poll_initial;
        let wait = |delay: &mut Duration| {
            let left = deadline.saturating_duration_since(Instant::now());
            let nap = (*delay).min(left);
            *delay = (*delay * 2).min(req.poll_max);
            nap
        };
        if req.require_ci {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                progress(&format!(
                    "waiting for CI on #{} ({})",
                    pr.number,
                    short(&pr.head_sha)
                ));
                let ci = forge.ci(&repo, &pr, left).await?;
                match ci.state {
                    CiState::Success => {
                        report.ci = Some(ci);
                        break;
                    }
                    CiState::Failure => {
                        return Err(Error::CiFailed {
                            number: pr.number,
                            summary: ci.summary,
                        });
                    }
                    CiState::Pending => {}
                }
                if Instant::now() >= deadline {
                    return Err(timeout(&pr, "CI", req.timeout));
                }
                tokio::time::sleep(wait(&mut delay)).await;
            }
        }
        if req.require_approval {
            loop {
                let approval = forge.approval(&repo, &pr).await?;
                if approval.is_approved() {
                    report.approval = Some(approval);
                    break;
                }
                if let Some(ask) = approver {
                    if ask(&pr, &head) {
                        forge
                            .approve(&repo, pr.number, "operator (interactive)")
                            .await?;
                        continue;
                    }
                    return Err(Error::Declined(pr.number));
                }
                if Instant::now() >= deadline {
                    return Err(timeout(&pr, "an approval of the head commit", req.timeout));
                }
                progress(&format!(
                    "waiting for an approval of #{} ({})",
                    pr.number,
                    short(&pr.head_sha)
                ));
                tokio::time::sleep(wait(&mut delay)).await;
            }
        }
        // Main may have moved while CI ran or a person reviewed: merge only a change that
        // builds on what main holds now (the forge's own conflict check is the backstop).
        let main_now = forge.branch_head(&repo, &repo.default_branch).await?;
        if main_now.as_deref() != Some(main_sha.as_str()) {
            let sha = main_now.ok_or_else(|| {
                Error::NoPlaybook(format!(
                    "{} has no {} branch any more",
                    repo.name, repo.default_branch
                ))
            })?;
            let now = playbook_at(forge, &repo, &sha, &repo.default_branch).await?;
            if !builds_on(&head, &now) {
                rebuilds += 1;
                if rebuilds > MAX_REBUILDS {
                    return Err(Error::TooManyRebuilds(MAX_REBUILDS));
                }
                progress(&format!(
                    "main moved to playbook v{}; rebuilding #{}",
                    now.version(),
                    pr.number
                ));
                continue;
            }
        }
        let message = format!(
            "Merge pull request #{} from {}\n\nPlaybook v{}: {}",
            pr.number,
            pr.head_branch,
            head.version(),
            req.note
        );
        loop {
            match forge.merge(&repo, &pr, &pr.head_sha, &message).await {
                Ok(sha) => {
                    let _ = forge
                        .delete_branch(&repo, &pr.head_branch, &pr.head_sha)
                        .await;
                    report.merge_sha = Some(sha);
                    report.status = Status::Merged;
                    report.pull_request = forge.pr(&repo, pr.number).await?;
                    return Ok(report);
                }
                Err(forge::Error::MergeabilityPending { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(wait(&mut delay)).await;
                }
                Err(forge::Error::MergeabilityPending { .. }) => {
                    return Err(timeout(
                        &pr,
                        "the forge to compute mergeability",
                        req.timeout,
                    ));
                }
                Err(forge::Error::HeadChanged { .. } | forge::Error::NotMergeable { .. })
                    if rebuilds < MAX_REBUILDS =>
                {
                    // Either the head moved (its CI and approvals are void) or main moved:
                    // look again from the top, which rebuilds on main when needed.
                    rebuilds += 1;
                    progress(&format!(
                        "#{} cannot be merged as checked; looking again",
                        pr.number
                    ));
                    break;
                }
                Err(forge::Error::HeadChanged { .. } | forge::Error::NotMergeable { .. }) => {
                    return Err(Error::TooManyRebuilds(rebuilds));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn timeout(pr: &PullRequest, waiting_for: &'static str, after: Duration) -> Error {
    Error::Timeout {
        number: pr.number,
        url: pr.url.clone(),
        waiting_for,
        after,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// Finds this note's open pull request (rebuilding it if main moved) or opens a new one;
/// `None` when main moved meanwhile and the caller should look again.
async fn prepare<F: Forge>(
    forge: &F,
    repo: &Repo,
    req: &EvolveRequest,
    main_sha: &str,
    main: &Playbook,
    superseded: &mut Vec<u64>,
    progress: &dyn Fn(&str),
) -> Result<Option<Prepared>, Error> {
    let mut stale: Option<(PullRequest, Playbook)> = None;
    let mut others = Vec::new();
    for pr in forge.open_prs(repo, None).await? {
        if branch_version(&pr.head_branch).is_none() {
            continue;
        }
        let head = playbook_at(
            forge,
            repo,
            &pr.head_sha,
            &format!("pull request #{}", pr.number),
        )
        .await?;
        if head.last_update().as_deref() == Some(req.note.as_str()) {
            if builds_on(&head, main) {
                progress(&format!(
                    "continuing pull request #{} ({})",
                    pr.number, pr.head_branch
                ));
                return Ok(Some(Prepared {
                    pr,
                    head,
                    resumed: true,
                }));
            }
            stale = Some((pr, head));
        } else {
            others.push((pr, head));
        }
    }

    let target = main.version() + 1;
    let branch = format!("{BRANCH_PREFIX}{target}");
    if let Some((other, head)) = others.iter().find(|(p, _)| p.head_branch == branch) {
        return Err(Error::Conflict {
            repo: repo.name.clone(),
            number: other.number,
            branch,
            version: target,
            other_note: head.last_update().unwrap_or_default(),
        });
    }
    // A rebuilt change keeps the metrics it carried unless new ones were given.
    let metrics = match (&stale, req.metrics.is_empty()) {
        (Some((_, head)), true) => {
            let on_main = main.telemetry();
            head.telemetry()
                .into_iter()
                .filter(|(k, v)| on_main.get(k) != Some(v))
                .collect()
        }
        _ => req.metrics.clone(),
    };
    let next = main.evolved(&req.note, &metrics);
    let text = next.to_yaml().map_err(|source| Error::Playbook {
        context: "the evolved playbook".to_owned(),
        source,
    })?;
    let message = format!("Playbook v{target}: {}", req.note);
    let head = match forge
        .create_branch_with_file(repo, &branch, main_sha, PLAYBOOK_PATH, &text, &message)
        .await
    {
        Ok(_) => next,
        Err(forge::Error::BranchExists { .. }) => {
            // Left by an interrupted run of this very evolution (it died before opening the
            // pull request), or another run's branch.
            let Some(sha) = forge.branch_head(repo, &branch).await? else {
                // Gone already: the run that made it has merged (or given up) since, so look
                // again from the top.
                return Ok(None);
            };
            let existing = playbook_at(forge, repo, &sha, &branch).await?;
            if existing.last_update().as_deref() == Some(req.note.as_str())
                && builds_on(&existing, main)
            {
                progress(&format!("continuing with the existing branch {branch}"));
                existing
            } else {
                // A concurrent run creates its branch, then opens its pull request: give it a
                // moment before calling the branch an orphan.
                for _ in 0..ORPHAN_CHECKS {
                    let still_there = forge.branch_head(repo, &branch).await?.is_some();
                    let main_now = forge.branch_head(repo, &repo.default_branch).await?;
                    if !still_there || main_now.as_deref() != Some(main_sha) {
                        // That run merged (or gave up): look again from the new main.
                        return Ok(None);
                    }
                    if let Some(pr) = forge
                        .open_prs(repo, Some(&branch))
                        .await?
                        .into_iter()
                        .next()
                    {
                        return Err(Error::Conflict {
                            repo: repo.name.clone(),
                            number: pr.number,
                            branch,
                            version: target,
                            other_note: existing.last_update().unwrap_or_default(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                return Err(Error::OrphanBranch {
                    repo: repo.name.clone(),
                    branch,
                });
            }
        }
        Err(e) => return Err(e.into()),
    };
    let pr = forge
        .open_pr(
            repo,
            &NewPr {
                title: format!("Playbook v{target}: {}", first_line(&req.note)),
                body: format!(
                    "Evolves `{PLAYBOOK_PATH}` from version {} to {target}.\n\nNote: {}\n\nOpened by `phoenix evolve-playbook`.",
                    main.version(),
                    req.note
                ),
                head: branch.clone(),
                base: repo.default_branch.clone(),
            },
        )
        .await?;
    progress(&format!("opened pull request #{} ({branch})", pr.number));
    if let Some((old, _)) = stale {
        forge
            .close_pr(
                repo,
                old.number,
                &format!(
                    "Superseded by #{}: {} moved to playbook v{}, so the change was rebuilt on it.",
                    pr.number,
                    repo.default_branch,
                    main.version()
                ),
            )
            .await?;
        let _ = forge
            .delete_branch(repo, &old.head_branch, &old.head_sha)
            .await;
        superseded.push(old.number);
        progress(&format!(
            "closed #{} as superseded by #{}",
            old.number, pr.number
        ));
    }
    Ok(Some(Prepared {
        pr,
        head,
        resumed: false,
    }))
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}
