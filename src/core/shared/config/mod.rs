//! Settings: defaults < `phoenix.toml` < environment < flags, with where each value came from.
//!
//! Depends only on `shared::llm` (its settings type).
//!
//! The environment is passed in as a snapshot (`Env`) so that nothing else in `core` reads
//! process-global state and tests can layer settings without touching the real environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::core::shared::llm::LlmSettings;

mod load;

use load::KEYS;

/// A snapshot of environment variables.
pub type Env = HashMap<String, String>;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A key in the config file is not one Phoenix knows (usually a typo).
    #[error("config file {path}: unknown key `{key}` (known keys: see `phoenix config show`)")]
    UnknownKey {
        /// File.
        path: PathBuf,
        /// Dotted key.
        key: String,
    },
    /// A value does not parse as the setting's type.
    #[error("{origin}: invalid value {value:?} for {key}: {message}")]
    Invalid {
        /// Setting key.
        key: &'static str,
        /// Where the value came from (`env TELEMETRIST_BIND`, `phoenix.toml`).
        origin: String,
        /// The value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// One row of `phoenix config show`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Dotted key as written in phoenix.toml.
    pub key: &'static str,
    /// Environment variable that sets it.
    pub env: &'static str,
    /// Effective value, secrets masked; `None` when unset.
    pub value: Option<String>,
    /// Where the value came from.
    pub source: Source,
}

/// The SQLite durability level of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync the WAL on every commit: an acknowledged record survives power loss.
    Full,
    /// fsync at checkpoints only: an acknowledged record survives a crash of the process
    /// but the last commits may be lost on power loss.
    Normal,
}

/// Collector (Vital Pulse) settings.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    /// Base URL clients use.
    pub url: String,
    /// Address `phoenix serve collector` binds.
    pub bind: String,
    /// A second address serving only OTLP/HTTP (`/v1/traces`, `/v1/logs`) and `/health`,
    /// e.g. the standard `127.0.0.1:4318`; `None` serves OTLP on `bind` only.
    pub otlp_bind: Option<String>,
    /// SQLite database path.
    pub db_path: PathBuf,
    /// File holding the per-installation key of the orch-id hash.
    pub hash_key_file: PathBuf,
    /// Delete records older than this many days; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Bearer tokens the server accepts (empty: no auth).
    pub ingest_tokens: Vec<String>,
    /// Bearer token the clients send.
    pub token: Option<String>,
    /// Largest request body accepted on the wire.
    pub max_body_bytes: usize,
    /// Largest body after gzip decoding.
    pub max_decoded_bytes: usize,
    /// Most records in one request.
    pub max_batch_records: usize,
    /// Records waiting for the writer before ingest answers 429.
    pub queue_records: usize,
    /// SQLite durability.
    pub sync: SyncMode,
    /// PEM certificate chain to serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key to serve HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Extra PEM root the clients trust.
    pub ca_cert: Option<PathBuf>,
    /// An ORCH whose last heartbeat is older than this is stale.
    pub stale_after: Duration,
}

/// Where the fleet's stores live when they are not the embedded SQLite files.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// One database for every server store (`postgres://…`): the collector's telemetry,
    /// insights and conversations, and the distributor's update log, shared by every
    /// process pointed at it. Unset: the SQLite files `collector.db_path` and
    /// `distributor.db_path`. An SQLite URL (`sqlite:PATH`) moves only the collector's store.
    pub url: Option<String>,
    /// Connections each process keeps to the database at most.
    pub pool_size: usize,
}

/// How the nodes of a cluster reach each other (NATS).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// NATS server(s), `nats://host:4222` (comma-separated for several): collectors sharing
    /// a database buffer ingest in its JetStream, distributors sharing a database ring each
    /// other through it after each commit.
    pub nats_url: Option<String>,
    /// First token of every subject Phoenix uses (and of the ingest stream's name), so
    /// several installations (or tests) can share one NATS.
    pub subject_prefix: String,
    /// The ingest stream's size limit in bytes; beyond it ingest answers 429.
    pub stream_max_bytes: i64,
    /// How long a node may hold ingest messages unacked before JetStream gives them to
    /// another node (how soon a dead collector's unfinished batch is taken over).
    pub ack_wait: Duration,
}

