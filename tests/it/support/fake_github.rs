//! A local stand-in for the GitHub REST API and git's smart HTTP, backed by real bare
//! repositories, for tests of the GitHub forge. Every request is recorded; responses can be
//! scripted ahead of the real behaviour to produce GitHub's failure modes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use git2::{Oid, Repository};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `Authorization` header.
    pub auth: Option<String>,
    /// JSON body (`Null` when none).
    pub body: Value,
}

/// A scripted answer for the first request matching `method` and a path ending.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Method to match.
    pub method: &'static str,
    /// Path (without query) must end with this.
    pub path_ends: String,
    /// Status to send.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Value,
}

#[derive(Default)]
struct Pull {
    number: u64,
    title: String,
    head: String,
    base: String,
    state: String,
    merged: bool,
    merge_sha: Option<String>,
    /// The head at the merge, kept as GitHub does after the branch is deleted.
    merged_head: Option<String>,
}

#[derive(Default)]
pub struct World {
    requests: Vec<Recorded>,
    script: Vec<Scripted>,
    repos: HashMap<String, bool>,
    pulls: HashMap<String, Vec<Pull>>,
    /// Check runs reported for every commit: (name, status, conclusion).
    pub check_runs: Vec<(String, String, Option<String>)>,
    /// A reviewer who approves whatever head a pull request has when reviews are listed.
    pub auto_approver: Option<String>,
    /// Reviews returned verbatim (in addition to the auto approver).
    pub reviews: Vec<Value>,
    /// Answers `mergeable: null` this many times first.
    pub mergeable_unknown: u32,
}

/// The running fake.
pub struct FakeGithub {
    /// API root for [`GithubSettings::api_url`].
    pub api_url: String,
    /// Where the bare repositories live.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    world: Arc<Mutex<World>>,
    server: tokio::task::JoinHandle<()>,
}

/// The token the fake accepts.
pub const TOKEN: &str = "test-pat";

#[derive(Clone)]
struct Shared {
    world: Arc<Mutex<World>>,
    root: PathBuf,
    base: String,
}

impl FakeGithub {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> FakeGithub {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let world = Arc::new(Mutex::new(World::default()));
        let shared = Shared {
            world: world.clone(),
            root: root.clone(),
            base: base.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGithub {
            api_url: format!("{base}/api/v3"),
            root,
            _dir: dir,
            world,
            server,
        }
    }

