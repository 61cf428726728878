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
