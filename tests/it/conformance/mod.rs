//! The store conformance suite: what every storage backend must do, written once against the
//! traits (`TelemetryStore`, `ConversationStore`) and run against each backend. A backend joins
//! with one line, `suite!(name => factory);`, where `factory().await` gives a fresh, empty
//! [`Backend`] (async: a network backend connects there), or `None` to skip (PostgreSQL
//! without `PHOENIX_TEST_DATABASE_URL`). Backends: SQLite (through `store::open` and
//! directly), memory and PostgreSQL; the update log has its suite in `conformance_log.rs`.

mod cases;

use std::sync::Arc;

use phoenix::core::store::postgres::{self as pg, PgOptions, PgStore};
use phoenix::core::store::{
    ConversationStore, Location, MemoryStore, OpenOptions, SqliteConversations, StoreMetrics,
    StoreOptions, TelemetryStore,
};
use tempfile::TempDir;

use crate::support::services::TestDatabase;

/// A fresh store under test, and what keeps it alive.
pub struct Backend {
    /// The store.
    pub store: Arc<dyn TelemetryStore>,
    /// A second, read-only view of the same conversations (what `phoenix export` opens), when
    /// the backend has one.
    pub export_view: Option<Box<dyn Fn() -> Arc<dyn ConversationStore> + Send + Sync>>,
    _dir: Option<TempDir>,
    /// A PostgreSQL database of the test's own, dropped after the store.
    _database: Option<TestDatabase>,
}

/// SQLite in a temporary directory, opened through `store::open`.
pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("conformance.db");
    let store = phoenix::core::store::open(
        &Location::parse(&format!("sqlite:{}", path.display())).expect("sqlite URL"),
        &OpenOptions::default(),
        StoreMetrics::default(),
    )
    .await
    .expect("open the SQLite store");
    Backend {
        store,
        export_view: Some(Box::new(move || {
            Arc::new(SqliteConversations::open(&path).expect("open read-only"))
        })),
        _dir: Some(dir),
        _database: None,
    }
}

/// SQLite opened directly with small queues, as tests and the bench do.
pub async fn sqlite_direct() -> Backend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let opts = StoreOptions {
        readers: 1,
        ..StoreOptions::new(dir.path().join("direct.db"))
    };
    let store = phoenix::core::store::SqliteStore::open(&opts, StoreMetrics::default())
        .expect("open the SQLite store");
    Backend {
        store: Arc::new(store),
        export_view: None,
        _dir: Some(dir),
        _database: None,
    }
}

/// The in-memory backend, opened through `store::open("memory:")`.
pub async fn memory() -> Backend {
    let store = phoenix::core::store::open(
        &Location::parse("memory:").expect("memory URL"),
        &OpenOptions::default(),
        StoreMetrics::default(),
    )
    .await
    .expect("open the memory store");
    Backend {
        store,
        export_view: None,
        _dir: None,
        _database: None,
    }
}

/// PostgreSQL in a database of the test's own (`PHOENIX_TEST_DATABASE_URL`); `None` (the
/// case is skipped) when the variable is unset.
pub async fn postgres() -> Option<Backend> {
    let db = TestDatabase::create().await?;
    let pool = pg::pool(&PgOptions::new(&db.url)).expect("pool");
    pg::migrate(&pool).await.expect("migrate");
    let store = PgStore::start(pool, 200_000, StoreMetrics::default());
    let url = db.url.clone();
    Some(Backend {
        store: Arc::new(store),
        // What another process (an export) sees: a store of its own on the same database.
        export_view: Some(Box::new(move || {
            let pool = pg::pool(&PgOptions::new(&url)).expect("pool");
            Arc::new(PgStore::start(pool, 1, StoreMetrics::default()))
        })),
        _dir: None,
        _database: Some(db),
    })
}

/// A backend that is always there, for the suite.
pub trait Available: Sized {
    /// The backend, or `None` to skip the case.
    fn available(self) -> Option<Backend>;
}

impl Available for Backend {
    fn available(self) -> Option<Backend> {
        Some(self)
    }
}

impl Available for Option<Backend> {
    fn available(self) -> Option<Backend> {
        self
    }
}

/// One `#[tokio::test]` per case for a backend.
macro_rules! suite {
    ($backend:ident => $factory:path) => {
        mod $backend {
            use super::cases;
            suite!(@cases $factory;
                round_trip,
                filters,
                agent_prefix_is_segment_wise,
                newest_first_paging_has_no_gaps_or_duplicates,
                last_heartbeats,
                insights_newest_first,
                purge_before_respects_its_limit,
                counts,
                conversations_refuse_duplicate_ids,
                conversation_filters_and_counts,
                conversation_export_order,
                conversation_purge,
                an_open_stream_does_not_block_other_reads,
                shutdown_commits_what_was_queued,
                closed_after_shutdown,
            );
        }
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                use super::Available as _;
                if let Some(backend) = $factory().await.available() {
                    cases::$case(backend).await;
                }
            }
        )*
    };
}

suite!(sqlite => super::sqlite);
suite!(sqlite_direct => super::sqlite_direct);
suite!(memory => super::memory);
suite!(postgres => super::postgres);

#[tokio::test]
async fn memory_queue_refuses_past_its_capacity_and_shutdown_commits_the_queue() {
    let store = Arc::new(MemoryStore::with_capacity(5));
    let rec = |i: usize| cases::record(i, "k", None, None, 100 + i as i64);
    store.hold();
    let first = store.submit((0..4).map(rec).collect()).unwrap();
    assert_eq!(store.queue_depth(), 4);
    let err = store.submit((4..6).map(rec).collect()).unwrap_err();
    assert!(
        matches!(
            err,
            phoenix::core::store::Error::QueueFull {
                queued: 4,
                capacity: 5
            }
        ),
        "{err}"
    );
    let second = store.submit(vec![rec(6)]).unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "held writes are not visible"
    );
    store.release();
    first.wait().await.unwrap();
    second.wait().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 5);
    assert_eq!(store.queue_depth(), 0);
    // An empty queue takes any batch, however large.
    store.hold();
    let big = store.submit((10..30).map(rec).collect()).unwrap();
    store.shutdown().await;
    big.wait().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 25);
}
