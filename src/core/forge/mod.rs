//! Forges: where agent repositories live, with pull requests, CI results and reviews.
//!
//! Depends on `shared` (LLM client, retry) and git2/octocrab; no server or store.
//!
//! Two backends implement [`Forge`]: [`local::LocalForge`] (bare repositories under the data
//! directory, fully offline) and [`github::GithubForge`] (GitHub or GitHub Enterprise through
//! its REST API). The spawn and evolve workflows are written once against the trait.

pub mod codegen;
pub mod evolve;
pub mod git;
pub mod github;
pub mod local;
mod local_ci;
mod lock;
pub mod playbook;
pub mod scaffold;
pub mod smart_http;
pub mod spawn;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::forge::git::{PushError, RefSpec};

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// Bare repositories under the Phoenix data directory.
    Local,
    /// GitHub or GitHub Enterprise.
    Github,
}

/// A repository on a forge.
#[derive(Debug, Clone, Serialize)]
pub struct Repo {
    /// Repository name.
    pub name: String,
    /// `owner/name` on GitHub; the name on the local forge.
    pub full_name: String,
    /// Where a person finds it: a web URL, or the bare repository's path.
    pub url: String,
    /// What git pushes to.
    pub clone_url: String,
    /// Private or public.
    pub private: bool,
    /// Branch pull requests merge into.
    pub default_branch: String,
}

/// A repository to create.
#[derive(Debug, Clone)]
pub struct NewRepo {
    /// Name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Private (paid and enterprise tiers) or public (free).
    pub private: bool,
}

/// State of a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrState {
    /// Waiting.
    Open,
    /// Merged into its base.
    Merged,
    /// Closed without merging.
    Closed,
}

/// A pull request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// Number, unique per repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Branch with the change.
    pub head_branch: String,
    /// Commit at the tip of the head branch.
    pub head_sha: String,
    /// Branch it merges into.
    pub base_branch: String,
    /// State.
    pub state: PrState,
    /// Web URL or record path.
    pub url: String,
    /// The merge commit, once merged.
    pub merge_sha: Option<String>,
}

/// A pull request to open.
#[derive(Debug, Clone)]
pub struct NewPr {
    /// Title.
    pub title: String,
    /// Description.
    pub body: String,
    /// Branch with the change.
    pub head: String,
    /// Branch to merge into.
    pub base: String,
}

/// Overall CI verdict on a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CiState {
    /// Every check passed.
    Success,
    /// At least one check failed.
    Failure,
    /// Checks are running, or none has reported yet.
    Pending,
}

/// One check of a CI report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// Name (status context or check run name).
    pub name: String,
    /// Its verdict.
    pub state: CiState,
    /// Where to read more: a URL or a log file.
    pub details: Option<String>,
}

/// CI results for one commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CiReport {
    /// The commit.
    pub sha: String,
    /// Overall verdict.
    pub state: CiState,
    /// Individual checks.
    pub checks: Vec<Check>,
    /// Short human summary (the failing test output, the pending checks).
    pub summary: String,
}

/// Reviews of a pull request, judged against its current head commit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Approval {
    /// Reviewers whose approval is for the current head.
    pub approved_by: Vec<String>,
    /// Reviewers who approved an older commit: their approval no longer counts.
    pub stale: Vec<String>,
    /// Reviewers who asked for changes.
    pub changes_requested: Vec<String>,
}

impl Approval {
    /// At least one approval for the current head and no outstanding change request.
    pub fn is_approved(&self) -> bool {
        !self.approved_by.is_empty() && self.changes_requested.is_empty()
    }
}

