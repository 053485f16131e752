//! OpenAI-compatible chat client shared by every feature that talks to an LLM.
//!
//! Depends only on `shared::retry`.
//!
//! One `POST {base_url}/chat/completions` per attempt, with bounded retries for the failures
//! that are worth retrying (429, 5xx, timeouts, transport errors) and a typed [`Error`] for the
//! rest, so callers can tell "fix your key" from "try later" without parsing strings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::shared::retry::{RetryPolicy, Verdict, retry};

/// Longest provider message kept in an error, so a proxy's HTML error page cannot flood logs.
const DETAIL_LIMIT: usize = 300;

mod answer;
mod error;

use answer::*;
pub use error::Error;

/// Where and how to reach the chat completions endpoint.
#[derive(Clone)]
pub struct LlmSettings {
    /// API root such as `https://openrouter.ai/api/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Model used when a request does not name one.
    pub model: String,
    /// Limit for one HTTP attempt, from connecting until the body is read.
    pub timeout: Duration,
    /// Extra attempts after the first, for retryable failures only.
    pub max_retries: u32,
    /// Delay before the first retry; doubles on each further retry, with ±25% jitter.
    pub backoff_base: Duration,
    /// Cap for the computed backoff and for a server's `Retry-After`.
    pub max_backoff: Duration,
    /// OpenRouter attribution header `HTTP-Referer`.
    pub referer: Option<String>,
    /// OpenRouter attribution header `X-Title`.
    pub title: Option<String>,
    /// Extra PEM root certificate(s) trusted for private endpoints.
    pub ca_cert: Option<PathBuf>,
}

impl LlmSettings {
    /// Settings with defaults suited to a hosted provider: 60 s per attempt, 2 retries,
    /// backoff from 500 ms up to 30 s, no key, no attribution, built-in roots only.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(60),
            max_retries: 2,
            backoff_base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            referer: None,
            title: None,
            ca_cert: None,
        }
    }
}

// Hand-written so the API key never ends up in a log line or a panic message.
impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("max_backoff", &self.max_backoff)
            .field("referer", &self.referer)
            .field("title", &self.title)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// One chat message in OpenAI's `{role, content}` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A `system` message (instructions).
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }

    /// A `user` message (the prompt).
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    /// An `assistant` message (a previous answer, for multi-turn prompts).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A chat completion request; unset options are left to the provider's defaults.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Overrides [`LlmSettings::model`] for this request.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// A request for these messages with every option left unset.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Uses `model` instead of the client's default.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the upper bound on generated tokens.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
}

/// The assistant's answer to a [`ChatRequest`].
#[derive(Debug, Clone, Serialize)]
pub struct ChatResponse {
    /// The answer text, as returned (not trimmed); never empty or whitespace only.
    pub content: String,
    /// The model that answered, as reported by the provider (else the one requested).
    pub model: String,
    /// Token accounting, when the provider reports it.
    pub usage: Option<Usage>,
    /// HTTP attempts made, including the successful one.
    pub attempts: u32,
}

/// Token accounting reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Sum of both, as billed.
    pub total_tokens: u64,
}

/// A chat client; clones share one connection pool.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    settings: LlmSettings,
}

/// Body of `POST /chat/completions`.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// One failed attempt: the error to report if we give up, and the server's wish on when
/// to come back.
struct Failure {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl LlmClient {
    /// Builds the HTTP client; fails on settings that could never work, before any request.
    pub fn new(settings: LlmSettings) -> Result<Self, Error> {
        let base = settings.base_url.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(base)
            .map_err(|e| Error::Config(format!("base URL {base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "base URL {base:?} must start with http:// or https://"
            )));
        }
        if settings.model.trim().is_empty() {
            return Err(Error::Config("no model configured".into()));
        }
        let endpoint = format!("{base}/chat/completions");

