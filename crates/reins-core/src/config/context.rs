//! `[retrievers.NAME]` (where context comes from) and a pipeline's
//! `context` and `history` (how much of it, and of the conversation, the
//! model is given).

use super::*;

/// One retrieval source pipelines name in `context.retrievers`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RetrieverConfig {
    /// An embedded full-text (BM25) index over a folder of Markdown and
    /// text files, kept up to date by a watcher. Needs no other service.
    Bm25(Bm25Config),
    /// PostgreSQL with the `pgvector` extension; embeddings come from an
    /// OpenAI-compatible provider.
    Pgvector(PgVectorConfig),
}

impl RetrieverConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            RetrieverConfig::Bm25(_) => "bm25",
            RetrieverConfig::Pgvector(_) => "pgvector",
        }
    }

    pub fn chunking(&self) -> &Chunking {
        match self {
            RetrieverConfig::Bm25(c) => &c.chunking,
            RetrieverConfig::Pgvector(c) => &c.chunking,
        }
    }
}

/// How documents are cut into chunks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// The most tokens of one chunk (in the `o200k_base` tokenizer).
    #[serde(default = "defaults::chunk_tokens")]
    pub chunk_tokens: usize,
    /// Tokens a chunk repeats from the end of the one before it.
    #[serde(default = "defaults::overlap_tokens")]
    pub overlap_tokens: usize,
}

/// `kind = "bm25"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25Config {
    /// The folder of documents (`*.md`, `*.markdown`, `*.txt`, recursively).
    pub path: PathBuf,
    /// Where the index is kept across restarts (only changed files are
    /// indexed again at start); none: in memory, built at start.
    #[serde(default)]
    pub index_dir: Option<PathBuf>,
    /// Re-index a file when it changes.
    #[serde(default = "defaults::yes")]
    pub watch: bool,
    #[serde(flatten)]
    pub chunking: Chunking,
}

/// `kind = "pgvector"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgVectorConfig {
    /// `postgres://…`; or `url_env`, the variable that holds it.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// The table of chunks and their vectors (created when missing).
    #[serde(default = "defaults::pgvector_table")]
    pub table: String,
    /// The length of the embedding model's vectors.
    pub dimensions: usize,
    pub embeddings: EmbeddingsConfig,
    /// A folder of documents to keep the table in step with (at start,
    /// re-embedding only changed chunks); none: the table is filled by
    /// someone else.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(flatten)]
    pub chunking: Chunking,
}

/// Where a retriever's embeddings come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// A `kind = "openai"` provider: its `/embeddings`, with its retries,
    /// breaker and admission.
    pub provider: String,
    /// The embedding model (default: the provider's `model`).
    #[serde(default)]
    pub model: Option<String>,
    /// Texts per call.
    #[serde(default = "defaults::embed_batch")]
    pub batch: usize,
    /// Embeddings kept in memory, by model and text (queries repeat).
    #[serde(default = "defaults::embed_cache")]
    pub cache_entries: usize,
}

/// A pipeline's `context = { retrievers = ["docs"], budget_tokens = 2000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// The context builder (default: the bundled `context-budget`).
    #[serde(default = "defaults::context_plugin")]
    pub plugin: String,
    #[serde(default = "defaults::context_budget")]
    pub budget_tokens: u32,
    /// `[retrievers]` asked for every run, with the latest user message as
    /// the query; two or more are fused by reciprocal rank.
    #[serde(default)]
    pub retrievers: Vec<String>,
    /// Chunks asked of each retriever.
    #[serde(default = "defaults::top_k")]
    pub top_k: usize,
    /// The `k` of reciprocal rank fusion (a chunk scores 1/(k + rank)).
    #[serde(default = "defaults::rrf_k")]
    pub rrf_k: f32,
    /// This pipeline's settings of the plugin (see [`PluginEntry`]).
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    #[serde(default)]
    pub config_file: Option<PathBuf>,
}

