//! The fan-out benchmark behind `phoenix bench fanout`: a distributor in a child process, N
//! WebSocket subscribers in this one (the load generator, same machine), then K publishes,
//! each timed from `POST /publish` until every subscriber has acked it `applied`.
//!
//! With `--nodes N --database-url … --nats-url …` the distributor is a cluster of N child
//! processes sharing an update log in a scratch PostgreSQL database and a NATS doorbell;
//! subscribers are spread over the nodes, every update is published on node 0, and the acks
//! of subscribers on the other nodes are the cross-node latency. Whether every ack was
//! recorded is asked of the last node, so the figure also shows fleet-wide convergence read
//! from a node other than the publisher.
//!
//! The distributor's resident memory per idle subscriber is its RSS with N subscribers
//! connected and idle, minus its RSS once started, over N. Latency is measured where it can
//! be: a subscriber's figure ends when it has written its ack (client clock, same process as
//! the publisher); when the distributor has *recorded* every ack is polled from
//! `GET /updates/{id}` and reported per publish.

pub(super) mod process;
mod report;
mod subscribers;

use std::time::{Duration, Instant};

use serde::Serialize;

use super::scratch::ScratchDatabase;
use super::{Machine, ScratchDir, secs};
use crate::core::distributor::UpdateStatus;
use crate::core::shared::client::{self, ApiClient, ClientOptions};
use crate::core::shared::stats::{median, nearest_rank_percentile};
use crate::core::updates::{PublishRequest, UpdateEnvelope, UpdateType};
use process::{Distributor, NodeSettings};
pub use report::{
    ClusterFigures, ConnectFigures, CpuFigures, CrossNodeFigures, FanoutReport, FanoutTarget,
    LatencyFigures, MEMORY_TARGET_KIB, MemoryFigures, P99_CROSS_NODE_TARGET_MS, P99_TARGET_MS,
    PublishFigures, evaluate_targets,
};
use subscribers::{Event, Fleet};

/// How long one publish may take to be acked by every subscriber and recorded.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Limit on one HTTP request to the distributor.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the distributor is asked whether it has recorded every ack.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the distributor may take to count every subscriber and commit their hellos.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a fan-out run does.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutOptions {
    /// Subscribers connected at once.
    pub subscribers: usize,
    /// Updates published, one at a time.
    pub publishes: usize,
    /// Handshakes in flight at once while connecting.
    pub connect_parallelism: usize,
    /// Idle time between the last handshake and the memory sample.
    #[serde(serialize_with = "secs")]
    pub settle: Duration,
    /// Distributor processes. Above 1 they share the update log at `database_url`.
    pub nodes: usize,
    /// PostgreSQL for the nodes' shared update log (a scratch database on it); `None`: one
    /// node on its own SQLite log. Reported masked in [`FanoutReport::cluster`].
    #[serde(skip)]
    pub database_url: Option<String>,
    /// NATS for the nodes' doorbell; `None`: nodes find each other's publishes by polling the log.
    #[serde(skip)]
    pub nats_url: Option<String>,
}

impl Default for FanoutOptions {
    fn default() -> Self {
        FanoutOptions {
            subscribers: 10_000,
            publishes: 20,
            connect_parallelism: 256,
            settle: Duration::from_secs(2),
            nodes: 1,
            database_url: None,
            nats_url: None,
        }
    }
}

impl FanoutOptions {
    fn validate(&self) -> Result<(), Error> {
        if [
            self.subscribers,
            self.publishes,
            self.connect_parallelism,
            self.nodes,
        ]
        .contains(&0)
        {
            return Err(Error::Options(
                "subscribers, publishes, connect parallelism and nodes must be at least 1"
                    .to_owned(),
            ));
        }
        if self.database_url.is_none() {
            if self.nodes > 1 {
                return Err(Error::Options(format!(
                    "{} distributor nodes share one update log: give --database-url (a \
                     PostgreSQL server; the run makes and drops a scratch database on it), \
                     and --nats-url for the doorbell between them",
                    self.nodes
                )));
            }
            if self.nats_url.is_some() {
                return Err(Error::Options(
                    "--nats-url links distributors that share one update log: give \
                     --database-url too"
                        .to_owned(),
                ));
            }
        }
        if self.subscribers < self.nodes {
            return Err(Error::Options(format!(
                "{} subscribers cannot be spread over {} nodes",
                self.subscribers, self.nodes
            )));
        }
        Ok(())
    }
}

