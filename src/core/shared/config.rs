//! Settings: defaults < `phoenix.toml` < environment < flags, with where each value came from.
//!
//! The environment is passed in as a snapshot (`Env`) so that nothing else in `core` reads
//! process-global state and tests can layer settings without touching the real environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::core::shared::llm::LlmSettings;

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

/// Every key the config file may hold, with its env name and whether it is secret.
const KEYS: &[(&str, &str, bool)] = &[
    ("home", "PHOENIX_HOME", false),
    ("collector.url", "TELEMETRIST_URL", false),
    ("collector.bind", "TELEMETRIST_BIND", false),
    ("collector.db_path", "TELEMETRIST_DB_PATH", false),
    ("collector.hash_key_file", "PHOENIX_HASH_KEY_FILE", false),
    ("collector.retention_days", "PHOENIX_RETENTION_DAYS", false),
    ("collector.ingest_tokens", "PHOENIX_INGEST_TOKENS", true),
    ("collector.token", "PHOENIX_INGEST_TOKEN", true),
    ("collector.max_body_bytes", "PHOENIX_MAX_BODY_BYTES", false),
    (
        "collector.max_decoded_bytes",
        "PHOENIX_MAX_DECODED_BYTES",
        false,
    ),
    (
        "collector.max_batch_records",
        "PHOENIX_MAX_BATCH_RECORDS",
        false,
    ),
    ("collector.queue_records", "PHOENIX_QUEUE_RECORDS", false),
    ("collector.sqlite_sync", "PHOENIX_SQLITE_SYNC", false),
    ("collector.tls_cert", "PHOENIX_TLS_CERT", false),
    ("collector.tls_key", "PHOENIX_TLS_KEY", false),
    ("collector.ca_cert", "PHOENIX_CA_CERT", false),
    (
        "collector.stale_after_secs",
        "PHOENIX_STALE_AFTER_SECS",
        false,
    ),
    ("collector.x402_premium_key", "X402_PREMIUM_KEY", true),
    ("distributor.url", "PULSE_DISTRIBUTOR_URL", false),
    ("distributor.bind", "PULSE_DISTRIBUTOR_BIND", false),
    ("distributor.db_path", "PHOENIX_DISTRIBUTOR_DB_PATH", false),
    ("distributor.admin_token", "PHOENIX_ADMIN_TOKEN", true),
    (
        "distributor.agent_key_file",
        "PHOENIX_AGENT_KEY_FILE",
        false,
    ),
    (
        "distributor.require_agent_tokens",
        "PHOENIX_REQUIRE_AGENT_TOKENS",
        false,
    ),
    (
        "server.header_timeout_secs",
        "PHOENIX_HEADER_TIMEOUT_SECS",
        false,
    ),
    (
        "server.body_timeout_secs",
        "PHOENIX_BODY_TIMEOUT_SECS",
        false,
    ),
    (
        "server.body_min_bytes_per_sec",
        "PHOENIX_BODY_MIN_RATE",
        false,
    ),
    ("server.max_connections", "PHOENIX_MAX_CONNECTIONS", false),
    (
        "server.shutdown_timeout_secs",
        "PHOENIX_SHUTDOWN_TIMEOUT_SECS",
        false,
    ),
    (
        "server.decode_budget_bytes",
        "PHOENIX_DECODE_BUDGET_BYTES",
        false,
    ),
    ("llm.base_url", "PHOENIX_LLM_BASE_URL", false),
    ("llm.model", "PHOENIX_LLM_MODEL", false),
    ("llm.openrouter_api_key", "OPENROUTER_API_KEY", true),
    ("llm.api_key", "PHOENIX_LLM_API_KEY", true),
    ("llm.timeout_secs", "PHOENIX_LLM_TIMEOUT_SECS", false),
    ("llm.max_retries", "PHOENIX_LLM_MAX_RETRIES", false),
    ("llm.referer", "PHOENIX_LLM_REFERER", false),
    ("llm.title", "PHOENIX_LLM_TITLE", false),
    ("orch.sync_interval_secs", "ORCH_SLAVE_SYNC_INTERVAL", false),
    ("orch.agent_token", "PHOENIX_AGENT_TOKEN", true),
    ("forge.github_pat", "GITHUB_PAT", true),
    ("forge.github_username", "GITHUB_USERNAME", false),
    ("forge.mandate_github_ci", "MANDATE_GITHUB_CI", false),
    (
        "forge.require_human_pr_approval",
        "REQUIRE_HUMAN_PR_APPROVAL",
        false,
    ),
    ("forge.testing_mandatory", "TESTING_MANDATORY", false),
    ("pii.vault_path", "PHOENIX_VAULT_PATH", false),
    ("pii.vault_key", "PHOENIX_VAULT_KEY", true),
    ("pii.vault_key_file", "PHOENIX_VAULT_KEY_FILE", false),
    ("telemetrist.source", "PHOENIX_TELEMETRIST_SOURCE", false),
    (
        "telemetrist.interval_secs",
        "PHOENIX_TELEMETRIST_INTERVAL",
        false,
    ),
    ("telemetrist.telemetry_endpoint", "TELEMETRIST_URL", false),
    (
        "telemetrist.telemetry_stream_key",
        "PHOENIX_TELEMETRY_STREAM_KEY",
        true,
    ),
    ("telemetrist.spool_path", "PHOENIX_SPOOL_PATH", false),
    ("forge.default", "PHOENIX_FORGE", false),
    ("forge.github_org", "PHOENIX_GITHUB_ORG", false),
    ("forge.github_api_url", "PHOENIX_GITHUB_API_URL", false),
    ("forge.local_ci_command", "PHOENIX_LOCAL_CI_COMMAND", false),
];

