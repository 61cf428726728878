//! Where a pipeline's context comes from: the `[retrievers]` of the config,
//! each a source behind one narrow call ([`Retriever::search`]), and the
//! fusion of several into one ranked list ([`retrieve`]).
//!
//! The indexes themselves (chunking, the BM25 index and its watcher, the
//! pgvector table) live in `reins-context`; this module composes them with
//! the host's providers (embeddings through a provider's [`Breaker`]) and
//! turns what they found into the [`Chunk`]s the context builder sees.

mod embedder;

pub use embedder::ProviderEmbedder;

use crate::config::{ConfigError, RetrieverConfig};
use crate::provider::Breaker;
use reins_context::{Bm25Index, ChunkOptions, Counter, Hit};
use reins_runtime::Chunk;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a retriever could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("retriever `{retriever}`: {message}")]
pub struct RetrievalError {
    pub retriever: String,
    pub message: String,
}

/// One `[retrievers.NAME]`, open.
pub struct Retriever {
    name: String,
    config: RetrieverConfig,
    source: Source,
}

enum Source {
    Bm25(Arc<Bm25Index>),
    #[cfg(feature = "postgres")]
    Pg(Box<PgSource>),
}

/// A pgvector table, connected (and synced with its folder) on first use:
/// the config is read without a runtime, and a database that is down at
/// start must not keep the rest of the host from serving.
#[cfg(feature = "postgres")]
struct PgSource {
    config: crate::config::PgVectorConfig,
    base_dir: PathBuf,
    embedder: Arc<ProviderEmbedder>,
    store: tokio::sync::OnceCell<reins_context::PgVectorStore>,
}

/// The token counter chunks are cut with: the `o200k_base` tokenizer, for
/// every retriever alike (an index is shared by pipelines of any model).
pub fn chunk_counter() -> Counter {
    Arc::new(|text: &str| reins_runtime::Tokenizer::O200k.count(text))
}

impl Retriever {
    /// Opens the source a config entry describes. A BM25 index is built (or
    /// brought up to date) now; a pgvector table on first use.
    pub fn open(
        name: &str,
        config: &RetrieverConfig,
        origin: &Path,
        base_dir: &Path,
        providers: &BTreeMap<String, Arc<Breaker>>,
    ) -> Result<Retriever, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key: format!("retrievers.{name}.{key}"),
            message,
        };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base_dir.join(p)
            }
        };
        let source = match config {
            RetrieverConfig::Bm25(c) => {
                let docs = resolve(&c.path);
                if !docs.is_dir() {
                    return Err(invalid(
                        "path",
                        format!(
                            "{} is not a folder: point path at the folder of Markdown and text documents",
                            docs.display()
                        ),
                    ));
                }
                let index_dir = c.index_dir.as_deref().map(resolve);
                let index = Bm25Index::open(
                    &docs,
                    index_dir.as_deref(),
                    options(config),
                    chunk_counter(),
                )
                .map_err(|e| invalid("path", e.to_string()))?;
                if c.watch {
                    index
                        .watch(Duration::from_millis(300))
                        .map_err(|e| invalid("watch", e.to_string()))?;
                }
                let stats = index.stats();
                tracing::info!(
                    retriever = name,
                    documents = stats.documents,
                    chunks = stats.passages,
                    "BM25 index ready"
                );
                Source::Bm25(index)
            }
            #[cfg(feature = "postgres")]
            RetrieverConfig::Pgvector(c) => {
                let breaker = providers.get(&c.embeddings.provider).ok_or_else(|| {
                    invalid(
                        "embeddings.provider",
                        format!("provider `{}` is not defined", c.embeddings.provider),
                    )
                })?;
                Source::Pg(Box::new(PgSource {
                    config: c.clone(),
                    base_dir: base_dir.to_owned(),
                    embedder: Arc::new(ProviderEmbedder::new(
                        breaker.clone(),
                        c.embeddings.model.clone(),
                        c.dimensions,
                        c.embeddings.batch,
                        c.embeddings.cache_entries,
                    )),
                    store: tokio::sync::OnceCell::new(),
                }))
            }
            #[cfg(not(feature = "postgres"))]
            RetrieverConfig::Pgvector(_) => {
                let _ = providers;
                return Err(invalid(
                    "kind",
                    "this build has no PostgreSQL support: build reins-core with the `postgres` feature".into(),
                ));
            }
        };
        Ok(Retriever {
            name: name.to_owned(),
            config: config.clone(),
            source,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }

    /// The config entry it was opened from (a reload keeps a retriever
    /// whose entry did not change).
    pub fn config(&self) -> &RetrieverConfig {
        &self.config
    }

    /// Connects and syncs a pgvector table now rather than on the first
    /// run (the host does it at start, so a bad URL is said at once).
    pub async fn prepare(&self) -> Result<(), RetrievalError> {
        match &self.source {
            Source::Bm25(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Source::Pg(pg) => pg.store(&self.name).await.map(|_| ()),
        }
    }

    /// The best `k` passages for `query`, best first, with scores in
    /// (0, 1]: BM25 scores are divided by the best one's, vector scores are
    /// cosine similarities.
    pub async fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, RetrievalError> {
        let failed = |e: reins_context::ContextError| RetrievalError {
            retriever: self.name.clone(),
            message: e.to_string(),
        };
        match &self.source {
            Source::Bm25(index) => {
                let index = index.clone();
                let query = query.to_owned();
                let mut hits = tokio::task::spawn_blocking(move || index.search(&query, k))
                    .await
                    .map_err(|e| RetrievalError {
                        retriever: self.name.clone(),
                        message: format!("the search task failed: {e}"),
                    })?
                    .map_err(failed)?;
                let top = hits.first().map_or(1.0, |h| h.score).max(f32::MIN_POSITIVE);
                for h in &mut hits {
                    h.score /= top;
                }
                Ok(hits)
            }
            #[cfg(feature = "postgres")]
            Source::Pg(pg) => pg
                .store(&self.name)
                .await?
                .search(query, k)
                .await
                .map_err(failed),
        }
    }
}

#[cfg(feature = "postgres")]
impl PgSource {
    async fn store(&self, name: &str) -> Result<&reins_context::PgVectorStore, RetrievalError> {
        self.store
            .get_or_try_init(|| async {
                let failed = |message: String| RetrievalError {
                    retriever: name.to_owned(),
                    message,
                };
                let url = match (&self.config.url, &self.config.url_env) {
                    (Some(u), _) => u.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        failed(format!(
                            "environment variable {var} (url_env) is not set: set it to the postgres:// URL"
                        ))
                    })?,
                    (None, None) => return Err(failed("no url".into())),
                };
                let store = reins_context::PgVectorStore::connect(
                    &url,
                    &self.config.table,
                    self.config.dimensions,
                    self.embedder.clone(),
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
                if let Some(path) = &self.config.path {
                    let docs = if path.is_absolute() {
                        path.clone()
                    } else {
                        self.base_dir.join(path)
                    };
                    let counter = chunk_counter();
                    let report = store
                        .sync_folder(
                            &docs,
                            &options(&crate::config::RetrieverConfig::Pgvector(
                                self.config.clone(),
                            )),
                            &*counter,
                        )
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    tracing::info!(retriever = name, ?report, "pgvector table in step with its folder");
                }
                Ok(store)
            })
            .await
    }
}

