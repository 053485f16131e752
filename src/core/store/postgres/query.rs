//! `GET /telemetry` and the analysis's "last N" on PostgreSQL: newest first by `seq`, reading
//! about as many rows as are returned whatever the table's size.
//!
//! Every filter has an index ending in `seq` (schema.rs), so one filtered read is a backward
//! walk of that index that stops after `limit` rows. An agent prefix matches several paths
//! (`support`, `support/billing`, …), whose rows are not in one `seq` order in the
//! `(agent_path, seq)` index: the read is then one such walk per matching path (the paths
//! come from the small `agent_paths` table), merged by `seq` — instead of a sort of every row
//! under the prefix.

use tokio_postgres::types::ToSql;

use crate::core::store::TelemetryFilter;

/// The columns every read returns, in this order.
pub const COLUMNS: &str =
    "seq, id::text, ts_unix, received_unix, kind, level, orch_hash, agent_path, tags, payload";

/// Past this many matching agent paths one walk per path costs more than it saves: the
/// read uses a plain condition instead.
const MAX_PATH_WALKS: usize = 64;

/// A statement and its parameters.
pub struct Statement {
    /// SQL with `$n` placeholders.
    pub sql: String,
    /// The values, `$1` first.
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Statement {
    /// The parameters as the driver takes them.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The SQL that finds the agent paths under `prefix` (segment-wise: `code-gen` matches
/// `code-gen` and `code-gen/rust`, not `code-generator`).
pub fn agent_paths_under(prefix: &str) -> Statement {
    let p = prefix.trim_end_matches('/').to_owned();
    Statement {
        sql: "SELECT agent_path FROM agent_paths \
              WHERE agent_path = $1 OR (agent_path >= $2 AND agent_path < $3) \
              ORDER BY agent_path"
            .to_owned(),
        params: vec![
            Box::new(p.clone()),
            Box::new(format!("{p}/")),
            Box::new(format!("{p}0")),
        ],
    }
}

/// The newest `limit` records matching `filter` older than `cursor`; `paths` are the agent
/// paths under the filter's prefix ([`agent_paths_under`]), when it has one.
pub fn newest(
    filter: &TelemetryFilter,
    limit: i64,
    cursor: Option<i64>,
    paths: Option<&[String]>,
) -> Statement {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let bind = |params: &mut Vec<Box<dyn ToSql + Sync + Send>>, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        format!("${}", params.len())
    };
    if let Some(k) = &filter.kind {
        conds.push(format!("kind = {}", bind(&mut params, Box::new(k.clone()))));
    }
    if let Some(l) = &filter.level {
        conds.push(format!(
            "level = {}",
            bind(&mut params, Box::new(l.clone()))
        ));
    }
    if let Some(o) = &filter.orch_hash {
        conds.push(format!(
            "orch_hash = {}",
            bind(&mut params, Box::new(o.clone()))
        ));
    }
    if let Some(s) = filter.since {
        conds.push(format!("ts_unix >= {}", bind(&mut params, Box::new(s))));
    }
    if let Some(u) = filter.until {
        conds.push(format!("ts_unix < {}", bind(&mut params, Box::new(u))));
    }
    if let Some(c) = cursor {
        conds.push(format!("seq < {}", bind(&mut params, Box::new(c))));
    }
    let limit_ref = bind(&mut params, Box::new(limit));
    let walks = match (&filter.agent_prefix, paths) {
        (Some(_), Some(paths)) if paths.len() <= MAX_PATH_WALKS => Some(paths),
        _ => None,
    };
    let sql = match (walks, &filter.agent_prefix) {
        (Some([]), _) => {
            // No path under the prefix: nothing matches (and nothing need be read).
            format!("SELECT {COLUMNS} FROM telemetry WHERE false")
        }
        (Some(paths), _) => {
            let arms: Vec<String> = paths
                .iter()
                .map(|path| {
                    let mut own = conds.clone();
                    own.push(format!(
                        "agent_path = {}",
                        bind(&mut params, Box::new(path.clone()))
                    ));
                    format!(
                        "(SELECT {COLUMNS} FROM telemetry WHERE {} ORDER BY seq DESC LIMIT {limit_ref})",
                        own.join(" AND ")
                    )
                })
                .collect();
            format!(
                "SELECT * FROM ({}) walks ORDER BY seq DESC LIMIT {limit_ref}",
                arms.join(" UNION ALL ")
            )
        }
        (None, Some(prefix)) => {
            let p = prefix.trim_end_matches('/').to_owned();
            let (a, b, c) = (
                bind(&mut params, Box::new(p.clone())),
                bind(&mut params, Box::new(format!("{p}/"))),
                bind(&mut params, Box::new(format!("{p}0"))),
            );
            conds.push(format!(
                "(agent_path = {a} OR (agent_path >= {b} AND agent_path < {c}))"
            ));
            format!(
                "SELECT {COLUMNS} FROM telemetry WHERE {} ORDER BY seq DESC LIMIT {limit_ref}",
                conds.join(" AND ")
            )
        }
        (None, None) => {
            let clause = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            format!("SELECT {COLUMNS} FROM telemetry {clause} ORDER BY seq DESC LIMIT {limit_ref}")
        }
    };
    Statement { sql, params }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_filter_is_a_bound_parameter_and_prefixes_walk_each_path() {
        let f = TelemetryFilter {
            kind: Some("llm_call".into()),
            level: Some("error".into()),
            ..TelemetryFilter::default()
        };
        let s = newest(&f, 101, Some(500), None);
        assert_eq!(
            s.sql,
            format!(
                "SELECT {COLUMNS} FROM telemetry WHERE kind = $1 AND level = $2 AND seq < $3 \
                 ORDER BY seq DESC LIMIT $4"
            )
        );
        assert_eq!(s.params.len(), 4);

        let f = TelemetryFilter {
            agent_prefix: Some("support/".into()),
            level: Some("error".into()),
            ..TelemetryFilter::default()
        };
        let paths = vec!["support".to_owned(), "support/billing".to_owned()];
        let s = newest(&f, 100, None, Some(&paths));
        assert_eq!(s.sql.matches("UNION ALL").count(), 1, "{}", s.sql);
        assert!(s.sql.contains("agent_path = $3"), "{}", s.sql);
        assert!(s.sql.contains("agent_path = $4"), "{}", s.sql);
        assert_eq!(s.params.len(), 4);
        assert!(
            newest(&f, 100, None, Some(&[]))
                .sql
                .ends_with("WHERE false")
        );

        // Too many paths: one condition instead of a walk each.
        let many: Vec<String> = (0..100).map(|i| format!("support/{i}")).collect();
        let s = newest(&f, 100, None, Some(&many));
        assert!(!s.sql.contains("UNION"), "{}", s.sql);
        assert!(
            s.sql.contains("agent_path >= $4 AND agent_path < $5"),
            "{}",
            s.sql
        );
        // Nothing is ever spliced into the SQL.
        let evil = TelemetryFilter {
            kind: Some("x'; DROP TABLE telemetry; --".into()),
            ..TelemetryFilter::default()
        };
        assert!(!newest(&evil, 1, None, None).sql.contains("DROP"));
    }
}
