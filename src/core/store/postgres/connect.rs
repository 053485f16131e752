//! Connecting to PostgreSQL: the URL, TLS when it asks for it, a pool, and what a failure
//! says (never the password).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Error;
use crate::core::shared::tls;

/// How long a request waits for a pooled connection, or for a new one to be made, before
/// the store reports itself unavailable (503 with Retry-After, never a hang).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pool is built from.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db?sslmode=require`, or libpq key=value pairs.
    /// `sslmode` as libpq reads it: `disable`; `prefer` (the default) and `require` encrypt
    /// without checking the certificate; `verify-ca` / `verify-full` check it.
    pub url: String,
    /// Connections kept at most.
    pub pool_size: usize,
    /// A private CA (PEM) to trust for TLS, besides the webpki roots.
    pub ca_cert: Option<std::path::PathBuf>,
}

impl PgOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 8,
            ca_cert: None,
        }
    }
}

/// A pool over the URL's database. Nothing is connected yet: the first use connects, so a
/// server starts even while PostgreSQL is still coming up, and reconnects by itself later.
pub fn pool(opts: &PgOptions) -> Result<Pool, Error> {
    let (url, verify) = split_verify_modes(&opts.url);
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::Config(format!(
            "invalid database URL {}: {e}",
            mask_password(&opts.url)
        ))
    })?;
    let client_tls = if verify {
        // verify-ca / verify-full: the server's certificate must chain to the webpki roots
        // or the --ca-cert file (whose exact certificates are pinned), for its host name.
        let c = tls::client_config(opts.ca_cert.as_deref())
            .map_err(|e| Error::Config(format!("database TLS: {e}")))?;
        std::sync::Arc::unwrap_or_clone(c)
    } else {
        // prefer / require, as libpq reads them: encrypted, the certificate not checked.
        tls::unverified_client_config().map_err(|e| Error::Config(format!("database TLS: {e}")))?
    };
    let make_tls = MakeRustlsConnect::new(client_tls);
    let manager = Manager::from_config(
        config,
        make_tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(opts.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| Error::Config(format!("database pool: {e}")))
}

/// libpq's `sslmode=verify-ca|verify-full`, which the driver does not parse: replaced by
/// `require`, and reported so the certificate is checked (both are checked like
/// verify-full: rustls always checks the name).
fn split_verify_modes(url: &str) -> (String, bool) {
    let mut verify = false;
    let mut out = url.to_owned();
    for mode in ["verify-full", "verify-ca"] {
        for form in [format!("sslmode={mode}")] {
            if out.contains(&form) {
                out = out.replace(&form, "sslmode=require");
                verify = true;
            }
        }
    }
    (out, verify)
}

pub use crate::core::shared::config::{is_postgres_url, mask_password};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            mask_password("postgres://phx:s3cret@db.example:5432/fleet?sslmode=require"),
            "postgres://phx:****@db.example:5432/fleet?sslmode=require"
        );
        assert_eq!(
            mask_password("postgres://phx@db/fleet"),
            "postgres://phx@db/fleet"
        );
        assert_eq!(
            mask_password("host=db user=phx password=s3cret dbname=fleet"),
            "host=db user=phx password=**** dbname=fleet"
        );
        // A password with an @ in it still goes.
        assert_eq!(
            mask_password("postgres://phx:a@b@db/fleet"),
            "postgres://phx:****@db/fleet"
        );
    }

    #[test]
    fn urls_are_checked_before_anything_connects() {
        assert!(is_postgres_url("postgresql://h/db") && is_postgres_url("postgres://h/db"));
        assert!(!is_postgres_url("sqlite:///tmp/x.db"));
        let e = pool(&PgOptions::new("postgres://phx:s3cret@h:notaport/db")).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(pool(&PgOptions::new("postgres://phx@127.0.0.1:1/db")).is_ok());
        assert_eq!(
            split_verify_modes("postgres://h/db?sslmode=verify-full"),
            ("postgres://h/db?sslmode=require".to_owned(), true)
        );
        assert_eq!(
            split_verify_modes("host=h sslmode=require"),
            ("host=h sslmode=require".to_owned(), false)
        );
    }
}
