//! The server under test as a child process (`phoenix serve distributor`, or any other
//! `serve` for `bench abuse`), so its resident memory is its own and not the load
//! generator's; plus the open-file limit both need.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::Error;

/// How long the child may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the child may take to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Lines of the child's stderr kept for error messages.
const STDERR_TAIL: usize = 20;
/// Descriptors a process needs besides one per subscriber (runtime, database, listener, pools).
pub(in crate::bench) const SPARE_FILES: u64 = 256;

/// A running `phoenix serve …` (the distributor unless [`Distributor::start_serve`] says
/// otherwise), killed if dropped before [`Distributor::stop`].
pub(in crate::bench) struct Distributor {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub http_url: String,
    /// `ws://127.0.0.1:PORT/subscribe`.
    pub ws_url: String,
    /// The HTTP URL of every listener, in the order they were announced (`serve all`: the
    /// collector's, then the distributor's).
    pub http_urls: Vec<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// What the nodes of a distributor cluster share.
pub(in crate::bench) struct NodeSettings<'a> {
    /// The update log's PostgreSQL.
    pub database_url: &'a str,
    /// The doorbell's NATS (`None`: the nodes poll the log).
    pub nats_url: Option<&'a str>,
    /// The doorbell's subject prefix.
    pub prefix: &'a str,
    /// The orch-hash key file.
    pub hash_key_file: &'a Path,
}

/// The line `serve --json` prints once it listens.
#[derive(Deserialize)]
struct Listening {
    event: String,
    url: String,
    http_url: Option<String>,
}

impl Distributor {
    /// Starts this executable as a distributor on `127.0.0.1:0` with its update log, hash key
    /// and home in `dir`, shielded from the caller's configuration so runs are comparable;
    /// `admin_token` guards `POST /publish`.
    pub async fn start(dir: &Path, admin_token: &str) -> Result<Distributor, Error> {
        let db = dir.join("distributor.db").into_os_string();
        let args: Vec<OsString> = ["distributor", "--bind", "127.0.0.1:0", "--db"]
            .into_iter()
            .map(OsString::from)
            .chain([db])
            .collect();
        Self::start_serve(
            dir,
            &args,
            &[("PHOENIX_ADMIN_TOKEN", admin_token.into())],
            1,
        )
        .await
    }

    /// Starts node `index` of a distributor cluster in `dir` (its own home): the update log in
    /// PostgreSQL at `cluster.database_url`, the doorbell on NATS under `cluster.prefix` (if any), and
    /// the hash key every node shares, so an orch hashes alike on each. The URLs go by
    /// environment, not argv, so no password shows in the process list.
    pub async fn start_node(
        dir: &Path,
        admin_token: &str,
        cluster: &NodeSettings<'_>,
    ) -> Result<Distributor, Error> {
        let args: Vec<OsString> = ["distributor", "--bind", "127.0.0.1:0"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let mut env = vec![
            ("PHOENIX_ADMIN_TOKEN", admin_token.into()),
            ("PHOENIX_DATABASE_URL", cluster.database_url.into()),
            ("PHOENIX_NATS_PREFIX", cluster.prefix.into()),
            ("PHOENIX_HASH_KEY_FILE", cluster.hash_key_file.into()),
        ];
        if let Some(url) = cluster.nats_url {
            env.push(("PHOENIX_NATS_URL", url.into()));
        }
        Self::start_serve(dir, &args, &env, 1).await
    }

    /// Starts `phoenix --json serve ARGS` the same way, with `env` added, and waits for its
    /// `listeners` listening lines; the first gives the URLs (`http_url` is the service URL
    /// when it has no other).
    pub(in crate::bench) async fn start_serve(
        dir: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
        listeners: usize,
    ) -> Result<Distributor, Error> {
        let exe = std::env::current_exe().map_err(super::io("finding the phoenix executable"))?;
        let mut child = Command::new(&exe)
            .args(["--json", "serve"])
            .args(args)
            .env_remove("PHOENIX_CONFIG")
            // The caller's stores are not the benchmark's: a run is on its scratch ones.
            .env_remove("PHOENIX_DATABASE_URL")
            .env_remove("PHOENIX_NATS_URL")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("PHOENIX_HOME", dir.join("home"))
            .env("PHOENIX_HASH_KEY_FILE", dir.join("orch_hash.key"))
            .env("PHOENIX_LOG", "warn")
            // Last, so the caller's settings win over the defaults above.
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(super::io(format!("starting {}", exe.display())))?;
        let pid = child.id().ok_or_else(|| {
            Error::Distributor("the distributor exited as soon as it started".to_owned())
        })?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_tail(err, stderr.clone()));
        }
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut distributor = Distributor {
            child,
            pid,
            http_url: String::new(),
            ws_url: String::new(),
            http_urls: Vec::new(),
            stderr,
        };
        for _ in 0..listeners.max(1) {
            let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => {
                    return Err(Error::Distributor(format!(
                        "the server did not start{}",
                        distributor.because()
                    )));
                }
                Err(_) => {
                    return Err(Error::Distributor(format!(
                        "the server did not report its address within {}s{}",
                        START_TIMEOUT.as_secs(),
                        distributor.because()
                    )));
                }
            };
            let Some(Listening { url, http_url, .. }) = serde_json::from_str::<Listening>(&line)
                .ok()
                .filter(|l| l.event == "listening")
            else {
                return Err(Error::Distributor(format!(
                    "the server did not start{}",
                    distributor.because()
                )));
            };
            let http_url = http_url.unwrap_or_else(|| url.clone());
            if distributor.http_urls.is_empty() {
                distributor.ws_url = url;
                distributor.http_url = http_url.clone();
            }
            distributor.http_urls.push(http_url);
        }
        // Nothing else is printed on stdout, but a full pipe must never block the child.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(distributor)
    }

    /// The child's resident memory in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).map_err(super::io(format!("reading {path}")))?;
        parse_rss_kib(&status)
            .ok_or_else(|| Error::Distributor(format!("{path} has no VmRSS line")))
    }

    /// The child's peak resident memory so far (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, Error> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).map_err(super::io(format!("reading {path}")))?;
        parse_status_kib(&status, "VmHWM:")
            .ok_or_else(|| Error::Distributor(format!("{path} has no VmHWM line")))
    }

    /// Sends SIGTERM and waits up to `grace` for the child to exit: how long it took and its
    /// status (`None`: still running at the end of `grace`, then killed).
    pub async fn terminate(
        mut self,
        grace: Duration,
    ) -> Result<(Duration, Option<ExitStatus>), Error> {
        let started = Instant::now();
        self.send_term().await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status.map_err(super::io("waiting for the server"))?;
                Ok((started.elapsed(), Some(status)))
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Ok((started.elapsed(), None))
            }
        }
    }

    async fn send_term(&mut self) {
        // The crate forbids `unsafe`, so no kill(2) binding: the `kill` utility sends it.
        let term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.start_kill();
        }
    }

    /// CPU time the child has used so far (user + system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// What may explain a failure, when anything does: the child's exit status if it has
    /// exited, and its last log lines.
    pub fn explain(&mut self) -> Option<String> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited ({status})")),
            _ => None,
        };
        let tail = self.log_tail();
        match (status, tail.is_empty()) {
            (None, true) => None,
            (None, false) => Some(format!("logged{tail}")),
            (Some(status), _) => Some(format!("{status}{tail}")),
        }
    }

    /// `; its last log lines:` and those lines, or nothing.
    fn log_tail(&self) -> String {
        let tail = self.stderr.lock().expect("stderr tail lock");
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("; its last log lines:\n    {}", lines.join("\n    "))
    }

    /// [`Distributor::explain`] as the end of a sentence.
    fn because(&mut self) -> String {
        self.explain()
            .map(|why| format!(": the distributor {why}"))
            .unwrap_or_default()
    }

    /// Asks the child to shut down as on Ctrl-C (SIGTERM), waits for it, and kills it if it
    /// does not stop within the grace period.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(Error::Shutdown(format!(
                "it stopped during the benchmark ({status}){}",
                self.log_tail()
            )));
        }
        self.send_term().await;
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(Error::Shutdown(format!(
                "it exited with {status}{}",
                self.log_tail()
            ))),
            Ok(Err(e)) => Err(Error::Shutdown(format!("waiting for the distributor: {e}"))),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(Error::Shutdown(format!(
                    "it was still draining {}s after SIGTERM and was killed",
                    STOP_GRACE.as_secs()
                )))
            }
        }
    }
}

