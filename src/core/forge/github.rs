//! The GitHub forge (github.com or GitHub Enterprise) through its REST API with octocrab.
//!
//! Requests go through octocrab's raw methods so every status and header can be acted on:
//! rate limits are waited out per `Retry-After` / `X-RateLimit-Reset` (bounded), 401 and 403
//! become typed errors, an existing pull request for a branch is reused, a merge sends the
//! head it checked (409 when it moved), CI is read from commit statuses *and* check runs, and
//! only an approval of the current head commit counts.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use octocrab::Octocrab;
use serde_json::{Value, json};

use super::{
    Approval, Check, CiReport, CiState, Error, Forge, ForgeKind, NewPr, NewRepo, PrState,
    PullRequest, Repo, smart_http,
};
use crate::core::forge::git::{RefSpec, Token};
use crate::core::shared::retry::{RetryPolicy, Verdict, retry};

/// Rate-limit waits before giving up.
const RATE_LIMIT_RETRIES: u32 = 3;

/// How to reach GitHub.
#[derive(Clone)]
pub struct GithubSettings {
    /// REST API root, e.g. `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub api_url: String,
    /// Personal access token (`GITHUB_PAT`).
    pub token: String,
    /// Account that owns repositories when no organisation is given (`GITHUB_USERNAME`).
    pub username: Option<String>,
    /// Organisation that owns the repositories.
    pub org: Option<String>,
    /// Longest single wait for a rate limit to reset.
    pub max_rate_wait: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl std::fmt::Debug for GithubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSettings")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("username", &self.username)
            .field("org", &self.org)
            .finish()
    }
}

/// Repositories of one owner on GitHub.
pub struct GithubForge {
    client: Octocrab,
    settings: GithubSettings,
    owner: String,
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

fn message(a: &Answer) -> String {
    let mut m = a
        .body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| a.text.chars().take(300).collect());
    if let Some(errors) = a.body.get("errors").and_then(Value::as_array) {
        let details: Vec<String> = errors
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if !details.is_empty() {
            m = format!("{m} ({})", details.join("; "));
        }
    }
    m
}

fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if status != StatusCode::TOO_MANY_REQUESTS
        && !(status == StatusCode::FORBIDDEN && (exhausted || retry_after.is_some()))
    {
        return None;
    }
    if let Some(secs) = retry_after {
        return Some(Duration::from_secs(secs));
    }
    let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(Duration::from_secs(
        reset.map(|r| r.saturating_sub(now) + 1).unwrap_or(60),
    ))
}

impl GithubForge {
    /// A client for the owner's repositories; needs a token and an owner (org or user).
    pub fn new(settings: GithubSettings) -> Result<GithubForge, Error> {
        let owner = settings
            .org
            .clone()
            .or_else(|| settings.username.clone())
            .ok_or_else(|| {
                Error::Config("the GitHub forge needs GITHUB_USERNAME or --org".to_owned())
            })?;
        if settings.token.trim().is_empty() {
            return Err(Error::Config(
                "the GitHub forge needs GITHUB_PAT".to_owned(),
            ));
        }
        let client = Octocrab::builder()
            .base_uri(settings.api_url.trim_end_matches('/'))
            .map_err(|e| {
                Error::Config(format!(
                    "invalid GitHub API URL {:?}: {e}",
                    settings.api_url
                ))
            })?
            .personal_token(settings.token.clone())
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the GitHub client: {e}")))?;
        Ok(GithubForge {
            client,
            settings,
            owner,
        })
    }

