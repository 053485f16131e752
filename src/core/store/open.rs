//! `store::open(url)`: the one place that maps a store URL to a backend.
//!
//! `sqlite:PATH`, `sqlite://PATH` or a plain path: the SQLite backend. `memory:`: the
//! in-memory backend (nothing survives the process). `postgres://` and `postgresql://`: the
//! PostgreSQL backend (one database shared by every process pointed at it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::conversations::ConversationStore;
use super::error::Error;
use super::memory::MemoryStore;
use super::postgres::{self, PgOptions, PgStore};
use super::sqlite::conversations::SqliteConversations;
use super::sqlite::store::{SqliteStore, StoreOptions};
use super::telemetry::{StoreMetrics, TelemetryStore};
use crate::core::shared::config::{Settings, SyncMode};

/// Where a store lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// In this process's memory.
    Memory,
    /// A PostgreSQL database (`postgres://…`).
    Postgres(String),
}

impl Location {
    /// Parses a store URL or a plain path.
    pub fn parse(url: &str) -> Result<Location, Error> {
        if url == "memory:" || url == "memory://" {
            return Ok(Location::Memory);
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(Error::UnsupportedUrl(format!(
                    "store URL {url:?} names no database file (sqlite:PATH)"
                )));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if postgres::is_postgres_url(url) {
            return Ok(Location::Postgres(url.trim().to_owned()));
        }
        if let Some((scheme, _)) = url.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(Error::UnsupportedUrl(format!(
                "unknown store URL scheme `{scheme}://` (use postgres://…, sqlite:PATH, a path, \
                 or memory:)"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(url)))
    }

    /// Where the collector's store lives: `store.url` when set, else `collector.db_path`.
    pub fn collector(settings: &Settings) -> Result<Location, Error> {
        match &settings.store.url {
            Some(url) => Location::parse(url),
            None => Location::from_path(&settings.collector.db_path),
        }
    }

    /// A configured database path: parsed as a URL when it reads as one, else the path as is
    /// (a path that is not UTF-8 stays untouched).
    pub fn from_path(path: &Path) -> Result<Location, Error> {
        match path.to_str() {
            Some(text) => Location::parse(text),
            None => Ok(Location::Sqlite(path.to_owned())),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Memory => f.write_str("memory:"),
            Location::Postgres(url) => f.write_str(&postgres::mask_password(url)),
        }
    }
}

/// How to open a read-write store, whatever the backend.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Durability of commits (SQLite).
    pub sync: SyncMode,
    /// Records that may wait for the writer before `submit` refuses.
    pub queue_records: usize,
    /// Read connections kept open (SQLite).
    pub readers: usize,
    /// Connections kept to a database server at most (PostgreSQL).
    pub pool_size: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let d = StoreOptions::new("");
        OpenOptions {
            sync: d.sync,
            queue_records: d.queue_records,
            readers: d.readers,
            pool_size: 16,
        }
    }
}

/// Opens the collector's store at `location` (creating and migrating it if needed); the
/// store feeds `metrics`. Async because a network backend connects its pool here.
pub async fn open(
    location: &Location,
    options: &OpenOptions,
    metrics: StoreMetrics,
) -> Result<Arc<dyn TelemetryStore>, Error> {
    Ok(match location {
        Location::Sqlite(path) => {
            let opts = StoreOptions {
                sync: options.sync,
                queue_records: options.queue_records,
                readers: options.readers,
                ..StoreOptions::new(path)
            };
            Arc::new(SqliteStore::open(&opts, metrics)?)
        }
        Location::Memory => Arc::new(MemoryStore::with_capacity(options.queue_records)),
        Location::Postgres(url) => {
            let pool = connect_postgres(url, options.pool_size).await?;
            Arc::new(PgStore::start(pool, options.queue_records, metrics))
        }
    })
}

/// A pool over the database at `url`, migrated, with the partitions around today made.
/// Starting while PostgreSQL cannot be reached fails with what was tried (password masked).
pub async fn connect_postgres(
    url: &str,
    pool_size: usize,
) -> Result<deadpool_postgres::Pool, Error> {
    let pool = postgres::pool(&PgOptions {
        pool_size,
        ..PgOptions::new(url)
    })?;
    let at = postgres::mask_password(url);
    let unreachable = |e: postgres::Error| match e {
        postgres::Error::Unavailable(m) => Error::Backend {
            backend: "postgres",
            message: format!("cannot reach {at}: {m}"),
            transient: true,
        },
        other => other.into(),
    };
    postgres::migrate(&pool).await.map_err(unreachable)?;
    postgres::ensure_around(&pool, crate::core::telemetry::now_unix())
        .await
        .map_err(unreachable)?;
    Ok(pool)
}

/// Opens stored conversations read-only, for exports (safe next to a running collector).
pub async fn open_conversations(location: &Location) -> Result<Arc<dyn ConversationStore>, Error> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteConversations::open(path)?),
        Location::Memory => Arc::new(MemoryStore::default()),
        Location::Postgres(url) => {
            // Reads only: no queue to speak of, a small pool.
            let pool = connect_postgres(url, 4).await?;
            Arc::new(PgStore::start(pool, 1, StoreMetrics::default()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        let sqlite = |p: &str| Location::Sqlite(PathBuf::from(p));
        assert_eq!(
            Location::parse("sqlite:/srv/t.db").unwrap(),
            sqlite("/srv/t.db")
        );
        assert_eq!(
            Location::parse("sqlite:///srv/t.db").unwrap(),
            sqlite("/srv/t.db")
        );
        assert_eq!(Location::parse("sqlite:rel.db").unwrap(), sqlite("rel.db"));
        assert_eq!(Location::parse("/srv/t.db").unwrap(), sqlite("/srv/t.db"));
        assert_eq!(Location::parse("t.db").unwrap(), sqlite("t.db"));
        assert_eq!(Location::parse("memory:").unwrap(), Location::Memory);
        for pg in ["postgres://u@h/db", "postgresql://h/db", "POSTGRES://h/db"] {
            assert_eq!(
                Location::parse(pg).unwrap(),
                Location::Postgres(pg.to_owned())
            );
        }
        assert_eq!(
            Location::parse("postgres://u:s3cret@h/db")
                .unwrap()
                .to_string(),
            "postgres://u:****@h/db"
        );
        assert!(matches!(
            Location::parse("mysql://h/db"),
            Err(Error::UnsupportedUrl(_))
        ));
        assert!(matches!(
            Location::parse("sqlite:"),
            Err(Error::UnsupportedUrl(_))
        ));
    }
}
