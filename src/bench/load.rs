//! The keep-alive HTTP/1.1 load generator of `phoenix bench ingest`: pre-built requests,
//! connections driven for a duration, the writer's activity and `POST /analyze` timings.

use super::*;

pub(super) struct Template {
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bodies: Vec<Bytes>,
    events_per_request: usize,
    /// Least time between two requests of one connection (`None`: as fast as answered).
    pace: Option<std::time::Duration>,
}

impl Template {
    pub(super) fn new(
        addr: SocketAddr,
        method: Method,
        path: &'static str,
        content_type: Option<&'static str>,
        events_per_request: usize,
        bodies: Vec<Bytes>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        headers.insert(header::HOST, host);
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        Template {
            addr,
            method,
            uri: Uri::from_static(path),
            headers,
            bodies,
            events_per_request,
            pace: None,
        }
    }

    /// The same requests, each connection sending at most one per `interval`: a steady load
    /// of `connections × events_per_request / interval` events/s, at most.
    pub(super) fn paced(mut self, interval: std::time::Duration) -> Self {
        self.pace = Some(interval);
        self
    }

    /// The request bodies, in the order connections cycle through them.
    pub(super) fn bodies(&self) -> &[Bytes] {
        &self.bodies
    }

    /// The `i`-th request: cloning `Bytes` and a small header map is all it costs.
    pub(super) fn request(&self, i: usize) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.bodies[i % self.bodies.len()].clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;
type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

pub(super) async fn connect(addr: SocketAddr) -> Result<(Sender, Conn), Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Connect {
        addr,
        message: e.to_string(),
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| failed(&e))?;
    stream.set_nodelay(true).map_err(|e| failed(&e))?;
    http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))
}

/// How one exchange ended.
pub(super) enum Answer {
    Ok(Bytes),
    Failed(String),
}

/// Sends one request and reads the whole answer; `keep` says whether a 2xx body is needed.
pub(super) async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    keep: bool,
) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status.is_success() && !keep {
        // Drain without buffering: the generator should cost as little as possible.
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(Answer::Ok(Bytes::new()));
    }
    let bytes = body.collect().await?.to_bytes();
    if status.is_success() {
        Ok(Answer::Ok(bytes))
    } else {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        Ok(Answer::Failed(format!("{status}: {text}")))
    }
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) ok: u64,
    pub(super) non_2xx: u64,
    pub(super) errors: u64,
    pub(super) first_failure: Option<String>,
}

impl Tally {
    pub(super) fn note(&mut self, failure: String) {
        self.first_failure.get_or_insert(failure);
    }
}

/// Runs `template` on `connections` keep-alive connections for warm-up plus duration and
/// counts the 2xx answers that complete inside the measured window.
pub(super) async fn load(
    template: &Arc<Template>,
    connections: usize,
    opts: &BenchOptions,
    metrics: &Metrics,
) -> Result<LoadFigures, Error> {
    // Connect everything first so the window measures steady state, not the handshakes.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(template.addr).await?);
    }
    let start = Instant::now() + opts.warmup;
    let end = start + opts.duration;
    let mut tasks = JoinSet::new();
    for (n, conn) in conns.into_iter().enumerate() {
        let template = template.clone();
        // Offsets spread the connections over different bodies.
        let first = n * 7919;
        tasks.spawn(drive(template, conn, first, start, end));
    }
    tokio::time::sleep_until(start.into()).await;
    let before = WriterTotals::read(metrics);
    let cpu_before = cpu::CpuTicks::now();
    tokio::time::sleep_until(end.into()).await;
    let after = WriterTotals::read(metrics);
    let cpu_after = cpu::CpuTicks::now();
    let mut total = Tally::default();
    while let Some(done) = tasks.join_next().await {
        let t = done.map_err(|e| Error::Io {
            what: "running a load connection".to_owned(),
            source: std::io::Error::other(e),
        })?;
        total.ok += t.ok;
        total.non_2xx += t.non_2xx;
        total.errors += t.errors;
        if let Some(f) = t.first_failure {
            total.note(f);
        }
    }
    let seconds = opts.duration.as_secs_f64();
    let rps = total.ok as f64 / seconds;
    Ok(LoadFigures {
        connections,
        events_per_request: template.events_per_request,
        seconds,
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        requests_per_sec: rps,
        events_per_sec: rps * template.events_per_request as f64,
        first_failure: total.first_failure,
        writer: after.since(&before, seconds),
        cpu: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => a.since(&b, seconds, total.ok),
            _ => cpu::CpuUse::unknown(),
        },
    })
}

/// Running totals of the writer's commit histograms.
pub(super) struct WriterTotals {
    commits: u64,
    records: f64,
    seconds: f64,
}

