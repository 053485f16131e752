//! Loading settings: the table of keys, the resolver that layers defaults, `phoenix.toml` and
//! the environment, and finding and flattening the config file.

use super::*;

/// Every key the config file may hold, with its env name and whether it is secret.
pub(super) const KEYS: &[(&str, &str, bool)] = &[
    ("home", "PHOENIX_HOME", false),
    ("collector.url", "TELEMETRIST_URL", false),
    ("collector.bind", "TELEMETRIST_BIND", false),
    ("collector.otlp_bind", "PHOENIX_OTLP_BIND", false),
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
    ("store.url", "PHOENIX_DATABASE_URL", false),
    ("store.pool_size", "PHOENIX_DATABASE_POOL_SIZE", false),
    ("cluster.nats_url", "PHOENIX_NATS_URL", false),
    ("cluster.subject_prefix", "PHOENIX_NATS_PREFIX", false),
    (
        "cluster.stream_max_bytes",
        "PHOENIX_NATS_STREAM_MAX_BYTES",
        false,
    ),
    ("cluster.ack_wait_ms", "PHOENIX_NATS_ACK_WAIT_MS", false),
    (
        "distributor.follow_interval_ms",
        "PHOENIX_FOLLOW_INTERVAL_MS",
        false,
    ),
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

pub(super) struct Resolver<'a> {
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
    env: &'a Env,
    entries: Vec<Entry>,
}

impl Resolver<'_> {
    /// Raw value and its origin, env beating file beating default.
    fn raw(&mut self, key: &'static str, default: Option<String>) -> Option<(String, String)> {
        let env_name = KEYS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, e, _)| *e)
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
        self.entries.push(Entry {
            key,
            env: env_name,
            value: value.clone().map(|v| shown(key, v)),
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

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
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
            otlp_bind: r.string("collector.otlp_bind", None),
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
        let store = StoreSettings {
            url: r.string("store.url", None),
            pool_size: r.parsed("store.pool_size", 16)?,
        };
        let cluster = ClusterSettings {
            nats_url: r.string("cluster.nats_url", None),
            subject_prefix: r
                .string("cluster.subject_prefix", Some("phoenix"))
                .unwrap_or_default(),
            stream_max_bytes: r.parsed("cluster.stream_max_bytes", 1 << 30)?,
            ack_wait: Duration::from_millis(r.parsed("cluster.ack_wait_ms", 30_000)?),
        };
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
            follow_interval: r
                .optional::<u64>("distributor.follow_interval_ms")?
                .map(Duration::from_millis),
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
            store,
            cluster,
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
}

pub(super) fn find_config_file(opts: &LoadOptions) -> Option<(PathBuf, bool)> {
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

pub(super) fn default_data_dir(env: &Env) -> PathBuf {
    if let Some(x) = env.get("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return Path::new(x).join("phoenix");
    }
    match env.get("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Path::new(h).join(".local/share/phoenix"),
        None => PathBuf::from(".phoenix"),
    }
}

/// Turns `[collector] bind = "..."` into `collector.bind = "..."`, refusing unknown keys.
pub(super) fn flatten_toml(path: &Path, text: &str) -> Result<BTreeMap<String, String>, Error> {
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