    /// The account or organisation that owns the repositories.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One API call; rate limits are waited out (at most [`RATE_LIMIT_RETRIES`] times, each
    /// wait no longer than `max_rate_wait`) before giving up with [`Error::RateLimited`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let max_rate_wait = self.settings.max_rate_wait;
        let policy = RetryPolicy {
            max_retries: RATE_LIMIT_RETRIES,
            base: Duration::ZERO,
            max: max_rate_wait,
        };
        retry(
            policy,
            |_| self.call_once(method, path, body),
            |e| match e {
                Error::RateLimited { reset_in } if *reset_in <= max_rate_wait => {
                    Verdict::Retry(Some(*reset_in))
                }
                _ => Verdict::Fail,
            },
            |_, wait| {
                tracing::warn!(
                    path,
                    wait_ms = wait.delay.as_millis() as u64,
                    "GitHub rate limit; waiting"
                );
            },
        )
        .await
    }

    /// One HTTP request; a rate-limited answer is [`Error::RateLimited`] with the wait asked.
    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let sent = match method {
            Method::Get => self.client._get(path).await,
            Method::Post => self.client._post(path, body).await,
            Method::Put => self.client._put(path, body).await,
            Method::Patch => self.client._patch(path, body).await,
            Method::Delete => self.client._delete(path, body).await,
        };
        let response = sent.map_err(|e| Error::Unreachable {
            url: format!("{}{path}", self.settings.api_url.trim_end_matches('/')),
            detail: crate::core::shared::llm::error_chain(&e),
        })?;
        let status = response.status();
        let wait = rate_limit_wait(status, response.headers());
        let text = self
            .client
            .body_to_string(response)
            .await
            .map_err(|e| Error::Unreachable {
                url: path.to_owned(),
                detail: crate::core::shared::llm::error_chain(&e),
            })?;
        if let Some(wait) = wait {
            return Err(Error::RateLimited { reset_in: wait });
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let answer = Answer { status, body, text };
        match status.as_u16() {
            401 => Err(Error::Unauthorized {
                detail: message(&answer),
            }),
            403 => Err(Error::Forbidden {
                detail: message(&answer),
            }),
            _ => Ok(answer),
        }
    }

    fn fail(what: &str, a: &Answer) -> Error {
        Error::Api {
            status: a.status.as_u16(),
            what: what.to_owned(),
            detail: message(a),
        }
    }

    fn repo_path(&self, repo: &Repo) -> String {
        format!("/repos/{}", repo.full_name)
    }

    fn to_repo(v: &Value) -> Repo {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Repo {
            name: s("name"),
            full_name: s("full_name"),
            url: s("html_url"),
            clone_url: s("clone_url"),
            private: v.get("private").and_then(Value::as_bool).unwrap_or(false),
            default_branch: v
                .get("default_branch")
                .and_then(Value::as_str)
                .unwrap_or("main")
                .to_owned(),
        }
    }

    fn to_pr(v: &Value) -> PullRequest {
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let merged = v.get("merged").and_then(Value::as_bool).unwrap_or(false)
            || v.get("merged_at").is_some_and(|m| !m.is_null());
        PullRequest {
            number: v.get("number").and_then(Value::as_u64).unwrap_or(0),
            title: s(v, "title"),
            head_branch: s(&v["head"], "ref"),
            head_sha: s(&v["head"], "sha"),
            base_branch: s(&v["base"], "ref"),
            state: match (s(v, "state").as_str(), merged) {
                (_, true) => PrState::Merged,
                ("open", _) => PrState::Open,
                _ => PrState::Closed,
            },
            url: s(v, "html_url"),
            merge_sha: v
                .get("merge_commit_sha")
                .and_then(Value::as_str)
                .filter(|_| merged)
                .map(str::to_owned),
        }
    }

    async fn pull(&self, repo: &Repo, number: u64) -> Result<Value, Error> {
        let a = self
            .call(
                Method::Get,
                &format!("{}/pulls/{number}", self.repo_path(repo)),
                None,
            )
            .await?;
        match a.status.as_u16() {
            200 => Ok(a.body),
            404 => Err(Error::PrNotFound {
                repo: repo.full_name.clone(),
                number,
            }),
            _ => Err(Self::fail("GET pull request", &a)),
        }
    }

    /// The blob sha of a file on a commit, for the contents API's optimistic concurrency.
    async fn file_sha(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error> {
        let a = self
            .call(
                Method::Get,
                &format!("{}/contents/{path}?ref={sha}", self.repo_path(repo)),
                None,
            )
            .await?;
        match a.status.as_u16() {
            200 => Ok(a.body.get("sha").and_then(Value::as_str).map(str::to_owned)),
            404 => Ok(None),
            _ => Err(Self::fail("GET contents", &a)),
        }
    }
}

fn check_state(status: &str, conclusion: Option<&str>) -> CiState {
    if status != "completed" {
        return CiState::Pending;
    }
    match conclusion.unwrap_or("") {
        "success" | "neutral" | "skipped" => CiState::Success,
        _ => CiState::Failure,
    }
}