fn options(config: &RetrieverConfig) -> ChunkOptions {
    let c = config.chunking();
    ChunkOptions {
        max_tokens: c.chunk_tokens,
        overlap_tokens: c.overlap_tokens,
    }
}

/// What one retriever did for a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SourceReport {
    pub retriever: String,
    pub kind: String,
    pub hits: usize,
    pub duration_us: u64,
}

/// What a run's retrievers found, fused.
pub struct Retrieved {
    /// Best first.
    pub chunks: Vec<Chunk>,
    pub sources: Vec<SourceReport>,
}

/// Asks every retriever for `top_k` passages and fuses the lists by
/// reciprocal rank when there are several. Any retriever failing fails the
/// whole: an answer without the context it was meant to have is worse than
/// an error that says which source is down.
pub async fn retrieve(
    retrievers: &[Arc<Retriever>],
    query: &str,
    top_k: usize,
    rrf_k: f32,
) -> Result<Retrieved, RetrievalError> {
    let searches = retrievers.iter().map(|r| async move {
        let start = Instant::now();
        let hits = r.search(query, top_k).await?;
        Ok::<_, RetrievalError>((r, hits, start.elapsed()))
    });
    let lists = futures_util::future::join_all(searches).await;
    let mut sources = Vec::with_capacity(lists.len());
    let mut ranked: Vec<Vec<Hit>> = Vec::with_capacity(lists.len());
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for list in lists {
        let (r, hits, took) = list?;
        sources.push(SourceReport {
            retriever: r.name().to_owned(),
            kind: r.kind().to_owned(),
            hits: hits.len(),
            duration_us: took.as_micros() as u64,
        });
        for h in &hits {
            owners
                .entry(h.passage.id.clone())
                .or_insert_with(|| r.name().to_owned());
        }
        ranked.push(hits);
    }
    let fused = if ranked.len() == 1 {
        ranked.pop().unwrap_or_default()
    } else {
        // The best a passage can score is first in every list.
        let best = ranked.len() as f32 / (rrf_k + 1.0);
        let mut fused = reins_context::reciprocal_rank_fusion(&ranked, rrf_k);
        for h in &mut fused {
            h.score /= best;
        }
        fused
    };
    let chunks = fused
        .into_iter()
        .take(top_k.saturating_mul(retrievers.len().max(1)))
        .map(|h| {
            let owner = owners.get(&h.passage.id).cloned().unwrap_or_default();
            chunk_of(&owner, h)
        })
        .collect();
    Ok(Retrieved { chunks, sources })
}

/// A passage as the context builder and the model see it: its heading
/// trail on the first line (the model reads where it comes from), the
/// source as `RETRIEVER:PATH` (per-source caps count documents).
fn chunk_of(retriever: &str, hit: Hit) -> Chunk {
    let p = hit.passage;
    let text = if p.heading.is_empty() {
        p.text
    } else {
        format!("{}\n{}", p.heading, p.text)
    };
    Chunk {
        id: p.id,
        text,
        score: hit.score,
        source: format!("{retriever}:{}", p.path),
    }
}
