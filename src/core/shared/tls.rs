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
///
/// A certificate in `ca_cert` that is exactly the one the server presents is also pinned:
/// a self-signed certificate made the usual way (`openssl req -x509 …`) carries
/// `CA:TRUE`, which webpki refuses as a server's own (`CaUsedAsEndEntity`), while curl
/// `--cacert` accepts it. The pin compares the whole certificate, byte for byte, and its
/// validity period; anything else goes through webpki as before.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(path) = ca_cert {
        for cert in read_ca_certs(path)? {
            // A leaf that cannot be a root (say, a server certificate without CA:TRUE) is
            // still good as a pin.
            let as_root = roots.add(cert.clone());
            if let Err(source) = as_root
                && !pinnable(&cert)
            {
                return Err(Error::BadCa {
                    path: path.to_owned(),
                    source,
                });
            }
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if pinned.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Rustls(rustls::Error::General(e.to_string())))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinningVerifier { webpki, pinned }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A client configuration that encrypts without checking the server's certificate: what
/// libpq's `sslmode=prefer|require` mean, for database connections that ask for no more.
pub fn unverified_client_config() -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified { provider, schemes }))
        .with_no_client_auth())
}

/// Accepts any certificate, but still checks that the server holds its key.
#[derive(Debug)]
struct Unverified {
    provider: Arc<rustls::crypto::CryptoProvider>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// Whether `cert` parses as an X.509 certificate whose validity period covers now.
fn pinnable(cert: &CertificateDer<'_>) -> bool {
    validity(cert).is_some()
}

/// The (not before, not after) of a DER certificate, Unix seconds.
fn validity(cert: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let v = parsed.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// webpki first; an exact, unexpired copy of a `--ca-cert` certificate second.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let err = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => return Ok(ok),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(err);
        }
        let now = now.as_secs() as i64;
        match validity(end_entity) {
            Some((from, until)) if from <= now && now <= until => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            )),
            None => Err(err),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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

    /// A self-signed certificate the way `openssl req -x509` makes one: `CA:TRUE`, with the
    /// server's address as a subject alternative name.
    fn openssl_style(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[tokio::test]
    async fn a_self_signed_ca_certificate_given_with_ca_cert_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_style(dir.path());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = crate::core::server::Listener::tls(tcp, server_config(&cert, &key).unwrap());
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(crate::core::server::serve(
            listener,
            app,
            crate::core::server::ServerLimits::default(),
            std::future::pending(),
        ));

        // webpki alone refuses it as a server's own certificate…
        let plain =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates({
                    let mut r = RootCertStore::empty();
                    r.add(read_ca_certs(&cert).unwrap().remove(0)).unwrap();
                    r
                })
                .with_no_client_auth();
        let e = reqwest::Client::builder()
            .use_preconfigured_tls(plain)
            .build()
            .unwrap()
            .get(format!("https://{addr}/health"))
            .send()
            .await
            .unwrap_err();
        let why = handshake_error(&e)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(why.contains("CaUsedAsEndEntity"), "{e:?}");

        // …the pin accepts exactly that certificate, for HTTPS and for WSS alike.
        let pinned = client_config(Some(&cert)).unwrap();
        let body = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(pinned.clone()))
            .build()
            .unwrap()
            .get(format!("https://{addr}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        let ws = tokio_tungstenite::connect_async_tls_with_config(
            format!("wss://{addr}/subscribe"),
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(pinned)),
        )
        .await;
        assert!(
            matches!(&ws, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 404),
            "{ws:?}"
        );

        // Another self-signed certificate in the file is no pin for this server.
        let other = tempfile::tempdir().unwrap();
        let (other_cert, _) = openssl_style(other.path());
        let e = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(
                client_config(Some(&other_cert)).unwrap(),
            ))
            .build()
            .unwrap()
            .get(format!("https://{addr}/health"))
            .send()
            .await
            .unwrap_err();
        assert!(
            handshake_error(&e).is_some_and(is_untrusted_certificate),
            "{e:?}"
        );
        server.abort();
    }
}