/// Distributor (Synaptic Pulse) endpoints.
#[derive(Debug, Clone)]
pub struct DistributorSettings {
    /// WebSocket URL agents subscribe to.
    pub url: String,
    /// Address the distributor binds.
    pub bind: String,
    /// SQLite file of the update log.
    pub db_path: PathBuf,
    /// File holding the server secret agent tokens are derived from (shared with the
    /// collector, which checks heartbeats with it).
    pub agent_key_file: PathBuf,
    /// Refuse subscribers without a valid agent token even on a loopback bind (always
    /// required off loopback).
    pub require_agent_tokens: bool,
    /// How often a distributor on a shared database reads what other nodes committed
    /// (`None`: 250 ms, or 2 s when NATS rings it at each commit).
    pub follow_interval: Option<Duration>,
}

/// How the HTTP servers treat slow, numerous or greedy clients, and how long they drain.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Time a client has to send a request's headers (also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time a request body may take after its headers, before the minimum-rate allowance.
    pub body_timeout: Duration,
    /// Bytes per second a body must keep up (each this many extends its time by a second).
    pub body_min_rate: u64,
    /// Open connections per process beyond which new ones get 503; `None`: 80% of the
    /// open-file limit.
    pub max_connections: Option<usize>,
    /// How long shutdown waits for in-flight requests and WebSocket closes.
    pub shutdown_timeout: Duration,
    /// Memory all gzip request bodies may inflate into at once.
    pub decode_budget_bytes: usize,
}

/// LLM endpoint settings as configured (possibly incomplete).
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// OpenAI-compatible base URL.
    pub base_url: String,
    /// Whether the base URL was set explicitly (not the OpenRouter default).
    pub base_url_explicit: bool,
    /// Model name.
    pub model: Option<String>,
    /// API key (OPENROUTER_API_KEY or PHOENIX_LLM_API_KEY).
    pub api_key: Option<String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Extra attempts on retryable failures.
    pub max_retries: u32,
    /// OpenRouter attribution `HTTP-Referer`.
    pub referer: Option<String>,
    /// OpenRouter attribution `X-Title`.
    pub title: Option<String>,
}

/// The default OpenAI-compatible endpoint.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// The model used with OpenRouter when none is configured.
pub const DEFAULT_OPENROUTER_MODEL: &str = "openai/gpt-4o-mini";

impl LlmConfig {
    /// Settings for the LLM client, or why there is no usable LLM.
    pub fn client_settings(&self) -> Result<LlmSettings, String> {
        let model = match (&self.model, &self.api_key, self.base_url_explicit) {
            (Some(m), _, _) => m.clone(),
            (None, Some(_), false) => DEFAULT_OPENROUTER_MODEL.to_owned(),
            (None, _, true) => {
                return Err("PHOENIX_LLM_BASE_URL is set but PHOENIX_LLM_MODEL is not".to_owned());
            }
            (None, None, false) => {
                return Err("no LLM configured (set OPENROUTER_API_KEY, or PHOENIX_LLM_BASE_URL and PHOENIX_LLM_MODEL)".to_owned());
            }
        };
        if !self.base_url_explicit && self.api_key.is_none() {
            return Err("PHOENIX_LLM_MODEL is set but neither OPENROUTER_API_KEY nor PHOENIX_LLM_BASE_URL is".to_owned());
        }
        let mut s = LlmSettings::new(self.base_url.clone(), model);
        s.api_key = self.api_key.clone();
        s.timeout = self.timeout;
        s.max_retries = self.max_retries;
        s.referer = self.referer.clone();
        s.title = self.title.clone();
        Ok(s)
    }
}

/// GitHub's public REST API.
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// Which forge agent repositories live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeChoice {
    /// Bare repositories under the data directory.
    Local,
    /// GitHub (or GitHub Enterprise).
    Github,
}

impl ForgeChoice {
    /// Parses `local` / `github` (case-insensitive).
    pub fn parse(s: &str) -> Option<ForgeChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(ForgeChoice::Local),
            "github" => Some(ForgeChoice::Github),
            _ => None,
        }
    }
}

/// Privacy pipeline settings: where the redaction vault is and how it is unlocked.
#[derive(Debug, Clone)]
pub struct PiiSettings {
    /// SQLite file mapping pseudonyms back to originals (values encrypted).
    pub vault_path: PathBuf,
    /// The vault key itself: 32 bytes as 64 hex characters or base64.
    pub vault_key: Option<String>,
    /// File holding the vault key when `vault_key` is unset (created 0600 on first use).
    pub vault_key_file: PathBuf,
}

