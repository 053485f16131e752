//! `store::open(url)`: the one place that maps a store URL to a backend.
//!
//! `sqlite:PATH`, `sqlite://PATH` or a plain path: the SQLite backend. `memory:`: the
//! in-memory backend (nothing survives the process). `postgres://` and `postgresql://`: not
//! in this build yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::conversations::ConversationStore;
use super::error::Error;
use super::memory::MemoryStore;
use super::sqlite::conversations::SqliteConversations;
use super::sqlite::store::{SqliteStore, StoreOptions};
use super::telemetry::{StoreMetrics, TelemetryStore};
use crate::core::shared::config::SyncMode;

/// Where a store lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// In this process's memory.
    Memory,
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
        if let Some((scheme, _)) = url.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(Error::UnsupportedUrl(match scheme {
                "postgres" | "postgresql" => "this build cannot open PostgreSQL stores yet; \
                     use an SQLite path (sqlite:PATH)"
                    .to_owned(),
                other => format!(
                    "unknown store URL scheme `{other}://` (use sqlite:PATH, a path, or memory:)"
                ),
            }));
        }
        Ok(Location::Sqlite(PathBuf::from(url)))
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
    /// Read connections kept open (SQLite; a pool size for network backends).
    pub readers: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let d = StoreOptions::new("");
        OpenOptions {
            sync: d.sync,
            queue_records: d.queue_records,
            readers: d.readers,
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
    })
}

/// Opens stored conversations read-only, for exports (safe next to a running collector).
pub async fn open_conversations(location: &Location) -> Result<Arc<dyn ConversationStore>, Error> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteConversations::open(path)?),
        Location::Memory => Arc::new(MemoryStore::default()),
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
        for pg in ["postgres://u@h/db", "postgresql://h/db"] {
            let err = Location::parse(pg).unwrap_err();
            assert!(matches!(err, Error::UnsupportedUrl(_)), "{err}");
            assert!(err.to_string().contains("cannot open PostgreSQL"), "{err}");
        }
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
