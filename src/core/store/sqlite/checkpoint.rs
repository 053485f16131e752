//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the committing connection, so every few
//! commits the single writer would stop inserting to copy WAL pages into the database file.
//! Instead the writer turns automatic checkpoints off and nudges this thread after each
//! commit; it runs a PASSIVE checkpoint (which never blocks the writer or readers) at most
//! once per [`MIN_INTERVAL`]. A passive checkpoint racing a busy writer may never catch up
//! with the end of the WAL, and SQLite only rewinds the WAL once a checkpoint has copied all
//! of it; so when the WAL has grown past [`CATCH_UP_FRAMES`], the writer is asked to run one
//! checkpoint itself between commits, which then has little left to copy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::store::open_connection;
use crate::core::shared::config::SyncMode;
use crate::core::store::Error;

/// Shortest time between two background checkpoints.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames (pages) beyond which the writer checkpoints once itself: 32 MiB of 4 KiB pages.
const CATCH_UP_FRAMES: i64 = 8192;

/// The writer's handle on the background checkpointer.
pub(super) struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    catch_up: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns automatic checkpoints off on the writer's connection and starts the thread.
    pub fn start(writer: &Connection, path: &Path) -> Result<Checkpointer, Error> {
        let conn = open_connection(path, SyncMode::Normal, false)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (wake, rx) = mpsc::sync_channel(1);
        let catch_up = Arc::new(AtomicBool::new(false));
        let flag = catch_up.clone();
        let thread = std::thread::Builder::new()
            .name(super::store::CHECKPOINT_THREAD.to_owned())
            .spawn(move || run(conn, rx, flag))
            .map_err(|e| Error::Open {
                what: path.display().to_string(),
                message: format!("cannot start the checkpoint thread: {e}"),
            })?;
        Ok(Checkpointer {
            wake: Some(wake),
            catch_up,
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit, on its own connection.
    pub fn committed(&self, writer: &Connection) {
        if let Some(wake) = &self.wake {
            // A full channel already holds a nudge: nothing to add.
            let _ = wake.try_send(());
        }
        if self.catch_up.swap(false, Ordering::AcqRel)
            && let Err(e) = checkpoint(writer)
        {
            tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
        }
    }

    /// Stops the thread and waits for it (its checkpoint, if one is running, completes).
    pub fn stop(mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a PASSIVE checkpoint; returns the WAL's frames and how many are now in the database.
fn checkpoint(conn: &Connection) -> Result<(i64, i64), rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

fn run(conn: Connection, wake: mpsc::Receiver<()>, catch_up: Arc<AtomicBool>) {
    // Each nudge means "the WAL grew"; the writer dropping its sender means "stop".
    let mut pending = wake.recv().is_ok();
    while pending {
        match checkpoint(&conn) {
            Ok((frames, copied)) if frames >= CATCH_UP_FRAMES => {
                tracing::debug!(frames, copied, "WAL is long; the writer will checkpoint");
                catch_up.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
        }
        // Rest for MIN_INTERVAL without listening: a nudge sent meanwhile waits in the
        // one-slot channel, and the writer's nudges find nobody to wake (listening here would
        // cost a wake-up and a context switch per commit). A stop is noticed after the rest.
        std::thread::sleep(MIN_INTERVAL);
        pending = match wake.try_recv() {
            Ok(()) => true,
            Err(TryRecvError::Empty) => wake.recv().is_ok(),
            Err(TryRecvError::Disconnected) => false,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nudge_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = open_connection(&path, SyncMode::Normal, false).unwrap();
        let ckpt = Checkpointer::start(&writer, &path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE t (v TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT printf('%0500d', i) FROM n;",
            )
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // Automatic checkpoints are off: the rows are only in the WAL so far.
        assert!(before < 100_000, "{before}");
        ckpt.committed(&writer);
        // The nudge is buffered, so the thread checkpoints before it sees the stop.
        ckpt.stop();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after > 1_000_000, "{after}");
    }
}
