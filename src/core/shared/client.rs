//! HTTP client of Phoenix's own servers, used by the CLI commands: base URL, bearer token,
//! private CA, typed errors that map onto exit codes, and retries with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::shared::retry::{self, Verdict};
use crate::core::shared::tls;

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL such as `http://127.0.0.1:5002`.
    pub base_url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Extra PEM root certificate (private CA).
    pub ca_cert: Option<PathBuf>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad client settings (URL, CA file).
    #[error("{0}")]
    Config(String),
    /// Nothing answered (refused, DNS, TLS handshake, reset).
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// URL tried.
        url: String,
        /// Cause.
        detail: String,
    },
    /// The server did not answer in time.
    #[error("{url} did not answer within {after:?}")]
    Timeout {
        /// URL tried.
        url: String,
        /// Timeout.
        after: Duration,
    },
    /// The server refused the request (4xx).
    #[error("{status} {code}: {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Machine code from the JSON error.
        code: String,
        /// Human detail from the JSON error.
        detail: String,
        /// The whole error body.
        body: serde_json::Value,
        /// `Retry-After`, for 429.
        retry_after: Option<Duration>,
    },
    /// The server failed (5xx).
    #[error("server error {status} {code}: {detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Machine code.
        code: String,
        /// Detail.
        detail: String,
        /// `Retry-After`, for 503.
        retry_after: Option<Duration>,
    },
    /// The answer was not what the endpoint promises.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// Worth trying again: unreachable, timeout, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::Server { .. }
        ) || matches!(self, Error::Rejected { status: 429, .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Rejected { retry_after, .. } | Error::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Client of one Phoenix server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl ApiClient {
    /// Builds a client; fails on a malformed URL or an unreadable CA file.
    pub fn new(opts: &ClientOptions) -> Result<Self, Error> {
        let base = opts.base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("invalid server URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "server URL {base:?} must start with http:// or https://"
            )));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = &opts.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::Config("the token contains characters not allowed in a header".to_owned())
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("phoenix/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &opts.ca_cert {
            // One trust policy for every client: the WebSocket's and this one (roots plus
            // the --ca-cert file, whose exact server certificates are pinned).
            let config = tls::client_config(Some(ca)).map_err(|e| Error::Config(e.to_string()))?;
            builder = builder.use_preconfigured_tls(Arc::unwrap_or_clone(config));
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(ApiClient {
            base,
            http,
            timeout: opts.timeout,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GET `path` (with query) and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        self.decode(&url, resp).await
    }

    /// GET `path` and return the body text.
    pub async fn get_text(&self, path: &str) -> Result<String, Error> {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let resp = self.check(&url, resp).await?;
        resp.text().await.map_err(|e| Error::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// POST JSON and decode the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        extra_headers: &[(&str, &str)],
    ) -> Result<T, Error> {
        let url = self.url(path);
        let mut req = self.http.post(&url).json(body);
        for (k, v) in extra_headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| Error::Config(e.to_string()))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::Config(format!("invalid value for header {k}")))?;
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        self.decode(&url, resp).await
    }

    /// POST a prepared body (`gzip` = already gzip-compressed) and decode the JSON answer.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        gzip: bool,
    ) -> Result<T, Error> {
        let url = self.url(path);
        let mut req = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        self.decode(&url, resp).await
    }

    /// POST a prepared body and return the answer's bytes as they are, for endpoints that
    /// do not answer JSON (OTLP/HTTP). `describe_error` reads an error answer that is not
    /// Phoenix's JSON error (an OTLP server answers a `google.rpc.Status` in the request's
    /// encoding) into its machine code and detail.
    pub async fn post_for_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        gzip: bool,
        describe_error: fn(&[u8]) -> Option<(String, String)>,
    ) -> Result<Vec<u8>, Error> {
        let url = self.url(path);
        let mut req = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        let resp = self.check_with(&url, resp, describe_error).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(&url, e))?;
        Ok(bytes.to_vec())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            };
        }
        if let Some(cert) = tls::handshake_error(&e).filter(|t| tls::is_untrusted_certificate(t)) {
            return Error::Unreachable {
                url: url.to_owned(),
                detail: tls::untrusted_certificate_detail(cert),
            };
        }
        // reqwest's top-level message is generic; the cause says what actually happened.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        Error::Unreachable {
            url: url.to_owned(),
            detail,
        }
    }

    async fn check(&self, url: &str, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
        self.check_with(url, resp, |_| None).await
    }

    async fn check_with(
        &self,
        url: &str,
        resp: reqwest::Response,
        describe_error: fn(&[u8]) -> Option<(String, String)>,
    ) -> Result<reqwest::Response, Error> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "raw": text }));
        let described = body
            .get("error")
            .is_none()
            .then(|| describe_error(&bytes))
            .flatten();
        let (described_code, described_detail) = described.unzip();
        let code = described_code.unwrap_or_else(|| {
            body.get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("http_error")
                .to_owned()
        });
        let detail = described_detail
            .or_else(|| {
                body.get("detail")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                format!(
                    "{status} from {url}: {}",
                    text.chars().take(300).collect::<String>()
                )
            });
        if status.is_server_error() {
            Err(Error::Server {
                status: status.as_u16(),
                code,
                detail,
                retry_after,
            })
        } else {
            Err(Error::Rejected {
                status: status.as_u16(),
                code,
                detail,
                body,
                retry_after,
            })
        }
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        url: &str,
        resp: reqwest::Response,
    ) -> Result<T, Error> {
        let resp = self.check(url, resp).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(url, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }
}

pub use super::retry::RetryPolicy;

/// Runs `attempt` until it succeeds, fails for good, or retries run out.
pub async fn with_retry<T, F, Fut>(policy: RetryPolicy, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    retry::retry(
        policy,
        |_| attempt(),
        |e: &Error| {
            if e.is_retryable() {
                Verdict::Retry(e.retry_after())
            } else {
                Verdict::Fail
            }
        },
        |e, wait| {
            tracing::warn!(error = %e, attempt = wait.attempt, wait_ms = wait.delay.as_millis() as u64, "retrying");
        },
    )
    .await
}