    /// The fake's state.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a scripted answer.
    pub fn script(
        &self,
        method: &'static str,
        path_ends: &str,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    ) {
        self.world().script.push(Scripted {
            method,
            path_ends: path_ends.to_owned(),
            status,
            headers,
            body,
        });
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The bare repository of `owner/name`.
    pub fn bare(&self, full_name: &str) -> Repository {
        Repository::open_bare(self.root.join(format!("{full_name}.git"))).unwrap()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn not_found() -> Response {
    reply(404, json!({"message": "Not Found"}))
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut w = s.world.lock().unwrap();
        w.requests.push(Recorded {
            method: method.to_string(),
            path: if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            },
            auth: auth.clone(),
            body: json_body.clone(),
        });
        if let Some(i) = w
            .script
            .iter()
            .position(|r| r.method == method.as_str() && path.ends_with(&r.path_ends))
        {
            let r = w.script.remove(i);
            let mut resp = reply(r.status, r.body);
            for (k, v) in r.headers {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            return resp;
        }
    }
    if let Some(rest) = path.strip_prefix("/git/") {
        return git_http(&s, &method, rest, auth.as_deref(), body).await;
    }
    let Some(api) = path.strip_prefix("/api/v3") else {
        return not_found();
    };
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return reply(401, json!({"message": "Bad credentials"}));
    }
    let seg: Vec<&str> = api.trim_start_matches('/').split('/').collect();
    let mut w = s.world.lock().unwrap();
    match (method.as_str(), seg.as_slice()) {
        ("POST", ["user", "repos"]) => create_repo(&s, &mut w, "tester", &json_body),
        ("POST", ["orgs", org, "repos"]) => create_repo(&s, &mut w, org, &json_body),
        (m, ["repos", owner, name, rest @ ..]) => {
            let full = format!("{owner}/{name}");
            let Some(private) = w.repos.get(&full).copied() else {
                return not_found();
            };
            let repo = Repository::open_bare(s.root.join(format!("{full}.git"))).unwrap();
            repos_api(
                &s, &mut w, &repo, &full, private, m, rest, &query, &json_body,
            )
        }
        _ => not_found(),
    }
}

fn repo_json(s: &Shared, full: &str, private: bool) -> Value {
    let name = full.split('/').nth(1).unwrap();
    json!({
        "name": name, "full_name": full, "private": private, "default_branch": "main",
        "html_url": format!("{}/{full}", s.base),
        "clone_url": format!("{}/git/{full}.git", s.base),
    })
}

fn create_repo(s: &Shared, w: &mut World, owner: &str, body: &Value) -> Response {
    let name = body["name"].as_str().unwrap_or_default();
    let full = format!("{owner}/{name}");
    if w.repos.contains_key(&full) {
        return reply(
            422,
            json!({"message": "Repository creation failed.", "errors": [{"message": "name already exists on this account"}]}),
        );
    }
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(true).initial_head("main").mkdir(true);
    Repository::init_opts(s.root.join(format!("{full}.git")), &opts).unwrap();
    let private = body["private"].as_bool().unwrap_or(false);
    w.repos.insert(full.clone(), private);
    reply(201, repo_json(s, &full, private))
}

fn pull_json(repo: &Repository, p: &Pull, unknown: bool) -> Value {
    let head = repo
        .refname_to_id(&format!("refs/heads/{}", p.head))
        .map(|o| o.to_string())
        .ok()
        .or_else(|| p.merged_head.clone())
        .unwrap_or_default();
    json!({
        "number": p.number, "title": p.title, "state": p.state, "merged": p.merged,
        "merge_commit_sha": p.merge_sha, "html_url": format!("https://github.test/pull/{}", p.number),
        "head": {"ref": p.head, "sha": head}, "base": {"ref": p.base},
        "mergeable": if unknown { Value::Null } else { Value::Bool(true) },
    })
}

#[allow(clippy::too_many_arguments)]
fn repos_api(
    s: &Shared,
    w: &mut World,
    repo: &Repository,
    full: &str,
    private: bool,
    m: &str,
    rest: &[&str],
    query: &str,
    body: &Value,
) -> Response {
    let q = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_owned))
    };
    match (m, rest) {
        ("GET", []) => reply(200, repo_json(s, full, private)),
        ("GET", ["git", "ref", "heads", branch @ ..]) => {
            match repo.refname_to_id(&format!("refs/heads/{}", branch.join("/"))) {
                Ok(oid) => reply(200, json!({"object": {"sha": oid.to_string()}})),
                Err(_) if repo.is_empty().unwrap_or(false) => {
                    reply(409, json!({"message": "Git Repository is empty."}))
                }
                Err(_) => not_found(),
            }
        }
        ("POST", ["git", "refs"]) => {
            let name = body["ref"].as_str().unwrap_or_default();
            let sha = Oid::from_str(body["sha"].as_str().unwrap_or_default()).unwrap();
            match repo.reference(name, sha, false, "api") {
                Ok(_) => reply(
                    201,
                    json!({"ref": name, "object": {"sha": sha.to_string()}}),
                ),
                Err(_) => reply(422, json!({"message": "Reference already exists"})),
            }
        }
        ("DELETE", ["git", "refs", "heads", branch @ ..]) => {
            if let Ok(mut r) = repo.find_reference(&format!("refs/heads/{}", branch.join("/"))) {
                r.delete().unwrap();
                (StatusCode::NO_CONTENT, "").into_response()
            } else {
                reply(422, json!({"message": "Reference does not exist"}))
            }
        }
        ("GET", ["contents", file]) => {
            let at = q("ref").unwrap_or_else(|| "main".into());
            let oid =
                Oid::from_str(&at).or_else(|_| repo.refname_to_id(&format!("refs/heads/{at}")));
            let Ok(oid) = oid else { return not_found() };
            let tree = repo.find_commit(oid).unwrap().tree().unwrap();
            match tree.get_name(file) {
                Some(entry) => {
                    let blob = repo.find_blob(entry.id()).unwrap();
                    let content = base64::engine::general_purpose::STANDARD.encode(blob.content());
                    reply(
                        200,
                        json!({"sha": entry.id().to_string(), "encoding": "base64", "content": content}),
                    )
                }
                None => not_found(),
            }
        }
        ("PUT", ["contents", file]) => {
            let branch = body["branch"].as_str().unwrap_or("main");
            let head = repo.refname_to_id(&format!("refs/heads/{branch}")).unwrap();
            let tree = repo.find_commit(head).unwrap().tree().unwrap();
            let current = tree.get_name(file).map(|e| e.id().to_string());
            if current.as_deref() != body["sha"].as_str() {
                return reply(409, json!({"message": format!("{file} does not match")}));
            }
            let text = base64::engine::general_purpose::STANDARD
                .decode(body["content"].as_str().unwrap())
                .unwrap();
            let commit = phoenix::core::forge::git::commit_replacing_file(
                repo,
                head,
                file,
                &String::from_utf8(text).unwrap(),
                body["message"].as_str().unwrap(),
            )
            .unwrap();
            repo.reference(&format!("refs/heads/{branch}"), commit, true, "api")
                .unwrap();
            reply(200, json!({"commit": {"sha": commit.to_string()}}))
        }
        ("GET", ["pulls"]) => {
            let head = q("head").map(|h| h.split_once(':').map(|(_, b)| b.to_owned()).unwrap_or(h));
            let list: Vec<Value> = w
                .pulls
                .get(full)
                .into_iter()
                .flatten()
                .filter(|p| p.state == "open" && head.as_deref().is_none_or(|h| h == p.head))
                .map(|p| pull_json(repo, p, false))
                .collect();
            reply(200, Value::Array(list))
        }
        ("POST", ["pulls"]) => {
            let head = body["head"].as_str().unwrap_or_default().to_owned();
            let pulls = w.pulls.entry(full.to_owned()).or_default();
            if pulls.iter().any(|p| p.state == "open" && p.head == head) {
                return reply(
                    422,
                    json!({"message": "Validation Failed", "errors": [{"message": format!("A pull request already exists for {head}.")}]}),
                );
            }
            let p = Pull {
                number: pulls.len() as u64 + 1,
                title: body["title"].as_str().unwrap_or_default().to_owned(),
                head,
                base: body["base"].as_str().unwrap_or("main").to_owned(),
                state: "open".into(),
                ..Default::default()
            };
            let out = pull_json(repo, &p, false);
            pulls.push(p);
            reply(201, out)
        }
        (m, ["pulls", n, tail @ ..]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let unknown = m == "GET" && tail.is_empty() && w.mergeable_unknown > 0;
            if unknown {
                w.mergeable_unknown -= 1;
            }
            let auto = w.auto_approver.clone();
            let mut reviews = w.reviews.clone();
            let Some(p) = w
                .pulls
                .get_mut(full)
                .and_then(|ps| ps.iter_mut().find(|p| p.number == n))
            else {
                return not_found();
            };
            match (m, tail) {
                ("GET", []) => reply(200, pull_json(repo, p, unknown)),
                ("PATCH", []) => {
                    if let Some(state) = body["state"].as_str() {
                        p.state = state.to_owned();
                    }
                    reply(200, pull_json(repo, p, false))
                }
                ("GET", ["reviews"]) => {
                    if let Some(login) = auto {
                        let head = repo
                            .refname_to_id(&format!("refs/heads/{}", p.head))
                            .map(|o| o.to_string())
                            .unwrap_or_default();
                        reviews.push(json!({"user": {"login": login}, "state": "APPROVED", "commit_id": head}));
                    }
                    reply(200, Value::Array(reviews))
                }
                ("PUT", ["merge"]) => {
                    let head = repo
                        .refname_to_id(&format!("refs/heads/{}", p.head))
                        .unwrap();
                    if body["sha"].as_str() != Some(head.to_string().as_str()) {
                        return reply(
                            409,
                            json!({"message": "Head branch was modified. Review and try the merge again."}),
                        );
                    }
                    let base = repo
                        .refname_to_id(&format!("refs/heads/{}", p.base))
                        .unwrap();
                    let (bc, hc) = (
                        repo.find_commit(base).unwrap(),
                        repo.find_commit(head).unwrap(),
                    );
                    let mut index = repo.merge_commits(&bc, &hc, None).unwrap();
                    if index.has_conflicts() {
                        return reply(405, json!({"message": "Pull Request is not mergeable"}));
                    }
                    let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
                    let sig = phoenix::core::forge::git::signature().unwrap();
                    let title = body["commit_title"].as_str().unwrap_or("Merge");
                    let merge = repo
                        .commit(
                            Some(&format!("refs/heads/{}", p.base)),
                            &sig,
                            &sig,
                            title,
                            &tree,
                            &[&bc, &hc],
                        )
                        .unwrap();
                    p.state = "closed".into();
                    p.merged = true;
                    p.merge_sha = Some(merge.to_string());
                    p.merged_head = Some(head.to_string());
                    reply(
                        200,
                        json!({"sha": merge.to_string(), "merged": true, "message": "Pull Request successfully merged"}),
                    )
                }
                _ => not_found(),
            }
        }
        ("POST", ["issues", _, "comments"]) => reply(201, json!({"id": 1})),
        ("GET", ["commits", _, "status"]) => reply(
            200,
            json!({"state": "pending", "total_count": 0, "statuses": []}),
        ),
        ("GET", ["commits", _, "check-runs"]) => {
            let runs: Vec<Value> = w
                .check_runs
                .iter()
                .map(|(name, status, conclusion)| json!({"name": name, "status": status, "conclusion": conclusion}))
                .collect();
            reply(200, json!({"total_count": runs.len(), "check_runs": runs}))
        }
        _ => not_found(),
    }
}

