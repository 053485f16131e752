//! Where a benchmark's data lives while it runs, and is gone from afterwards: a directory
//! under the system temp dir, or a database of its own on the given PostgreSQL server —
//! never the user's own data.

use std::path::PathBuf;

use deadpool_postgres::Pool;

use super::{Error, io};
use crate::core::store::postgres::{self, PgOptions};

/// A scratch directory removed on drop, so an early error leaves nothing behind either.
pub(super) struct ScratchDir(pub(super) PathBuf);

impl ScratchDir {
    pub(super) fn create() -> Result<Self, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("phoenix-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(io(format!("creating scratch directory {}", dir.display())))?;
        Ok(ScratchDir(dir))
    }

    /// Leaves the directory where it is, and says where that is.
    pub(super) fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database `phoenix_bench_<random>` made on the server of the URL given; [`drop_now`]
/// removes it, open connections and all.
///
/// [`drop_now`]: ScratchDatabase::drop_now
pub(super) struct ScratchDatabase {
    /// Its name.
    pub(super) name: String,
    /// The given URL, pointing at it instead.
    pub(super) url: String,
    admin: Pool,
}

impl ScratchDatabase {
    pub(super) async fn create(url: &str) -> Result<Self, Error> {
        let admin = postgres::pool(&PgOptions {
            pool_size: 1,
            ..PgOptions::new(url)
        })
        .map_err(store_error)?;
        let name = format!("phoenix_bench_{:016x}", rand::random::<u64>());
        // The name is ours (hex digits): nothing from outside reaches this DDL.
        execute(&admin, &format!("CREATE DATABASE {name}")).await?;
        Ok(ScratchDatabase {
            url: with_database(url, &name),
            name,
            admin,
        })
    }

    /// Drops the database, even while something is still connected to it.
    pub(super) async fn drop_now(self) -> Result<(), Error> {
        execute(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

async fn execute(admin: &Pool, sql: &str) -> Result<(), Error> {
    let client = admin
        .get()
        .await
        .map_err(|e| store_error(postgres::Error::from(e)))?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| store_error(postgres::Error::from_pg(&e)))
}

fn store_error(e: postgres::Error) -> Error {
    Error::Store(e.into())
}

/// `url` pointing at database `name` instead (URL or libpq key=value form).
pub(super) fn with_database(url: &str, name: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The authority ends at the first `/` after any `user:password@`.
        let after_user = base.rfind('@').map_or(0, |at| at + 1);
        let authority_end = base[after_user..]
            .find('/')
            .map_or(base.len(), |i| after_user + i);
        let mut out = format!("{scheme}://{}/{name}", &base[..authority_end]);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={name}", kept.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_database_replaces_the_given_one_only() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgresql://u:p/w@h/db?sslmode=require", "b1"),
            "postgresql://u:p/w@h/b1?sslmode=require"
        );
        assert_eq!(with_database("postgres://h", "b1"), "postgres://h/b1");
        assert_eq!(
            with_database("host=h user=u dbname=test", "b1"),
            "host=h user=u dbname=b1"
        );
    }
}
