//! `purge_before` on PostgreSQL: whole daily partitions when every row in them is older
//! than the cutoff and they fit in the limit (a `DROP`, no row-by-row delete), then a
//! bounded `DELETE` for the rest — the same counts as the SQLite backend's delete.

use deadpool_postgres::Pool;

use super::partitions::start_of;
use super::schema::SCHEMA_LOCK;
use super::store::{pg, pool_err};
use crate::core::store::Error;

/// Deletes at most `limit` telemetry records with `ts_unix < cutoff`; returns how many.
pub(super) async fn purge_telemetry(
    pool: &Pool,
    cutoff: i64,
    limit: usize,
) -> Result<usize, Error> {
    if limit == 0 {
        return Ok(0);
    }
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg)?;
    // Partition DDL (here and in partitions.rs) is serialised by the schema lock.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(pg)?;
    // The dashboard's cells go with the last minute they count.
    for (table, minute) in [
        ("rollup", "minute"),
        ("rollup_delta", "minute"),
        ("rollup_pending", "minute_hi"),
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE {minute} + $2 <= $1"),
            &[&cutoff, &crate::core::store::rollup::MINUTE],
        )
        .await
        .map_err(pg)?;
    }
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
    let mut parts: Vec<(i64, String)> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            start_of(&name).map(|s| (s, name))
        })
        .collect();
    parts.sort();
    let mut remaining = limit as i64;
    let mut purged = 0i64;
    for (_, name) in parts {
        // Names are ours (digits only, checked by start_of): nothing from a request.
        let row = tx
            .query_one(&format!("SELECT count(*), max(ts_unix) FROM {name}"), &[])
            .await
            .map_err(pg)?;
        let (n, newest): (i64, Option<i64>) = (row.get(0), row.get(1));
        let Some(newest) = newest else {
            // Empty: an old day with nothing left, or one made ahead of time. Kept.
            continue;
        };
        if newest >= cutoff || n > remaining {
            break;
        }
        tx.batch_execute(&format!("DROP TABLE {name}"))
            .await
            .map_err(pg)?;
        tracing::info!(partition = %name, rows = n, "retention dropped a telemetry partition");
        remaining -= n;
        purged += n;
    }
    if remaining > 0 {
        purged += tx
            .execute(
                "DELETE FROM telemetry WHERE (seq, received_unix) IN \
                 (SELECT seq, received_unix FROM telemetry WHERE ts_unix < $1 LIMIT $2)",
                &[&cutoff, &remaining],
            )
            .await
            .map_err(pg)? as i64;
    }
    tx.commit().await.map_err(pg)?;
    Ok(purged as usize)
}