/// What went wrong on a forge; each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is taken.
    #[error("repository {name} already exists (use --force to replace its main branch)")]
    RepoExists {
        /// Name.
        name: String,
    },
    /// No such repository.
    #[error("repository {name} not found")]
    RepoNotFound {
        /// Name.
        name: String,
    },
    /// No such pull request.
    #[error("pull request #{number} not found in {repo}")]
    PrNotFound {
        /// Repository.
        repo: String,
        /// Number.
        number: u64,
    },
    /// The branch exists already.
    #[error("branch {branch} already exists in {repo}")]
    BranchExists {
        /// Repository.
        repo: String,
        /// Branch.
        branch: String,
    },
    /// The credentials are missing, wrong or expired (401).
    #[error("the forge rejected the credentials (401): {detail}")]
    Unauthorized {
        /// The forge's message.
        detail: String,
    },
    /// The credentials lack a permission, or the action is not allowed (403).
    #[error("the forge refused the request (403): {detail}")]
    Forbidden {
        /// The forge's message.
        detail: String,
    },
    /// Still rate limited after waiting as long as allowed.
    #[error("the forge is rate limiting requests; the limit resets in {}", humantime::format_duration(*.reset_in))]
    RateLimited {
        /// How long until the limit resets.
        reset_in: Duration,
    },
    /// A push did not land.
    #[error(transparent)]
    Push(#[from] PushError),
    /// The pull request's head moved since it was checked (409): approvals and CI results
    /// of the old head do not apply.
    #[error("the head of pull request #{number} changed before the merge (expected {expected})")]
    HeadChanged {
        /// PR number.
        number: u64,
        /// The head that was checked.
        expected: String,
    },
    /// The pull request cannot be merged (conflicts, or the base moved).
    #[error("pull request #{number} cannot be merged: {detail}")]
    NotMergeable {
        /// PR number.
        number: u64,
        /// Why.
        detail: String,
    },
    /// The forge is still computing whether the pull request can be merged.
    #[error("the forge is still computing whether pull request #{number} can be merged")]
    MergeabilityPending {
        /// PR number.
        number: u64,
    },
    /// The pull request is not open.
    #[error("pull request #{number} is {state:?}, not open")]
    NotOpen {
        /// PR number.
        number: u64,
        /// Its state.
        state: PrState,
    },
    /// This backend cannot do that.
    #[error("{0}")]
    Unsupported(String),
    /// Missing or contradictory forge settings.
    #[error("{0}")]
    Config(String),
    /// The forge could not be reached.
    #[error("cannot reach the forge at {url}: {detail}")]
    Unreachable {
        /// URL.
        url: String,
        /// Cause.
        detail: String,
    },
    /// Any other answer the forge should not have given.
    #[error("the forge answered HTTP {status} to {what}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The request.
        what: String,
        /// The forge's message.
        detail: String,
    },
    /// libgit2.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// The file system.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// A place agent repositories live.
///
/// `async fn` in a public trait: the futures are awaited by the command that owns the forge,
/// never sent to another task, so the missing `Send` bound costs nothing.
#[allow(async_fn_in_trait)]
pub trait Forge {
    /// Which backend this is.
    fn kind(&self) -> ForgeKind;

    /// The repository, or `None` when it does not exist.
    async fn repo(&self, name: &str) -> Result<Option<Repo>, Error>;

    /// Creates an empty repository; [`Error::RepoExists`] when the name is taken.
    async fn create_repo(&self, new: &NewRepo) -> Result<Repo, Error>;

    /// Pushes refs of the local repository at `local` and checks every ref's result.
    async fn push(&self, repo: &Repo, local: &Path, specs: &[RefSpec]) -> Result<(), Error>;

    /// The commit at the tip of `branch`, `None` when the branch does not exist.
    async fn branch_head(&self, repo: &Repo, branch: &str) -> Result<Option<String>, Error>;

    /// The text of a top-level file in a commit.
    async fn read_file(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error>;

    /// Creates `branch` at a new commit on top of `base_sha` whose top-level file `path`
    /// holds `contents`; [`Error::BranchExists`] when the branch is there already.
    async fn create_branch_with_file(
        &self,
        repo: &Repo,
        branch: &str,
        base_sha: &str,
        path: &str,
        contents: &str,
        message: &str,
    ) -> Result<String, Error>;

    /// Deletes `branch` if it still points at `sha`. A missing branch, or one that points
    /// elsewhere (another run made a new branch of the same name), is left alone and is not
    /// an error.
    async fn delete_branch(&self, repo: &Repo, branch: &str, sha: &str) -> Result<(), Error>;

    /// Open pull requests, optionally only those whose head is `head_branch`.
    async fn open_prs(
        &self,
        repo: &Repo,
        head_branch: Option<&str>,
    ) -> Result<Vec<PullRequest>, Error>;

    /// Opens a pull request, or returns the open one that already has this head branch.
    async fn open_pr(&self, repo: &Repo, new: &NewPr) -> Result<PullRequest, Error>;

    /// One pull request, freshly read.
    async fn pr(&self, repo: &Repo, number: u64) -> Result<PullRequest, Error>;

    /// Closes a pull request with a comment saying why.
    async fn close_pr(&self, repo: &Repo, number: u64, comment: &str) -> Result<(), Error>;

    /// CI results for the pull request's current head. The local forge runs its CI here
    /// when the head has no result yet (bounded by `budget`).
    async fn ci(&self, repo: &Repo, pr: &PullRequest, budget: Duration) -> Result<CiReport, Error>;

    /// Reviews, judged against the pull request's current head.
    async fn approval(&self, repo: &Repo, pr: &PullRequest) -> Result<Approval, Error>;

    /// Records an approval of the current head (local forge; GitHub approvals are given on
    /// GitHub by a person).
    async fn approve(&self, repo: &Repo, number: u64, by: &str) -> Result<PullRequest, Error>;

    /// Merges the pull request if its head is still `expected_head`; returns the merge commit.
    async fn merge(
        &self,
        repo: &Repo,
        pr: &PullRequest,
        expected_head: &str,
        message: &str,
    ) -> Result<String, Error>;
}
