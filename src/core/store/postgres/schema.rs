//! The PostgreSQL schema, in versioned migrations applied at start. Two processes starting
//! at once are safe: each migration runs in a transaction that first takes one advisory
//! lock, so the second waits, then finds the version already applied.

use deadpool_postgres::Pool;

use super::Error;

/// Key of the advisory lock every schema change (and partition creation) takes.
pub(super) const SCHEMA_LOCK: i64 = 0x7068_6f65_6e69_7801;

/// Each entry moves the schema from version `i` to `i + 1`.
///
/// Telemetry is range-partitioned by `received_unix` (the collector's clock, so a day's
/// partition fills in ingest order and an old one is never written again): retention drops
/// whole partitions. Partitions are made ahead of time and on demand (`partitions.rs`).
/// Every filtered read of `GET /telemetry` is newest-first by `seq`, so each filter has an
/// index that ends in `seq`: the read walks it backwards and stops after `limit` rows. The
/// levels people filter for (warn and worse) are rare, so they also have small partial
/// indexes with the agent path and with the kind in front: a path or kind with few errors
/// answers at once instead of after a walk over every error.
const MIGRATIONS: &[&str] = &[
    // 1: every fleet store.
    "CREATE SEQUENCE telemetry_seq AS bigint;
    CREATE TABLE telemetry (
        seq bigint NOT NULL DEFAULT nextval('telemetry_seq'),
        id text NOT NULL,
        ts_unix bigint NOT NULL,
        received_unix bigint NOT NULL,
        kind text NOT NULL,
        level text,
        orch_hash text,
        agent_path text,
        tags text,
        payload text NOT NULL,
        PRIMARY KEY (seq, received_unix),
        UNIQUE (id, received_unix)
    ) PARTITION BY RANGE (received_unix);
    CREATE INDEX telemetry_kind ON telemetry (kind, seq);
    CREATE INDEX telemetry_agent ON telemetry (agent_path, seq);
    CREATE INDEX telemetry_orch ON telemetry (orch_hash, seq);
    CREATE INDEX telemetry_level ON telemetry (level, seq)
        WHERE level IN ('warn', 'error', 'critical', 'fatal');
    CREATE INDEX telemetry_agent_level ON telemetry (agent_path, level, seq)
        WHERE level IN ('warn', 'error', 'critical', 'fatal');
    CREATE INDEX telemetry_kind_level ON telemetry (kind, level, seq)
        WHERE level IN ('warn', 'error', 'critical', 'fatal');
    CREATE TABLE agent_paths (agent_path text PRIMARY KEY);
    CREATE TABLE orchs (
        orch_hash text PRIMARY KEY,
        last_heartbeat_ts bigint
    );
    CREATE TABLE insights (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        ts_unix bigint NOT NULL,
        tier text NOT NULL,
        focus text NOT NULL,
        source text NOT NULL,
        body text NOT NULL
    );
    CREATE TABLE conversations (
        seq bigserial PRIMARY KEY,
        conversation_id text NOT NULL UNIQUE,
        ts_unix bigint NOT NULL,
        received_unix bigint NOT NULL,
        orch_hash text,
        agent_path text,
        feedback text,
        score double precision,
        prompt_key text,
        messages text NOT NULL
    );
    CREATE INDEX conversations_ts ON conversations (ts_unix);
    CREATE INDEX conversations_prompt ON conversations (prompt_key, seq)
        WHERE prompt_key IS NOT NULL;
    CREATE TABLE updates (
        seq bigint PRIMARY KEY,
        update_id text NOT NULL UNIQUE,
        ts_unix bigint NOT NULL,
        update_type text NOT NULL,
        target_orch_hash text,
        rolls_back text,
        initial_percent integer,
        rollout_percent integer,
        envelope text NOT NULL
    );
    CREATE TABLE widenings (
        widen_seq bigint PRIMARY KEY,
        update_id text NOT NULL,
        from_percent integer,
        to_percent integer NOT NULL,
        ts_unix bigint NOT NULL
    );
    CREATE INDEX widenings_update ON widenings (update_id, widen_seq);
    CREATE TABLE deliveries (
        update_id text NOT NULL,
        orch_hash text NOT NULL,
        ts_unix bigint NOT NULL,
        PRIMARY KEY (update_id, orch_hash)
    );
    CREATE TABLE acks (
        update_id text NOT NULL,
        orch_hash text NOT NULL,
        status text NOT NULL,
        error text,
        ts_unix bigint NOT NULL,
        PRIMARY KEY (update_id, orch_hash)
    );
    CREATE INDEX acks_status ON acks (update_id, status);
    CREATE TABLE subscribers (
        orch_hash text NOT NULL,
        agent_path text NOT NULL,
        tier text NOT NULL,
        first_seen bigint NOT NULL,
        last_seen bigint NOT NULL,
        PRIMARY KEY (orch_hash, agent_path)
    );",
    // 2: what the dashboard reads instead of rows (rollup.rs): per-minute cells, their
    // deltas appended by each commit and folded in by a task, and the agent path of each
    // ORCH's newest heartbeat.
    "CREATE TABLE rollup (
        minute bigint NOT NULL,
        agent_path text NOT NULL,
        kind text NOT NULL,
        model text NOT NULL,
        records bigint NOT NULL,
        errors bigint NOT NULL,
        latency bigint[] NOT NULL,
        latency_sum_ms double precision NOT NULL,
        tokens_in bigint NOT NULL,
        tokens_out bigint NOT NULL,
        cost double precision NOT NULL,
        PRIMARY KEY (minute, agent_path, kind, model)
    );
    CREATE TABLE rollup_delta (LIKE rollup);
    ALTER TABLE orchs ADD COLUMN agent_path text;",
    // 3: a commit's cells as one encoded value (rollup.rs): one small row per commit
    // instead of a wide row per cell, summed by the folder instead of in SQL.
    "CREATE TABLE rollup_pending (
        minute_lo bigint NOT NULL,
        minute_hi bigint NOT NULL,
        cells bytea NOT NULL
    );",
    // 4: the text keys compare byte-wise, whatever the database's default collation. An
    // agent prefix is read as the range [`p/`, `p0`), which only a byte order makes exactly
    // the paths under `p/` (under ICU or glibc `en_US`, `support+x` and `support$x` sort
    // inside it); byte-wise is also the cheaper comparison in every index insert. The rows
    // are not rewritten, the indexes on these columns are rebuilt.
    "ALTER TABLE telemetry
        ALTER COLUMN id TYPE text COLLATE \"C\",
        ALTER COLUMN kind TYPE text COLLATE \"C\",
        ALTER COLUMN level TYPE text COLLATE \"C\",
        ALTER COLUMN orch_hash TYPE text COLLATE \"C\",
        ALTER COLUMN agent_path TYPE text COLLATE \"C\";
    ALTER TABLE agent_paths ALTER COLUMN agent_path TYPE text COLLATE \"C\";",
];

