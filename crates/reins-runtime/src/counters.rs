//! Host-kept counters behind the `counter-add` import.
//!
//! Plugins are stateless (a fresh instance per call), so anything that must
//! outlive a call — a daily budget, a rate window — lives here, keyed by the
//! plugin's name so that one plugin cannot read or spend another's counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys of one plugin's counters that become `reins_budget_used`
/// series. Keys are the plugin's choice (`spend-limit`: one per tenant), and
/// a plugin is untrusted: past this many, a new key is counted but not
/// exported, so the scrape stays bounded.
pub const METERED_KEYS_PER_PLUGIN: usize = 100;

/// The plugins' counters, exported: every `add` (a plugin's `counter-add`,
/// a released [`crate::Reservation`]) sets `reins_budget_used{plugin, key}`
/// to the new total. Wraps the store the runtime was given, so the stores
/// (memory or shared) know nothing of metrics and every change is seen in
/// one place; each series' gauge is registered once.
pub(crate) struct Metered {
    inner: std::sync::Arc<dyn CounterStore>,
    gauges: Mutex<HashMap<String, HashMap<String, metrics::Gauge>>>,
}

impl Metered {
    pub(crate) fn new(inner: std::sync::Arc<dyn CounterStore>) -> Metered {
        Metered {
            inner,
            gauges: Mutex::default(),
        }
    }

    /// The gauge of `scope`'s `key`; `None` past the cap.
    fn gauge(&self, scope: &str, key: &str) -> Option<metrics::Gauge> {
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let keys = match gauges.get_mut(scope) {
            Some(k) => k,
            None => gauges.entry(scope.to_owned()).or_default(),
        };
        if let Some(g) = keys.get(key) {
            return Some(g.clone());
        }
        if keys.len() >= METERED_KEYS_PER_PLUGIN {
            return None;
        }
        let g = metrics::gauge!(crate::metric_names::BUDGET_USED, "plugin" => scope.to_owned(), "key" => key.to_owned());
        keys.insert(key.to_owned(), g.clone());
        if keys.len() == METERED_KEYS_PER_PLUGIN {
            tracing::warn!(
                plugin = scope,
                "plugin counters: {METERED_KEYS_PER_PLUGIN} keys exported as {}; further keys are counted but not exported",
                crate::metric_names::BUDGET_USED
            );
        }
        Some(g)
    }
}

impl CounterStore for Metered {
    fn add(&self, scope: &str, key: &str, delta: i64, window: Option<Duration>) -> i64 {
        let total = self.inner.add(scope, key, delta, window);
        if let Some(g) = self.gauge(scope, key) {
            g.set(total as f64);
        }
        total
    }
}

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
    inner: Mutex<HashMap<(String, String), Window>>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CounterStore for MemoryCounters {
    fn add(&self, scope: &str, key: &str, delta: i64, window: Option<Duration>) -> i64 {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let series = map.entry((scope.to_string(), key.to_string())).or_default();
        match window {
            Some(window) => series.add(Instant::now(), delta, window),
            None => series.add_unwindowed(delta),
        }
    }
}

/// One sliding-window counter in process memory: what `counter-add` with a
/// window and the per-pipeline rate limits count with. (The state store
/// keeps the same algorithm in SQL, for counters shared between nodes.)
#[derive(Debug, Default)]
pub struct Window {
    events: VecDeque<(Instant, i64)>,
    total: i64,
}

impl Window {
    /// Drops the events that have left the window at `now`.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, d)) = self.events.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.total = self.total.saturating_sub(d);
            self.events.pop_front();
        }
    }

    /// Adds `delta` at `now` and returns the total of the last `window`.
    pub fn add(&mut self, now: Instant, delta: i64, window: Duration) -> i64 {
        self.expire(now, window);
        // A negative add that matches an earlier positive one is a
        // release: cancel that event, so it does not outlive it in the window.
        let cancel = (delta < 0)
            .then(|| self.events.iter().rposition(|&(_, d)| d == -delta))
            .flatten();
        match cancel {
            Some(i) => {
                self.events.remove(i);
            }
            // A negative add that cancels nothing (its add already left
            // the window) is not a credit for the next window.
            None if delta < 0 => return self.total,
            None => self.events.push_back((now, delta)),
        }
        self.total = self.total.saturating_add(delta);
        self.total
    }

    /// Adds `delta` to the total with no window (a plain running total).
    pub fn add_unwindowed(&mut self, delta: i64) -> i64 {
        self.total = self.total.saturating_add(delta);
        self.total
    }

    /// The total as of the last add or expiry.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// When the oldest event in the window was added: it leaves first.
    pub fn oldest(&self) -> Option<Instant> {
        self.events.front().map(|&(at, _)| at)
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
