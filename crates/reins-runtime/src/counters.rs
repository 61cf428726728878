//! Host-kept counters behind the `counter-add` import.
//!
//! Plugins are stateless (a fresh instance per call), so anything that must
//! outlive a call — a daily budget, a rate window — lives here, keyed by the
//! plugin's name so that one plugin cannot read or spend another's counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where counters live. The in-memory store serves one process; a shared
/// database store lets many hosts enforce one budget.
pub trait CounterStore: Send + Sync {
    /// Adds `delta` to `key` within `scope` and returns the total over the
    /// last `window` (`None` = no window: a plain running total).
    fn add(&self, scope: &str, key: &str, delta: i64, window: Option<Duration>) -> i64;
}

/// A process-local sliding-window counter store.
#[derive(Default)]
pub struct MemoryCounters {
    inner: Mutex<HashMap<(String, String), Series>>,
}

#[derive(Default)]
struct Series {
    events: VecDeque<(Instant, i64)>,
    total: i64,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CounterStore for MemoryCounters {
    fn add(&self, scope: &str, key: &str, delta: i64, window: Option<Duration>) -> i64 {
        let now = Instant::now();
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let series = map.entry((scope.to_string(), key.to_string())).or_default();
        if let Some(window) = window {
            while let Some(&(at, d)) = series.events.front() {
                if now.duration_since(at) < window {
                    break;
                }
                series.total = series.total.saturating_sub(d);
                series.events.pop_front();
            }
            // A negative add that matches an earlier positive one is a
            // release: cancel that event, so it does not outlive it in the window.
            let cancel = (delta < 0)
                .then(|| series.events.iter().rposition(|&(_, d)| d == -delta))
                .flatten();
            match cancel {
                Some(i) => {
                    series.events.remove(i);
                }
                // A negative add that cancels nothing (its add already left
                // the window) is not a credit for the next window.
                None if delta < 0 => return series.total,
                None => series.events.push_back((now, delta)),
            }
        }
        series.total = series.total.saturating_add(delta);
        series.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_isolated_and_windows_expire() {
        let c = MemoryCounters::new();
        assert_eq!(c.add("a", "k", 5, None), 5);
        assert_eq!(c.add("a", "k", 2, None), 7);
        assert_eq!(c.add("b", "k", 1, None), 1);
        let w = Some(Duration::from_millis(30));
        assert_eq!(c.add("a", "w", 3, w), 3);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.add("a", "w", 1, w), 1);
    }

    #[test]
    fn a_release_cancels_its_reservation_in_the_window() {
        let c = MemoryCounters::new();
        let w = Some(Duration::from_millis(30));
        assert_eq!(c.add("a", "b", 100, w), 100);
        assert_eq!(c.add("a", "b", 40, w), 140);
        assert_eq!(c.add("a", "b", -40, w), 100);
        std::thread::sleep(Duration::from_millis(40));
        // Both the reservation and its release are gone, not just the +100.
        assert_eq!(c.add("a", "b", 0, w), 0);
        // A release after its add left the window credits nothing.
        assert_eq!(c.add("a", "b", -100, w), 0);
        assert_eq!(c.add("a", "b", 5, w), 5);
    }
}
