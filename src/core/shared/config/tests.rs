use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn source_of(s: &Settings, key: &str) -> Source {
    s.entries().iter().find(|e| e.key == key).unwrap().source
}

#[test]
fn defaults_then_file_then_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("phoenix.toml");
    std::fs::write(
        &file,
        "[collector]\nbind = \"127.0.0.1:6000\"\nretention_days = 7\n[llm]\nmodel = \"m\"\n",
    )
    .unwrap();
    let opts = LoadOptions {
        config_file: Some(file.clone()),
        env: env(&[("HOME", "/home/x"), ("TELEMETRIST_BIND", "127.0.0.1:7000")]),
        cwd: None,
    };
    let s = Settings::load(&opts).unwrap();
    assert_eq!(s.collector.bind, "127.0.0.1:7000");
    assert_eq!(source_of(&s, "collector.bind"), Source::Env);
    assert_eq!(s.collector.retention_days, Some(7));
    assert_eq!(source_of(&s, "collector.retention_days"), Source::File);
    assert_eq!(s.collector.url, "http://127.0.0.1:5002");
    assert_eq!(source_of(&s, "collector.url"), Source::Default);
    assert_eq!(s.data_dir, PathBuf::from("/home/x/.local/share/phoenix"));
    assert_eq!(
        s.collector.db_path,
        PathBuf::from("/home/x/.local/share/phoenix/telemetrist.db")
    );
    assert_eq!(s.config_file.as_deref(), Some(file.as_path()));
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[collector]\nbnd = \"x\"\n").unwrap();
    let err = Settings::load(&LoadOptions {
        config_file: Some(file),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown key `collector.bnd`"),
        "{err}"
    );

    let err = Settings::load(&LoadOptions {
        env: env(&[("PHOENIX_RETENTION_DAYS", "soon")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("env PHOENIX_RETENTION_DAYS"),
        "{err}"
    );
    let err = Settings::load(&LoadOptions {
        env: env(&[("MANDATE_GITHUB_CI", "maybe")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("MANDATE_GITHUB_CI"), "{err}");
}

#[test]
fn explicit_missing_config_file_is_an_error() {
    let opts = LoadOptions {
        config_file: Some("/nonexistent/phoenix.toml".into()),
        ..Default::default()
    };
    assert!(matches!(Settings::load(&opts), Err(Error::Read { .. })));
}

#[test]
fn secrets_are_masked_and_llm_needs_key_or_endpoint() {
    let s = Settings::load(&LoadOptions {
        env: env(&[
            ("OPENROUTER_API_KEY", "sk-or-1234567890abcd"),
            ("X402_PREMIUM_KEY", "short"),
        ]),
        ..Default::default()
    })
    .unwrap();
    let shown: Vec<_> = s.entries().iter().filter_map(|e| e.value.clone()).collect();
    assert!(
        !shown
            .iter()
            .any(|v| v.contains("sk-or-1234567890abcd") || v == "short")
    );
    let llm = s.llm.client_settings().unwrap();
    assert_eq!(llm.base_url, OPENROUTER_BASE_URL);
    assert_eq!(llm.model, DEFAULT_OPENROUTER_MODEL);
    // `config show` prints the model the client uses, as the default it is.
    let model = s.entries().iter().find(|e| e.key == "llm.model").unwrap();
    assert_eq!(model.value.as_deref(), Some(DEFAULT_OPENROUTER_MODEL));
    assert_eq!(model.source, Source::Default);

    let none = Settings::load(&LoadOptions::default()).unwrap();
    assert!(
        none.llm
            .client_settings()
            .unwrap_err()
            .contains("no LLM configured")
    );
    let half = Settings::load(&LoadOptions {
        env: env(&[("PHOENIX_LLM_BASE_URL", "http://127.0.0.1:9/v1")]),
        ..Default::default()
    })
    .unwrap();
    assert!(
        half.llm
            .client_settings()
            .unwrap_err()
            .contains("PHOENIX_LLM_MODEL")
    );
    let local = Settings::load(&LoadOptions {
        env: env(&[
            ("PHOENIX_LLM_BASE_URL", "http://127.0.0.1:9/v1"),
            ("PHOENIX_LLM_MODEL", "llama"),
        ]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(local.llm.client_settings().unwrap().model, "llama");
    // With an endpoint of one's own there is no default model to show.
    let model = half
        .entries()
        .iter()
        .find(|e| e.key == "llm.model")
        .unwrap();
    assert_eq!(model.value, None);
}

#[test]
fn telemetrist_endpoint_and_key_follow_the_collector_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("phoenix.toml");
    std::fs::write(
        &file,
        "[collector]\nurl = \"https://c.example\"\ntoken = \"collector-token-1234\"\n",
    )
    .unwrap();
    let load = |pairs: &[(&str, &str)]| {
        Settings::load(&LoadOptions {
            config_file: Some(file.clone()),
            env: env(pairs),
            cwd: None,
        })
        .unwrap()
    };
    let s = load(&[("PHOENIX_HOME", "/d")]);
    assert_eq!(s.telemetrist.telemetry_endpoint, "https://c.example");
    assert_eq!(
        s.telemetrist.telemetry_stream_key.as_deref(),
        Some("collector-token-1234")
    );
    assert_eq!(s.telemetrist.interval_secs, 300);
    assert_eq!(s.telemetrist.spool_path, PathBuf::from("/d/spool.db"));
    assert_eq!(s.telemetrist.source, None);

    let s = load(&[
        ("TELEMETRIST_URL", "http://127.0.0.1:9999"),
        ("PHOENIX_TELEMETRY_STREAM_KEY", "edge-key-abcdefgh"),
        ("PHOENIX_TELEMETRIST_INTERVAL", "60"),
        ("PHOENIX_TELEMETRIST_SOURCE", "/conversations"),
    ]);
    assert_eq!(s.telemetrist.telemetry_endpoint, "http://127.0.0.1:9999");
    assert_eq!(
        s.telemetrist.telemetry_stream_key.as_deref(),
        Some("edge-key-abcdefgh")
    );
    assert_eq!(s.telemetrist.interval_secs, 60);
    assert_eq!(
        s.telemetrist.source.as_deref(),
        Some(Path::new("/conversations"))
    );
    let shown = s
        .entries()
        .iter()
        .find(|e| e.key == "telemetrist.telemetry_stream_key")
        .unwrap();
    assert_eq!(shown.value.as_deref(), Some("****efgh"));
    assert_eq!(shown.source, Source::Env);
}

#[test]
fn the_store_url_picks_the_shared_database_and_never_shows_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("phoenix.toml");
    std::fs::write(
        &file,
        "[store]\nurl = \"postgres://phx:s3cret@db/fleet?sslmode=require\"\npool_size = 4\n",
    )
    .unwrap();
    let opts = LoadOptions {
        config_file: Some(file),
        env: env(&[("HOME", "/home/x")]),
        cwd: None,
    };
    let mut s = Settings::load(&opts).unwrap();
    assert_eq!(s.store.pool_size, 4);
    assert_eq!(
        s.distributor_database(),
        Some("postgres://phx:s3cret@db/fleet?sslmode=require")
    );
    let shown = |s: &Settings| {
        s.entries()
            .iter()
            .find(|e| e.key == "store.url")
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(
        shown(&s).as_deref(),
        Some("postgres://phx:****@db/fleet?sslmode=require")
    );
    s.mark_flag(
        "store.url",
        Some("postgres://u@h/d?password=hunter2".into()),
    );
    assert_eq!(shown(&s).as_deref(), Some("postgres://u@h/d?password=****"));
    // Unset, or an SQLite URL: the distributor keeps its own file.
    let plain = Settings::load(&LoadOptions {
        config_file: None,
        env: env(&[
            ("HOME", "/home/x"),
            ("PHOENIX_DATABASE_URL", "sqlite:/srv/t.db"),
        ]),
        cwd: None,
    })
    .unwrap();
    assert_eq!(plain.distributor_database(), None);
    assert_eq!(
        mask_password("host=db user=phx password=s3cret dbname=fleet"),
        "host=db user=phx password=**** dbname=fleet"
    );
}
