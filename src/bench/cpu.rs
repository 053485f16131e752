//! CPU time the benchmark process spent during a window, in total and per named thread, read
//! from `/proc/self/task/*/stat` (Linux; elsewhere the figures are absent).
//!
//! Throughput on a shared 2-core machine moves with whatever else runs; CPU time per request
//! moves far less, and where it goes (HTTP workers, the store writer, the checkpointer)
//! says which side bounds ingest.

use std::collections::HashMap;

use serde::Serialize;

use crate::core::store::{CHECKPOINT_THREAD, WRITER_THREAD};

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on every Linux Phoenix runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ticks so far, in total and per thread id.
#[derive(Debug, Clone, Default)]
pub struct CpuTicks {
    total: u64,
    threads: HashMap<u32, (String, u64)>,
}

impl CpuTicks {
    /// Reads every thread of this process; `None` where `/proc` is not there.
    pub fn now() -> Option<CpuTicks> {
        let mut ticks = CpuTicks::default();
        // The process's own line counts the threads that have ended too (the blocking pool's
        // come and go), which a sum over the live threads would lose.
        let process = std::fs::read_to_string("/proc/self/stat").ok()?;
        ticks.total = parse_stat(&process)?.1;
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((name, t)) = parse_stat(&stat) {
                ticks.threads.insert(tid, (name, t));
            }
        }
        Some(ticks)
    }

    /// What was used between `before` and `self`, over a window of `seconds`, serving
    /// `requests` requests.
    pub fn since(&self, before: &CpuTicks, seconds: f64, requests: u64) -> CpuUse {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / seconds;
        let total = self.total.saturating_sub(before.total);
        let thread = |wanted: &str| -> u64 {
            self.threads
                .iter()
                .filter(|(_, (name, _))| name == wanted)
                .map(|(tid, (_, t))| {
                    t.saturating_sub(before.threads.get(tid).map_or(0, |(_, t)| *t))
                })
                .sum()
        };
        CpuUse {
            cores: cores(total),
            us_per_request: if requests == 0 {
                f64::NAN
            } else {
                total as f64 / TICKS_PER_SEC * 1e6 / requests as f64
            },
            writer_cores: cores(thread(WRITER_THREAD)),
            checkpoint_cores: cores(thread(CHECKPOINT_THREAD)),
        }
    }
}

/// Where a window's CPU went.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// Cores busy on average (user + system), the load generator included.
    pub cores: f64,
    /// CPU microseconds per completed request, generator included.
    pub us_per_request: f64,
    /// Cores the store's writer thread used.
    pub writer_cores: f64,
    /// Cores the WAL checkpoint thread used.
    pub checkpoint_cores: f64,
}

impl CpuUse {
    /// No figures (no `/proc`).
    pub fn unknown() -> CpuUse {
        CpuUse {
            cores: f64::NAN,
            us_per_request: f64::NAN,
            writer_cores: f64::NAN,
            checkpoint_cores: f64::NAN,
        }
    }
}

/// `(comm, utime + stime)` from one `stat` line; the name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After ") ": field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let mut fields = stat.get(close + 2..)?.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times_after_a_name_with_spaces_and_parentheses() {
        let line = "42 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1";
        assert_eq!(parse_stat(line), Some(("tokio (rt) w".to_owned(), 281)));
    }

    #[test]
    fn this_process_uses_cpu() {
        // Busy until the kernel has charged a tick; on a loaded machine that can take a
        // while, so the bound is generous and only stops a broken reader from hanging.
        let before = CpuTicks::now().expect("/proc is mounted on Linux");
        let mut x = 0u64;
        let started = std::time::Instant::now();
        let charged = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            let now = CpuTicks::now().unwrap();
            if now.total > before.total {
                break true;
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                break false;
            }
        };
        assert!(charged, "30 s of busy work took no ticks");
    }
}