impl Forge for GithubForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Github
    }

    async fn repo(&self, name: &str) -> Result<Option<Repo>, Error> {
        let a = self
            .call(Method::Get, &format!("/repos/{}/{name}", self.owner), None)
            .await?;
        match a.status.as_u16() {
            200 => Ok(Some(Self::to_repo(&a.body))),
            404 => Ok(None),
            _ => Err(Self::fail("GET repository", &a)),
        }
    }

    async fn create_repo(&self, new: &NewRepo) -> Result<Repo, Error> {
        let path = match &self.settings.org {
            Some(org) => format!("/orgs/{org}/repos"),
            None => "/user/repos".to_owned(),
        };
        let body = json!({
            "name": new.name,
            "description": new.description,
            "private": new.private,
            "auto_init": false,
        });
        let a = self.call(Method::Post, &path, Some(&body)).await?;
        match a.status.as_u16() {
            200 | 201 => Ok(Self::to_repo(&a.body)),
            422 if message(&a).contains("already exists") => Err(Error::RepoExists {
                name: new.name.clone(),
            }),
            _ => Err(Self::fail("create repository", &a)),
        }
    }

    async fn push(&self, repo: &Repo, local: &Path, specs: &[RefSpec]) -> Result<(), Error> {
        let token = Token {
            username: self
                .settings
                .username
                .clone()
                .unwrap_or_else(|| "x-access-token".to_owned()),
            secret: self.settings.token.clone(),
        };
        smart_http::push(
            local,
            &repo.clone_url,
            specs,
            Some(&token),
            Duration::from_secs(300),
        )
        .await?;
        Ok(())
    }

    async fn branch_head(&self, repo: &Repo, branch: &str) -> Result<Option<String>, Error> {
        let a = self
            .call(
                Method::Get,
                &format!("{}/git/ref/heads/{branch}", self.repo_path(repo)),
                None,
            )
            .await?;
        match a.status.as_u16() {
            200 => Ok(a.body["object"]["sha"].as_str().map(str::to_owned)),
            // 409: the repository is empty.
            404 | 409 => Ok(None),
            _ => Err(Self::fail("GET ref", &a)),
        }
    }

    async fn read_file(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error> {
        let a = self
            .call(
                Method::Get,
                &format!("{}/contents/{path}?ref={sha}", self.repo_path(repo)),
                None,
            )
            .await?;
        match a.status.as_u16() {
            200 => {
                let encoded: String = a.body["content"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| Error::Api {
                        status: 200,
                        what: "GET contents".to_owned(),
                        detail: format!("content is not base64: {e}"),
                    })?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            404 => Ok(None),
            _ => Err(Self::fail("GET contents", &a)),
        }
    }

    async fn create_branch_with_file(
        &self,
        repo: &Repo,
        branch: &str,
        base_sha: &str,
        path: &str,
        contents: &str,
        message_text: &str,
    ) -> Result<String, Error> {
        let blob = self.file_sha(repo, base_sha, path).await?;
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": base_sha});
        let a = self
            .call(
                Method::Post,
                &format!("{}/git/refs", self.repo_path(repo)),
                Some(&body),
            )
            .await?;
        match a.status.as_u16() {
            200 | 201 => {}
            422 if message(&a).contains("already exists") => {
                return Err(Error::BranchExists {
                    repo: repo.full_name.clone(),
                    branch: branch.to_owned(),
                });
            }
            _ => return Err(Self::fail("create branch", &a)),
        }
        let mut body = json!({
            "message": message_text,
            "content": base64::engine::general_purpose::STANDARD.encode(contents),
            "branch": branch,
        });
        if let Some(sha) = blob {
            body["sha"] = Value::from(sha);
        }
        let a = self
            .call(
                Method::Put,
                &format!("{}/contents/{path}", self.repo_path(repo)),
                Some(&body),
            )
            .await?;
        match a.status.as_u16() {
            200 | 201 => Ok(a.body["commit"]["sha"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            _ => Err(Self::fail("commit file", &a)),
        }
    }

    async fn delete_branch(&self, repo: &Repo, branch: &str, sha: &str) -> Result<(), Error> {
        // The REST API has no conditional delete, so a branch re-created in the moment
        // between this read and the DELETE is still lost; one re-created at any other time
        // is kept.
        if self.branch_head(repo, branch).await?.as_deref() != Some(sha) {
            return Ok(());
        }
        let a = self
            .call(
                Method::Delete,
                &format!("{}/git/refs/heads/{branch}", self.repo_path(repo)),
                None,
            )
            .await?;
        match a.status.as_u16() {
            200 | 204 | 404 | 422 => Ok(()),
            _ => Err(Self::fail("delete branch", &a)),
        }
    }

    async fn open_prs(
        &self,
        repo: &Repo,
        head_branch: Option<&str>,
    ) -> Result<Vec<PullRequest>, Error> {
        let mut path = format!("{}/pulls?state=open&per_page=100", self.repo_path(repo));
        if let Some(h) = head_branch {
            path.push_str(&format!("&head={}:{h}", self.owner));
        }
        let a = self.call(Method::Get, &path, None).await?;
        match (a.status.as_u16(), a.body.as_array()) {
            (200, Some(items)) => Ok(items
                .iter()
                .map(Self::to_pr)
                .filter(|p| head_branch.is_none_or(|h| p.head_branch == h))
                .collect()),
            _ => Err(Self::fail("list pull requests", &a)),
        }
    }

    async fn open_pr(&self, repo: &Repo, new: &NewPr) -> Result<PullRequest, Error> {
        if let Some(existing) = self
            .open_prs(repo, Some(&new.head))
            .await?
            .into_iter()
            .next()
        {
            return Ok(existing);
        }
        let body =
            json!({"title": new.title, "body": new.body, "head": new.head, "base": new.base});
        let a = self
            .call(
                Method::Post,
                &format!("{}/pulls", self.repo_path(repo)),
                Some(&body),
            )
            .await?;
        match a.status.as_u16() {
            200 | 201 => Ok(Self::to_pr(&a.body)),
            // Opened by someone else between the check and the request: use theirs.
            422 if message(&a).contains("already exists") => self
                .open_prs(repo, Some(&new.head))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Self::fail("open pull request", &a)),
            _ => Err(Self::fail("open pull request", &a)),
        }
    }

    async fn pr(&self, repo: &Repo, number: u64) -> Result<PullRequest, Error> {
        Ok(Self::to_pr(&self.pull(repo, number).await?))
    }

    async fn close_pr(&self, repo: &Repo, number: u64, comment: &str) -> Result<(), Error> {
        let path = format!("{}/issues/{number}/comments", self.repo_path(repo));
        let a = self
            .call(Method::Post, &path, Some(&json!({"body": comment})))
            .await?;
        if !a.status.is_success() {
            return Err(Self::fail("comment on pull request", &a));
        }
        let path = format!("{}/pulls/{number}", self.repo_path(repo));
        let a = self
            .call(Method::Patch, &path, Some(&json!({"state": "closed"})))
            .await?;
        if !a.status.is_success() {
            return Err(Self::fail("close pull request", &a));
        }
        Ok(())
    }

    async fn ci(
        &self,
        repo: &Repo,
        pr: &PullRequest,
        _budget: Duration,
    ) -> Result<CiReport, Error> {
        let sha = &pr.head_sha;
        let mut checks = Vec::new();
        let a = self
            .call(
                Method::Get,
                &format!("{}/commits/{sha}/status", self.repo_path(repo)),
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(Self::fail("GET combined status", &a));
        }
        // With no statuses at all GitHub reports the combined state as "pending"; only the
        // individual statuses mean anything.
        for s in a.body["statuses"].as_array().into_iter().flatten() {
            checks.push(Check {
                name: s["context"].as_str().unwrap_or("status").to_owned(),
                state: match s["state"].as_str().unwrap_or("") {
                    "success" => CiState::Success,
                    "pending" => CiState::Pending,
                    _ => CiState::Failure,
                },
                details: s["target_url"].as_str().map(str::to_owned),
            });
        }
        let a = self
            .call(
                Method::Get,
                &format!(
                    "{}/commits/{sha}/check-runs?per_page=100",
                    self.repo_path(repo)
                ),
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(Self::fail("GET check runs", &a));
        }
        for run in a.body["check_runs"].as_array().into_iter().flatten() {
            checks.push(Check {
                name: run["name"].as_str().unwrap_or("check").to_owned(),
                state: check_state(
                    run["status"].as_str().unwrap_or(""),
                    run["conclusion"].as_str(),
                ),
                details: run["html_url"].as_str().map(str::to_owned),
            });
        }
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.state == CiState::Failure)
            .map(|c| c.name.as_str())
            .collect();
        let pending: Vec<&str> = checks
            .iter()
            .filter(|c| c.state == CiState::Pending)
            .map(|c| c.name.as_str())
            .collect();
        let (state, summary) = if !failed.is_empty() {
            (CiState::Failure, format!("failed: {}", failed.join(", ")))
        } else if checks.is_empty() {
            (CiState::Pending, format!("no CI has reported on {sha} yet"))
        } else if !pending.is_empty() {
            (CiState::Pending, format!("running: {}", pending.join(", ")))
        } else {
            (
                CiState::Success,
                format!("{} check(s) passed", checks.len()),
            )
        };
        Ok(CiReport {
            sha: sha.clone(),
            state,
            checks,
            summary,
        })
    }

    async fn approval(&self, repo: &Repo, pr: &PullRequest) -> Result<Approval, Error> {
        let head = self.pr(repo, pr.number).await?.head_sha;
        let path = format!(
            "{}/pulls/{}/reviews?per_page=100",
            self.repo_path(repo),
            pr.number
        );
        let a = self.call(Method::Get, &path, None).await?;
        let Some(reviews) = a.body.as_array().filter(|_| a.status.is_success()) else {
            return Err(Self::fail("list reviews", &a));
        };
        // A reviewer's latest decisive review is their verdict; comments do not change it.
        let mut latest: Vec<(String, String, String)> = Vec::new();
        for r in reviews {
            let state = r["state"].as_str().unwrap_or("").to_owned();
            if !matches!(
                state.as_str(),
                "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED"
            ) {
                continue;
            }
            let user = r["user"]["login"].as_str().unwrap_or("?").to_owned();
            let commit = r["commit_id"].as_str().unwrap_or("").to_owned();
            latest.retain(|(u, _, _)| *u != user);
            latest.push((user, state, commit));
        }
        let mut out = Approval::default();
        for (user, state, commit) in latest {
            match state.as_str() {
                "APPROVED" if commit == head => out.approved_by.push(user),
                "APPROVED" => out.stale.push(user),
                "CHANGES_REQUESTED" => out.changes_requested.push(user),
                _ => {}
            }
        }
        Ok(out)
    }

    async fn approve(&self, _repo: &Repo, _number: u64, _by: &str) -> Result<PullRequest, Error> {
        Err(Error::Unsupported(
            "GitHub approvals are reviews by people on GitHub; Phoenix waits for them".to_owned(),
        ))
    }

    async fn merge(
        &self,
        repo: &Repo,
        pr: &PullRequest,
        expected_head: &str,
        message_text: &str,
    ) -> Result<String, Error> {
        let current = self.pull(repo, pr.number).await?;
        let fresh = Self::to_pr(&current);
        if fresh.state != PrState::Open {
            return Err(Error::NotOpen {
                number: pr.number,
                state: fresh.state,
            });
        }
        if fresh.head_sha != expected_head {
            return Err(Error::HeadChanged {
                number: pr.number,
                expected: expected_head.to_owned(),
            });
        }
        match current.get("mergeable") {
            Some(Value::Bool(false)) => {
                return Err(Error::NotMergeable {
                    number: pr.number,
                    detail: format!(
                        "GitHub reports it as {}",
                        current["mergeable_state"]
                            .as_str()
                            .unwrap_or("not mergeable")
                    ),
                });
            }
            Some(Value::Bool(true)) => {}
            _ => return Err(Error::MergeabilityPending { number: pr.number }),
        }
        let (title, rest) = message_text
            .split_once("\n\n")
            .unwrap_or((message_text, ""));
        let body = json!({
            "sha": expected_head,
            "merge_method": "merge",
            "commit_title": title,
            "commit_message": rest,
        });
        let a = self
            .call(
                Method::Put,
                &format!("{}/pulls/{}/merge", self.repo_path(repo), pr.number),
                Some(&body),
            )
            .await?;
        match a.status.as_u16() {
            200 => Ok(a.body["sha"].as_str().unwrap_or_default().to_owned()),
            405 => Err(Error::NotMergeable {
                number: pr.number,
                detail: message(&a),
            }),
            409 => Err(Error::HeadChanged {
                number: pr.number,
                expected: expected_head.to_owned(),
            }),
            _ => Err(Self::fail("merge pull request", &a)),
        }
    }
}

#[cfg(test)]
mod tests;
