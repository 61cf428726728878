//! The response cache: validated outputs by an exact hash of the
//! normalized request, in memory, bounded by a TTL and an entry count
//! (least recently used go first).
//!
//! The key is the SHA-256 of the pipeline's name, the conversation the model
//! is sent (system prompt, context, the normalized messages), the output
//! schema, the tools and the parameters of every provider of the chain
//! (model, sampling). Caller metadata is not part of it: the model never
//! sees it, and every cached answer is validated again (validators and
//! gates see this run's metadata) before it is served.
//!
//! Only outputs that passed validation, answered by a provider (not by the
//! cache or the static answer) and that propose no actions are stored.
//!
//! Behind the memory sits the run's state store (the response cache index):
//! [`remember`] writes an answer through to it off the request path, and
//! [`lookup`] asks it on a memory miss — so an answer survives a restart and
//! serves any node on the same database.

use crate::provider::ToolCall;
use reins_runtime::{Message, Tool};
use reins_state::StateStore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hash of a normalized request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of a request to `pipeline`.
    pub fn new(
        pipeline: &str,
        messages: &[Message],
        schema: Option<&Value>,
        tools: &[Tool],
        params: &[Value],
    ) -> Self {
        let doc = json!({
            "pipeline": pipeline,
            // Plain messages as [role, text]; anything more (tool calls, ids, parts) whole.
            "messages": messages.iter().map(|m| {
                if m.tool_calls.is_empty() && m.tool_call_id.is_none() && m.name.is_none() && m.parts.is_none() {
                    json!([m.role, m.content])
                } else {
                    json!(m)
                }
            }).collect::<Vec<_>>(),
            "schema": schema,
            "tools": tools.iter().map(|t| json!([t.name, t.parameters])).collect::<Vec<_>>(),
            "params": params,
        });
        CacheKey(Sha256::digest(doc.to_string().as_bytes()).into())
    }

    /// The whole hash in hex: the key in the state store.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for traces.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// A validated answer as it is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedAnswer {
    /// The validated output, as JSON text.
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// The provider and model that produced it.
    pub provider: String,
    pub model: String,
}

struct Entry {
    answer: Arc<CachedAnswer>,
    stored: Instant,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, Entry>,
    /// `used` tick → key, oldest first.
    lru: BTreeMap<u64, CacheKey>,
    tick: u64,
}

impl Inner {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.map.remove(key) {
            self.lru.remove(&e.used);
        }
    }
}

