//! The GitHub forge (github.com or GitHub Enterprise) through its REST API with octocrab.
//!
//! Depends on the forge's traits and `git`, and `shared` (LLM errors, retry).
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

mod operations;

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

    /// `GET /contents/{path}` of a file on a commit.
    async fn contents(&self, repo: &Repo, sha: &str, path: &str) -> Result<Answer, Error> {
        self.call(
            Method::Get,
            &format!("{}/contents/{path}?ref={sha}", self.repo_path(repo)),
            None,
        )
        .await
    }

    /// The blob sha of a file on a commit, for the contents API's optimistic concurrency.
    async fn file_sha(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error> {
        let a = self.contents(repo, sha, path).await?;
        match a.status.as_u16() {
            200 => Ok(a.body.get("sha").and_then(Value::as_str).map(str::to_owned)),
            404 => Ok(None),
            _ => Err(Self::fail("GET contents", &a)),
        }
    }
}

#[cfg(test)]
mod tests;
