//! The storage ceiling `phoenix bench ingest --database-url` compares PostgreSQL ingest
//! with: the rows the collector would store, written by plain binary `COPY` in transactions
//! of a given size into the same partitioned, indexed `telemetry` table — in a fresh schema
//! of its own — over as many connections as the writer has commits in flight, and nothing
//! else (no HTTP, no queue, no heartbeats, no agent paths).

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{Error as PgError, PgOptions, migrate, partitions, pool};
use crate::core::store::Error;
use crate::core::telemetry::{NewRecord, now_unix};

/// The writer's statement and column types (writer.rs), so both write the same bytes.
const COPY: &str = "COPY telemetry (id, ts_unix, received_unix, kind, level, orch_hash, \
                    agent_path, tags, payload) FROM STDIN BINARY";
const TYPES: [Type; 9] = [
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// Copies `rows` into a fresh schema of the database at `url`, `rows_per_tx` rows per
/// transaction, then drops the schema (also when the copy failed). Only the copies and the
/// commits are timed; the schema's migration and partitions are made first.
pub async fn raw_copy(
    url: &str,
    rows: &[NewRecord],
    rows_per_tx: usize,
) -> Result<Duration, Error> {
    let schema = format!("phoenix_ceiling_{:016x}", rand::random::<u64>());
    let admin = pool(&PgOptions {
        pool_size: 1,
        ..PgOptions::new(url)
    })?;
    run_sql(&admin, &format!("CREATE SCHEMA {schema}")).await?;
    let timed = copy_into(&with_search_path(url, &schema), rows, rows_per_tx).await;
    // The schema name is ours (hex digits): nothing from outside reaches this DDL.
    let dropped = run_sql(&admin, &format!("DROP SCHEMA {schema} CASCADE")).await;
    let elapsed = timed?;
    dropped?;
    Ok(elapsed)
}

async fn copy_into(url: &str, rows: &[NewRecord], rows_per_tx: usize) -> Result<Duration, Error> {
    let pool = pool(&PgOptions {
        pool_size: super::writer::MAX_IN_FLIGHT.max(1),
        ..PgOptions::new(url)
    })?;
    migrate(&pool).await?;
    let mut days: Vec<i64> = rows.iter().map(|r| r.received_unix).collect();
    days.push(now_unix());
    partitions::ensure(&pool, &days).await?;
    // As many connections as the writer has commits in flight, each copying its share one
    // transaction at a time: the same overlap the collector gets, without anything else.
    let lanes = super::writer::MAX_IN_FLIGHT.max(1);
    let per_lane = rows.len().div_ceil(lanes).max(1);
    let mut clients = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        clients.push(pool.get().await.map_err(PgError::from)?);
    }
    let started = Instant::now();
    let copies = clients
        .iter_mut()
        .zip(rows.chunks(per_lane))
        .map(|(client, share)| copy_share(client, share, rows_per_tx));
    for done in futures_util::future::join_all(copies).await {
        done?;
    }
    Ok(started.elapsed())
}

/// Copies `rows`, `rows_per_tx` per transaction, through one connection.
async fn copy_share(
    client: &mut deadpool_postgres::Object,
    rows: &[NewRecord],
    rows_per_tx: usize,
) -> Result<(), Error> {
    let pg = |e: tokio_postgres::Error| Error::from(PgError::from_pg(&e));
    for chunk in rows.chunks(rows_per_tx.max(1)) {
        let tx = client.transaction().await.map_err(pg)?;
        let sink = tx.copy_in(COPY).await.map_err(pg)?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &TYPES));
        for r in chunk {
            let row: [&(dyn ToSql + Sync); 9] = [
                &r.id,
                &r.ts_unix,
                &r.received_unix,
                &r.kind,
                &r.level,
                &r.orch_hash,
                &r.agent_path,
                &r.tags_json,
                &r.payload_json,
            ];
            writer.as_mut().write(&row).await.map_err(pg)?;
        }
        writer.finish().await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
    }
    Ok(())
}

async fn run_sql(pool: &Pool, sql: &str) -> Result<(), Error> {
    let client = pool.get().await.map_err(PgError::from)?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| PgError::from_pg(&e).into())
}

/// `url` with every session's `search_path` set to `schema` (URL or key=value form), so
/// the migrations and the copy land in that schema.
fn with_search_path(url: &str, schema: &str) -> String {
    if url.contains("://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_goes_into_the_session_options() {
        assert_eq!(
            with_search_path("postgres://u@h/db", "s1"),
            "postgres://u@h/db?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgres://u@h/db?sslmode=disable", "s1"),
            "postgres://u@h/db?sslmode=disable&options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("host=h dbname=db", "s1"),
            "host=h dbname=db options='-c search_path=s1'"
        );
        for url in [
            with_search_path("postgres://u@h/db", "s1"),
            with_search_path("host=h dbname=db", "s1"),
        ] {
            let c: tokio_postgres::Config = url.parse().unwrap();
            assert_eq!(c.get_options(), Some("-c search_path=s1"));
        }
    }
}