/// How migration 1 makes `telemetry` a natively partitioned table ...
const NATIVE_PARTITIONING: &str = ") PARTITION BY RANGE (received_unix);";
/// ... and how it makes it a TimescaleDB hypertable instead, where the extension exists:
/// daily chunks by received time, made by TimescaleDB itself (no partitions made ahead).
const HYPERTABLE: &str = ");
    SELECT create_hypertable('telemetry', 'received_unix',
        chunk_time_interval => 86400::bigint, create_default_indexes => false);";

/// Migration `step` as this database runs it: the first makes `telemetry` a hypertable when
/// `timescale`.
fn migration(step: usize, timescale: bool) -> std::borrow::Cow<'static, str> {
    if step == 0 && timescale {
        MIGRATIONS[0]
            .replace(NATIVE_PARTITIONING, HYPERTABLE)
            .into()
    } else {
        MIGRATIONS[step].into()
    }
}

/// Installs TimescaleDB if the server offers it (`CREATE EXTENSION`, inside a savepoint so a
/// refusal — no privilege, not preloaded — leaves the migration going on native partitions).
async fn try_timescale(tx: &deadpool_postgres::Transaction<'_>) -> Result<bool, Error> {
    let pg = |e: tokio_postgres::Error| Error::from_pg(&e);
    let offered: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if !offered {
        tracing::info!("TimescaleDB is not available: telemetry uses native daily partitions");
        return Ok(false);
    }
    tx.batch_execute("SAVEPOINT timescale").await.map_err(pg)?;
    match tx
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
    {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT timescale")
                .await
                .map_err(pg)?;
            tracing::info!("TimescaleDB found: telemetry is a hypertable of daily chunks");
            Ok(true)
        }
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT timescale")
                .await
                .map_err(pg)?;
            tracing::warn!(error = %Error::from_pg(&e), "TimescaleDB is offered but cannot be installed: telemetry uses native daily partitions");
            Ok(false)
        }
    }
}

/// Whether `telemetry` is natively partitioned (else a TimescaleDB hypertable, whose chunks
/// TimescaleDB makes itself).
pub(super) async fn natively_partitioned(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<bool, Error> {
    let row = tx
        .query_opt(
            "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'telemetry' AND n.nspname = current_schema()",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(&e))?;
    Ok(row.is_none_or(|r| r.get(0)))
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per step, each under the
/// schema lock. Refuses a database a newer Phoenix migrated.
pub async fn migrate(pool: &Pool) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let pg = |e: tokio_postgres::Error| Error::from_pg(&e);
    loop {
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        // Under the lock, so two processes starting at once never race to create it; looked
        // up first, as IF NOT EXISTS would log a notice on every start.
        let exists: bool = tx
            .query_one("SELECT to_regclass('phoenix_schema') IS NOT NULL", &[])
            .await
            .map_err(pg)?
            .get(0);
        if !exists {
            tx.batch_execute(
                "CREATE TABLE phoenix_schema (
                    version bigint PRIMARY KEY,
                    applied_unix bigint NOT NULL
                )",
            )
            .await
            .map_err(pg)?;
        }
        let current: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM phoenix_schema",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if current > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current == SCHEMA_VERSION {
            tx.commit().await.map_err(pg)?;
            return Ok(());
        }
        let timescale = current == 0 && try_timescale(&tx).await?;
        tx.batch_execute(&migration(current as usize, timescale))
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO phoenix_schema (version, applied_unix) VALUES ($1, $2)",
            &[&(current + 1), &crate::core::telemetry::now_unix()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version = current + 1, "PostgreSQL schema migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_migration_makes_a_hypertable_where_timescaledb_is() {
        let native = migration(0, false);
        assert!(native.contains(NATIVE_PARTITIONING));
        let hyper = migration(0, true);
        assert!(!hyper.contains("PARTITION BY"), "{hyper}");
        assert!(hyper.contains("create_hypertable('telemetry', 'received_unix'"));
        // Everything else is the same.
        assert_eq!(
            hyper.replace(HYPERTABLE, NATIVE_PARTITIONING),
            native.into_owned()
        );
    }
}