        let mut headers = HeaderMap::new();
        if let Some(key) = &settings.api_key {
            let mut value = header_value("API key", &format!("Bearer {key}"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(referer) = &settings.referer {
            headers.insert(
                HeaderName::from_static("http-referer"),
                header_value("referer", referer)?,
            );
        }
        if let Some(title) = &settings.title {
            headers.insert(
                HeaderName::from_static("x-title"),
                header_value("title", title)?,
            );
        }

        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("phoenix/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)));
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!("bad CA certificate {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "no PEM certificate in {}",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {}", error_chain(&e))))?;

        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint,
                settings,
            }),
        })
    }

    /// The default model of this client.
    pub fn model(&self) -> &str {
        &self.inner.settings.model
    }

    /// Sends `request`, retrying retryable failures up to `max_retries` times.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let settings = &self.inner.settings;
        let model = request.model.as_deref().unwrap_or(&settings.model);
        let body = WireRequest {
            model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        };
        let policy = RetryPolicy {
            max_retries: settings.max_retries,
            base: settings.backoff_base,
            max: settings.max_backoff,
        };
        retry(
            policy,
            |attempts| {
                let body = &body;
                async move {
                    let mut response = self.attempt(body, attempts).await?;
                    response.attempts = attempts;
                    Ok(response)
                }
            },
            |failure: &Failure| {
                if failure.error.is_retryable() {
                    Verdict::Retry(failure.retry_after)
                } else {
                    Verdict::Fail
                }
            },
            |failure, wait| {
                tracing::warn!(
                    attempt = wait.attempt,
                    max_attempts = wait.max_attempts,
                    delay_ms = wait.delay.as_millis() as u64,
                    kind = failure.error.kind(),
                    error = %failure.error,
                    "LLM request failed; retrying"
                );
            },
        )
        .await
        .map_err(|failure| failure.error)
    }

    /// One system + one user message with the default model; an empty `system` is left out.
    pub async fn complete(&self, system: &str, user: &str) -> Result<ChatResponse, Error> {
        let mut messages = Vec::with_capacity(2);
        if !system.trim().is_empty() {
            messages.push(Message::system(system));
        }
        messages.push(Message::user(user));
        self.chat(ChatRequest::new(messages)).await
    }

    /// One HTTP attempt; `attempts` is the running count, stamped into errors that carry it.
    async fn attempt(
        &self,
        body: &WireRequest<'_>,
        attempts: u32,
    ) -> Result<ChatResponse, Failure> {
        let transport = |e: reqwest::Error| self.transport_error(&e, attempts);
        let response = self
            .inner
            .http
            .post(&self.inner.endpoint)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = response.text().await.map_err(transport)?;

        if status.is_success() {
            return parse_completion(&text, body.model).map_err(Failure::from);
        }
        let detail = provider_detail(&text);
        let error = match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized { detail },
            StatusCode::PAYMENT_REQUIRED => Error::PaymentRequired { detail },
            StatusCode::FORBIDDEN => Error::Forbidden { detail },
            StatusCode::NOT_FOUND => Error::NotFound { detail },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                retry_after,
                attempts,
            },
            s if s.is_server_error() => Error::Server {
                status: s.as_u16(),
                detail,
                attempts,
            },
            s if s.is_client_error() => Error::BadRequest {
                status: s.as_u16(),
                detail,
            },
            // Redirects are followed by reqwest, so only odd statuses (1xx, 3xx without a
            // Location) land here; none of them carries a completion.
            s => Error::Malformed {
                detail: format!("unexpected HTTP status {s}: {detail}"),
            },
        };
        let honour = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        Err(Failure {
            error,
            retry_after: retry_after.filter(|_| honour),
        })
    }

    fn transport_error(&self, e: &reqwest::Error, attempts: u32) -> Failure {
        let error = if e.is_timeout() {
            Error::Timeout {
                after: self.inner.settings.timeout,
                attempts,
            }
        } else if e.is_builder() {
            Error::Config(format!("cannot build the request: {}", error_chain(e)))
        } else {
            Error::Connect {
                detail: error_chain(e),
                attempts,
            }
        };
        error.into()
    }
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value).map_err(|_| {
        Error::Config(format!(
            "the {what} contains characters not allowed in an HTTP header"
        ))
    })
}

/// The server's requested wait: OpenAI's `retry-after-ms`, else `Retry-After` in seconds.
/// An HTTP-date `Retry-After` is treated as absent (ordinary backoff applies): no provider
/// we target sends one, and parsing it would need another dependency.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let millis = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    millis.or_else(|| {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    })
}

/// Parses a `Retry-After` value in (possibly fractional) seconds.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// An error and its causes on one line; reqwest's own message hides the interesting part
/// ("connection refused", "certificate unknown") in the source chain.
/// An error and its causes on one line, skipping causes whose text is already there.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = source.and_then(std::error::Error::source);
    }
    text
}

#[cfg(test)]
mod tests;