/// Keeps the last [`STDERR_TAIL`] lines the child logs (and drains the pipe so it never
/// blocks the child).
async fn keep_tail(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut tail = tail.lock().expect("stderr tail lock");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// The `field` line (`VmRSS:`, `VmHWM:`) of a `/proc/<pid>/status` text, in KiB.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of the process whose `stat` file is at `path` (Linux).
pub(super) fn cpu_seconds(path: &str) -> Option<f64> {
    parse_cpu_ticks(&std::fs::read_to_string(path).ok()?).map(|t| t as f64 / USER_HZ)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// An open-file limit (`RLIMIT_NOFILE`); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileLimit {
    /// What applies now (`ulimit -n`).
    pub soft: Option<u64>,
    /// How far an unprivileged process may raise it (`ulimit -Hn`).
    pub hard: Option<u64>,
}

/// "Max open files" of a `/proc/<pid>/limits` text.
fn parse_file_limit(limits: &str) -> Option<FileLimit> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    let mut value = || match words.next()? {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    };
    Some(FileLimit {
        soft: value()?,
        hard: value()?,
    })
}

/// Fails unless this process (whose limit the child inherits) may open `subscribers`
/// connections plus [`SPARE_FILES`]; the error says which limit and how to raise it. Where the
/// limit cannot be read (not Linux), the run goes ahead and connect failures will tell.
pub(in crate::bench) fn check_file_limit(subscribers: usize) -> Result<(), Error> {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| parse_file_limit(&l))
    else {
        return Ok(());
    };
    file_limit_allows(limit, subscribers)
}

fn file_limit_allows(limit: FileLimit, subscribers: usize) -> Result<(), Error> {
    let needed = subscribers as u64 + SPARE_FILES;
    match limit.soft {
        Some(soft) if soft < needed => Err(Error::FileLimit {
            subscribers,
            needed,
            soft,
            hard: limit.hard,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tphoenix\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_kib(status), Some(12345));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        let stat = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(380));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn the_open_file_limit_is_read_and_enforced() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95952                95952                processes \n\
                      Max open files            1024                 20000                files     \n";
        let limit = parse_file_limit(limits).unwrap();
        assert_eq!(
            limit,
            FileLimit {
                soft: Some(1024),
                hard: Some(20000)
            }
        );
        assert!(file_limit_allows(limit, 700).is_ok());
        let err = file_limit_allows(limit, 10_000).unwrap_err().to_string();
        assert!(
            err.contains("RLIMIT_NOFILE") && err.contains("ulimit -n 20000"),
            "{err}"
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        let limit = parse_file_limit(unlimited).unwrap();
        assert_eq!(limit.soft, None);
        assert!(file_limit_allows(limit, 1_000_000).is_ok());
    }
}
