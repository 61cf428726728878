//! Per-pipeline request and token limits per caller key, over a sliding
//! window. A refused run answers 429 with `Retry-After` on HTTP.
//!
//! The windows live in this process, or (with `[state] shared_counters`,
//! the default on PostgreSQL) in the state store, so every node on it
//! counts against one limit. Shared windows answer `Retry-After` with the
//! whole window: the store keeps totals, not the moment the oldest entry
//! leaves.

use crate::config::RateLimitConfig;
use reins_runtime::{CounterStore, Window};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The caller key of a request: the configured key of the (effective)
/// caller, as text — never the body's word, unless the pipeline trusts it.
pub fn limit_key(limits: &RateLimitConfig, caller: &reins_runtime::Caller) -> String {
    match caller.get(&limits.key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "anonymous".to_owned(),
    }
}

/// Sliding windows of runs and tokens, per pipeline and caller key.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<(String, String), Caller>>,
    shared: Option<Arc<dyn CounterStore>>,
}

/// One caller's windows on one pipeline.
#[derive(Default)]
struct Caller {
    runs: Window,
    tokens: Window,
}

/// A pipeline's limit window.
fn window_of(limits: &RateLimitConfig) -> Duration {
    Duration::from_secs(u64::from(limits.window_seconds.max(1)))
}

/// The counter scope of a pipeline's limits, and a caller's keys in it.
fn shared_keys(pipeline: &str, key: &str) -> (String, String, String) {
    (
        format!("limits:{pipeline}"),
        format!("{key}\u{1f}runs"),
        format!("{key}\u{1f}tokens"),
    )
}

impl RateLimiter {
    /// Windows in `shared` when given, else in this process.
    pub fn new(shared: Option<Arc<dyn CounterStore>>) -> Self {
        RateLimiter {
            windows: Mutex::default(),
            shared,
        }
    }

    /// Admits one run, or says in how many seconds to retry.
    pub fn admit(&self, pipeline: &str, key: &str, limits: &RateLimitConfig) -> Result<(), u64> {
        let window = window_of(limits);
        if let Some(counters) = &self.shared {
            let (scope, runs, tokens) = shared_keys(pipeline, key);
            let refuse = window.as_secs();
            if let Some(max) = limits.tokens {
                let spent = counters.add(&scope, &tokens, 0, Some(window));
                if spent < 0 || spent as u64 >= max {
                    return Err(refuse);
                }
            }
            if let Some(max) = limits.requests {
                let total = counters.add(&scope, &runs, 1, Some(window));
                if total < 0 || total as u64 > max {
                    counters.add(&scope, &runs, -1, Some(window));
                    return Err(refuse);
                }
            }
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map
            .entry((pipeline.to_owned(), key.to_owned()))
            .or_default();
        w.runs.expire(now, window);
        w.tokens.expire(now, window);
        let retry = |since: Instant| {
            window
                .saturating_sub(now.duration_since(since))
                .as_secs()
                .max(1)
        };
        let over = |w: &Window, max: u64| u64::try_from(w.total()).unwrap_or(0) >= max;
        if let Some(max) = limits.requests {
            if over(&w.runs, max) {
                return Err(w.runs.oldest().map_or(1, retry));
            }
        }
        if let Some(max) = limits.tokens {
            if over(&w.tokens, max) {
                return Err(w.tokens.oldest().map_or(1, retry));
            }
        }
        w.runs.add(now, 1, window);
        Ok(())
    }

    /// Records the tokens a finished run spent.
    pub fn spend_tokens(&self, pipeline: &str, key: &str, limits: &RateLimitConfig, tokens: u64) {
        if limits.tokens.is_none() || tokens == 0 {
            return;
        }
        let spent = i64::try_from(tokens).unwrap_or(i64::MAX);
        if let Some(counters) = &self.shared {
            let (scope, _, key) = shared_keys(pipeline, key);
            counters.add(&scope, &key, spent, Some(window_of(limits)));
            return;
        }
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((pipeline.to_owned(), key.to_owned()))
            .or_default()
            .tokens
            .add(Instant::now(), spent, window_of(limits));
    }
}
