//! Recently finished runs, in front of the store.
//!
//! The store owns every run; this only saves a read for `GET /v1/runs/{id}`
//! right after a run ends. It keeps finished runs alone (completed, failed,
//! rejected, cancelled): their results never change, so a cached copy
//! cannot go stale, while a running or held run is always read from the
//! store, where another node may have moved it on.
//!
//! It is bounded twice: by count (`[state] recent_runs`) and by bytes
//! (`[state] recent_runs_bytes`), since one run with a long conversation
//! and many attempts can weigh as much as thousands of small ones. An entry
//! weighs the length of its JSON, counted once when it is kept.

use lru::LruCache;
use serde_json::Value;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

pub(super) struct RecentRuns {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

struct Inner {
    runs: LruCache<String, Entry>,
    /// The weights of `runs` together.
    bytes: usize,
}

struct Entry {
    result: Arc<Value>,
    weight: usize,
}

impl RecentRuns {
    pub fn new(capacity: usize, max_bytes: usize) -> RecentRuns {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RecentRuns {
            inner: Mutex::new(Inner {
                runs: LruCache::new(capacity),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<Value>> {
        self.lock().runs.get(run_id).map(|e| e.result.clone())
    }

    /// Keeps `result` if its run is finished and it fits the byte bound by
    /// itself; the least recently read runs make room for it.
    pub fn offer(&self, run_id: &str, status: reins_state::RunStatus, result: Value) {
        if !status.is_finished() {
            return;
        }
        let weight = json_len(&result);
        let mut inner = self.lock();
        if weight > self.max_bytes {
            // Never kept: but an older copy under this id must not linger.
            if let Some(old) = inner.runs.pop(run_id) {
                inner.bytes -= old.weight;
            }
            return;
        }
        let entry = Entry {
            result: Arc::new(result),
            weight,
        };
        // `push` hands back what it replaced or evicted (the count bound).
        if let Some((_, old)) = inner.runs.push(run_id.to_owned(), entry) {
            inner.bytes -= old.weight;
        }
        inner.bytes += weight;
        while inner.bytes > self.max_bytes {
            match inner.runs.pop_lru() {
                Some((_, old)) => inner.bytes -= old.weight,
                None => break,
            }
        }
    }

    /// Runs kept and their weight together.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.runs.len(), inner.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The length of `value` as JSON, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use reins_state::RunStatus;

    fn run(n: usize, size: usize) -> Value {
        serde_json::json!({"run_id": format!("r{n}"), "output": "x".repeat(size)})
    }

    #[test]
    fn many_large_runs_stay_under_the_byte_bound() {
        let max = 1 << 20;
        let recent = RecentRuns::new(1_000, max);
        for n in 0..500 {
            recent.offer(&format!("r{n}"), RunStatus::Completed, run(n, 50_000));
            let (_, bytes) = recent.usage();
            assert!(bytes <= max, "{bytes} bytes kept after run {n}");
        }
        let (count, bytes) = recent.usage();
        // About 20 runs of 50 kB fit in 1 MiB; the count bound (1,000) never bit.
        assert!((15..=21).contains(&count), "{count} runs kept");
        assert!(
            bytes > max - 60_000,
            "the bound is used, not undershot: {bytes}"
        );
        assert!(recent.get("r499").is_some(), "the newest is kept");
        assert!(recent.get("r0").is_none(), "the oldest went");
    }

    #[test]
    fn weights_follow_replacements_evictions_and_outsized_runs() {
        let recent = RecentRuns::new(2, 10_000);
        recent.offer("a", RunStatus::Completed, run(0, 1_000));
        recent.offer("a", RunStatus::Completed, run(0, 2_000));
        assert_eq!(recent.usage(), (1, json_len(&run(0, 2_000))));
        recent.offer("b", RunStatus::Failed, run(1, 100));
        recent.offer("c", RunStatus::Cancelled, run(2, 100));
        // The count bound evicted `a`, and its weight with it.
        assert_eq!(recent.usage(), (2, 2 * json_len(&run(1, 100))));
        // Larger than the whole bound: not kept, and the older copy goes.
        recent.offer("c", RunStatus::Completed, run(2, 20_000));
        assert!(recent.get("c").is_none());
        assert_eq!(recent.usage(), (1, json_len(&run(1, 100))));
        // A running run is never kept.
        recent.offer("d", RunStatus::Running, run(3, 10));
        assert!(recent.get("d").is_none());
    }
}
