//! Retries of one provider's calls: exponential backoff with full jitter,
//! `Retry-After` honoured, a bounded count and a bounded wait.

use crate::config::ProviderConfig;
use std::time::{Duration, SystemTime};

/// How a provider's failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first call (0 = none).
    pub max_retries: u32,
    /// Backoff before retry `n` (0-based) is uniform in `[0, base * 2^n]`.
    pub base: Duration,
    /// The longest wait; a longer `Retry-After` is not waited for.
    pub max_wait: Duration,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        base: Duration::ZERO,
        max_wait: Duration::ZERO,
    };

    pub fn for_config(config: &ProviderConfig) -> RetryPolicy {
        match config.http() {
            Some(c) => RetryPolicy {
                max_retries: c.max_retries,
                base: Duration::from_millis(c.backoff_ms),
                max_wait: Duration::from_millis(c.max_backoff_ms),
            },
            // A script is deterministic: retrying it gives the same answer.
            None => RetryPolicy::NONE,
        }
    }

    /// The ceiling of the backoff before retry `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(20);
        self.base.saturating_mul(factor).min(self.max_wait)
    }

    /// Full jitter: a uniform random wait in `[0, ceiling(retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry).as_micros() as u64;
        if ceiling == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(rand::random_range(0..=ceiling))
    }
}

/// Parses `retry-after-ms` (milliseconds, as some OpenAI-compatible servers
/// send) or `Retry-After` (seconds, or an HTTP date). `None` when absent or
/// unreadable.
pub fn parse_retry_after(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_micros(
            (ms * 1000.0).min(u64::MAX as f64 / 2.0) as u64,
        ));
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_capped_exponential() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            max_wait: Duration::from_millis(500),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(3), Duration::from_millis(500));
        assert_eq!(p.ceiling(40), Duration::from_millis(500));
        let waits: Vec<Duration> = (0..200).map(|_| p.backoff(1)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(200)));
        // Full jitter spreads over the whole range, not around the ceiling.
        assert!(waits.iter().any(|w| *w < Duration::from_millis(50)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(150)));
        assert_eq!(RetryPolicy::NONE.backoff(3), Duration::ZERO);
    }

    #[test]
    fn retry_after_in_ms_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(Some("250"), Some("9"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after(None, Some("2"), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(None, Some("0.5"), now),
            Some(Duration::from_millis(500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(None, Some(&date), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(None, Some(&past), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(Some("soon"), Some("later"), now), None);
        assert_eq!(parse_retry_after(None, Some("-3"), now), None);
        assert_eq!(parse_retry_after(None, None, now), None);
    }
}