struct Resolver<'a> {
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
    env: &'a Env,
    entries: Vec<Entry>,
}

impl Resolver<'_> {
    /// Raw value and its origin, env beating file beating default.
    fn raw(&mut self, key: &'static str, default: Option<String>) -> Option<(String, String)> {
        let (env_name, secret) = KEYS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, e, s)| (*e, *s))
            .expect("every resolved key is listed in KEYS");
        let (value, source, origin) =
            if let Some(v) = self.env.get(env_name).filter(|v| !v.is_empty()) {
                (Some(v.clone()), Source::Env, format!("env {env_name}"))
            } else if let Some(v) = self.file.get(key) {
                let file = self
                    .file_path
                    .as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                (Some(v.clone()), Source::File, format!("{file} ({key})"))
            } else {
                (default, Source::Default, "default".to_owned())
            };
        let shown = value
            .as_ref()
            .map(|v| if secret { mask(v) } else { v.clone() });
        self.entries.push(Entry {
            key,
            env: env_name,
            value: shown,
            source,
        });
        value.map(|v| (v, origin))
    }

    fn string(&mut self, key: &'static str, default: Option<&str>) -> Option<String> {
        self.raw(key, default.map(str::to_owned)).map(|(v, _)| v)
    }

    fn parsed<T>(&mut self, key: &'static str, default: T) -> Result<T, Error>
    where
        T: std::str::FromStr + ToString,
        T::Err: std::fmt::Display,
    {
        match self.raw(key, Some(default.to_string())) {
            Some((v, origin)) => v.trim().parse().map_err(|e: T::Err| Error::Invalid {
                key,
                origin,
                value: v.clone(),
                message: e.to_string(),
            }),
            None => Ok(default),
        }
    }

    fn optional<T: std::str::FromStr>(&mut self, key: &'static str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        match self.raw(key, None) {
            Some((v, origin)) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| Error::Invalid {
                    key,
                    origin,
                    value: v.clone(),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    fn flag(&mut self, key: &'static str, default: bool) -> Result<bool, Error> {
        match self.raw(key, Some(default.to_string())) {
            Some((v, origin)) => parse_bool(&v).ok_or_else(|| Error::Invalid {
                key,
                origin,
                value: v.clone(),
                message: "expected true/false, 1/0, yes/no or on/off".to_owned(),
            }),
            None => Ok(default),
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
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

impl Settings {
    /// Loads settings from defaults, the config file and the environment snapshot.
    pub fn load(opts: &LoadOptions) -> Result<Settings, Error> {
        let env = &opts.env;
        let (file_path, file) = match find_config_file(opts) {
            Some((path, explicit)) => match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let flat = flatten_toml(&path, &text)?;
                    (Some(path), flat)
                }
                Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                    (None, BTreeMap::new())
                }
                Err(source) => return Err(Error::Read { path, source }),
            },
            None => (None, BTreeMap::new()),
        };
        let mut r = Resolver {
            file,
            file_path: file_path.clone(),
            env,
            entries: Vec::new(),
        };

        let default_home = default_data_dir(env);
        let data_dir = PathBuf::from(
            r.string("home", Some(&default_home.display().to_string()))
                .unwrap_or_default(),
        );
        let db_default = data_dir.join("telemetrist.db").display().to_string();
        let key_default = data_dir.join("orch_hash.key").display().to_string();
        let dist_db_default = data_dir.join("distributor.db").display().to_string();

        let orch_sync_interval: u64 = r.parsed("orch.sync_interval_secs", 300)?;
        let collector = CollectorSettings {
            url: r
                .string("collector.url", Some("http://127.0.0.1:5002"))
                .unwrap_or_default(),
            bind: r
                .string("collector.bind", Some("127.0.0.1:5002"))
                .unwrap_or_default(),
            db_path: PathBuf::from(
                r.string("collector.db_path", Some(&db_default))
                    .unwrap_or_default(),
            ),
            hash_key_file: PathBuf::from(
                r.string("collector.hash_key_file", Some(&key_default))
                    .unwrap_or_default(),
            ),
            retention_days: r.optional("collector.retention_days")?,
            ingest_tokens: r
                .string("collector.ingest_tokens", None)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            token: r.string("collector.token", None),
            max_body_bytes: r.parsed("collector.max_body_bytes", 16 * 1024 * 1024)?,
            max_decoded_bytes: r.parsed("collector.max_decoded_bytes", 64 * 1024 * 1024)?,
            max_batch_records: r.parsed("collector.max_batch_records", 10_000)?,
            queue_records: r.parsed("collector.queue_records", 200_000)?,
            sync: match r.raw("collector.sqlite_sync", Some("normal".to_owned())) {
                Some((v, origin)) => match v.trim().to_ascii_lowercase().as_str() {
                    "full" => SyncMode::Full,
                    "normal" => SyncMode::Normal,
                    _ => {
                        return Err(Error::Invalid {
                            key: "collector.sqlite_sync",
                            origin,
                            value: v,
                            message: "expected `full` or `normal`".to_owned(),
                        });
                    }
                },
                None => SyncMode::Normal,
            },
            tls_cert: r.string("collector.tls_cert", None).map(PathBuf::from),
            tls_key: r.string("collector.tls_key", None).map(PathBuf::from),
            ca_cert: r.string("collector.ca_cert", None).map(PathBuf::from),
            stale_after: Duration::from_secs(r.parsed(
                "collector.stale_after_secs",
                orch_sync_interval.saturating_mul(3),
            )?),
        };
        let x402_premium_key = r.string("collector.x402_premium_key", None);
        let distributor = DistributorSettings {
            url: r
                .string("distributor.url", Some("ws://127.0.0.1:5003/subscribe"))
                .unwrap_or_default(),
            bind: r
                .string("distributor.bind", Some("127.0.0.1:5003"))
                .unwrap_or_default(),
            db_path: PathBuf::from(
                r.string("distributor.db_path", Some(&dist_db_default))
                    .unwrap_or_default(),
            ),
            agent_key_file: PathBuf::from(
                r.string(
                    "distributor.agent_key_file",
                    Some(&data_dir.join("agent_token.key").display().to_string()),
                )
                .unwrap_or_default(),
            ),
            require_agent_tokens: r.flag("distributor.require_agent_tokens", false)?,
        };
        let admin_token = r.string("distributor.admin_token", None);
        let agent_token = r.string("orch.agent_token", None);
        let server = ServerSettings {
            header_timeout: Duration::from_secs(r.parsed("server.header_timeout_secs", 10)?),
            body_timeout: Duration::from_secs(r.parsed("server.body_timeout_secs", 20)?),
            body_min_rate: r.parsed("server.body_min_bytes_per_sec", 4096)?,
            max_connections: r.optional("server.max_connections")?,
            shutdown_timeout: Duration::from_secs(r.parsed("server.shutdown_timeout_secs", 10)?),
            decode_budget_bytes: r.parsed(
                "server.decode_budget_bytes",
                collector.max_decoded_bytes.saturating_mul(2),
            )?,
        };
        let base_url = r
            .string("llm.base_url", Some(OPENROUTER_BASE_URL))
            .unwrap_or_default();
        let base_url_explicit = r
            .entries
            .last()
            .is_some_and(|e| e.source != Source::Default);
        let llm_model = r.string("llm.model", None);
        if llm_model.is_none() && !base_url_explicit {
            // What the LLM client will use with OpenRouter: show it, not "(unset)".
            if let Some(e) = r.entries.last_mut() {
                e.value = Some(DEFAULT_OPENROUTER_MODEL.to_owned());
            }
        }
        let openrouter_key = r.string("llm.openrouter_api_key", None);
        let generic_key = r.string("llm.api_key", None);
        let llm = LlmConfig {
            base_url_explicit,
            base_url,
            model: llm_model,
            api_key: generic_key.or(openrouter_key),
            timeout: Duration::from_secs(r.parsed("llm.timeout_secs", 60)?),
            max_retries: r.parsed("llm.max_retries", 2)?,
            referer: r.string(
                "llm.referer",
                Some("https://github.com/phoenix-orch/phoenix"),
            ),
            title: r.string("llm.title", Some("Phoenix")),
        };
        let github_pat = r.string("forge.github_pat", None);
        let github_username = r.string("forge.github_username", None);
        let mandate_github_ci = r.flag("forge.mandate_github_ci", false)?;
        let require_human_pr_approval = r.flag("forge.require_human_pr_approval", true)?;
        let testing_mandatory = r.flag("forge.testing_mandatory", true)?;
        let pii = PiiSettings {
            vault_path: PathBuf::from(
                r.string(
                    "pii.vault_path",
                    Some(&data_dir.join("vault.db").display().to_string()),
                )
                .unwrap_or_default(),
            ),
            vault_key: r.string("pii.vault_key", None),
            vault_key_file: PathBuf::from(
                r.string(
                    "pii.vault_key_file",
                    Some(&data_dir.join("vault.key").display().to_string()),
                )
                .unwrap_or_default(),
            ),
        };
        // The endpoint and key default to the collector's own URL and client token, so one
        // `[collector]` section (or TELEMETRIST_URL alone) serves both pipelines.
        let telemetrist = TelemetristSettings {
            source: r.string("telemetrist.source", None).map(PathBuf::from),
            interval_secs: r.parsed("telemetrist.interval_secs", 300)?,
            telemetry_endpoint: r
                .string("telemetrist.telemetry_endpoint", Some(&collector.url))
                .unwrap_or_default(),
            telemetry_stream_key: r
                .raw("telemetrist.telemetry_stream_key", collector.token.clone())
                .map(|(v, _)| v),
            spool_path: PathBuf::from(
                r.string(
                    "telemetrist.spool_path",
                    Some(&data_dir.join("spool.db").display().to_string()),
                )
                .unwrap_or_default(),
            ),
        };
        let forge_default = match r.raw("forge.default", Some("local".to_owned())) {
            Some((v, origin)) => ForgeChoice::parse(&v).ok_or_else(|| Error::Invalid {
                key: "forge.default",
                origin,
                value: v.clone(),
                message: "expected `local` or `github`".to_owned(),
            })?,
            None => ForgeChoice::Local,
        };
        let github_org = r.string("forge.github_org", None);
        let github_api_url = r
            .string("forge.github_api_url", Some(GITHUB_API_URL))
            .unwrap_or_default();
        let local_ci_command = r.string("forge.local_ci_command", None);

        Ok(Settings {
            config_file: file_path,
            data_dir,
            collector,
            distributor,
            server,
            llm,
            x402_premium_key,
            admin_token,
            orch_sync_interval,
            agent_token,
            github_pat,
            github_username,
            mandate_github_ci,
            require_human_pr_approval,
            testing_mandatory,
            pii,
            telemetrist,
            forge_default,
            github_org,
            github_api_url,
            local_ci_command,
            entries: r.entries,
        })
    }

    /// The rows of `phoenix config show`, in a stable order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records that a flag replaced a setting, so `config show`-style reports stay true.
    pub fn mark_flag(&mut self, key: &str, value: Option<String>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            let secret = KEYS.iter().any(|(k, _, s)| *k == key && *s);
            e.value = value.map(|v| if secret { mask(&v) } else { v });
            e.source = Source::Flag;
        }
    }
}

fn find_config_file(opts: &LoadOptions) -> Option<(PathBuf, bool)> {
    if let Some(p) = &opts.config_file {
        return Some((p.clone(), true));
    }
    if let Some(p) = opts.env.get("PHOENIX_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let local = opts.cwd.clone().unwrap_or_default().join("phoenix.toml");
    if local.is_file() {
        return Some((local, false));
    }
    let xdg = opts
        .env
        .get("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| opts.env.get("HOME").map(|h| Path::new(h).join(".config")))?;
    Some((xdg.join("phoenix").join("phoenix.toml"), false))
}

fn default_data_dir(env: &Env) -> PathBuf {
    if let Some(x) = env.get("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return Path::new(x).join("phoenix");
    }
    match env.get("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Path::new(h).join(".local/share/phoenix"),
        None => PathBuf::from(".phoenix"),
    }
}

/// Turns `[collector] bind = "..."` into `collector.bind = "..."`, refusing unknown keys.
fn flatten_toml(path: &Path, text: &str) -> Result<BTreeMap<String, String>, Error> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    let mut stack: Vec<(String, &toml::Table)> = vec![(String::new(), &table)];
    while let Some((prefix, t)) = stack.pop() {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => stack.push((key, inner)),
                other => {
                    if !KEYS.iter().any(|(known, _, _)| *known == key) {
                        return Err(Error::UnknownKey {
                            path: path.to_owned(),
                            key,
                        });
                    }
                    let text = match other {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Array(items) => items
                            .iter()
                            .map(|i| {
                                i.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| i.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        v => v.to_string(),
                    };
                    out.insert(key, text);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
