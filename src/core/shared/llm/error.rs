//! Why a chat request failed, in variants a caller can act on (retry, fix the key, pick
//! another model), with messages that count the attempts made.

use super::*;

/// Why a chat request failed; each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// HTTP 401: the key is missing, wrong or revoked.
    #[error("LLM endpoint rejected the API key (401): {detail}")]
    Unauthorized {
        /// The provider's message.
        detail: String,
    },
    /// HTTP 402: OpenRouter's "out of credits".
    #[error("LLM provider refused the request for lack of credits (402): {detail}")]
    PaymentRequired {
        /// The provider's message.
        detail: String,
    },
    /// HTTP 403: e.g. the prompt was flagged by moderation or the key lacks access.
    #[error("LLM provider refused the request (403): {detail}")]
    Forbidden {
        /// The provider's message.
        detail: String,
    },
    /// HTTP 404: unknown model, or a base URL that is not an OpenAI-compatible API.
    #[error("LLM endpoint or model not found (404): {detail}")]
    NotFound {
        /// The provider's message.
        detail: String,
    },
    /// HTTP 429 on every attempt.
    #[error("LLM endpoint is rate limiting requests (429) after {}{}", plural_attempts(*.attempts), retry_hint(.retry_after))]
    RateLimited {
        /// The last `Retry-After` the server sent, if any.
        retry_after: Option<Duration>,
        /// HTTP attempts made.
        attempts: u32,
    },
    /// HTTP 5xx on every attempt.
    #[error("LLM endpoint failed with HTTP {status} after {}: {detail}", plural_attempts(*.attempts))]
    Server {
        /// The last status code.
        status: u16,
        /// The provider's message.
        detail: String,
        /// HTTP attempts made.
        attempts: u32,
    },
    /// Any other HTTP 4xx: the request itself is wrong (bad parameters, prompt too long…).
    #[error("LLM endpoint rejected the request (HTTP {status}): {detail}")]
    BadRequest {
        /// The status code.
        status: u16,
        /// The provider's message.
        detail: String,
    },
    /// No complete answer within the per-attempt timeout, on every attempt.
    #[error("LLM endpoint did not answer within {} ({})", humantime::format_duration(*.after), plural_attempts(*.attempts))]
    Timeout {
        /// The per-attempt timeout.
        after: Duration,
        /// HTTP attempts made.
        attempts: u32,
    },
    /// Transport failure (refused, unreachable, TLS, reset) on every attempt.
    #[error("could not reach the LLM endpoint after {}: {detail}", plural_attempts(*.attempts))]
    Connect {
        /// The transport error and its causes.
        detail: String,
        /// HTTP attempts made.
        attempts: u32,
    },
    /// A success status whose body is not a chat completion.
    #[error("LLM endpoint returned something that is not a chat completion: {detail}")]
    Malformed {
        /// What was wrong, with an excerpt of the body.
        detail: String,
    },
    /// The completion carried no choice or only empty/whitespace content.
    #[error("LLM returned an empty answer")]
    Empty,
    /// An `{"error": {...}}` object inside a success body (OpenRouter reports upstream
    /// failures this way).
    #[error("LLM provider reported an error{}: {message}", .code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        /// The provider's error code (number or string), if any.
        code: Option<String>,
        /// The provider's message.
        message: String,
    },
    /// Settings that cannot work: base URL not http(s), unreadable CA file, bad header value.
    #[error("invalid LLM settings: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying again later may succeed (rate limit, server trouble, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Server { .. }
            | Error::Timeout { .. }
            | Error::Connect { .. } => true,
            Error::Api { code, .. } => code
                .as_deref()
                .and_then(|c| c.trim().parse::<u16>().ok())
                .is_some_and(|c| c == 429 || c >= 500),
            _ => false,
        }
    }

    /// Short stable code for metrics, logs and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "unauthorized",
            Error::PaymentRequired { .. } => "payment_required",
            Error::Forbidden { .. } => "forbidden",
            Error::NotFound { .. } => "not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::Server { .. } => "server",
            Error::BadRequest { .. } => "bad_request",
            Error::Timeout { .. } => "timeout",
            Error::Connect { .. } => "connect",
            Error::Malformed { .. } => "malformed",
            Error::Empty => "empty",
            Error::Api { .. } => "api",
            Error::Config(_) => "config",
        }
    }
}

/// "3 HTTP requests": an LLM call's own retries, told apart from a hive worker's tries.
pub(super) fn plural_attempts(n: u32) -> String {
    if n == 1 {
        "1 HTTP request".into()
    } else {
        format!("{n} HTTP requests")
    }
}

pub(super) fn retry_hint(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; server asked to wait {}", humantime::format_duration(d)))
        .unwrap_or_default()
}
