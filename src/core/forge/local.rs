//! The local forge: bare git repositories under `<data dir>/forge/`, with pull requests,
//! approvals and CI results stored as JSON files beside them.
//!
//! ```text
//! forge/<name>.git/                 the bare repository
//! forge/<name>.phoenix/repo.json    description and visibility
//! forge/<name>.phoenix/pulls/N.json one pull request
//! forge/<name>.phoenix/ci/SHA.json  CI verdict for a commit (and SHA.log, its output)
//! forge/<name>.phoenix/lock         held while a PR is opened or merged
//! ```
//!
//! Ref updates that must not lose a concurrent change (creating a branch, moving `main` in a
//! merge, deleting a merged or superseded branch) are compare-and-swap operations on the ref,
//! so a second writer fails instead of overwriting, and a delete never takes a newer branch
//! of the same name with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ErrorCode, Oid, Repository};
use serde::{Deserialize, Serialize};

use super::lock::{RepoLock, write_atomic};
use super::{
    Approval, CiReport, Error, Forge, ForgeKind, NewPr, NewRepo, PrState, PullRequest, Repo,
    local_ci,
};
use crate::core::forge::git::{self, RefSpec};
use crate::core::forge::scaffold;

const LOCK_WAIT: Duration = Duration::from_secs(30);
/// How often a branch write that lost a race for the ref's `.lock` file (or its directory)
/// is tried again, and how long apart: git holds a ref's `.lock` file only while it writes
/// the ref.
const REF_LOCK_RETRIES: u32 = 50;
const REF_LOCK_WAIT: Duration = Duration::from_millis(20);

/// Bare repositories under a directory.
#[derive(Debug, Clone)]
pub struct LocalForge {
    root: PathBuf,
    ci_command: Option<String>,
}

/// One approval as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Who approved.
    pub by: String,
    /// The head commit they approved.
    pub sha: String,
    /// When, RFC 3339.
    pub at: String,
}

/// A pull request as stored in `pulls/N.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrRecord {
    /// The pull request.
    #[serde(flatten)]
    pub pr: PullRequest,
    /// Description.
    pub body: String,
    /// `main` when the pull request was opened.
    pub base_sha: String,
    /// When it was opened, RFC 3339.
    pub created_at: String,
    /// Approvals, oldest first.
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// Why it was closed.
    #[serde(default)]
    pub closed_comment: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RepoMeta {
    description: String,
    private: bool,
    created_at: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl LocalForge {
    /// A forge rooted at `root` (normally `<data dir>/forge`); `ci_command` replaces every
    /// repository's own test command when set.
    pub fn new(root: impl Into<PathBuf>, ci_command: Option<String>) -> LocalForge {
        LocalForge {
            root: root.into(),
            ci_command,
        }
    }

    /// The forge's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn bare_path(&self, name: &str) -> Result<PathBuf, Error> {
        scaffold::validate_name(name).map_err(|e| Error::Config(e.to_string()))?;
        Ok(self.root.join(format!("{name}.git")))
    }

    fn meta_dir(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.phoenix"))
    }

    fn open(&self, repo: &Repo) -> Result<Repository, Error> {
        let path = self.bare_path(&repo.name)?;
        if !path.exists() {
            return Err(Error::RepoNotFound {
                name: repo.name.clone(),
            });
        }
        Ok(Repository::open_bare(path)?)
    }

    fn lock(&self, name: &str) -> Result<RepoLock, Error> {
        let dir = self.meta_dir(name);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        RepoLock::acquire(&dir.join("lock"), LOCK_WAIT)
    }

    fn describe(&self, name: &str) -> Result<Repo, Error> {
        let path = self.bare_path(name)?;
        let meta: Option<RepoMeta> = std::fs::read(self.meta_dir(name).join("repo.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(Repo {
            name: name.to_owned(),
            full_name: name.to_owned(),
            url: path.display().to_string(),
            clone_url: path.display().to_string(),
            private: meta.is_some_and(|m| m.private),
            default_branch: "main".to_owned(),
        })
    }

    fn pulls_dir(&self, name: &str) -> PathBuf {
        self.meta_dir(name).join("pulls")
    }

    /// Every pull request record of a repository, by number.
    pub fn records(&self, name: &str) -> Result<Vec<PrRecord>, Error> {
        let dir = self.pulls_dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(Error::io(format!("reading {}", dir.display())))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(self.read_record(&path)?);
            }
        }
        out.sort_by_key(|r| r.pr.number);
        Ok(out)
    }

    fn read_record(&self, path: &Path) -> Result<PrRecord, Error> {
        let bytes =
            std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            context: format!("{} is not a pull request record", path.display()),
            source: std::io::Error::other(e),
        })
    }

    /// One pull request record.
    pub fn record(&self, name: &str, number: u64) -> Result<PrRecord, Error> {
        let path = self.pulls_dir(name).join(format!("{number}.json"));
        if !path.exists() {
            return Err(Error::PrNotFound {
                repo: name.to_owned(),
                number,
            });
        }
        let mut rec = self.read_record(&path)?;
        self.refresh_head(name, &mut rec)?;
        Ok(rec)
    }

    fn save(&self, name: &str, rec: &PrRecord) -> Result<(), Error> {
        let path = self.pulls_dir(name).join(format!("{}.json", rec.pr.number));
        let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::Io {
            context: "encoding a pull request record".to_owned(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &json)
    }

    /// An open pull request's head is whatever its branch points at now.
    fn refresh_head(&self, name: &str, rec: &mut PrRecord) -> Result<(), Error> {
        if rec.pr.state != PrState::Open {
            return Ok(());
        }
        let repo = Repository::open_bare(self.bare_path(name)?)?;
        if let Ok(oid) = repo.refname_to_id(&format!("refs/heads/{}", rec.pr.head_branch)) {
            rec.pr.head_sha = oid.to_string();
        }
        Ok(())
    }

    /// The CI result recorded for a commit, without running anything.
    pub fn recorded_ci(&self, name: &str, sha: &str) -> Option<CiReport> {
        local_ci::recorded(&self.meta_dir(name).join("ci"), sha)
    }
}

