//! Latency summaries for the benches' tables.

use std::time::Duration;

/// The `q` quantile of sorted durations; zero for none, so an empty run
/// still prints a row.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Whole microseconds: the unit the tables compare in.
pub fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// How [`median_ns`] samples: warm-up calls, calls per timed batch, and how
/// long to keep sampling (at least 15 batches, at most 200).
pub struct Sampling {
    pub warmup: u32,
    pub batch: u32,
    pub budget: Duration,
}

/// Median ns per call of `f` over timed batches: batches rather than single
/// calls, so the timer's own cost stays out of sub-microsecond calls.
pub fn median_ns(s: &Sampling, mut f: impl FnMut()) -> f64 {
    for _ in 0..s.warmup {
        f();
    }
    let mut samples = Vec::new();
    let start = std::time::Instant::now();
    while samples.len() < 15 || (start.elapsed() < s.budget && samples.len() < 200) {
        let t = std::time::Instant::now();
        for _ in 0..s.batch {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(s.batch.max(1)));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}
