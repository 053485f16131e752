//! The real services some tests need: PostgreSQL (`PHOENIX_TEST_DATABASE_URL`) and NATS with
//! JetStream (`PHOENIX_TEST_NATS_URL`). Each test gets a database of its own, dropped when
//! the guard goes, and a random prefix for its streams and subjects. Without the variable a
//! test returns early, and the run says once (on stderr, past the test harness's capture)
//! which tests it did not run; `.ci/run` always sets both.

#![allow(dead_code)]

use std::io::Write as _;
use std::sync::Once;

/// The admin URL of the PostgreSQL tests, if any.
pub fn database_url() -> Option<String> {
    let url = std::env::var("PHOENIX_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "note: PHOENIX_TEST_DATABASE_URL is not set: the PostgreSQL tests were not run \
                 (.ci/run sets it; e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
        });
    }
    url
}

/// The NATS URL of the cluster tests, if any.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("PHOENIX_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "note: PHOENIX_TEST_NATS_URL is not set: the NATS tests were not run \
                 (.ci/run sets it; e.g. nats://127.0.0.1:4222)"
            );
        });
    }
    url
}

/// A random lowercase suffix for names (databases, streams, subjects).
pub fn unique_suffix() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// A database of its own for one test; dropped (connections and all) when this goes.
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh database, or `None` when the PostgreSQL tests are not configured.
    pub async fn create() -> Option<TestDatabase> {
        TestDatabase::create_with("").await
    }

    /// A fresh database made with these `CREATE DATABASE` options (a locale, say).
    pub async fn create_with(options: &str) -> Option<TestDatabase> {
        let admin_url = database_url()?;
        let name = format!("phx_test_{}", unique_suffix());
        let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PHOENIX_TEST_DATABASE_URL is set but unreachable: {e}"));
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("CREATE DATABASE");
        drop(client);
        let _ = task.await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            url,
            admin_url,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside a runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    let task = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

/// `url` pointing at database `name` instead (URL or key=value form).
pub fn with_database(url: &str, name: &str) -> String {
    if url.contains("://") {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let (scheme, rest) = base.split_once("://").unwrap();
        let authority = rest.split('/').next().unwrap_or("");
        let mut out = format!("{scheme}://{authority}/{name}");
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

/// A NATS prefix of its own for one test (subjects `PREFIX.…`, stream `PREFIX_INGEST`); the
/// test's ingest stream is deleted when this goes.
pub struct TestNats {
    /// The server.
    pub url: String,
    /// The prefix to give as `PHOENIX_NATS_PREFIX`.
    pub prefix: String,
}

impl TestNats {
    /// A fresh prefix, or `None` when the NATS tests are not configured.
    pub fn create() -> Option<TestNats> {
        Some(TestNats {
            url: nats_url()?,
            prefix: format!("phx{}", unique_suffix()),
        })
    }

    /// The name of the test's ingest stream.
    pub fn stream(&self) -> String {
        format!("{}_INGEST", self.prefix)
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let (url, stream) = (self.url.clone(), self.stream());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                if let Ok(client) = async_nats::connect(&url).await {
                    let js = async_nats::jetstream::new(client);
                    let _ = js.delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}
