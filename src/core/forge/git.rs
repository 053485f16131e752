//! Git plumbing shared by the forges (git2): committing a scaffold, building trees with one
//! file replaced, and pushing with every ref's result checked.

use std::cell::Cell;
use std::path::Path;

use git2::{Cred, CredentialType, Oid, PushOptions, RemoteCallbacks, Repository, Signature};

/// Committer and author of everything Phoenix writes.
pub fn signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("Phoenix", "phoenix@localhost")
}

/// Why a push did not land.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The remote refused one ref (hook, protected branch, non-fast-forward).
    #[error("the remote rejected {reference}: {reason}")]
    Rejected {
        /// Remote ref name.
        reference: String,
        /// The remote's reason.
        reason: String,
    },
    /// The credentials were refused; asked once, not again.
    #[error("authentication failed for {url}: the credentials were refused (not retried)")]
    Auth {
        /// Remote URL.
        url: String,
    },
    /// The remote spoke something other than the git protocol, or not at all.
    #[error("push to {url} failed: {detail}")]
    Protocol {
        /// Remote URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Anything else from libgit2.
    #[error("push to {url} failed: {source}")]
    Git {
        /// Remote URL.
        url: String,
        /// Cause.
        source: git2::Error,
    },
}

/// One ref to push: `src` in the local repository to `dst` on the remote.
#[derive(Debug, Clone)]
pub struct RefSpec {
    /// Local ref, e.g. `refs/heads/main`.
    pub src: String,
    /// Remote ref.
    pub dst: String,
    /// Overwrite whatever the remote has.
    pub force: bool,
}

impl RefSpec {
    fn render(&self) -> String {
        format!(
            "{}{}:{}",
            if self.force { "+" } else { "" },
            self.src,
            self.dst
        )
    }
}

/// Credentials offered to the remote: a user name and a token.
#[derive(Clone)]
pub struct Token {
    /// User name (GitHub accepts any non-empty name with a token).
    pub username: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Pushes `specs` from `repo` to `url` (a path or URL) and checks each ref's result.
///
/// libgit2 calls the credential callback again every time the server refuses what it was
/// given, which loops forever on a bad token; the callback here answers once and then
/// reports the refusal.
pub fn push(
    repo: &Repository,
    url: &str,
    specs: &[RefSpec],
    token: Option<&Token>,
) -> Result<(), PushError> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|source| PushError::Git {
            url: url.to_owned(),
            source,
        })?;
    let rejected: std::cell::RefCell<Option<(String, String)>> = Default::default();
    let asked = Cell::new(false);
    let refused = Cell::new(false);
    {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, username, allowed| {
            if asked.replace(true) {
                refused.set(true);
                return Err(git2::Error::from_str(
                    "credentials were refused; not asking again",
                ));
            }
            match token {
                Some(t) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    Cred::userpass_plaintext(username.unwrap_or(&t.username), &t.secret)
                }
                _ => {
                    refused.set(true);
                    Err(git2::Error::from_str(
                        "the remote asks for credentials and none are configured",
                    ))
                }
            }
        });
        callbacks.push_update_reference(|reference, status| {
            if let Some(reason) = status {
                let mut slot = rejected.borrow_mut();
                if slot.is_none() {
                    *slot = Some((reference.to_owned(), reason.to_owned()));
                }
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(callbacks);
        let refspecs: Vec<String> = specs.iter().map(RefSpec::render).collect();
        if let Err(source) = remote.push(&refspecs, Some(&mut opts)) {
            if refused.get() || source.code() == git2::ErrorCode::Auth {
                return Err(PushError::Auth {
                    url: url.to_owned(),
                });
            }
            if source.code() == git2::ErrorCode::NotFastForward {
                return Err(PushError::Rejected {
                    reference: specs.first().map(|s| s.dst.clone()).unwrap_or_default(),
                    reason: "non-fast-forward".to_owned(),
                });
            }
            return Err(PushError::Git {
                url: url.to_owned(),
                source,
            });
        }
    }
    if let Some((reference, reason)) = rejected.into_inner() {
        return Err(PushError::Rejected { reference, reason });
    }
    Ok(())
}

/// Commits the whole work tree of `repo` (honouring `.gitignore`) on `refs/heads/{branch}`
/// with the given parents, and returns the commit.
pub fn commit_worktree(
    repo: &Repository,
    branch: &str,
    parents: &[Oid],
    message: &str,
) -> Result<Oid, git2::Error> {
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let parents: Vec<git2::Commit<'_>> = parents
        .iter()
        .map(|p| repo.find_commit(*p))
        .collect::<Result<_, _>>()?;
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    let sig = signature()?;
    let oid = repo.commit(None, &sig, &sig, message, &tree, &parent_refs)?;
    repo.reference(&format!("refs/heads/{branch}"), oid, true, message)?;
    Ok(oid)
}

/// Commits a tree holding only `files` (path, contents) on `refs/heads/{branch}`.
pub fn commit_files(
    repo: &Repository,
    branch: &str,
    files: &[(&str, &str)],
    message: &str,
) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(None)?;
    for (path, contents) in files {
        let blob = repo.blob(contents.as_bytes())?;
        builder.insert(path, blob, 0o100644)?;
    }
    let tree = repo.find_tree(builder.write()?)?;
    let sig = signature()?;
    let oid = repo.commit(None, &sig, &sig, message, &tree, &[])?;
    repo.reference(&format!("refs/heads/{branch}"), oid, true, message)?;
    Ok(oid)
}

