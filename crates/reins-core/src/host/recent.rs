//! Recently finished runs, in front of the store.
//!
//! The store owns every run; this only saves a read for `GET /v1/runs/{id}`
//! right after a run ends. It keeps finished runs alone (completed, failed,
//! rejected): their results never change, so a cached copy cannot go
//! stale, while a running or held run is always read from the store, where
//! another node may have moved it on.

use lru::LruCache;
use serde_json::Value;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

pub(super) struct RecentRuns {
    runs: Mutex<LruCache<String, Arc<Value>>>,
}

impl RecentRuns {
    pub fn new(capacity: usize) -> RecentRuns {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RecentRuns {
            runs: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<Value>> {
        self.lock().get(run_id).cloned()
    }

    /// Keeps `result` if its run is finished.
    pub fn offer(&self, run_id: &str, status: reins_state::RunStatus, result: Value) {
        if status.is_finished() {
            self.lock().put(run_id.to_owned(), Arc::new(result));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<Value>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
