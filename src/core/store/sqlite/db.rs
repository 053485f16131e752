//! SQLite plumbing shared by the telemetry store and the distributor's update log: opening
//! connections with Phoenix's pragmas, versioned migrations, a pool of read connections and
//! the thread that owns the single write connection.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::core::shared::config::SyncMode;

/// What can go wrong while opening or migrating a database; each database's own error type
/// takes these over with `From`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file (or its directory, or the writer thread) could not be set up.
    #[error("cannot open {}: {message}", path.display())]
    Open {
        /// Database file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer Phoenix.
    #[error("schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

/// Opens a connection: WAL, the given durability and a `cache_kib` page cache for writers;
/// read-only connections only get the cache.
pub fn open(
    path: &Path,
    sync: SyncMode,
    read_only: bool,
    cache_kib: i64,
) -> Result<Connection, SetupError> {
    let open_err = |message: String| SetupError::Open {
        path: path.to_owned(),
        message,
    };
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot enable WAL (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncMode::Full => "FULL",
                SyncMode::Normal => "NORMAL",
            },
        )?;
        // Keep the WAL file from growing without bound after big bursts or purges.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(conn)
}

/// Brings `conn` to version `migrations.len()`, one transaction per step; entry `i` moves
/// the schema from version `i` to `i + 1`, recorded in `user_version`.
pub fn migrate(conn: &mut Connection, migrations: &[&str], what: &str) -> Result<(), SetupError> {
    let supported = migrations.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > supported {
        return Err(SetupError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied {what} migration");
    }
    Ok(())
}

/// Read-only connections, opened on demand and kept up to a limit.
pub struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max: usize,
    cache_kib: i64,
}

impl ReaderPool {
    /// A pool keeping at most `max` idle connections to `path`.
    pub fn new(path: &Path, max: usize, cache_kib: i64) -> ReaderPool {
        ReaderPool {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            max: max.max(1),
            cache_kib,
        }
    }

    /// Runs `f` on a pooled (or new) read connection.
    pub fn with<R, E: From<SetupError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E>,
    ) -> Result<R, E> {
        let pooled = self.idle.lock().expect("reader pool lock").pop();
        let conn = match pooled {
            Some(c) => c,
            None => open(&self.path, SyncMode::Normal, true, self.cache_kib)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < self.max {
            idle.push(conn);
        }
        result
    }
}

/// The thread that owns a database's write connection, fed jobs of type `J` over a channel.
pub struct WriterThread<J> {
    tx: Mutex<Option<mpsc::Sender<J>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl<J: Send + 'static> WriterThread<J> {
    /// Starts thread `name` running `run` over the job channel; `path` names the database
    /// in errors.
    pub fn spawn(
        name: &str,
        path: &Path,
        run: impl FnOnce(mpsc::Receiver<J>) + Send + 'static,
    ) -> Result<WriterThread<J>, SetupError> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(rx))
            .map_err(|e| SetupError::Open {
                path: path.to_owned(),
                message: format!("cannot start writer thread: {e}"),
            })?;
        Ok(WriterThread {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Queues `job`; gives it back when the writer is closed.
    pub fn send(&self, job: J) -> Result<(), J> {
        let guard = self.tx.lock().expect("writer sender lock");
        match guard.as_ref() {
            Some(sender) => sender.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Sends the job `shutdown` makes, waits for the writer to finish everything queued
    /// before it, and refuses later jobs.
    pub async fn close(&self, shutdown: impl FnOnce(oneshot::Sender<()>) -> J) {
        let sender = self.tx.lock().expect("writer sender lock").take();
        let Some(sender) = sender else { return };
        let (done_tx, done_rx) = oneshot::channel();
        if sender.send(shutdown(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        drop(sender);
        let handle = self.handle.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl<J> Drop for WriterThread<J> {
    fn drop(&mut self) {
        // Dropping the sender lets the writer drain what is queued and exit; wait for it so
        // nothing acknowledged is lost when a database goes away without `close`.
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.handle.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = ["CREATE TABLE a (x)", "CREATE TABLE b (y)"];
        migrate(&mut conn, &steps, "test").unwrap();
        migrate(&mut conn, &steps, "test").unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        assert!(matches!(
            migrate(&mut conn, &steps[..1], "test"),
            Err(SetupError::SchemaTooNew {
                found: 2,
                supported: 1
            })
        ));
    }

    #[tokio::test]
    async fn a_closed_writer_gives_jobs_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = WriterThread::spawn("t", &dir.path().join("x.db"), |rx| {
            while let Ok(job) = rx.recv() {
                match job {
                    Some(done) => {
                        let _: Result<(), ()> = oneshot::Sender::send(done, ());
                        break;
                    }
                    None => continue,
                }
            }
        })
        .unwrap();
        assert!(writer.send(None).is_ok());
        writer.close(Some).await;
        assert!(matches!(writer.send(None), Err(None)));
    }
}