/// A new commit on top of `base` whose tree is `base`'s with the top-level file `name`
/// replaced by `contents`. No ref is moved.
pub fn commit_replacing_file(
    repo: &Repository,
    base: Oid,
    name: &str,
    contents: &str,
    message: &str,
) -> Result<Oid, git2::Error> {
    let parent = repo.find_commit(base)?;
    let mut builder = repo.treebuilder(Some(&parent.tree()?))?;
    let blob = repo.blob(contents.as_bytes())?;
    builder.insert(name, blob, 0o100644)?;
    let tree = repo.find_tree(builder.write()?)?;
    let sig = signature()?;
    repo.commit(None, &sig, &sig, message, &tree, &[&parent])
}

/// The text of `path` in commit `commit`, `None` when the file is absent.
pub fn read_file(
    repo: &Repository,
    commit: Oid,
    path: &str,
) -> Result<Option<String>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let entry = match tree.get_path(Path::new(path)) {
        Ok(e) => e,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let blob = entry.to_object(repo)?.peel_to_blob()?;
    Ok(Some(String::from_utf8_lossy(blob.content()).into_owned()))
}

/// A new repository in `dir` whose unborn HEAD is `refs/heads/main`.
pub fn init(dir: &Path, bare: bool) -> Result<Repository, git2::Error> {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(bare).initial_head("main").mkdir(true);
    Repository::init_opts(dir, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_land_and_non_fast_forward_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let remote = init(&dir.path().join("remote.git"), true).unwrap();
        let work = init(&dir.path().join("work"), false).unwrap();
        std::fs::write(dir.path().join("work/a.txt"), "one").unwrap();
        let first = commit_worktree(&work, "main", &[], "first").unwrap();
        let url = dir.path().join("remote.git").display().to_string();
        let spec = |force| RefSpec {
            src: "refs/heads/main".into(),
            dst: "refs/heads/main".into(),
            force,
        };
        push(&work, &url, &[spec(false)], None).unwrap();
        assert_eq!(remote.refname_to_id("refs/heads/main").unwrap(), first);
        assert_eq!(
            read_file(&remote, first, "a.txt").unwrap().as_deref(),
            Some("one")
        );

        // An unrelated root commit cannot replace main without force.
        let other = commit_files(&work, "main", &[("b.txt", "two")], "other").unwrap();
        let err = push(&work, &url, &[spec(false)], None).unwrap_err();
        assert!(matches!(err, PushError::Rejected { .. }), "{err}");
        push(&work, &url, &[spec(true)], None).unwrap();
        assert_eq!(remote.refname_to_id("refs/heads/main").unwrap(), other);

        let next = commit_replacing_file(&remote, other, "b.txt", "three", "edit").unwrap();
        assert_eq!(
            read_file(&remote, next, "b.txt").unwrap().as_deref(),
            Some("three")
        );
        assert_eq!(read_file(&remote, next, "missing").unwrap(), None);
    }
}
