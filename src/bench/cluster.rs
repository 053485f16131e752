//! `phoenix bench ingest --nats-url … --database-url …`: ingest through the collector cluster's
//! path — the JetStream buffer in front of PostgreSQL — against the ceilings of the same run:
//! a raw JetStream publish of the same messages (PubAck awaited, as many publishers as batch
//! connections) and a raw binary COPY of the same rows. Acknowledged/s is what clients get
//! answered; stored/s is what the drain commits meanwhile; the drain time is how long after
//! the load stops the store holds everything acknowledged.
//!
//! Two batch loads: a surge (as fast as the collector answers — far above what PostgreSQL can
//! store, which is what the buffer is for: its drain time is the surge's size over the store's
//! rate), and a steady load paced at [`STEADY_SHARE`] of the COPY ceiling, which the drain must
//! keep up with (lag back to 0 within seconds of the load's end).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use super::ingest::{batch_bodies, copy_ceiling, rows_like_ingest, single_bodies};
use super::load::*;
use super::*;
use crate::core::store::{BufferOptions, BufferedStore, jetstream::wire};

/// The longest a drain may take before the run gives up waiting for it.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// The steady load's rate, as a share of the same round's COPY ceiling.
pub const STEADY_SHARE: f64 = 0.6;
/// How often the store's count is read while draining.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How far apart consecutive messages of one publisher are in the list (a prime, so the
/// publishers walk through every message).
const STRIDE: usize = 7919;

/// Where the run's cluster lives.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRun {
    /// The PostgreSQL server (password masked).
    pub postgres: String,
    /// Scratch database, dropped at the end.
    pub scratch_database: String,
    /// The NATS server.
    pub nats: String,
    /// Scratch ingest stream, deleted at the end.
    pub stream: String,
}

/// The raw JetStream publish ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct PublishFigures {
    /// Publishers, each with one message awaiting its PubAck.
    pub publishers: usize,
    /// Messages acknowledged in the window.
    pub messages: u64,
    /// Records they carried.
    pub records: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// Bytes per message.
    pub message_bytes: usize,
}

/// Ingest through the buffer: acknowledged, stored meanwhile, and the drain after it.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughBuffer {
    /// The HTTP load (acknowledged = 200, i.e. PubAck'd).
    pub load: LoadFigures,
    /// Records the drain committed to PostgreSQL per second during the window.
    pub stored_per_sec: f64,
    /// Seconds from the end of the load until every acknowledged record was in the store.
    pub drain_seconds: f64,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRound {
    /// Raw JetStream publish of the batch scenario's messages.
    pub jetstream_ceiling: PublishFigures,
    /// NDJSON batches through the buffer, as fast as answered (a surge).
    pub ingest_batch: ThroughBuffer,
    /// The same batches paced at `steady_events_per_sec` (a load the store can sustain).
    pub ingest_steady: ThroughBuffer,
    /// The steady load's pace: [`STEADY_SHARE`] of this round's COPY ceiling.
    pub steady_events_per_sec: f64,
    /// One event per request through the buffer.
    pub ingest_single: ThroughBuffer,
    /// Raw binary COPY of the same rows.
    pub storage_ceiling: StorageFigures,
    /// Acknowledged batch events/s over the JetStream ceiling's records/s.
    pub acked_vs_jetstream: f64,
    /// Stored/s during the batch load over the COPY ceiling.
    pub stored_vs_storage: f64,
}

/// Medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    /// Batch events acknowledged per second.
    pub ingest_batch_acked_per_sec: f64,
    /// Batch events stored per second meanwhile.
    pub ingest_batch_stored_per_sec: f64,
    /// Drain after the batch surge, seconds.
    pub batch_drain_seconds: f64,
    /// Steady batch events acknowledged per second.
    pub steady_acked_per_sec: f64,
    /// Steady batch events stored per second meanwhile.
    pub steady_stored_per_sec: f64,
    /// Drain after the steady load, seconds.
    pub steady_drain_seconds: f64,
    /// Single events acknowledged per second.
    pub ingest_single_acked_per_sec: f64,
    /// Raw JetStream records/s.
    pub jetstream_records_per_sec: f64,
    /// Raw COPY rows/s.
    pub storage_rows_per_sec: f64,
    /// Median of `acked_vs_jetstream`.
    pub acked_vs_jetstream: f64,
    /// Median of `stored_vs_storage`.
    pub stored_vs_storage: f64,
}

