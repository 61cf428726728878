//! Document retrieval for context building: the passages of a docs folder
//! that best answer a question, to put in front of a model.
//!
//! Two retrievers over the same passages, because they fail differently:
//! [`Bm25Index`] (tantivy, in-process, no model needed) finds exact words,
//! names and error codes; [`PgVectorStore`] (PostgreSQL with pgvector,
//! behind the `pgvector` feature) finds paraphrases through the host's
//! embedding model. [`reciprocal_rank_fusion`] merges their rankings without
//! having to reconcile their incomparable scores.
//!
//! Passages come from [`chunk_document`]: Markdown cut at headings, then
//! packed by paragraphs up to a token budget measured with the caller's
//! [`Counter`], so passages fit the model that reads them.

mod bm25;
mod chunk;
mod docs;
mod fusion;
#[cfg(feature = "pgvector")]
mod pg;

pub use bm25::{Bm25Index, IndexStats, RefreshReport, UpdateReport};
pub use chunk::{ChunkOptions, Counter, chunk_document, whitespace_counter};
pub use docs::{DOCUMENT_EXTENSIONS, MAX_DOCUMENT_BYTES, list_documents};
pub use fusion::reciprocal_rank_fusion;
#[cfg(feature = "pgvector")]
pub use pg::{MAX_INDEXED_DIMENSIONS, PgVectorStore, SyncReport};

/// A piece of a document, as indexed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Passage {
    /// `"{path}#{n}"`, `n` the 1-based ordinal of the chunk in its
    /// document, e.g. `"guide/install.md#3"`: stable while the document
    /// does not change, short enough for a model to cite.
    pub id: String,
    /// Path relative to the docs folder, '/' separators.
    pub path: String,
    /// Heading trail of the section, e.g. `"Install > Linux"` (`""` when none).
    pub heading: String,
    pub text: String,
}

/// A passage a retriever found, with its score (BM25, cosine similarity or
/// fused: comparable only within one ranking).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub passage: Passage,
    pub score: f32,
}

/// Embeddings for the vector store; the host implements it with its OpenAI-compatible `/v1/embeddings` provider.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why the embedder failed, in its own words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmbedError(pub String);

/// Why retrieval failed: each says what (file, folder, table, server) and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "docs folder {path}: {source}; check that it exists and that reins may read it (the docs path in the context settings)"
    )]
    DocsFolder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read document {path}: {source}; fix its permissions or move it out of the docs folder"
    )]
    ReadDocument {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not inside the docs folder {docs}: give a path under it, absolute or relative to it"
    )]
    OutsideDocs { path: String, docs: String },
    #[error(
        "this index was built from passages and has no docs folder, so it cannot {operation}: open it with Bm25Index::open to follow a folder"
    )]
    NoDocsFolder { operation: &'static str },
    #[error(
        "cannot create the search index folder {dir}: {source}; check the index path and its permissions"
    )]
    IndexDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "search index {dir} is locked by another writer: give each reins process its own index folder (if none is running, delete {dir}/.tantivy-writer.lock)"
    )]
    IndexLocked { dir: String },
    #[error(
        "search index {dir} was written in another layout (another version of reins): delete the folder; it is rebuilt from the docs at the next start"
    )]
    IndexLayout { dir: String },
    #[error("search index {location}: {source}")]
    Index {
        location: String,
        #[source]
        source: tantivy::TantivyError,
    },
    #[error(
        "cannot watch the docs folder {path}: {message} (on Linux, raise fs.inotify.max_user_watches if the limit is reached)"
    )]
    Watch { path: String, message: String },
    #[error("embedding failed: {0}; check the embeddings provider (model, URL, key)")]
    Embed(#[from] EmbedError),
    #[error(
        "the embedder answered wrongly: {0}; check that the embeddings model is the one configured"
    )]
    EmbeddingShape(String),
    #[cfg(feature = "pgvector")]
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}; check the URL, that the server runs and that it accepts this user"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[cfg(feature = "pgvector")]
    #[error("PostgreSQL at {url}, table {table}: {action}: {source}")]
    Database {
        url: String,
        table: String,
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "table name `{table}` is not a plain SQL identifier: use letters, digits and underscores, not starting with a digit, at most 63 of them, optionally as `schema.table`"
    )]
    InvalidTable { table: String },
    #[error(
        "{dimensions} embedding dimensions cannot be indexed: pgvector's HNSW index takes 1 to 2000 (ask the model for fewer, e.g. the `dimensions` parameter of OpenAI's text-embedding-3 models)"
    )]
    Dimensions { dimensions: usize },
    #[error(
        "the pgvector extension is not installed on the PostgreSQL server at {url}: install it on the database server (Debian/Ubuntu: apt install postgresql-{major}-pgvector; elsewhere see https://github.com/pgvector/pgvector#installation)"
    )]
    ExtensionMissing { url: String, major: String },
    #[error(
        "the pgvector extension is not enabled in the database at {url} and this user may not enable it: have a superuser run `CREATE EXTENSION vector;` in that database ({message})"
    )]
    ExtensionPermission { url: String, message: String },
    #[error(
        "table {table} holds {table_dimensions}-dimension embeddings but {dimensions} are configured: set dimensions = {table_dimensions} to keep using it with the model that filled it, or use a new table name (or DROP TABLE {table}) to re-embed everything"
    )]
    DimensionMismatch {
        table: String,
        table_dimensions: i32,
        dimensions: usize,
    },
    #[error(
        "table {table} exists but is not a passage table (no column {missing}): use another table name"
    )]
    TableShape { table: String, missing: String },
}