/// Why the benchmark could not run (subscribers that fail are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// The open-file limit is too low for this many subscribers.
    #[error("{}", file_limit_message(*subscribers, *needed, *soft, *hard))]
    FileLimit {
        /// Subscribers asked for.
        subscribers: usize,
        /// Descriptors each process needs.
        needed: u64,
        /// The soft limit (`ulimit -n`).
        soft: u64,
        /// The hard limit (`ulimit -Hn`); `None` is unlimited.
        hard: Option<u64>,
    },
    /// The scratch directory could not be created.
    #[error(transparent)]
    Scratch(#[from] super::Error),
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The distributor did not start, or misbehaved.
    #[error("{0}")]
    Distributor(String),
    /// A request to the distributor failed.
    #[error("distributor API: {0}")]
    Api(#[from] client::Error),
    /// The distributor did not stop cleanly.
    #[error("the distributor did not shut down cleanly: {0}")]
    Shutdown(String),
}

fn file_limit_message(subscribers: usize, needed: u64, soft: u64, hard: Option<u64>) -> String {
    let raise = match hard {
        Some(hard) if hard < needed => format!(
            "the hard limit is {hard}, so an administrator must raise it (limits.conf, or \
             LimitNOFILE= for a systemd unit) before `ulimit -n {needed}`"
        ),
        Some(hard) => format!("raise it with `ulimit -n {hard}` (the hard limit)"),
        None => format!("raise it with `ulimit -n {needed}`"),
    };
    format!(
        "{subscribers} subscribers need about {needed} open files in this process and as many \
         in the distributor, but the open-file limit (RLIMIT_NOFILE) is {soft}: {raise}, or \
         benchmark fewer subscribers"
    )
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Runs the benchmark: starts the distributor (this executable, `serve distributor`; one per
/// node) in a scratch directory, measures, stops it with SIGTERM and removes the directory and
/// any scratch database, on every path. `progress` is told which step starts.
pub async fn run(
    opts: &FanoutOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FanoutReport, Error> {
    opts.validate()?;
    process::check_file_limit(opts.subscribers)?;
    let machine = Machine::current();
    let scratch = ScratchDir::create()?;
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let cluster = match &opts.database_url {
        Some(url) => Some(Cluster::create(url, opts).await?),
        None => None,
    };
    let measured = async {
        progress(&match opts.nodes {
            1 => "starting the distributor".to_owned(),
            n => format!("starting {n} distributor nodes"),
        });
        // Declared after `scratch`, so dropped (killed) before the directory goes.
        let mut nodes =
            Nodes::start(&scratch.0, &admin_token, opts.nodes, cluster.as_ref()).await?;
        let measured = measure(opts, machine, &nodes, &admin_token, progress).await;
        if measured.is_err() {
            nodes.explain();
        }
        let stopped = nodes.stop().await;
        let mut report = measured?;
        stopped?;
        report.cluster = cluster.as_ref().map(|c| c.figures.clone());
        Ok(report)
    }
    .await;
    // Whatever happened, the scratch database goes.
    if let Some(cluster) = cluster {
        let dropped = cluster.database.drop_now().await;
        if let Err(e) = &dropped {
            tracing::warn!(error = %e, "could not drop the scratch database");
        }
        if measured.is_ok() {
            dropped?;
        }
    }
    measured
}

/// A distributor cluster's shared parts: a scratch database for the update log, a NATS
/// subject prefix of its own.
struct Cluster {
    database: ScratchDatabase,
    nats_url: Option<String>,
    prefix: String,
    figures: ClusterFigures,
}

impl Cluster {
    async fn create(database_url: &str, opts: &FanoutOptions) -> Result<Cluster, Error> {
        let database = ScratchDatabase::create(database_url).await?;
        let prefix = format!("phoenix_bench_{:016x}", rand::random::<u64>());
        let figures = ClusterFigures {
            postgres: crate::core::store::postgres::mask_password(database_url),
            scratch_database: database.name.clone(),
            nats: opts
                .nats_url
                .as_deref()
                .map(crate::core::store::postgres::mask_password),
            subject_prefix: prefix.clone(),
            publish_node: 0,
            status_node: opts.nodes - 1,
            subscribers_per_node: (0..opts.nodes)
                .map(|node| (opts.subscribers - node).div_ceil(opts.nodes))
                .collect(),
        };
        Ok(Cluster {
            database,
            nats_url: opts.nats_url.clone(),
            prefix,
            figures,
        })
    }
}

/// The distributor processes under test; node 0 is the one updates are published on.
struct Nodes(Vec<Distributor>);

impl Nodes {
    /// Starts one distributor on its own SQLite log (`cluster` is `None`), or `count` nodes
    /// on the cluster's shared log, one after the other so the first makes the hash key
    /// file they share.
    async fn start(
        dir: &std::path::Path,
        admin_token: &str,
        count: usize,
        cluster: Option<&Cluster>,
    ) -> Result<Nodes, Error> {
        let Some(cluster) = cluster else {
            return Ok(Nodes(vec![Distributor::start(dir, admin_token).await?]));
        };
        let hash_key_file = dir.join("orch_hash.key");
        let settings = NodeSettings {
            database_url: &cluster.database.url,
            nats_url: cluster.nats_url.as_deref(),
            prefix: &cluster.prefix,
            hash_key_file: &hash_key_file,
        };
        let mut nodes = Vec::with_capacity(count);
        for node in 0..count {
            let home = dir.join(format!("node-{node}"));
            std::fs::create_dir_all(&home).map_err(io(format!("creating {}", home.display())))?;
            nodes.push(Distributor::start_node(&home, admin_token, &settings).await?);
        }
        Ok(Nodes(nodes))
    }

    fn ws_urls(&self) -> Vec<String> {
        self.0.iter().map(|d| d.ws_url.clone()).collect()
    }

    /// Resident memory of all nodes together, KiB.
    fn rss_kib(&self) -> Result<u64, Error> {
        self.0.iter().map(Distributor::rss_kib).sum()
    }

    /// CPU seconds of all nodes together (`None` where `/proc` cannot tell).
    fn cpu_seconds(&self) -> Option<f64> {
        self.0.iter().map(Distributor::cpu_seconds).sum()
    }

    /// Logs what may explain a failure, node by node.
    fn explain(&mut self) {
        let many = self.0.len() > 1;
        for (i, node) in self.0.iter_mut().enumerate() {
            if let Some(why) = node.explain() {
                let who = if many {
                    format!("node {i}")
                } else {
                    "the distributor".to_owned()
                };
                tracing::warn!("{who} {why}");
            }
        }
    }

    /// Stops every node; the first failure is the answer, after all were stopped.
    async fn stop(self) -> Result<(), Error> {
        let mut first = Ok(());
        for node in self.0 {
            let stopped = node.stop().await;
            if first.is_ok() {
                first = stopped;
            }
        }
        first
    }
}

/// Lost connections and stray acks seen while publishing.
#[derive(Default)]
struct Trouble {
    lost: usize,
    first_lost: Option<String>,
    stray_acks: usize,
    failures: Vec<String>,
}

impl Trouble {
    fn lost(&mut self, why: String) {
        self.lost += 1;
        self.first_lost.get_or_insert(why);
    }
}

/// Publish → ack latencies, ms: all of them, and those of subscribers on another node than
/// the publisher's.
#[derive(Default)]
struct Latencies {
    all: Vec<f64>,
    cross_node: Vec<f64>,
}

async fn measure(
    opts: &FanoutOptions,
    machine: Machine,
    nodes: &Nodes,
    admin_token: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FanoutReport, Error> {
    let apis = nodes
        .0
        .iter()
        .map(|node| {
            ApiClient::new(&ClientOptions {
                base_url: node.http_url.clone(),
                token: Some(admin_token.to_owned()),
                ca_cert: None,
                timeout: REQUEST_TIMEOUT,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for api in &apis {
        api.get_json::<Health>("/health").await?;
    }
    let baseline_kib = nodes.rss_kib()?;

    progress(&format!(
        "connecting {} subscribers, {} handshakes at a time",
        opts.subscribers, opts.connect_parallelism
    ));
    let started = Instant::now();
    let mut fleet = Fleet::launch(&nodes.ws_urls(), opts.subscribers, opts.connect_parallelism);
    let mut trouble = Trouble::default();
    let (mut connected, mut failed, mut first_failure) = (0, 0, None);
    while connected + failed < opts.subscribers {
        match fleet.events.recv().await {
            Some(Event::Joined(Ok(()))) => connected += 1,
            Some(Event::Joined(Err(why))) => {
                failed += 1;
                first_failure.get_or_insert(why);
            }
            Some(Event::Lost(why)) => trouble.lost(why),
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let connect = ConnectFigures {
        attempted: opts.subscribers,
        connected,
        failed,
        seconds,
        per_sec: connected as f64 / seconds,
        first_failure,
    };

    progress(&format!(
        "{connected} subscribers connected in {seconds:.1}s; idle for {}",
        humantime::format_duration(opts.settle)
    ));
    settle(&apis, connected - trouble.lost).await?;
    tokio::time::sleep(opts.settle).await;
    let connected_kib = nodes.rss_kib()?;
    let idle = connected - trouble.lost;
    let per_subscriber_kib = if idle == 0 {
        f64::NAN
    } else {
        (connected_kib as f64 - baseline_kib as f64) / idle as f64
    };

    let (publisher, status) = (&apis[0], &apis[apis.len() - 1]);
    let mut latencies = Latencies::default();
    let mut publishes = Vec::with_capacity(opts.publishes);
    let cpu_before = (nodes.cpu_seconds(), process::cpu_seconds("/proc/self/stat"));
    for k in 1..=opts.publishes {
        progress(&format!(
            "publish {k}/{} to {} subscribers",
            opts.publishes,
            connected - trouble.lost
        ));
        let alive = connected - trouble.lost;
        let figures = publish_once(
            (publisher, status),
            &mut fleet,
            k,
            alive,
            &mut latencies,
            &mut trouble,
        )
        .await?;
        publishes.push(figures);
    }
    let after_publishes_kib = nodes.rss_kib()?;
    let per_publish = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) => (a - b) * 1000.0 / opts.publishes as f64,
        _ => f64::NAN,
    };
    let cpu = CpuFigures {
        distributor_ms_per_publish: per_publish(cpu_before.0, nodes.cpu_seconds()),
        generator_ms_per_publish: per_publish(
            cpu_before.1,
            process::cpu_seconds("/proc/self/stat"),
        ),
    };
    fleet.shutdown().await;

    let mut failures = trouble.failures;
    if trouble.lost > 0 {
        failures.push(format!(
            "{} subscribers lost their connection; first: {}",
            trouble.lost,
            trouble.first_lost.as_deref().unwrap_or("-")
        ));
    }
    if trouble.stray_acks > 0 {
        failures.push(format!(
            "{} acks were for an update other than the one being timed",
            trouble.stray_acks
        ));
    }
    let of_publishes =
        |f: fn(&PublishFigures) -> f64| median(&publishes.iter().map(f).collect::<Vec<_>>());
    let all = &latencies.all;
    let latency = LatencyFigures {
        acks: all.len(),
        expected: connected * opts.publishes,
        p50_ms: nearest_rank_percentile(all, 0.50),
        p99_ms: nearest_rank_percentile(all, 0.99),
        max_ms: all.iter().copied().fold(f64::NAN, f64::max),
        last_ack_median_ms: of_publishes(|p| p.last_ack_ms),
        recorded_median_ms: of_publishes(|p| p.recorded_ms),
        publish_median_ms: of_publishes(|p| p.publish_ms),
    };
    let cross = &latencies.cross_node;
    let cross_node = (opts.nodes > 1).then(|| CrossNodeFigures {
        acks: cross.len(),
        p50_ms: nearest_rank_percentile(cross, 0.50),
        p99_ms: nearest_rank_percentile(cross, 0.99),
        max_ms: cross.iter().copied().fold(f64::NAN, f64::max),
    });
    let memory = MemoryFigures {
        baseline_kib,
        connected_kib,
        after_publishes_kib,
        per_subscriber_kib,
    };
    Ok(FanoutReport {
        machine,
        targets: evaluate_targets(opts, &connect, &latency, cross_node.as_ref(), &memory),
        options: opts.clone(),
        cluster: None,
        connect,
        memory,
        latency,
        cross_node,
        cpu,
        publishes,
        failures,
    })
}

/// The part of `GET /health` the benchmark reads.
#[derive(serde::Deserialize)]
struct Health {
    subscribers: usize,
    write_queue: usize,
}

/// Waits until the nodes together count every subscriber and have committed their hellos,
/// so the memory sample sees idle connections and no queued work.
async fn settle(apis: &[ApiClient], subscribers: usize) -> Result<(), Error> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (mut counted, mut queued) = (0, 0);
        for api in apis {
            let health: Health = api.get_json("/health").await?;
            counted += health.subscribers;
            queued += health.write_queue;
        }
        if counted >= subscribers && queued == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Distributor(format!(
                "after {}s the distributor counts {counted} of {subscribers} subscribers and \
                 still has {queued} rows to write",
                SETTLE_TIMEOUT.as_secs(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes update `k` to everyone on `publisher` and times it until `alive` subscribers
/// have acked it and `status` (the same node, or another of the cluster) has recorded their
/// acks.
async fn publish_once(
    (publisher, status): (&ApiClient, &ApiClient),
    fleet: &mut Fleet,
    k: usize,
    alive: usize,
    latencies: &mut Latencies,
    trouble: &mut Trouble,
) -> Result<PublishFigures, Error> {
    let request = PublishRequest {
        update_type: Some(UpdateType::PromptTweak.as_str().to_owned()),
        payload: Some(serde_json::json!({
            "default_prompt": format!("You are Phoenix (fan-out benchmark, publish {k}).")
        })),
        ..PublishRequest::default()
    };
    let stale = fleet.acks.take().len();
    trouble.stray_acks += stale;
    fleet.acks.expect(alive);
    let started = Instant::now();
    let envelope: UpdateEnvelope = publisher.post_json("/publish", &request, &[]).await?;
    let publish_ms = ms(started.elapsed());
    let deadline = tokio::time::Instant::from_std(started + ACK_TIMEOUT);
    let mut waiting = alive;
    let mut timed_out = false;
    while fleet.acks.posted() < waiting {
        tokio::select! {
            () = fleet.acks.reached() => {}
            event = fleet.events.recv() => match event {
                Some(Event::Lost(why)) => {
                    trouble.lost(why);
                    waiting -= 1;
                    fleet.acks.expect(waiting);
                }
                Some(Event::Joined(_)) => {}
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
        }
    }
    fleet.acks.expect(usize::MAX);
    let (mut acks, mut last_ack_ms) = (0, f64::NAN);
    for ack in fleet.acks.take() {
        if ack.seq != envelope.seq {
            trouble.stray_acks += 1;
            continue;
        }
        let ms = ms(ack.at.saturating_duration_since(started));
        latencies.all.push(ms);
        if ack.node != 0 {
            latencies.cross_node.push(ms);
        }
        last_ack_ms = f64::max(last_ack_ms, ms);
        acks += 1;
    }
    if acks < waiting {
        trouble.failures.push(format!(
            "publish {k} (seq {}): {} of {waiting} subscribers did not ack{}",
            envelope.seq,
            waiting - acks,
            if timed_out {
                format!(" within {}s", ACK_TIMEOUT.as_secs())
            } else {
                String::new()
            }
        ));
    }
    let path = format!("/updates/{}", envelope.update_id);
    let recorded_ms = loop {
        let recorded: UpdateStatus = status.get_json(&path).await?;
        if recorded.counts.applied >= acks as u64 {
            break ms(started.elapsed());
        }
        if tokio::time::Instant::now() >= deadline {
            trouble.failures.push(format!(
                "publish {k} (seq {}): the distributor recorded {} of {acks} applied acks \
                 within {}s",
                envelope.seq,
                recorded.counts.applied,
                ACK_TIMEOUT.as_secs()
            ));
            break f64::NAN;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    Ok(PublishFigures {
        seq: envelope.seq,
        publish_ms,
        acks,
        last_ack_ms,
        recorded_ms,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_limit_error_says_how_to_raise_it() {
        let within_hard = file_limit_message(10_000, 10_256, 1024, Some(20_000));
        assert!(within_hard.contains("`ulimit -n 20000`"), "{within_hard}");
        let above_hard = file_limit_message(30_000, 30_256, 1024, Some(20_000));
        assert!(above_hard.contains("hard limit is 20000"), "{above_hard}");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(FanoutOptions::default().validate().is_ok());
        let none = FanoutOptions {
            publishes: 0,
            ..FanoutOptions::default()
        };
        assert!(none.validate().is_err());
        let cluster = |database: bool, nats: bool, nodes, subscribers| FanoutOptions {
            nodes,
            subscribers,
            database_url: database.then(|| "postgres://db/fleet".to_owned()),
            nats_url: nats.then(|| "nats://bus:4222".to_owned()),
            ..FanoutOptions::default()
        };
        assert!(cluster(true, true, 2, 10).validate().is_ok());
        assert!(
            cluster(true, false, 2, 10).validate().is_ok(),
            "nodes may poll the log"
        );
        assert!(
            cluster(true, false, 1, 10).validate().is_ok(),
            "one node on PostgreSQL"
        );
        let Err(Error::Options(no_log)) = cluster(false, true, 2, 10).validate() else {
            panic!("two nodes need a shared log");
        };
        assert!(no_log.contains("--database-url"), "{no_log}");
        assert!(
            cluster(false, true, 1, 10).validate().is_err(),
            "NATS needs the log"
        );
        assert!(
            cluster(true, true, 3, 2).validate().is_err(),
            "fewer subscribers than nodes"
        );
    }
}
