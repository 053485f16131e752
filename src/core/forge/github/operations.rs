//! The [`Forge`] operations on GitHub: repositories, pushes, pull requests, reviews and
//! checks, each one REST call (or a few) through `GithubForge::call`.

use super::*;

pub(super) fn check_state(status: &str, conclusion: Option<&str>) -> CiState {
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
        let a = self.contents(repo, sha, path).await?;
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