/// The edge Telemetrist (seed 000): where completed conversations are picked up, how often,
/// where they wait until the collector has them, and how the collector is reached.
#[derive(Debug, Clone)]
pub struct TelemetristSettings {
    /// Directory scanned for completed conversations (`*.json`, `*.jsonl`).
    pub source: Option<PathBuf>,
    /// Seconds between scans.
    pub interval_secs: u64,
    /// Collector base URL the conversations go to (the seed's `telemetry_endpoint`).
    pub telemetry_endpoint: String,
    /// Bearer token sent with them (the seed's `telemetry_stream_key`).
    pub telemetry_stream_key: Option<String>,
    /// SQLite file of the spool (redacted conversations not yet acknowledged, the ledger of
    /// those sent, the quarantine).
    pub spool_path: PathBuf,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Phoenix's data directory.
    pub data_dir: PathBuf,
    /// Collector.
    pub collector: CollectorSettings,
    /// Shared database of every store (PostgreSQL), if any.
    pub store: StoreSettings,
    /// How the nodes of a cluster reach each other.
    pub cluster: ClusterSettings,
    /// Distributor.
    pub distributor: DistributorSettings,
    /// Both servers' connection handling.
    pub server: ServerSettings,
    /// LLM.
    pub llm: LlmConfig,
    /// Key that unlocks the premium tier (`X402` header).
    pub x402_premium_key: Option<String>,
    /// Token required to publish updates.
    pub admin_token: Option<String>,
    /// Seconds between ORCH heartbeats.
    pub orch_sync_interval: u64,
    /// The agent token `phoenix subscribe` presents (in hello and on heartbeats).
    pub agent_token: Option<String>,
    /// GitHub token.
    pub github_pat: Option<String>,
    /// GitHub user.
    pub github_username: Option<String>,
    /// Wait for CI before merging.
    pub mandate_github_ci: bool,
    /// Wait for human approval before merging.
    pub require_human_pr_approval: bool,
    /// Run an agent's tests before pushing it.
    pub testing_mandatory: bool,
    /// Forge used when a command does not say (`local` or `github`).
    pub forge_default: ForgeChoice,
    /// GitHub organisation that owns new agent repositories (else the user does).
    pub github_org: Option<String>,
    /// GitHub REST API root (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api_url: String,
    /// Replaces every repository's own test command in the local forge's CI.
    pub local_ci_command: Option<String>,
    /// Privacy pipeline (redaction vault).
    pub pii: PiiSettings,
    /// Edge conversation pipeline.
    pub telemetrist: TelemetristSettings,
    entries: Vec<Entry>,
}

/// Everything Settings::load needs from the outside world.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// Environment snapshot.
    pub env: Env,
    /// Working directory, for `./phoenix.toml`.
    pub cwd: Option<PathBuf>,
}

/// Shows enough of a secret to tell two apart, never enough to use it.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 8 {
        "********".to_owned()
    } else {
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("****{tail}")
    }
}

/// A database URL with its password replaced by `****`, for messages and `config show`: the
/// userinfo's password (`postgres://user:secret@host/db`), a `password=` query parameter, or
/// libpq's `password=` pair.
pub fn mask_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The host part never holds an '@', so the last one ends the userinfo.
        let base = match base.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:****@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        };
        let query = query.map(|q| {
            q.split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match query {
            Some(q) => format!("{scheme}://{base}?{q}"),
            None => format!("{scheme}://{base}"),
        };
    }
    // key=value form: password=secret
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A value as `config show` prints it: secrets masked, a database URL without its password.
fn shown(key: &str, value: String) -> String {
    if KEYS.iter().any(|(k, _, s)| *k == key && *s) {
        mask(&value)
    } else if key == "store.url" {
        mask_password(&value)
    } else {
        value
    }
}

impl Settings {
    /// The shared database of the distributor's update log (`store.url` when it names a
    /// PostgreSQL database); `None`: the SQLite file `distributor.db_path`.
    pub fn distributor_database(&self) -> Option<&str> {
        self.store.url.as_deref().filter(|u| is_postgres_url(u))
    }

    /// The rows of `phoenix config show`, in a stable order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records that a flag replaced a setting, so `config show`-style reports stay true.
    pub fn mark_flag(&mut self, key: &str, value: Option<String>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.value = value.map(|v| shown(key, v));
            e.source = Source::Flag;
        }
    }
}

#[cfg(test)]
mod tests;
