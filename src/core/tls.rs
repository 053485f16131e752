//! TLS with rustls on the ring provider. Servers: load a PEM certificate and key (the
//! handshake runs per connection in `core::server`, with a timeout). Clients: the roots to trust (webpki's, plus a private CA from `--ca-cert`) and
//! telling an untrusted certificate apart from other handshake failures.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file holds no usable PEM item.
    #[error("{path} contains no PEM {what}")]
    Empty {
        /// `certificate` or `private key`.
        what: &'static str,
        /// File.
        path: std::path::PathBuf,
    },
    /// rustls refused the certificate/key pair.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    /// A certificate in the CA file cannot serve as a trust anchor.
    #[error("CA certificate {path} cannot be trusted as a root: {source}")]
    BadCa {
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        source: rustls::Error,
    },
}

/// What to do when a server's certificate is not trusted; ends the error message.
pub const PRIVATE_CA_HINT: &str = "if a private CA issued it, pass that CA's PEM file with --ca-cert FILE (or set PHOENIX_CA_CERT)";

/// The clients' message for an untrusted server certificate, `why` being rustls's reason.
pub fn untrusted_certificate_detail(why: &dyn std::fmt::Display) -> String {
    format!("the server's TLS certificate is not trusted ({why}); {PRIVATE_CA_HINT}")
}

/// Builds a rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("private key", key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Read {
            what: "certificate",
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::Empty {
            what: "certificate",
            path: cert.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| Error::Read {
            what: "private key",
            path: key.to_owned(),
            source,
        })?
        .ok_or_else(|| Error::Empty {
            what: "private key",
            path: key.to_owned(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads every certificate in a PEM file: the private CA a client is asked to trust.
pub fn read_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let what = "CA certificate";
    let pem = std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Read {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A client configuration trusting the webpki (Mozilla) roots, which is what reqwest trusts
/// in this build, plus every certificate in `ca_cert`.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        for cert in read_ca_certs(path)? {
            roots.add(cert).map_err(|source| Error::BadCa {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error behind a failed connection, if TLS is what failed. It arrives wrapped in
/// `io::Error`s (one by tokio-rustls, another by reqwest's connector) whose `source()` skips
/// the error they wrap, so those are unwrapped here by hand.
pub fn handshake_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        let mut inner = e;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        next = e.source();
    }
    None
}

/// Whether `err` is a server certificate this client does not trust (unknown issuer, expired,
/// wrong name...): a configuration problem that retrying will not fix.
pub fn is_untrusted_certificate(err: &rustls::Error) -> bool {
    matches!(err, rustls::Error::InvalidCertificate(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A self-signed certificate for 127.0.0.1 in `dir`: (certificate, key).
    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn ca_files_are_read_whole_and_unusable_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        assert_eq!(read_ca_certs(&cert).unwrap().len(), 1);
        client_config(Some(&cert)).unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with("cannot read CA certificate"), "{e}");
        let e = read_ca_certs(&key).unwrap_err().to_string();
        assert!(e.ends_with("contains no PEM CA certificate"), "{e}");
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_found_behind_the_clients_errors_and_a_ca_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = crate::core::server::Listener::tls(tcp, server_config(&cert, &key).unwrap());
        let server = tokio::spawn(crate::core::server::serve(
            listener,
            axum::Router::new(),
            crate::core::server::ServerLimits::default(),
            std::future::pending(),
        ));
        let untrusted = |e: &(dyn std::error::Error + 'static)| {
            handshake_error(e).is_some_and(is_untrusted_certificate)
        };

        let e = reqwest::get(format!("https://{addr}/")).await.unwrap_err();
        assert!(untrusted(&e), "{e:?}");

        let ws_url = format!("wss://{addr}/subscribe");
        let connect = |config| {
            tokio_tungstenite::connect_async_tls_with_config(
                ws_url.clone(),
                None,
                false,
                Some(tokio_tungstenite::Connector::Rustls(config)),
            )
        };
        let e = connect(client_config(None).unwrap()).await.unwrap_err();
        assert!(untrusted(&e), "{e:?}");
        // Trusted, the handshake completes and the server answers (404: no such route).
        match connect(client_config(Some(&cert)).unwrap()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 404)
            }
            other => panic!("expected an HTTP answer, got {other:?}"),
        }
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert!(handshake_error(&refused).is_none());
        server.abort();
    }
}
