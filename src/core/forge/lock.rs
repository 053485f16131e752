//! A per-repository lock file for the local forge, so two Phoenix processes never allocate
//! the same pull request number or merge at the same moment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::Error;

/// A lock older than this belongs to a process that died while holding it.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// Held until dropped.
#[derive(Debug)]
pub struct RepoLock {
    path: PathBuf,
}

impl RepoLock {
    /// Creates `path` exclusively, waiting up to `wait` for another holder to let go.
    pub fn acquire(path: &Path, wait: Duration) -> Result<RepoLock, Error> {
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(RepoLock {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > STALE_AFTER) {
                        tracing::warn!(path = %path.display(), "removing a stale forge lock");
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    if started.elapsed() > wait {
                        return Err(Error::Io {
                            context: format!(
                                "another phoenix process holds {} (delete it if none is running)",
                                path.display()
                            ),
                            source: e,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("creating lock {}", path.display()),
                        source: e,
                    });
                }
            }
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers see the old
/// file or the new one, never half of one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(Error::io(format!("writing {}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()))(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = RepoLock::acquire(&path, Duration::from_millis(10)).unwrap();
        assert!(RepoLock::acquire(&path, Duration::from_millis(50)).is_err());
        drop(first);
        RepoLock::acquire(&path, Duration::from_millis(10)).unwrap();
    }
}
