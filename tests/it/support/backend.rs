//! Which backend the in-process servers of the tests store into. `PHOENIX_TEST_BACKEND=postgres`
//! (with `PHOENIX_TEST_DATABASE_URL`) runs the collector, distributor, conversations and export
//! tests on PostgreSQL, each server's data directory paired with a database of its own; unset
//! (or `sqlite`), the SQLite files in the data directory. `.ci/run` runs those tests both ways.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use super::services::TestDatabase;

/// The store behind the test servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files in the data directory.
    Sqlite,
    /// A database of the test's own on `PHOENIX_TEST_DATABASE_URL`.
    Postgres,
}

/// The backend this run chose.
pub fn backend() -> Backend {
    match std::env::var("PHOENIX_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("") | Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("PHOENIX_TEST_BACKEND={other:?}: expected `sqlite` or `postgres`"),
    }
}

/// A server's data directory and, on PostgreSQL, its database: both survive a stop, so a
/// server started again on it sees what the last one stored; both go when this is dropped.
pub struct DataDir {
    tmp: TempDir,
    database: Option<Arc<TestDatabase>>,
}

impl DataDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The database URL on PostgreSQL, after [`DataDir::ensure_database`].
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_deref().map(|d| d.url.as_str())
    }

    /// Pairs the directory with a fresh database when the run is on PostgreSQL.
    pub async fn ensure_database(&mut self) {
        if backend() == Backend::Postgres && self.database.is_none() {
            let db = TestDatabase::create().await.expect(
                "PHOENIX_TEST_BACKEND=postgres needs PHOENIX_TEST_DATABASE_URL (.ci/run sets both)",
            );
            self.database = Some(Arc::new(db));
        }
    }

    /// Where the collector's store is, as `phoenix export --db` and `store::open` take it:
    /// the database URL, or the SQLite file `file` in the directory.
    pub fn store_location(&self, file: &str) -> PathBuf {
        match self.database_url() {
            Some(url) => PathBuf::from(url),
            None => self.path().join(file),
        }
    }
}

impl From<TempDir> for DataDir {
    fn from(tmp: TempDir) -> DataDir {
        DataDir {
            tmp,
            database: None,
        }
    }
}

impl std::ops::Deref for DataDir {
    type Target = TempDir;
    fn deref(&self) -> &TempDir {
        &self.tmp
    }
}

/// Runs `sql` (one text column) on the collector's store in `dir` as another process would,
/// straight from the SQLite file `file` or the database.
pub async fn column(dir: &DataDir, file: &str, sql: &str) -> Vec<Option<String>> {
    match dir.database_url() {
        Some(url) => pg_column(url, sql).await,
        None => {
            let conn = rusqlite::Connection::open_with_flags(
                dir.path().join(file),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open the SQLite file");
            let mut stmt = conn.prepare(sql).expect(sql);
            stmt.query_map([], |r| r.get(0))
                .expect(sql)
                .map(Result::unwrap)
                .collect()
        }
    }
}

/// Runs `sql` (one text column) on the PostgreSQL database at `url`, on a connection of its own.
pub async fn pg_column(url: &str, sql: &str) -> Vec<Option<String>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    let task = tokio::spawn(conn);
    let rows = client.query(sql, &[]).await.expect(sql);
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}