/// Git smart HTTP (push only), answered by `git receive-pack --stateless-rpc`.
async fn git_http(
    s: &Shared,
    method: &Method,
    rest: &str,
    auth: Option<&str>,
    body: Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("tester:{TOKEN}"))
    );
    if auth != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"GitHub\"")],
            "",
        )
            .into_response();
    }
    let (repo_path, action) = if let Some(r) = rest.strip_suffix("/info/refs") {
        (r, "advertise")
    } else if let Some(r) = rest.strip_suffix("/git-receive-pack") {
        (r, "receive")
    } else {
        return not_found();
    };
    let bare = s.root.join(repo_path);
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("receive-pack").arg("--stateless-rpc");
    if action == "advertise" {
        cmd.arg("--advertise-refs");
    }
    let mut child = cmd
        .arg(&bare)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if *method == Method::POST {
        stdin.write_all(&body).await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let mut payload = Vec::new();
    let content_type = if action == "advertise" {
        let line = "# service=git-receive-pack\n";
        payload.extend(format!("{:04x}{line}0000", line.len() + 4).into_bytes());
        "application/x-git-receive-pack-advertisement"
    } else {
        "application/x-git-receive-pack-result"
    };
    payload.extend(out.stdout);
    (StatusCode::OK, [("content-type", content_type)], payload).into_response()
}