/// A pipeline's `history = { budget_tokens = 3000, overflow = "summarize" }`:
/// what happens to a conversation longer than the budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// The most tokens the request's messages may take.
    pub budget_tokens: u32,
    /// `drop` (default): the middle turns are left out. `summarize`: they
    /// are replaced by a summary (cached by the conversation's prefix).
    #[serde(default)]
    pub overflow: HistoryOverflow,
    /// The provider that summarizes (default: the pipeline's model).
    #[serde(default)]
    pub model: Option<String>,
    /// A ceiling on the summary.
    #[serde(default = "defaults::summary_tokens")]
    pub summary_tokens: u32,
    /// Summaries kept in memory.
    #[serde(default = "defaults::summary_cache")]
    pub cache_entries: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryOverflow {
    #[default]
    Drop,
    Summarize,
}

impl HistoryOverflow {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOverflow::Drop => "drop",
            HistoryOverflow::Summarize => "summarize",
        }
    }
}

impl Config {
    /// The `[retrievers]` and `context` / `history` checks that need the
    /// whole file.
    pub(super) fn check_context(&self, errors: &mut Vec<ConfigError>) {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: self.origin.clone(),
            key,
            message,
        };
        for (name, r) in &self.retrievers {
            let key = |k: &str| format!("retrievers.{name}.{k}");
            let c = r.chunking();
            if c.chunk_tokens < 16 {
                errors.push(invalid(key("chunk_tokens"), "must be at least 16".into()));
            }
            if c.overlap_tokens >= c.chunk_tokens {
                errors.push(invalid(
                    key("overlap_tokens"),
                    format!("must be less than chunk_tokens ({})", c.chunk_tokens),
                ));
            }
            if let RetrieverConfig::Pgvector(p) = r {
                if p.url.is_some() == p.url_env.is_some() {
                    errors.push(invalid(
                        key("url"),
                        "set url or url_env (the variable that holds it), one of them".into(),
                    ));
                }
                if p.dimensions == 0 {
                    errors.push(invalid(key("dimensions"), "must be at least 1".into()));
                }
                if p.embeddings.batch == 0 {
                    errors.push(invalid(
                        key("embeddings.batch"),
                        "must be at least 1".into(),
                    ));
                }
                match self.providers.get(&p.embeddings.provider) {
                    None => errors.push(ConfigError::UnknownProvider {
                        path: self.origin.clone(),
                        key: key("embeddings.provider"),
                        provider: p.embeddings.provider.clone(),
                        known: known(self.providers.keys()),
                    }),
                    Some(ProviderConfig::Openai(_)) => {}
                    Some(other) => errors.push(invalid(
                        key("embeddings.provider"),
                        format!(
                            "provider `{}` is kind = \"{}\", which serves no embeddings: name a kind = \"openai\" provider (an OpenAI-compatible /v1/embeddings)",
                            p.embeddings.provider,
                            other.kind()
                        ),
                    )),
                }
            }
        }
        for (name, p) in &self.pipelines {
            let key = |k: &str| format!("pipelines.{name}.{k}");
            if let Some(c) = &p.context {
                for r in &c.retrievers {
                    if !self.retrievers.contains_key(r) {
                        errors.push(invalid(
                            key("context.retrievers"),
                            format!(
                                "names retriever `{r}`, which is not defined (retrievers: {}): add [retrievers.{r}]",
                                known(self.retrievers.keys())
                            ),
                        ));
                    }
                }
                if c.top_k == 0 {
                    errors.push(invalid(key("context.top_k"), "must be at least 1".into()));
                }
                if c.rrf_k.is_nan() || c.rrf_k < 0.0 {
                    errors.push(invalid(
                        key("context.rrf_k"),
                        "must be a number of at least 0 (60 is usual)".into(),
                    ));
                }
            }
            if let Some(h) = &p.history {
                if h.budget_tokens == 0 {
                    errors.push(invalid(
                        key("history.budget_tokens"),
                        "must be at least 1".into(),
                    ));
                }
                if let Some(m) = &h.model
                    && !self.providers.contains_key(m)
                {
                    errors.push(ConfigError::UnknownProvider {
                        path: self.origin.clone(),
                        key: key("history.model"),
                        provider: m.clone(),
                        known: known(self.providers.keys()),
                    });
                }
            }
        }
    }
}