/// An in-memory cache of validated answers.
pub struct ResponseCache {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

impl ResponseCache {
    /// Same TTL and size: one can stand in for the other.
    pub(crate) fn same_bounds(&self, other: &ResponseCache) -> bool {
        self.ttl == other.ttl && self.max_entries == other.max_entries
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish()
    }
}

impl ResponseCache {
    pub fn new(ttl: Duration, max_entries: usize) -> ResponseCache {
        ResponseCache {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer stored under `key` and its age, unless it expired.
    pub fn get(&self, key: &CacheKey) -> Option<(Arc<CachedAnswer>, Duration)> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &CacheKey, now: Instant) -> Option<(Arc<CachedAnswer>, Duration)> {
        let mut inner = self.lock();
        let (stored, used) = {
            let e = inner.map.get(key)?;
            (e.stored, e.used)
        };
        let age = now.saturating_duration_since(stored);
        if age > self.ttl {
            inner.remove(key);
            return None;
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.lru.remove(&used);
        inner.lru.insert(tick, *key);
        let e = inner.map.get_mut(key)?;
        e.used = tick;
        Some((e.answer.clone(), age))
    }

    /// Stores `answer` under `key` (replacing what was there), evicting the
    /// least recently used entries beyond the bound.
    pub fn put(&self, key: CacheKey, answer: CachedAnswer) {
        self.put_at(key, answer, Instant::now());
    }

    fn put_at(&self, key: CacheKey, answer: CachedAnswer, now: Instant) {
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.map.len() >= self.max_entries {
            let Some((_, oldest)) = inner.lru.pop_first() else {
                break;
            };
            inner.map.remove(&oldest);
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.lru.insert(tick, key);
        inner.map.insert(
            key,
            Entry {
                answer: Arc::new(answer),
                stored: now,
                used: tick,
            },
        );
    }

    /// How long an answer may be served.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Entries held (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.lru.clear();
    }
}

/// The answer for `key`: from memory, else from the store's cache index
/// (then kept in memory for the rest of its time to live).
pub async fn lookup(
    cache: &ResponseCache,
    key: &CacheKey,
    store: &dyn StateStore,
) -> Option<(Arc<CachedAnswer>, Duration)> {
    if let Some(hit) = cache.get(key) {
        return Some(hit);
    }
    let now = reins_state::now_ms();
    let ttl_ms = i64::try_from(cache.ttl.as_millis()).unwrap_or(i64::MAX);
    let (stored, at) = match store
        .cache_get(&key.hex(), now.saturating_sub(ttl_ms))
        .await
    {
        Ok(found) => found?,
        Err(e) => {
            tracing::warn!("state store: response cache lookup failed: {e}");
            return None;
        }
    };
    let answer: CachedAnswer = serde_json::from_value(stored).ok()?;
    let age = Duration::from_millis(u64::try_from(now.saturating_sub(at)).unwrap_or(0));
    let stored_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    cache.put_at(*key, answer, stored_at);
    cache.get(key)
}

/// Stores `answer` in memory and, off the request path, in the store's cache index.
pub fn remember(
    cache: &ResponseCache,
    key: CacheKey,
    pipeline: &str,
    answer: CachedAnswer,
    store: Arc<dyn StateStore>,
) {
    if let Ok(value) = serde_json::to_value(&answer) {
        let pipeline = pipeline.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store
                .cache_put(&key.hex(), &pipeline, &value, reins_state::now_ms())
                .await
            {
                tracing::warn!("state store: cannot index a cached answer: {e}");
            }
        });
    }
    cache.put(key, answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> CacheKey {
        CacheKey::new(
            "p",
            &[Message::new("user", text)],
            None,
            &[],
            &[json!({"model": "m"})],
        )
    }

    fn answer(content: &str) -> CachedAnswer {
        CachedAnswer {
            content: content.into(),
            tool_calls: vec![],
            provider: "llm".into(),
            model: "m".into(),
        }
    }

    #[test]
    fn keys_are_exact_over_pipeline_messages_schema_tools_and_params() {
        let m = [Message::new("user", "hi")];
        let base = CacheKey::new("p", &m, None, &[], &[json!({"model": "m"})]);
        assert_eq!(
            base,
            CacheKey::new("p", &m, None, &[], &[json!({"model": "m"})])
        );
        assert_ne!(
            base,
            CacheKey::new("q", &m, None, &[], &[json!({"model": "m"})])
        );
        assert_ne!(
            base,
            CacheKey::new(
                "p",
                &[Message::new("user", "hi ")],
                None,
                &[],
                &[json!({"model": "m"})]
            )
        );
        assert_ne!(
            base,
            CacheKey::new(
                "p",
                &[Message::new("system", "hi")],
                None,
                &[],
                &[json!({"model": "m"})]
            )
        );
        assert_ne!(
            base,
            CacheKey::new(
                "p",
                &m,
                Some(&json!({"type": "object"})),
                &[],
                &[json!({"model": "m"})]
            )
        );
        assert_ne!(
            base,
            CacheKey::new(
                "p",
                &m,
                None,
                &[],
                &[json!({"model": "m", "temperature": 0.5})]
            )
        );
        assert_eq!(base.short().len(), 12);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = ResponseCache::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        c.put_at(key("a"), answer("1"), t0);
        let (hit, age) = c.get_at(&key("a"), t0 + Duration::from_secs(4)).unwrap();
        assert_eq!((hit.content.as_str(), age), ("1", Duration::from_secs(4)));
        assert!(c.get_at(&key("a"), t0 + Duration::from_secs(11)).is_none());
        assert!(c.is_empty(), "an expired entry is dropped when looked up");
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let c = ResponseCache::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        c.put_at(key("a"), answer("1"), t0);
        c.put_at(key("b"), answer("2"), t0);
        assert!(c.get_at(&key("a"), t0).is_some()); // b is now the oldest
        c.put_at(key("c"), answer("3"), t0);
        assert_eq!(c.len(), 2);
        assert!(c.get_at(&key("b"), t0).is_none());
        assert!(c.get_at(&key("a"), t0).is_some() && c.get_at(&key("c"), t0).is_some());
        // Replacing an entry does not grow the cache.
        c.put_at(key("c"), answer("4"), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get_at(&key("c"), t0).unwrap().0.content, "4");
        c.clear();
        assert!(c.is_empty());
    }
}
