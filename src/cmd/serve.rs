//! `phoenix serve`: run the collector, the distributor, or every service in one process.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{Context, UsageError};
use crate::core::collector::{self, AppState, CollectorConfig, Limits, Metrics};
use crate::core::dashboard::{self, Dashboard, Updates};
use crate::core::distributor::client::{DistributorClient, SUBSCRIBE_PATH, http_base};
use crate::core::distributor::doorbell::Doorbell;
use crate::core::distributor::{self, DistributorConfig, LogOptions, SqliteUpdateLog, UpdateLog};
use crate::core::error_kind::{Classified, ErrorKind};
use crate::core::server::app::{self, Bound};
use crate::core::server::inflate::DecodeBudget;
use crate::core::server::{self, ServerLimits};
use crate::core::shared::agent_token::AgentKeys;
use crate::core::shared::anonymize::Anonymizer;
use crate::core::shared::client::{ApiClient, ClientOptions};
use crate::core::shared::config::Settings;
use crate::core::shared::signal;
use crate::core::store::postgres::PgUpdateLog;
use crate::core::store::update_log::DEFAULT_QUEUE_JOBS;
use crate::core::store::{self, Location};

/// How often a distributor on a shared database looks for updates other distributors
/// published, for its own subscribers ...
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// ... and how often when NATS rings it at each commit (the poll then only catches rings lost
/// while NATS was away).
const RUNG_FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Which services to run.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Run the Vital Pulse telemetry collector
    Collector(CollectorArgs),
    /// Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)
    Distributor(DistributorArgs),
    /// Run every service (collector and distributor) in one process on the embedded SQLite default
    All(AllArgs),
}

/// Options of the collector server.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {
    /// Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]
    #[arg(long, value_name = "ADDR")]
    pub otlp_bind: Option<String>,
    /// SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]
    #[arg(long, value_name = "FILE", conflicts_with = "database_url")]
    pub db: Option<PathBuf>,
    /// One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Delete telemetry older than this many days [default: keep everything]
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_days: Option<u32>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow a non-loopback address without ingest tokens (anyone who can connect may write)
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Do not serve the web dashboard at / (and /ui/...)
    #[arg(long)]
    pub no_dashboard: bool,
    /// serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]
    #[arg(long, value_name = "URL")]
    pub distributor_url: Option<String>,
}

