//! Embeddings for the vector store, from a provider of the config: the
//! call goes through the provider's [`Breaker`] (admission, retries,
//! circuit breaker), and vectors are kept in memory by model and text,
//! because the same queries and the same unchanged chunks come back.

use crate::provider::{Breaker, EmbedRequest};
use lru::LruCache;
use reins_context::{EmbedError, Embedder};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// An [`Embedder`] over an OpenAI-compatible provider.
pub struct ProviderEmbedder {
    breaker: Arc<Breaker>,
    model: Option<String>,
    dimensions: usize,
    batch: usize,
    cache: Option<Mutex<LruCache<String, Arc<[f32]>>>>,
}

impl ProviderEmbedder {
    pub fn new(
        breaker: Arc<Breaker>,
        model: Option<String>,
        dimensions: usize,
        batch: usize,
        cache_entries: usize,
    ) -> ProviderEmbedder {
        ProviderEmbedder {
            breaker,
            model,
            dimensions,
            batch: batch.max(1),
            cache: NonZeroUsize::new(cache_entries).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    fn cached(&self, text: &str) -> Option<Arc<[f32]>> {
        let cache = self.cache.as_ref()?;
        cache.lock().ok()?.get(text).cloned()
    }

    fn keep(&self, text: &str, vector: &[f32]) {
        if let Some(cache) = &self.cache
            && let Ok(mut cache) = cache.lock()
        {
            cache.put(text.to_owned(), Arc::from(vector));
        }
    }
}

#[async_trait::async_trait]
impl Embedder for ProviderEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out: Vec<Option<Vec<f32>>> = texts
            .iter()
            .map(|t| self.cached(t).map(|v| v.to_vec()))
            .collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        for batch in missing.chunks(self.batch) {
            let request = EmbedRequest {
                input: batch.iter().map(|&i| texts[i].clone()).collect(),
                model: self.model.clone(),
                dimensions: None,
                deadline: None,
                turn: Default::default(),
            };
            let answer = self
                .breaker
                .embed(&request)
                .await
                .map_err(|e| EmbedError(e.to_string()))?;
            for (&i, vector) in batch.iter().zip(answer.vectors) {
                if vector.len() != self.dimensions {
                    return Err(EmbedError(format!(
                        "provider `{}` answered vectors of {} dimensions, the retriever expects {}: set `dimensions = {}` or choose the embedding model the table was made with",
                        self.breaker.provider().name(),
                        vector.len(),
                        self.dimensions,
                        vector.len()
                    )));
                }
                self.keep(&texts[i], &vector);
                out[i] = Some(vector);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| EmbedError(format!("no embedding for input {i}"))))
            .collect()
    }
}