impl WriterTotals {
    /// Reads the totals from the Prometheus exposition: the histograms expose no getters.
    pub(super) fn read(m: &Metrics) -> Self {
        let mut t = WriterTotals {
            commits: 0,
            records: 0.0,
            seconds: 0.0,
        };
        for line in m.encode().lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let value = value.trim().parse::<f64>().unwrap_or(0.0);
            match name {
                "phoenix_store_commit_seconds_count" => t.commits = value as u64,
                "phoenix_store_commit_seconds_sum" => t.seconds = value,
                "phoenix_store_group_records_sum" => t.records = value,
                _ => {}
            }
        }
        t
    }

    pub(super) fn since(&self, before: &WriterTotals, window: f64) -> WriterActivity {
        let commits = self.commits - before.commits;
        WriterActivity {
            commits_per_sec: commits as f64 / window,
            records_per_commit: (self.records - before.records) / commits as f64,
            busy: (self.seconds - before.seconds) / window,
        }
    }
}

/// One connection's loop. The hyper connection is polled in the same task as the loop
/// (`join!`), which saves two cross-task wake-ups per request over spawning it.
pub(super) async fn drive(
    template: Arc<Template>,
    (sender, conn): (Sender, Conn),
    mut next: usize,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut pair = Some((sender, conn));
    while Instant::now() < end {
        let (mut sender, conn) = match pair.take() {
            Some(p) => p,
            None => match connect(template.addr).await {
                Ok(p) => p,
                Err(e) => {
                    tally.errors += 1;
                    tally.note(format!("reconnecting: {e}"));
                    break;
                }
            },
        };
        let requests = async {
            let mut due = Instant::now();
            while Instant::now() < end {
                if let Some(pace) = template.pace {
                    tokio::time::sleep_until(due.into()).await;
                    due += pace;
                }
                let answer = exchange(&mut sender, template.request(next), false).await;
                next += 1;
                let now = Instant::now();
                match answer {
                    Ok(Answer::Ok(_)) => {
                        if now >= start && now < end {
                            tally.ok += 1;
                        }
                    }
                    Ok(Answer::Failed(f)) => {
                        tally.non_2xx += 1;
                        tally.note(f);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.note(format!("transport: {e}"));
                        // The connection is unusable; the outer loop opens another.
                        break;
                    }
                }
            }
            drop(sender);
        };
        let (_, ()) = tokio::join!(conn, requests);
    }
    tally
}

#[derive(Deserialize)]
pub(super) struct AnalyzeAnswer {
    records_analyzed: usize,
    analysis_ms: f64,
}

/// Sequential `POST /analyze {"last_n":5000}` calls with the premium key, one connection.
pub(super) async fn analyze(addr: SocketAddr, runs: usize) -> Result<AnalyzeFigures, Error> {
    let mut template = Template::new(
        addr,
        Method::POST,
        "/analyze",
        Some("application/json"),
        0,
        vec![Bytes::from(format!("{{\"last_n\":{ANALYZE_RECORDS}}}"))],
    );
    template
        .headers
        .insert("x402", HeaderValue::from_static(PREMIUM_KEY));
    let (mut sender, conn) = connect(addr).await?;
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(runs);
    let mut server_ms = Vec::with_capacity(runs);
    let mut records_analyzed = 0;
    let calls = async {
        // Call 0 is untimed: it fills the reader pool and the page cache once.
        for i in 0..=runs {
            let started = Instant::now();
            let answer = exchange(&mut sender, template.request(0), true).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let failure = match answer {
                Ok(Answer::Ok(body)) => match serde_json::from_slice::<AnalyzeAnswer>(&body) {
                    Ok(a) => {
                        records_analyzed = a.records_analyzed;
                        if i > 0 {
                            latencies.push(ms);
                            server_ms.push(a.analysis_ms);
                        }
                        if a.records_analyzed == ANALYZE_RECORDS {
                            continue;
                        }
                        format!("analysed {} records", a.records_analyzed)
                    }
                    Err(e) => format!("unreadable answer: {e}"),
                },
                Ok(Answer::Failed(f)) => f,
                Err(e) => {
                    tally.errors += 1;
                    tally.note(format!("transport: {e}"));
                    break;
                }
            };
            tally.non_2xx += 1;
            tally.note(failure);
        }
        drop(sender);
    };
    let (_, ()) = tokio::join!(conn, calls);
    Ok(AnalyzeFigures {
        runs: latencies.len(),
        records_analyzed,
        median_ms: median(&latencies),
        p95_ms: nearest_rank_percentile(&latencies, 0.95),
        max_ms: latencies.iter().copied().fold(f64::NAN, f64::max),
        server_analysis_median_ms: median(&server_ms),
        failures: tally.non_2xx + tally.errors,
        first_failure: tally.first_failure,
    })
}
