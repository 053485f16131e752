//! `gzip-bombs`: many gzip bodies at once, each a few MB on the wire that inflate to GiBs;
//! the collector's peak RSS and what each request was answered.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use axum::body::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use super::{AbuseOptions, Error, mb, stop};

/// One gzip member inflates to this; the bomb is members back to back (gzip allows it).
const MEMBER_BYTES: usize = 8 * 1024 * 1024;

/// What the bombs did.
#[derive(Debug, Clone, Serialize)]
pub struct BombFigures {
    /// Bombs sent at once.
    pub bombs: usize,
    /// Size of each on the wire, MB.
    pub compressed_mb: f64,
    /// What each inflates to, MB.
    pub decoded_mb: f64,
    /// Answered 413 (inflated to the limit, then refused).
    pub too_large: usize,
    /// Answered 503 (the decompression budget was in use).
    pub busy: usize,
    /// Answered anything else.
    pub other: usize,
    /// Connection closed before an answer (the server stops reading a refused body).
    pub no_answer: usize,
    /// Seconds until every bomb was answered.
    pub seconds: f64,
    /// The collector's peak RSS before the bombs (`VmHWM`), MB.
    pub peak_rss_before_mb: f64,
    /// Its peak RSS over the bombs, MB.
    pub peak_rss_mb: f64,
}

pub(super) async fn run(
    opts: &AbuseOptions,
    dir: &Path,
    failures: &mut Vec<String>,
) -> Result<BombFigures, Error> {
    let decoded = opts.bomb_decoded_mib as usize * 1024 * 1024;
    let bomb = tokio::task::spawn_blocking(move || build_bomb(decoded))
        .await
        .map_err(|e| Error::Request(format!("building the bomb: {e}")))?;
    let server = super::start_collector(dir).await?;
    let before = server.peak_rss_kib()?;
    let client = reqwest::Client::new();
    let url = format!("{}/ingest", server.http_url);
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for _ in 0..opts.bombs {
        let req = client
            .post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone());
        requests.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    }
    let (mut too_large, mut busy, mut other, mut no_answer) = (0, 0, 0, 0);
    while let Some(done) = requests.join_next().await {
        match done {
            Ok(Ok(413)) => too_large += 1,
            Ok(Ok(503)) => busy += 1,
            Ok(Ok(status)) => {
                other += 1;
                failures.push(format!("gzip-bombs: a bomb was answered {status}"));
            }
            Ok(Err(_)) => no_answer += 1,
            Err(e) => failures.push(format!("gzip-bombs: a request task failed: {e}")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak = server.peak_rss_kib()?;
    stop(server).await?;
    Ok(BombFigures {
        bombs: opts.bombs,
        compressed_mb: bomb.len() as f64 / 1e6,
        decoded_mb: decoded as f64 / 1e6,
        too_large,
        busy,
        other,
        no_answer,
        seconds,
        peak_rss_before_mb: mb(before),
        peak_rss_mb: mb(peak),
    })
}

/// Zeros compressed once as one gzip member, repeated until they inflate to `decoded`.
fn build_bomb(decoded: usize) -> Bytes {
    let member_len = MEMBER_BYTES.min(decoded);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; member_len])
        .expect("writing to a Vec cannot fail");
    let member = e.finish().expect("writing to a Vec cannot fail");
    let count = decoded.div_ceil(member_len);
    let mut bomb = Vec::with_capacity(member.len() * count);
    for _ in 0..count {
        bomb.extend_from_slice(&member);
    }
    Bytes::from(bomb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bomb_inflates_to_what_it_says() {
        let bomb = build_bomb(20 * 1024 * 1024);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bomb[..]), &mut out)
            .unwrap();
        assert_eq!(out.len(), 24 * 1024 * 1024, "whole members");
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
    }
}
