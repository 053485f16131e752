//! Daily partitions of `telemetry` by `received_unix`: made ahead of time (and on demand,
//! when a row finds none), dropped whole by retention.

use std::time::{Duration, UNIX_EPOCH};

use deadpool_postgres::Pool;

use super::Error;
use super::schema::SCHEMA_LOCK;

/// Seconds in one partition.
pub const PARTITION_SECS: i64 = 86_400;
/// Days made ahead of today, so a day's first record never waits for DDL.
pub const DAYS_AHEAD: i64 = 2;

/// The partition holding `unix`: its name and `[start, end)`.
pub fn partition_of(unix: i64) -> (String, i64, i64) {
    let start = unix.div_euclid(PARTITION_SECS) * PARTITION_SECS;
    let day = humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(start.max(0) as u64))
        .to_string();
    let name = format!("telemetry_p{}", day[..10].replace('-', ""));
    (name, start, start + PARTITION_SECS)
}

/// Makes the partitions of yesterday through [`DAYS_AHEAD`] days after `now` that are
/// missing. Safe to run from several processes at once (the schema lock serialises it).
pub async fn ensure_around(pool: &Pool, now: i64) -> Result<usize, Error> {
    let days: Vec<i64> = (-1..=DAYS_AHEAD)
        .map(|d| now + d * PARTITION_SECS)
        .collect();
    ensure(pool, &days).await
}

/// Makes the partitions holding each of `times` (Unix seconds) that do not exist yet;
/// returns how many it made.
pub async fn ensure(pool: &Pool, times: &[i64]) -> Result<usize, Error> {
    let pg = |e: tokio_postgres::Error| Error::from_pg(&e);
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(pg)?;
    if !super::schema::natively_partitioned(&tx).await? {
        // A TimescaleDB hypertable: TimescaleDB makes its chunks as rows arrive.
        return Ok(0);
    }
    let mut made = 0;
    let mut seen = std::collections::HashSet::new();
    for &t in times {
        let (name, start, end) = partition_of(t);
        if !seen.insert(name.clone()) {
            continue;
        }
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = $1 AND n.nspname = current_schema()",
                &[&name],
            )
            .await
            .map_err(pg)?
            .is_some();
        if exists {
            continue;
        }
        // Names and bounds are ours (digits only): nothing from a request reaches this DDL.
        tx.batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF telemetry FOR VALUES FROM ({start}) TO ({end})"
        ))
        .await
        .map_err(pg)?;
        made += 1;
    }
    tx.commit().await.map_err(pg)?;
    if made > 0 {
        tracing::info!(made, "telemetry partitions created");
    }
    Ok(made)
}

/// Drops every partition that ends at or before `cutoff` (Unix seconds); returns the rows
/// they held. Retention on PostgreSQL is whole days of received time: no row-by-row delete
/// holds up ingest.
pub async fn drop_before(pool: &Pool, cutoff: i64) -> Result<u64, Error> {
    let pg = |e: tokio_postgres::Error| Error::from_pg(&e);
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(pg)?;
    let rows = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE p.relname = 'telemetry' AND n.nspname = current_schema()",
            &[],
        )
        .await
        .map_err(pg)?;
    let mut dropped_rows = 0u64;
    for row in rows {
        let name: String = row.get(0);
        let Some(start) = start_of(&name) else {
            continue;
        };
        if start + PARTITION_SECS > cutoff {
            continue;
        }
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .map_err(pg)?
            .get(0);
        tx.batch_execute(&format!("DROP TABLE {name}"))
            .await
            .map_err(pg)?;
        dropped_rows += n as u64;
        tracing::info!(partition = %name, rows = n, "retention dropped a telemetry partition");
    }
    tx.commit().await.map_err(pg)?;
    Ok(dropped_rows)
}

/// The start of a partition named by [`partition_of`], or `None` for another table.
pub(super) fn start_of(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("telemetry_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T00:00:00Z",
        &digits[..4],
        &digits[4..6],
        &digits[6..]
    );
    let t = humantime::parse_rfc3339(&text).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_days_named_by_date() {
        let (name, start, end) = partition_of(1_796_169_600 + 3_600); // 2026-12-02T01:00Z
        assert_eq!(name, "telemetry_p20261202");
        assert_eq!((start, end), (1_796_169_600, 1_796_256_000));
        assert_eq!(start_of(&name), Some(start));
        assert_eq!(partition_of(start).0, name);
        assert_eq!(partition_of(start - 1).0, "telemetry_p20261201");
        assert_eq!(start_of("telemetry_recent"), None);
        assert_eq!(start_of("telemetry_p2026120x"), None);
    }
}