/// The figures the issue sets targets for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTarget {
    /// Acknowledged batch ingest over the raw JetStream publish ceiling.
    AckedVsJetStream,
    /// Seconds until the lag is 0 after the steady batch load stops.
    SteadyDrainSeconds,
}

/// The targets: against the same run's ceiling, and the drain's catching up.
pub const CLUSTER_TARGETS: &[(ClusterTarget, Bound, f64)] = &[
    (ClusterTarget::AckedVsJetStream, Bound::AtLeast, 0.40),
    (ClusterTarget::SteadyDrainSeconds, Bound::AtMost, 5.0),
];

/// The whole cluster run.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Machine and build.
    pub machine: Machine,
    /// Options.
    pub options: BenchOptions,
    /// Where it ran.
    pub cluster: ClusterRun,
    /// Per-round figures.
    pub rounds: Vec<ClusterRound>,
    /// Medians.
    pub summary: ClusterSummary,
    /// Targets, checked.
    pub targets: Vec<TargetCheck<ClusterTarget>>,
    /// Failed requests or drains: figures from such a run cannot be trusted.
    pub failures: Vec<String>,
}

fn nats_error(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Runs the cluster scenarios: a collector in this process, buffered by a scratch stream on
/// `nats_url`, storing into a scratch database on `opts.database_url`.
pub async fn run_cluster(
    opts: &BenchOptions,
    nats_url: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ClusterReport, Error> {
    opts.validate()?;
    let Some(database_url) = &opts.database_url else {
        return Err(Error::Options(
            "--nats-url benchmarks the collector cluster's path into PostgreSQL: give \
             --database-url too"
                .to_owned(),
        ));
    };
    let machine = Machine::current();
    let database = ScratchDatabase::create(database_url).await?;
    let prefix = format!("phoenix_bench_{:016x}", rand::random::<u64>());
    let buffer = BufferOptions::new(nats_url, &prefix);
    let cluster = ClusterRun {
        postgres: store::postgres::mask_password(database_url),
        scratch_database: database.name.clone(),
        nats: nats_url.to_owned(),
        stream: buffer.stream_name(),
    };
    let measured = measure_cluster(opts, &database.url, &buffer, progress).await;
    // Whatever happened, the scratch stream and database go.
    let deleted = match async_nats::connect(nats_url).await {
        Ok(client) => {
            let js = jetstream::new(client.clone());
            let _ = js.delete_stream(ceiling_stream(&prefix)).await;
            let deleted = js.delete_stream(buffer.stream_name()).await.map(|_| ());
            let _ = client.flush().await;
            deleted.map_err(|e| nats_error("deleting the scratch stream")(&e))
        }
        Err(e) => Err(nats_error(
            "connecting to NATS to delete the scratch stream",
        )(&e)),
    };
    let dropped = database.drop_now().await;
    let (rounds, failures) = measured?;
    deleted?;
    dropped?;
    let med = |f: fn(&ClusterRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let summary = ClusterSummary {
        ingest_batch_acked_per_sec: med(|r| r.ingest_batch.load.events_per_sec),
        ingest_batch_stored_per_sec: med(|r| r.ingest_batch.stored_per_sec),
        batch_drain_seconds: med(|r| r.ingest_batch.drain_seconds),
        steady_acked_per_sec: med(|r| r.ingest_steady.load.events_per_sec),
        steady_stored_per_sec: med(|r| r.ingest_steady.stored_per_sec),
        steady_drain_seconds: med(|r| r.ingest_steady.drain_seconds),
        ingest_single_acked_per_sec: med(|r| r.ingest_single.load.events_per_sec),
        jetstream_records_per_sec: med(|r| r.jetstream_ceiling.records_per_sec),
        storage_rows_per_sec: med(|r| r.storage_ceiling.rows_per_sec),
        acked_vs_jetstream: med(|r| r.acked_vs_jetstream),
        stored_vs_storage: med(|r| r.stored_vs_storage),
    };
    let targets = CLUSTER_TARGETS
        .iter()
        .map(|&(target, bound, threshold)| {
            let measured = match target {
                ClusterTarget::AckedVsJetStream => summary.acked_vs_jetstream,
                ClusterTarget::SteadyDrainSeconds => summary.steady_drain_seconds,
            };
            TargetCheck::new(target, measured, bound, threshold)
        })
        .collect();
    Ok(ClusterReport {
        machine,
        options: opts.clone(),
        cluster,
        rounds,
        summary,
        targets,
        failures,
    })
}

fn ceiling_stream(prefix: &str) -> String {
    format!("{prefix}_CEILING")
}

async fn measure_cluster(
    opts: &BenchOptions,
    database_url: &str,
    buffer: &BufferOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Vec<ClusterRound>, Vec<String>), Error> {
    let metrics = Arc::new(Metrics::default());
    let pool =
        store::open::connect_postgres(database_url, OpenOptions::default().pool_size).await?;
    let inner: Arc<dyn TelemetryStore> = Arc::new(PgStore::start(
        pool,
        OpenOptions::default().queue_records,
        metrics.store.clone(),
    ));
    let buffered = BufferedStore::start(inner, buffer)
        .await
        .map_err(|e| nats_error("starting the ingest buffer")(&e))?;
    let max_message = buffered.max_message();
    let store: Arc<dyn TelemetryStore> = buffered;
    let anonymizer = Anonymizer::from_key(b"phoenix-bench");
    let state = AppState::new(
        store.clone(),
        anonymizer.clone(),
        CollectorConfig::default(),
        metrics.clone(),
    )?;
    let collector = InProcess::start(state).await?;
    let addr = collector.addr;

    let ts = now_unix();
    let single = Arc::new(Template::new(
        addr,
        Method::POST,
        "/ingest",
        Some("application/json"),
        1,
        single_bodies(ts),
    ));
    let batch_bodies = batch_bodies(opts.batch_size, ts);
    let rows = rows_like_ingest(&batch_bodies, opts.storage_rows, &anonymizer);
    // The ceiling publishes what the collector publishes for one batch request.
    let messages: Vec<Bytes> =
        wire::telemetry_chunks(&rows[..opts.batch_size.min(rows.len())], max_message)
            .map_err(|e| nats_error("encoding the ceiling's messages")(&e))?
            .into_iter()
            .map(|c| Bytes::from(c.body))
            .collect();
    let batch_template = || {
        Template::new(
            addr,
            Method::POST,
            "/ingest",
            Some("application/x-ndjson"),
            opts.batch_size,
            batch_bodies.clone(),
        )
    };
    let batch = Arc::new(batch_template());

    let measured = async {
        let mut rounds = Vec::with_capacity(opts.rounds);
        let mut failures = Vec::new();
        for r in 1..=opts.rounds {
            let tag = |what: &str| format!("round {r}/{}: {what}", opts.rounds);
            progress(&tag("raw JetStream publish (ceiling)"));
            let jetstream_ceiling =
                publish_ceiling(opts, buffer, &messages, opts.batch_size.min(rows.len())).await?;
            progress(&tag("raw PostgreSQL binary COPY (storage ceiling)"));
            let storage_ceiling = copy_ceiling(database_url, &rows, opts.batch_size).await?;
            let steady_events_per_sec = STEADY_SHARE * storage_ceiling.rows_per_sec;
            progress(&tag(
                "POST /ingest, NDJSON batches at a steady pace, through JetStream",
            ));
            let interval = Duration::from_secs_f64(
                (opts.batch_connections * opts.batch_size) as f64 / steady_events_per_sec,
            );
            let steady = Arc::new(batch_template().paced(interval));
            let ingest_steady =
                through_buffer(&steady, opts.batch_connections, opts, &metrics, &store).await?;
            progress(&tag(
                "POST /ingest, NDJSON batches as fast as answered, through JetStream",
            ));
            let ingest_batch =
                through_buffer(&batch, opts.batch_connections, opts, &metrics, &store).await?;
            progress(&tag(
                "POST /ingest, one event per request, through JetStream",
            ));
            let ingest_single =
                through_buffer(&single, opts.connections, opts, &metrics, &store).await?;
            for (name, t) in [
                ("ingest_steady", &ingest_steady),
                ("ingest_batch", &ingest_batch),
                ("ingest_single", &ingest_single),
            ] {
                failures.extend(t.load.failure(name, r));
                if t.drain_seconds.is_nan() {
                    failures.push(format!(
                        "{name} (round {r}): not drained within {}s",
                        DRAIN_LIMIT.as_secs()
                    ));
                }
            }
            rounds.push(ClusterRound {
                acked_vs_jetstream: ingest_batch.load.events_per_sec
                    / jetstream_ceiling.records_per_sec,
                stored_vs_storage: ingest_batch.stored_per_sec / storage_ceiling.rows_per_sec,
                jetstream_ceiling,
                ingest_batch,
                ingest_steady,
                steady_events_per_sec,
                ingest_single,
                storage_ceiling,
            });
        }
        Ok::<_, Error>((rounds, failures))
    }
    .await;

    let stopped = collector.stop().await;
    let measured = measured?;
    stopped?;
    Ok(measured)
}

/// The load through the buffer, then the wait until the store holds every record the
/// collector acknowledged so far.
async fn through_buffer(
    template: &Arc<Template>,
    connections: usize,
    opts: &BenchOptions,
    metrics: &Metrics,
    store: &Arc<dyn TelemetryStore>,
) -> Result<ThroughBuffer, Error> {
    let load = load(template, connections, opts, metrics).await?;
    let stopped = Instant::now();
    let acknowledged = metrics.ingested.get();
    let mut drain_seconds = f64::NAN;
    while stopped.elapsed() < DRAIN_LIMIT {
        if store.count().await? >= acknowledged {
            drain_seconds = stopped.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let w = &load.writer;
    let stored_per_sec = w.commits_per_sec * w.records_per_commit;
    Ok(ThroughBuffer {
        load,
        stored_per_sec: if stored_per_sec.is_nan() {
            0.0
        } else {
            stored_per_sec
        },
        drain_seconds,
    })
}

/// Publishes `messages` round-robin from `batch_connections` publishers, each awaiting its
/// PubAck before the next, to a scratch stream made like the ingest stream (file storage,
/// de-duplication window), for the warm-up and then the measured window.
async fn publish_ceiling(
    opts: &BenchOptions,
    buffer: &BufferOptions,
    messages: &[Bytes],
    records_per_request: usize,
) -> Result<PublishFigures, Error> {
    let client = async_nats::connect(&buffer.url)
        .await
        .map_err(|e| nats_error("connecting to NATS for the ceiling")(&e))?;
    let js = jetstream::new(client);
    let name = ceiling_stream(&buffer.prefix);
    let subject = format!("{}.ceiling", buffer.prefix);
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| nats_error("making the ceiling's stream")(&e))?;
    let records_per_message = records_per_request as f64 / messages.len() as f64;
    let start = Instant::now() + opts.warmup;
    let end = start + opts.duration;
    let mut publishers = JoinSet::new();
    for p in 0..opts.batch_connections {
        let (js, subject, messages) = (js.clone(), subject.clone(), messages.to_vec());
        publishers.spawn(async move {
            let mut acked = 0u64;
            let mut n = p;
            loop {
                let now = Instant::now();
                if now >= end {
                    return Ok::<u64, String>(acked);
                }
                let publish = jetstream::context::Publish::build()
                    .message_id(format!("{p}-{n}"))
                    .payload(messages[n % messages.len()].clone());
                let ack = js
                    .send_publish(subject.clone(), publish)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())?;
                if now >= start {
                    acked += 1;
                }
                n += STRIDE;
            }
        });
    }
    let mut total = 0;
    while let Some(done) = publishers.join_next().await {
        total += done
            .map_err(|e| nats_error("running a ceiling publisher")(&e))?
            .map_err(|e| nats_error("publishing to JetStream (ceiling)")(&e))?;
    }
    let _ = js.delete_stream(&name).await;
    let seconds = opts.duration.as_secs_f64();
    let records = (total as f64 * records_per_message).round() as u64;
    Ok(PublishFigures {
        publishers: opts.batch_connections,
        messages: total,
        records,
        seconds,
        records_per_sec: records as f64 / seconds,
        message_bytes: messages.iter().map(Bytes::len).max().unwrap_or(0),
    })
}