/// Options of the distributor server.
#[derive(Debug, Clone, clap::Args)]
pub struct DistributorArgs {
    /// Address to listen on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// SQLite file of the update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]
    #[arg(long, value_name = "FILE", conflicts_with = "database_url")]
    pub db: Option<PathBuf>,
    /// NATS server the distributors sharing --database-url ring each other through after each commit (nats://HOST:4222) [default: $PHOENIX_NATS_URL or [cluster] nats_url]
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Serve HTTPS and WSS with this PEM certificate chain (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow a non-loopback address without an admin token (anyone who can connect may publish)
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// After SIGTERM/SIGINT, how long in-flight requests and WebSocket closes may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

/// Options of `serve all`: the collector's, plus where the distributor listens.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    /// Collector options (TLS and --insecure-no-auth apply to the distributor too).
    #[command(flatten)]
    pub collector: CollectorArgs,
    /// Address the distributor listens on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]
    #[arg(long, value_name = "ADDR")]
    pub distributor_bind: Option<String>,
    /// SQLite file of the distributor's update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]
    #[arg(long, value_name = "FILE")]
    pub distributor_db: Option<PathBuf>,
}

/// Applies `--shutdown-timeout` over the settings.
fn apply_shutdown_timeout(timeout: Option<Duration>, settings: &mut Settings) {
    if let Some(t) = timeout {
        settings.server.shutdown_timeout = t;
        settings.mark_flag(
            "server.shutdown_timeout_secs",
            Some(format!("{}", t.as_secs_f64())),
        );
    }
}

/// The limits both servers share, from the settings (one connection count and one
/// decompression budget for the whole process).
pub(super) fn server_limits(settings: &Settings) -> ServerLimits {
    let s = &settings.server;
    ServerLimits {
        header_timeout: s.header_timeout,
        body_timeout: s.body_timeout,
        body_min_rate: s.body_min_rate,
        max_connections: s
            .max_connections
            .unwrap_or_else(server::default_max_connections),
        shutdown_timeout: s.shutdown_timeout,
        decode_budget: DecodeBudget::new(
            s.decode_budget_bytes
                .max(settings.collector.max_decoded_bytes),
        ),
        ..ServerLimits::default()
    }
}

/// Raises the open-file limit as far as it goes: every connection is a descriptor.
fn raise_file_limit() {
    match server::raise_file_limit() {
        Ok(l) if l.was != l.now => {
            tracing::info!(was = ?l.was, now = ?l.now, "raised the open-file limit (RLIMIT_NOFILE)")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Applies `--database-url` over the settings.
fn apply_database_url(url: Option<&String>, settings: &mut Settings) {
    if let Some(url) = url {
        settings.store.url = Some(url.clone());
        settings.mark_flag("store.url", Some(url.clone()));
    }
}

/// Applies `--nats-url` over the settings.
fn apply_nats_url(url: Option<&String>, settings: &mut Settings) {
    if let Some(url) = url {
        settings.cluster.nats_url = Some(url.clone());
        settings.mark_flag("cluster.nats_url", Some(url.clone()));
    }
}

/// Applies the distributor flags over the settings.
fn apply_distributor_flags(bind: Option<&String>, db: Option<&PathBuf>, settings: &mut Settings) {
    if let Some(b) = bind {
        settings.distributor.bind = b.clone();
        settings.mark_flag("distributor.bind", Some(b.clone()));
    }
    if let Some(db) = db {
        settings.distributor.db_path = db.clone();
        settings.mark_flag("distributor.db_path", Some(db.display().to_string()));
    }
}

/// Applies the flags over the settings.
fn apply_flags(args: &CollectorArgs, settings: &mut Settings) {
    if let Some(b) = &args.bind {
        settings.collector.bind = b.clone();
        settings.mark_flag("collector.bind", Some(b.clone()));
    }
    if let Some(b) = &args.otlp_bind {
        settings.collector.otlp_bind = Some(b.clone());
        settings.mark_flag("collector.otlp_bind", Some(b.clone()));
    }
    if let Some(db) = &args.db {
        settings.collector.db_path = db.clone();
        settings.mark_flag("collector.db_path", Some(db.display().to_string()));
    }
    if let Some(d) = args.retention_days {
        settings.collector.retention_days = Some(d);
        settings.mark_flag("collector.retention_days", Some(d.to_string()));
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        settings.collector.tls_cert = Some(c.clone());
        settings.collector.tls_key = Some(k.clone());
    }
    apply_database_url(args.database_url.as_ref(), settings);
    apply_nats_url(args.nats_url.as_ref(), settings);
    apply_shutdown_timeout(args.shutdown_timeout, settings);
}

/// Runs the chosen services until SIGINT/SIGTERM.
pub async fn run(cmd: Cmd, mut ctx: Context) -> anyhow::Result<()> {
    raise_file_limit();
    match cmd {
        Cmd::Collector(args) => {
            apply_flags(&args, &mut ctx.settings);
            let limits = server_limits(&ctx.settings);
            let mut collector =
                Collector::prepare(&ctx.settings, args.insecure_no_auth, limits).await?;
            if !args.no_dashboard {
                let url = args
                    .distributor_url
                    .clone()
                    .unwrap_or_else(|| ctx.settings.distributor.url.clone());
                let client = distributor_reader(&ctx.settings, &url)?;
                collector.with_dashboard(Updates::Remote(client));
            }
            announce(&ctx, "collector", &collector.url, None);
            collector.announce_otlp(&ctx);
            collector.announce_dashboard(&ctx);
            collector.run(shutdown_signal()).await
        }
        Cmd::Distributor(args) => {
            apply_distributor_flags(args.bind.as_ref(), args.db.as_ref(), &mut ctx.settings);
            apply_database_url(args.database_url.as_ref(), &mut ctx.settings);
            apply_nats_url(args.nats_url.as_ref(), &mut ctx.settings);
            apply_shutdown_timeout(args.shutdown_timeout, &mut ctx.settings);
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            };
            let limits = server_limits(&ctx.settings);
            let distributor =
                Distributor::prepare(&ctx.settings, args.insecure_no_auth, tls, limits).await?;
            announce(
                &ctx,
                "distributor",
                &distributor.ws_url,
                Some(&distributor.http_url),
            );
            distributor.run(shutdown_signal()).await
        }
        Cmd::All(args) => {
            apply_flags(&args.collector, &mut ctx.settings);
            apply_distributor_flags(
                args.distributor_bind.as_ref(),
                args.distributor_db.as_ref(),
                &mut ctx.settings,
            );
            let insecure = args.collector.insecure_no_auth;
            let tls = match (
                &ctx.settings.collector.tls_cert,
                &ctx.settings.collector.tls_key,
            ) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            };
            // One set of limits: both listeners count against one cap and one budget.
            let limits = server_limits(&ctx.settings);
            if args.collector.distributor_url.is_some() {
                return Err(UsageError(
                    "serve all shows its own distributor on the dashboard;                      --distributor-url is for serve collector"
                        .to_owned(),
                )
                .into());
            }
            let mut collector = Collector::prepare(&ctx.settings, insecure, limits.clone()).await?;
            let distributor = Distributor::prepare(&ctx.settings, insecure, tls, limits).await?;
            if !args.collector.no_dashboard {
                collector.with_dashboard(Updates::Local(distributor.state.clone()));
            }
            // The collector's line comes first: scripts read it for the collector URL.
            announce(&ctx, "collector", &collector.url, None);
            announce(
                &ctx,
                "distributor",
                &distributor.ws_url,
                Some(&distributor.http_url),
            );
            collector.announce_otlp(&ctx);
            collector.announce_dashboard(&ctx);
            run_all(collector, distributor).await
        }
    }
}

/// Runs both services under one shutdown signal; if one stops on an error, the other
/// drains and stops too.
async fn run_all(collector: Collector, distributor: Distributor) -> anyhow::Result<()> {
    let (c, d) = app::run_pair(
        shutdown_signal(),
        |stopped| collector.run(stopped),
        |stopped| distributor.run(stopped),
    )
    .await;
    c.context("collector")?;
    d.context("distributor")?;
    Ok(())
}

fn announce(ctx: &Context, service: &str, url: &str, http_url: Option<&str>) {
    if ctx.json {
        let mut event = serde_json::json!({ "event": "listening", "service": service, "url": url });
        if let Some(http) = http_url {
            event["http_url"] = http.into();
        }
        ctx.printer().event(&event);
    } else {
        tracing::info!("{service} listening on {url}");
    }
}

/// A distributor bound to its address, ready to run.
struct Distributor {
    bound: Bound,
    state: distributor::AppState,
    ws_url: String,
    http_url: String,
}

impl Distributor {
    async fn prepare(
        settings: &Settings,
        insecure_no_auth: bool,
        tls: Option<(PathBuf, PathBuf)>,
        limits: ServerLimits,
    ) -> anyhow::Result<Distributor> {
        let d = &settings.distributor;
        let addr = app::bind_address("distributor", &d.bind)?;
        app::require_auth(
            "distributor",
            addr,
            settings.admin_token.is_some(),
            insecure_no_auth,
            "set PHOENIX_ADMIN_TOKEN (publishers send `Authorization: Bearer <token>`)",
        )?;
        let tls = match tls {
            Some((cert, key)) => Some(app::tls_config(&cert, &key)?),
            None => None,
        };
        // The collector's key: an orch has the same hash in telemetry and in update acks.
        let anonymizer = Anonymizer::load_or_create(&settings.collector.hash_key_file)
            .context("loading the orch hash key")?;
        // A shared database (several distributors on one log), or this process's own file.
        let (log, at, shared): (Arc<dyn UpdateLog>, String, bool) =
            match settings.distributor_database() {
                Some(url) => {
                    let at = Location::Postgres(url.to_owned()).to_string();
                    let pool = store::open::connect_postgres(url, settings.store.pool_size)
                        .await
                        .with_context(|| format!("opening the update log at {at}"))?;
                    let log = PgUpdateLog::start(pool, DEFAULT_QUEUE_JOBS);
                    (Arc::new(log), at, true)
                }
                None => {
                    let log =
                        SqliteUpdateLog::open(&LogOptions::new(&d.db_path)).with_context(|| {
                            format!("opening the update log at {}", d.db_path.display())
                        })?;
                    (Arc::new(log), d.db_path.display().to_string(), false)
                }
            };
        let doorbell = match (&settings.cluster.nats_url, shared) {
            (None, _) => None,
            (Some(_), false) => {
                return Err(UsageError(
                    "--nats-url links distributors that share one update log: give \
                     --database-url (or PHOENIX_DATABASE_URL) too"
                        .to_owned(),
                )
                .into());
            }
            (Some(url), true) => Some(
                Doorbell::connect(url, &settings.cluster.subject_prefix)
                    .await
                    .map_err(|e| Classified::new(ErrorKind::Unreachable, e.to_string()))?,
            ),
        };
        let follow_interval = shared.then(|| {
            d.follow_interval.unwrap_or(if doorbell.is_some() {
                RUNG_FOLLOW_INTERVAL
            } else {
                FOLLOW_INTERVAL
            })
        });
        let agent_keys =
            AgentKeys::load_or_create(&d.agent_key_file).context("loading the agent token key")?;
        // Off loopback every read and every subscriber needs a credential, unless the
        // operator said --insecure-no-auth.
        let exposed = app::exposed(addr, insecure_no_auth);
        let doorbell_subject = doorbell.as_ref().map(|d| d.subject().to_owned());
        let config = DistributorConfig {
            premium_key: settings.x402_premium_key.clone(),
            admin_token: settings.admin_token.clone(),
            reads_need_token: exposed,
            agent_keys: Some(agent_keys),
            require_agent_tokens: exposed || d.require_agent_tokens,
            server: limits,
            follow_interval,
            doorbell,
            ..DistributorConfig::default()
        };
        let metrics = Arc::new(distributor::Metrics::default());
        let state = distributor::AppState::over(log, anonymizer, config, metrics)
            .await
            .context("setting up the distributor")?;
        let bound = Bound::bind("distributor", addr, tls).await?;
        tracing::info!(db = %at, "update log open");
        match (
            &settings.cluster.nats_url,
            doorbell_subject,
            follow_interval,
        ) {
            (Some(nats), Some(subject), Some(every)) => tracing::info!(
                nats = %crate::core::shared::config::mask_password(nats),
                %subject,
                poll = %humantime::format_duration(every),
                "other distributors' publishes heard on the NATS doorbell"
            ),
            (None, _, Some(every)) => tracing::info!(
                poll = %humantime::format_duration(every),
                "other distributors' publishes found by polling the shared log"
            ),
            _ => {}
        }
        Ok(Distributor {
            ws_url: bound.url("ws", "wss", SUBSCRIBE_PATH),
            http_url: bound.url("http", "https", ""),
            bound,
            state,
        })
    }

    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        distributor::serve(self.bound.listener(), self.state, shutdown).await?;
        Ok(())
    }
}

/// The client the dashboard of `serve collector` reads the distributor with.
fn distributor_reader(settings: &Settings, url: &str) -> anyhow::Result<DistributorClient> {
    let opts = ClientOptions {
        base_url: http_base(url).context("--distributor-url")?,
        token: settings.admin_token.clone(),
        ca_cert: settings.collector.ca_cert.clone(),
        timeout: Duration::from_secs(5),
    };
    ApiClient::new(&opts)
        .map(DistributorClient::new)
        .context("setting up the dashboard's distributor client")
}

/// A collector bound to its address, ready to run.
struct Collector {
    /// The web dashboard on the same listener, unless `--no-dashboard`.
    dashboard: Option<Dashboard>,
    /// Served over TLS.
    tls: bool,
    bound: Bound,
    /// The `--otlp-bind` listener, when asked for.
    otlp: Option<Bound>,
    state: AppState,
    url: String,
}

impl Collector {
    async fn prepare(
        settings: &Settings,
        insecure_no_auth: bool,
        limits: ServerLimits,
    ) -> anyhow::Result<Collector> {
        let c = &settings.collector;
        let addr = app::bind_address("collector", &c.bind)?;
        let otlp_addr = match &c.otlp_bind {
            Some(b) => Some(app::bind_address("collector OTLP", b)?),
            None => None,
        };
        for at in std::iter::once(addr).chain(otlp_addr) {
            app::require_auth(
                "collector",
                at,
                !c.ingest_tokens.is_empty(),
                insecure_no_auth,
                "set PHOENIX_INGEST_TOKENS (clients send `Authorization: Bearer <token>`)",
            )?;
        }
        let tls = match (&c.tls_cert, &c.tls_key) {
            (Some(cert), Some(key)) => Some(app::tls_config(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(UsageError("TLS needs both a certificate and a key".to_owned()).into());
            }
        };
        let anonymizer =
            Anonymizer::load_or_create(&c.hash_key_file).context("loading the orch hash key")?;
        let metrics = Arc::new(Metrics::default());
        let store_opts = store::OpenOptions {
            sync: c.sync,
            queue_records: c.queue_records,
            pool_size: settings.store.pool_size,
            ..store::OpenOptions::default()
        };
        let at = Location::collector(settings)
            .context("the collector's store (store.url / collector.db_path)")?;
        let store = store::open(&at, &store_opts, metrics.store.clone())
            .await
            .with_context(|| format!("opening the telemetry store at {at}"))?;
        let store = match (&settings.cluster.nats_url, &at) {
            (None, _) => store,
            (Some(url), Location::Postgres(_)) => {
                let cluster = &settings.cluster;
                let opts = store::BufferOptions {
                    max_bytes: cluster.stream_max_bytes,
                    ack_wait: cluster.ack_wait,
                    ..store::BufferOptions::new(url, &cluster.subject_prefix)
                };
                let buffered = store::BufferedStore::start(store, &opts)
                    .await
                    .map_err(|e| Classified::new(ErrorKind::Unreachable, e.to_string()))?;
                tracing::info!(stream = %opts.stream_name(), nats = %url, "ingest buffered in JetStream");
                buffered
            }
            (Some(_), _) => {
                return Err(UsageError(
                    "--nats-url buffers ingest for collectors that share one PostgreSQL \
                     database: give --database-url (or PHOENIX_DATABASE_URL) too"
                        .to_owned(),
                )
                .into());
            }
        };
        let config = CollectorConfig {
            limits: Limits {
                max_body_bytes: c.max_body_bytes,
                max_decoded_bytes: c.max_decoded_bytes,
                max_batch_records: c.max_batch_records,
            },
            premium_key: settings.x402_premium_key.clone(),
            ingest_tokens: c.ingest_tokens.clone(),
            admin_token: settings.admin_token.clone(),
            agent_keys: Some(
                AgentKeys::load_or_create(&settings.distributor.agent_key_file)
                    .context("loading the agent token key")?,
            ),
            llm: settings.llm.client_settings(),
            stale_after: c.stale_after,
            retention_days: c.retention_days,
            server: limits,
            ..CollectorConfig::default()
        };
        match &config.llm {
            Ok(s) => {
                tracing::info!(model = %s.model, base_url = %s.base_url, "LLM summaries enabled")
            }
            Err(reason) => tracing::info!(
                "LLM summaries disabled ({reason}); insights use the heuristic summary"
            ),
        }
        let state = AppState::new(store, anonymizer, config, metrics)
            .context("setting up the collector")?;
        let otlp = match otlp_addr {
            Some(at) => Some(Bound::bind("collector OTLP", at, tls.clone()).await?),
            None => None,
        };
        let secure = tls.is_some();
        let bound = Bound::bind("collector", addr, tls).await?;
        tracing::info!(db = %at, "telemetry store open");
        Ok(Collector {
            dashboard: None,
            tls: secure,
            url: bound.url("http", "https", ""),
            bound,
            otlp,
            state,
        })
    }

    /// Says where `--otlp-bind` listens (a line of its own, after the services' lines).
    fn announce_otlp(&self, ctx: &Context) {
        if let Some(otlp) = &self.otlp {
            announce(ctx, "otlp", &otlp.url("http", "https", ""), None);
        }
    }

    /// Says where the dashboard is (a line of its own, after the services' and OTLP's).
    fn announce_dashboard(&self, ctx: &Context) {
        if self.dashboard.is_some() {
            announce(ctx, "dashboard", &format!("{}/", self.url), None);
        }
    }

    /// Serves the web dashboard at `/`, its Updates pages reading `updates`.
    fn with_dashboard(&mut self, updates: Updates) {
        self.dashboard = Some(Dashboard::new(self.state.clone(), updates, self.tls));
    }

    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let otlp = self.otlp.map(Bound::listener);
        let extra = self.dashboard.map(|d| collector::Extra {
            routes: dashboard::router(d.clone()),
            on_shutdown: Box::new(move || d.stop_streams()),
        });
        collector::serve_app(self.bound.listener(), otlp, self.state, extra, shutdown).await?;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM, and says so in the log.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    signal::stop_then_log(
        "shutdown requested; finishing in-flight requests and committing accepted records",
    )
}
