//! One redaction session over a long text, as `phoenix redact --session S` does it for a day
//! of an agent's logs: the generated corpus written out until the text is N MB (fresh
//! conversations, so the session keeps learning values), then streamed through one
//! [`Redactor`]. Throughput at 1 MB and at 64 MB must be the same: redaction is linear.

use std::io::{self, BufReader, BufWriter, Write as _};
use std::time::Instant;

use serde::Serialize;

use super::corpus::generate;
use crate::core::privacy::pii::{Redactor, Report};

/// Conversations generated at a time while writing the text.
const BATCH: usize = 2000;

/// One long session's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LongSession {
    /// Size asked for, MB (10^6 bytes).
    pub megabytes: f64,
    /// Bytes of text redacted.
    pub bytes: u64,
    /// Seconds redacting (the text is read from a file; writing it is not timed).
    pub seconds: f64,
    /// `bytes / seconds`, MB/s, one thread.
    pub mb_per_sec: f64,
    /// Values the session learned (canonical pseudonyms).
    pub distinct_values: usize,
    /// Growth of this process's resident memory over the run, KiB (allocator-dependent: a
    /// bound, not a measure, of what the session holds).
    pub rss_growth_kib: Option<i64>,
}

/// Measures a session of each size in `megabytes`, from the corpus of `seed`.
pub fn measure(seed: u64, megabytes: &[f64]) -> io::Result<Vec<LongSession>> {
    let dir = tempfile::tempdir()?;
    let mut out = Vec::with_capacity(megabytes.len());
    for (i, &mb) in megabytes.iter().enumerate() {
        let path = dir.path().join(format!("session-{i}.txt"));
        let bytes = write_text(&path, seed, (mb * 1e6) as u64)?;
        let rss_before = rss_kib();
        let mut redactor = Redactor::new();
        let started = Instant::now();
        let input = BufReader::with_capacity(256 * 1024, std::fs::File::open(&path)?);
        redactor.redact_stream(input, io::sink(), &mut Report::default())?;
        let seconds = started.elapsed().as_secs_f64();
        let rss_growth_kib = rss_kib()
            .zip(rss_before)
            .map(|(after, before)| after as i64 - before as i64);
        out.push(LongSession {
            megabytes: mb,
            bytes,
            seconds,
            mb_per_sec: bytes as f64 / 1e6 / seconds,
            distinct_values: redactor.mappings().len(),
            rss_growth_kib,
        });
        std::fs::remove_file(&path)?;
    }
    Ok(out)
}

/// Writes conversations of the corpus (a message a line, a blank line after each
/// conversation) to `path` until at least `bytes`; returns the bytes written.
fn write_text(path: &std::path::Path, seed: u64, bytes: u64) -> io::Result<u64> {
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut batch = 0u64;
    while written < bytes {
        for conversation in generate(seed.wrapping_add(batch), BATCH) {
            for m in &conversation.messages {
                file.write_all(m.text.as_bytes())?;
                file.write_all(b"\n")?;
                written += m.text.len() as u64 + 1;
            }
            file.write_all(b"\n")?;
            written += 1;
            if written >= bytes {
                break;
            }
        }
        batch += 1;
    }
    file.flush()?;
    Ok(written)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_session_is_measured_at_each_size() {
        let runs = measure(7, &[0.05, 0.2]).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs[0].bytes >= 50_000 && runs[1].bytes >= 200_000);
        for r in &runs {
            assert!(r.mb_per_sec > 0.0, "{r:?}");
            assert!(r.distinct_values > 0, "{r:?}");
        }
        // A longer session learns more values.
        assert!(runs[1].distinct_values > runs[0].distinct_values);
    }
}