impl Forge for LocalForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Local
    }

    async fn repo(&self, name: &str) -> Result<Option<Repo>, Error> {
        if self.bare_path(name)?.exists() {
            Ok(Some(self.describe(name)?))
        } else {
            Ok(None)
        }
    }

    async fn create_repo(&self, new: &NewRepo) -> Result<Repo, Error> {
        let path = self.bare_path(&new.name)?;
        std::fs::create_dir_all(&self.root)
            .map_err(Error::io(format!("creating {}", self.root.display())))?;
        // Built beside its final place and renamed in, so a half-made repository is never
        // visible and two creators cannot both succeed.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}-", new.name))
            .tempdir_in(&self.root)
            .map_err(Error::io(format!(
                "creating a directory in {}",
                self.root.display()
            )))?;
        let repo = git::init(staging.path(), true)?;
        std::fs::write(
            staging.path().join("description"),
            format!("{}\n", new.description),
        )
        .map_err(Error::io("writing the repository description"))?;
        drop(repo);
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &path) {
            let _ = std::fs::remove_dir_all(&staged);
            if path.exists() {
                return Err(Error::RepoExists {
                    name: new.name.clone(),
                });
            }
            return Err(Error::io(format!("creating {}", path.display()))(e));
        }
        let meta = RepoMeta {
            description: new.description.clone(),
            private: new.private,
            created_at: now_rfc3339(),
        };
        write_atomic(
            &self.meta_dir(&new.name).join("repo.json"),
            &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        )?;
        self.describe(&new.name)
    }

    async fn push(&self, repo: &Repo, local: &Path, specs: &[RefSpec]) -> Result<(), Error> {
        let local = Repository::open(local)?;
        let url = self.bare_path(&repo.name)?.display().to_string();
        git::push(&local, &url, specs, None)?;
        Ok(())
    }

    async fn branch_head(&self, repo: &Repo, branch: &str) -> Result<Option<String>, Error> {
        let r = self.open(repo)?;
        match r.refname_to_id(&format!("refs/heads/{branch}")) {
            Ok(oid) => Ok(Some(oid.to_string())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_file(&self, repo: &Repo, sha: &str, path: &str) -> Result<Option<String>, Error> {
        let r = self.open(repo)?;
        Ok(git::read_file(&r, Oid::from_str(sha)?, path)?)
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
        let r = self.open(repo)?;
        let oid =
            git::commit_replacing_file(&r, Oid::from_str(base_sha)?, path, contents, message)?;
        let name = format!("refs/heads/{branch}");
        let mut attempts = 0;
        loop {
            // A plain non-forced create checks that the ref is absent before it takes the
            // ref's lock, so two creators can both pass the check and the second silently
            // overwrites the first. Expecting the zero id makes libgit2 check under the lock.
            match r.reference_matching(&name, oid, false, Oid::ZERO_SHA1, message) {
                Ok(_) => return Ok(oid.to_string()),
                Err(e) if matches!(e.code(), ErrorCode::Exists | ErrorCode::Modified) => {
                    return Err(Error::BranchExists {
                        repo: repo.name.clone(),
                        branch: branch.to_owned(),
                    });
                }
                Err(e) if is_transient_ref_error(&e) && attempts < REF_LOCK_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(REF_LOCK_WAIT).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn delete_branch(&self, repo: &Repo, branch: &str, sha: &str) -> Result<(), Error> {
        let r = self.open(repo)?;
        delete_ref_at(&r, &format!("refs/heads/{branch}"), Oid::from_str(sha)?)
    }

    async fn open_prs(
        &self,
        repo: &Repo,
        head_branch: Option<&str>,
    ) -> Result<Vec<PullRequest>, Error> {
        let mut out = Vec::new();
        for mut rec in self.records(&repo.name)? {
            if rec.pr.state == PrState::Open && head_branch.is_none_or(|h| h == rec.pr.head_branch)
            {
                self.refresh_head(&repo.name, &mut rec)?;
                out.push(rec.pr);
            }
        }
        Ok(out)
    }

    async fn open_pr(&self, repo: &Repo, new: &NewPr) -> Result<PullRequest, Error> {
        let _lock = self.lock(&repo.name)?;
        if let Some(existing) = self
            .open_prs(repo, Some(&new.head))
            .await?
            .into_iter()
            .next()
        {
            return Ok(existing);
        }
        let r = self.open(repo)?;
        let head = r
            .refname_to_id(&format!("refs/heads/{}", new.head))
            .map_err(|_| Error::Config(format!("branch {} does not exist", new.head)))?;
        let base = r
            .refname_to_id(&format!("refs/heads/{}", new.base))
            .map_err(|_| Error::Config(format!("base branch {} does not exist", new.base)))?;
        let number = self
            .records(&repo.name)?
            .last()
            .map(|r| r.pr.number + 1)
            .unwrap_or(1);
        let rec = PrRecord {
            pr: PullRequest {
                number,
                title: new.title.clone(),
                head_branch: new.head.clone(),
                head_sha: head.to_string(),
                base_branch: new.base.clone(),
                state: PrState::Open,
                url: self
                    .pulls_dir(&repo.name)
                    .join(format!("{number}.json"))
                    .display()
                    .to_string(),
                merge_sha: None,
            },
            body: new.body.clone(),
            base_sha: base.to_string(),
            created_at: now_rfc3339(),
            approvals: Vec::new(),
            closed_comment: None,
        };
        self.save(&repo.name, &rec)?;
        Ok(rec.pr)
    }

    async fn pr(&self, repo: &Repo, number: u64) -> Result<PullRequest, Error> {
        Ok(self.record(&repo.name, number)?.pr)
    }

    async fn close_pr(&self, repo: &Repo, number: u64, comment: &str) -> Result<(), Error> {
        let _lock = self.lock(&repo.name)?;
        let mut rec = self.record(&repo.name, number)?;
        if rec.pr.state == PrState::Open {
            rec.pr.state = PrState::Closed;
            rec.closed_comment = Some(comment.to_owned());
            self.save(&repo.name, &rec)?;
        }
        Ok(())
    }

    async fn ci(&self, repo: &Repo, pr: &PullRequest, budget: Duration) -> Result<CiReport, Error> {
        let bare = self.bare_path(&repo.name)?;
        let ci_dir = self.meta_dir(&repo.name).join("ci");
        local_ci::run(
            &bare,
            &ci_dir,
            &pr.head_sha,
            self.ci_command.as_deref(),
            budget,
        )
        .await
    }

    async fn approval(&self, repo: &Repo, pr: &PullRequest) -> Result<Approval, Error> {
        let rec = self.record(&repo.name, pr.number)?;
        let mut out = Approval::default();
        for a in &rec.approvals {
            let list = if a.sha == rec.pr.head_sha {
                &mut out.approved_by
            } else {
                &mut out.stale
            };
            if !list.contains(&a.by) {
                list.push(a.by.clone());
            }
        }
        out.stale.retain(|s| !out.approved_by.contains(s));
        Ok(out)
    }

    async fn approve(&self, repo: &Repo, number: u64, by: &str) -> Result<PullRequest, Error> {
        let _lock = self.lock(&repo.name)?;
        let mut rec = self.record(&repo.name, number)?;
        if rec.pr.state != PrState::Open {
            return Err(Error::NotOpen {
                number,
                state: rec.pr.state,
            });
        }
        rec.approvals.push(ApprovalRecord {
            by: by.to_owned(),
            sha: rec.pr.head_sha.clone(),
            at: now_rfc3339(),
        });
        self.save(&repo.name, &rec)?;
        Ok(rec.pr)
    }

    async fn merge(
        &self,
        repo: &Repo,
        pr: &PullRequest,
        expected_head: &str,
        message: &str,
    ) -> Result<String, Error> {
        let _lock = self.lock(&repo.name)?;
        let mut rec = self.record(&repo.name, pr.number)?;
        if rec.pr.state != PrState::Open {
            return Err(Error::NotOpen {
                number: pr.number,
                state: rec.pr.state,
            });
        }
        if rec.pr.head_sha != expected_head {
            return Err(Error::HeadChanged {
                number: pr.number,
                expected: expected_head.to_owned(),
            });
        }
        let r = self.open(repo)?;
        let base_ref = format!("refs/heads/{}", rec.pr.base_branch);
        let base = r.refname_to_id(&base_ref)?;
        let head = Oid::from_str(expected_head)?;
        let base_commit = r.find_commit(base)?;
        let head_commit = r.find_commit(head)?;
        let mut index = r.merge_commits(&base_commit, &head_commit, None)?;
        if index.has_conflicts() {
            return Err(Error::NotMergeable {
                number: pr.number,
                detail: format!("it conflicts with {} at {base}", rec.pr.base_branch),
            });
        }
        let tree = r.find_tree(index.write_tree_to(&r)?)?;
        let sig = git::signature()?;
        let merge = r.commit(
            None,
            &sig,
            &sig,
            message,
            &tree,
            &[&base_commit, &head_commit],
        )?;
        // Compare-and-swap: fails if the base moved since it was read above.
        if let Err(e) = r.reference_matching(&base_ref, merge, true, base, message) {
            return Err(Error::NotMergeable {
                number: pr.number,
                detail: format!(
                    "{} moved during the merge: {}",
                    rec.pr.base_branch,
                    e.message()
                ),
            });
        }
        rec.pr.state = PrState::Merged;
        rec.pr.merge_sha = Some(merge.to_string());
        self.save(&repo.name, &rec)?;
        // Only the merged head: by now another run may have made a new branch of this name.
        let _ = delete_ref_at(&r, &format!("refs/heads/{}", rec.pr.head_branch), head);
        Ok(merge.to_string())
    }
}

/// Whether a ref write may succeed when tried again: another process holds the ref's
/// `.lock` file while it writes the ref, or a concurrent delete of the last ref in a
/// directory (`refs/heads/playbook/`) removed that directory between libgit2 creating it
/// and opening the `.lock` file in it.
fn is_transient_ref_error(e: &git2::Error) -> bool {
    e.code() == ErrorCode::Locked
        || (e.code() == ErrorCode::NotFound && e.class() == git2::ErrorClass::Os)
}

/// Deletes `name` if it points at `at`; a ref that is gone or now points elsewhere belongs to
/// someone else and is left alone. libgit2 compares the value under the ref's lock.
fn delete_ref_at(r: &Repository, name: &str, at: Oid) -> Result<(), Error> {
    let mut reference = match r.find_reference(name) {
        Ok(reference) => reference,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if reference.target() != Some(at) {
        return Ok(());
    }
    match reference.delete() {
        // Modified: moved since it was read. NotFound: deleted meanwhile, its directory with
        // it. Locked: another process holds it this moment; leaving a merged branch behind
        // is harmless, deleting someone else's is not.
        Err(e)
            if !matches!(
                e.code(),
                ErrorCode::Modified | ErrorCode::Locked | ErrorCode::NotFound
            ) =>
        {
            Err(e.into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn forge_with_main() -> (tempfile::TempDir, LocalForge, Repo, String) {
        let dir = tempfile::tempdir().unwrap();
        let forge = LocalForge::new(dir.path().join("forge"), None);
        let repo = forge
            .create_repo(&NewRepo {
                name: "agent".into(),
                description: "test".into(),
                private: false,
            })
            .await
            .unwrap();
        let bare = forge.open(&repo).unwrap();
        let main = git::commit_files(&bare, "main", &[("a.txt", "one")], "first").unwrap();
        (dir, forge, repo, main.to_string())
    }

    async fn branch_or_exists(
        forge: &LocalForge,
        repo: &Repo,
        contents: &str,
        main: &str,
    ) -> Result<String, Error> {
        forge
            .create_branch_with_file(repo, "playbook/v2", main, "a.txt", contents, contents)
            .await
    }

    async fn branch(forge: &LocalForge, repo: &Repo, contents: &str, main: &str) -> String {
        branch_or_exists(forge, repo, contents, main).await.unwrap()
    }

    /// The race behind issue 13's flaky concurrent evolutions: run A merges `playbook/v2`
    /// (the merge deletes the branch), run B, still on the old main, creates `playbook/v2`
    /// again, and A's clean-up after the merge must not delete B's branch.
    #[tokio::test]
    async fn deleting_a_merged_branch_leaves_a_new_branch_of_that_name_alone() {
        let (_dir, forge, repo, main) = forge_with_main().await;
        let theirs = branch(&forge, &repo, "theirs", &main).await;
        let new = NewPr {
            title: "v2".into(),
            body: String::new(),
            head: "playbook/v2".into(),
            base: "main".into(),
        };
        let pr = forge.open_pr(&repo, &new).await.unwrap();
        forge.merge(&repo, &pr, &theirs, "merge").await.unwrap();
        assert_eq!(forge.branch_head(&repo, "playbook/v2").await.unwrap(), None);

        let mine = branch(&forge, &repo, "mine", &main).await;
        forge
            .delete_branch(&repo, "playbook/v2", &theirs)
            .await
            .unwrap();
        assert_eq!(
            forge.branch_head(&repo, "playbook/v2").await.unwrap(),
            Some(mine.clone()),
            "a clean-up of the merged head keeps the new branch"
        );
        forge.open_pr(&repo, &new).await.unwrap();

        forge
            .delete_branch(&repo, "playbook/v2", &mine)
            .await
            .unwrap();
        assert_eq!(forge.branch_head(&repo, "playbook/v2").await.unwrap(), None);
        forge
            .delete_branch(&repo, "playbook/v2", &mine)
            .await
            .unwrap();
    }

    /// libgit2's plain non-forced create looks for the ref before it locks it, so of two
    /// creators both could win and the second would replace the first's commit unseen.
    #[test]
    fn of_two_concurrent_creators_of_a_branch_exactly_one_wins() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let (_dir, forge, repo, main) = runtime().block_on(forge_with_main());
        for _ in 0..200 {
            let barrier = std::sync::Barrier::new(2);
            let create = |who: &str| {
                let runtime = runtime();
                barrier.wait();
                match runtime.block_on(branch_or_exists(&forge, &repo, who, &main)) {
                    Ok(sha) => Some(sha),
                    Err(Error::BranchExists { .. }) => None,
                    Err(e) => panic!("{e}"),
                }
            };
            let won: Vec<String> = std::thread::scope(|s| {
                let left = s.spawn(|| create("left"));
                let right = s.spawn(|| create("right"));
                [left, right]
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(won.len(), 1, "exactly one creator wins: {won:?}");
            let head = runtime().block_on(forge.branch_head(&repo, "playbook/v2"));
            assert_eq!(head.unwrap().as_ref(), won.first());
            runtime()
                .block_on(forge.delete_branch(&repo, "playbook/v2", &won[0]))
                .unwrap();
        }
    }
}
