//! One retry loop with exponential backoff for every outbound client (the Phoenix API
//! client, the LLM client, the GitHub forge): how many attempts, how long to wait between
//! them, and a server's `Retry-After` honoured within the cap. What is worth retrying, and
//! what to log, stays with each caller.

use std::future::Future;
use std::time::Duration;

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub max_retries: u32,
    /// First backoff; doubles each time.
    pub base: Duration,
    /// Cap on one wait (also caps `Retry-After`).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// What a caller makes of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worth another attempt: after the server's wait if it named one, else after backoff.
    Retry(Option<Duration>),
    /// Fails for good: the error is returned as it is.
    Fail,
}

/// One wait the loop is about to make, for the caller's log line.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// The attempt that failed, counted from 1.
    pub attempt: u32,
    /// Attempts allowed in all (`max_retries + 1`).
    pub max_attempts: u32,
    /// How long the loop sleeps before the next attempt.
    pub delay: Duration,
}

/// Runs `attempt` (given its number, counted from 1) until it succeeds, `classify` says an
/// error fails for good, or the retries of `policy` run out; the last error is returned.
/// `on_wait` is told about each wait before the loop sleeps.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    mut attempt: F,
    mut classify: impl FnMut(&E) -> Verdict,
    mut on_wait: impl FnMut(&E, Wait),
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max_attempts = policy.max_retries.saturating_add(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt(attempts).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let wanted = match classify(&error) {
            Verdict::Retry(wanted) if attempts < max_attempts => wanted,
            _ => return Err(error),
        };
        let delay = match wanted {
            Some(wanted) => wanted.min(policy.max),
            None => backoff(policy.base, policy.max, attempts - 1),
        };
        on_wait(
            &error,
            Wait {
                attempt: attempts,
                max_attempts,
                delay,
            },
        );
        tokio::time::sleep(delay).await;
    }
}

/// `base * 2^retry`, ±25% jitter so concurrent callers (the hive) do not retry in lockstep,
/// never above `max`.
pub fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(retry)).min(max);
    let jitter = rand::random_range(0.75..=1.25);
    Duration::try_from_secs_f64(exponential.as_secs_f64() * jitter)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_respects_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(base, max, 0);
            assert!(
                first >= Duration::from_millis(75) && first <= Duration::from_millis(125),
                "{first:?}"
            );
            let third = backoff(base, max, 2);
            assert!(
                third >= Duration::from_millis(300) && third <= Duration::from_millis(500),
                "{third:?}"
            );
            assert!(backoff(base, max, 40) <= max);
        }
    }

    fn quick(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_run_out_after_max_retries_and_return_the_last_error() {
        let calls = AtomicU32::new(0);
        let mut waits = Vec::new();
        let out: Result<(), u32> = retry(
            quick(2),
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(n) }
            },
            |_| Verdict::Retry(None),
            |_, w| waits.push((w.attempt, w.max_attempts)),
        )
        .await;
        assert_eq!(out, Err(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(waits, vec![(1, 3), (2, 3)]);
    }

    #[tokio::test]
    async fn a_final_error_is_not_retried_and_retry_after_is_capped() {
        let out: Result<(), &str> = retry(
            quick(5),
            |_| async { Err("no") },
            |_| Verdict::Fail,
            |_, _| panic!("no wait for a final error"),
        )
        .await;
        assert_eq!(out, Err("no"));

        let mut delays = Vec::new();
        let out: Result<u32, ()> = retry(
            quick(5),
            |n| async move { if n < 2 { Err(()) } else { Ok(n) } },
            |_| Verdict::Retry(Some(Duration::from_secs(60))),
            |_, w| delays.push(w.delay),
        )
        .await;
        assert_eq!(out, Ok(2));
        assert_eq!(delays, vec![Duration::from_millis(5)]);
    }
}
