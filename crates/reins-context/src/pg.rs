//! Passages and their embeddings in PostgreSQL, searched with pgvector.
//!
//! Each row keeps a hash of exactly what was embedded, so syncing a folder
//! embeds only passages that are new or changed: embedding is the slow and
//! paid part, the database round trips are not.

use crate::chunk::{ChunkOptions, chunk_document};
use crate::docs::{list_documents, read_document};
use crate::{ContextError, Embedder, Hit, Passage};
use pgvector::Vector;
use sha2::{Digest, Sha256};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The most dimensions pgvector's HNSW index takes for `vector` columns.
pub const MAX_INDEXED_DIMENSIONS: usize = 2000;
/// Texts per embedding request unless [`PgVectorStore::with_batch_size`] says otherwise.
const DEFAULT_BATCH: usize = 64;
/// pgvector's HNSW scan returns at most `hnsw.ef_search` rows (40 by
/// default), so a larger k raises it for the query, up to its maximum.
const MAX_EF_SEARCH: usize = 1000;

/// What [`PgVectorStore::sync_folder`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Passages embedded and written: new or changed.
    pub embedded: usize,
    /// Passages already stored with the same content: left alone.
    pub unchanged: usize,
    /// Rows deleted: passages of removed documents, or ids a shorter
    /// document no longer has.
    pub removed: usize,
}

/// Passages with embeddings in one PostgreSQL table.
pub struct PgVectorStore {
    pool: PgPool,
    /// The table as written in SQL: quoted, lower-cased parts.
    sql_table: String,
    /// The table as configured, for messages.
    table: String,
    /// The URL without its password, for messages.
    url: String,
    dimensions: usize,
    embedder: Arc<dyn Embedder>,
    batch: usize,
}

impl std::fmt::Debug for PgVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgVectorStore")
            .field("url", &self.url)
            .field("table", &self.table)
            .field("dimensions", &self.dimensions)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl PgVectorStore {
    /// Connects (sqlx PgPool), runs `CREATE EXTENSION IF NOT EXISTS vector`, creates `table` (validate it is a plain SQL identifier, optionally schema-qualified; refuse anything else with a clear error) with columns id text primary key, path, heading, text, hash (content hash), embedding vector(dimensions), and an HNSW index with vector_cosine_ops. If the table exists with a different dimension, a clear error naming the table, both dimensions and how to fix it. If the extension is missing, an error that says to install pgvector (postgresql-NN-pgvector).
    ///
    /// Unquoted SQL identifiers fold to lower case, so `Docs` and `docs`
    /// are one table here too. Hosts starting together are serialized by an
    /// advisory lock, so they do not race to create the same table.
    pub async fn connect(
        url: &str,
        table: &str,
        dimensions: usize,
        embedder: Arc<dyn Embedder>,
    ) -> Result<Self, ContextError> {
        let sql_table = sql_table_name(table)?;
        if dimensions == 0 || dimensions > MAX_INDEXED_DIMENSIONS {
            return Err(ContextError::Dimensions { dimensions });
        }
        let shown = redact_url(url);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| ContextError::Connect {
                url: shown.clone(),
                source,
            })?;
        let store = PgVectorStore {
            pool,
            sql_table,
            table: table.to_owned(),
            url: shown,
            dimensions,
            embedder,
            batch: DEFAULT_BATCH,
        };
        store.prepare().await?;
        Ok(store)
    }

    /// Texts per embedding request (at least 1): providers cap request sizes.
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The embedding dimensions the table holds.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn prepare(&self) -> Result<(), ContextError> {
        let major: i32 =
            sqlx::query_scalar("SELECT current_setting('server_version_num')::int / 10000")
                .fetch_one(&self.pool)
                .await
                .map_err(self.db("read the server version"))?;
        let mut tx = self.pool.begin().await.map_err(self.db("begin"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("reins-context {}", self.sql_table))
            .execute(&mut *tx)
            .await
            .map_err(self.db("take the setup lock"))?;
        let installed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(self.db("look for the vector extension"))?;
        if !installed
            && let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
                .execute(&mut *tx)
                .await
        {
            let (code, message) = e.as_database_error().map_or((None, String::new()), |d| {
                (d.code().map(|c| c.into_owned()), d.message().to_owned())
            });
            return Err(match code.as_deref() {
                // PostgreSQL 15 reports a missing control file (58P01),
                // later versions "not available" (0A000).
                Some("58P01") | Some("0A000") => ContextError::ExtensionMissing {
                    url: self.url.clone(),
                    major: major.to_string(),
                },
                Some("42501") => ContextError::ExtensionPermission {
                    url: self.url.clone(),
                    message,
                },
                _ => self.db("create the vector extension")(e),
            });
        }
        let columns: Vec<(String, i32)> = sqlx::query_as(
            "SELECT attname::text, atttypmod FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        )
        .bind(&self.sql_table)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("read the table's columns"))?;
        if columns.is_empty() {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, path text NOT NULL, \
                 heading text NOT NULL, text text NOT NULL, hash text NOT NULL, \
                 embedding vector({}) NOT NULL)",
                self.sql_table, self.dimensions
            );
            sqlx::query(&create)
                .execute(&mut *tx)
                .await
                .map_err(self.db("create the table"))?;
            tracing::info!(table = %self.table, dimensions = self.dimensions, "vector table created");
        } else {
            for wanted in ["id", "path", "heading", "text", "hash", "embedding"] {
                if !columns.iter().any(|(name, _)| name == wanted) {
                    return Err(ContextError::TableShape {
                        table: self.table.clone(),
                        missing: wanted.to_owned(),
                    });
                }
            }
            let typmod = columns
                .iter()
                .find(|(name, _)| name == "embedding")
                .map_or(-1, |(_, m)| *m);
            if usize::try_from(typmod).ok() != Some(self.dimensions) {
                return Err(ContextError::DimensionMismatch {
                    table: self.table.clone(),
                    table_dimensions: typmod,
                    dimensions: self.dimensions,
                });
            }
        }
        let bare = self.sql_table.rsplit('.').next().unwrap_or(&self.sql_table);
        let bare = bare.trim_matches('"');
        for (suffix, how) in [
            ("embedding_hnsw", "USING hnsw (embedding vector_cosine_ops)"),
            // sync_folder and deletes go by path.
            ("path", "(path)"),
        ] {
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS \"{bare}_{suffix}\" ON {} {how}",
                self.sql_table
            );
            sqlx::query(&sql)
                .execute(&mut *tx)
                .await
                .map_err(self.db("create the table's indexes"))?;
        }
        tx.commit().await.map_err(self.db("commit the setup"))?;
        Ok(())
    }

    /// Makes the table hold exactly the passages of the documents under `docs`, incrementally: unchanged passages (same id and hash) are not re-embedded; changed/new ones are embedded in batches of `batch` (e.g. 64) and upserted; passages of removed docs/ids deleted.
    ///
    /// A document that cannot be read fails the sync (rather than having its
    /// rows deleted as if it were gone). The folder walk and the chunking
    /// run on the calling task: fine for a docs folder, heavy for a huge one
    /// (run it from `spawn_blocking` + `block_on` then). Each batch is
    /// written as soon as it is embedded, so an interrupted sync resumes
    /// where it stopped.
    pub async fn sync_folder(
        &self,
        docs: &Path,
        opts: &ChunkOptions,
        count: &(dyn Fn(&str) -> usize + Send + Sync),
    ) -> Result<SyncReport, ContextError> {
        let mut passages = Vec::new();
        for (rel, abs) in list_documents(docs)? {
            if let Some(doc) = read_document(&rel, &abs)? {
                passages.extend(chunk_document(&rel, &doc.text, opts, count));
            }
        }
        let stored: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(&format!(
            "SELECT id, hash FROM {}",
            self.sql_table
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read stored hashes"))?
        .into_iter()
        .collect();
        let ids: HashSet<&str> = passages.iter().map(|p| p.id.as_str()).collect();
        let gone: Vec<String> = stored
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect();
        let total = ids.len();
        let mut report = SyncReport::default();
        if !gone.is_empty() {
            report.removed = sqlx::query(&format!(
                "DELETE FROM {} WHERE id = ANY($1)",
                self.sql_table
            ))
            .bind(&gone)
            .execute(&self.pool)
            .await
            .map_err(self.db("delete removed passages"))?
            .rows_affected() as usize;
        }
        let fresh: Vec<Passage> = passages
            .into_iter()
            .filter(|p| stored.get(&p.id) != Some(&content_hash(p)))
            .collect();
        report.unchanged = total - fresh.len();
        for batch in fresh.chunks(self.batch) {
            report.embedded += self.upsert_batch(batch).await?;
        }
        tracing::info!(
            docs = %docs.display(),
            table = %self.table,
            embedded = report.embedded,
            unchanged = report.unchanged,
            removed = report.removed,
            "vector table synced"
        );
        Ok(report)
    }

    /// Embeds and writes passages (insert, or replace by id); how many were
    /// written. A repeated id counts once, its last passage winning.
    pub async fn upsert(&self, passages: &[Passage]) -> Result<usize, ContextError> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, p) in passages.iter().enumerate() {
            last.insert(&p.id, i);
        }
        let unique: Vec<Passage> = passages
            .iter()
            .enumerate()
            .filter(|(i, p)| last.get(p.id.as_str()) == Some(i))
            .map(|(_, p)| p.clone())
            .collect();
        let mut written = 0;
        for batch in unique.chunks(self.batch) {
            written += self.upsert_batch(batch).await?;
        }
        Ok(written)
    }

    async fn upsert_batch(&self, batch: &[Passage]) -> Result<usize, ContextError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let inputs: Vec<String> = batch.iter().map(embedding_input).collect();
        let vectors = self.embed(&inputs).await?;
        let column = |f: fn(&Passage) -> &String| batch.iter().map(f).cloned().collect::<Vec<_>>();
        let sql = format!(
            "INSERT INTO {} (id, path, heading, text, hash, embedding) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::vector[]) \
             ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path, heading = EXCLUDED.heading, \
             text = EXCLUDED.text, hash = EXCLUDED.hash, embedding = EXCLUDED.embedding",
            self.sql_table
        );
        sqlx::query(&sql)
            .bind(column(|p| &p.id))
            .bind(column(|p| &p.path))
            .bind(column(|p| &p.heading))
            .bind(column(|p| &p.text))
            .bind(batch.iter().map(content_hash).collect::<Vec<_>>())
            .bind(vectors.into_iter().map(Vector::from).collect::<Vec<_>>())
            .execute(&self.pool)
            .await
            .map_err(self.db("write passages"))?;
        Ok(batch.len())
    }

    /// Nearest passages to the query's embedding; score = 1 - cosine distance.
    pub async fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, ContextError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let vector = self
            .embed(&[query.to_owned()])
            .await?
            .pop()
            .map(Vector::from)
            .ok_or_else(|| ContextError::EmbeddingShape("no vector for the query".into()))?;
        let mut tx = self.pool.begin().await.map_err(self.db("begin"))?;
        sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
            .bind(k.clamp(40, MAX_EF_SEARCH).to_string())
            .execute(&mut *tx)
            .await
            .map_err(self.db("set hnsw.ef_search"))?;
        let sql = format!(
            "SELECT id, path, heading, text, (1 - (embedding <=> $1))::float4 AS score \
             FROM {} ORDER BY embedding <=> $1 LIMIT $2",
            self.sql_table
        );
        let rows = sqlx::query(&sql)
            .bind(&vector)
            .bind(i64::try_from(k).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(self.db("search"))?;
        tx.commit().await.map_err(self.db("search"))?;
        rows.iter()
            .map(|row| {
                Ok(Hit {
                    passage: passage_of(row)?,
                    score: row.try_get::<Option<f32>, _>("score")?.unwrap_or(0.0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.db("read search results"))
    }

    /// A passage by id (e.g. to check a citation).
    pub async fn passage(&self, id: &str) -> Result<Option<Passage>, ContextError> {
        let sql = format!(
            "SELECT id, path, heading, text FROM {} WHERE id = $1",
            self.sql_table
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db("read a passage"))?;
        row.as_ref()
            .map(passage_of)
            .transpose()
            .map_err(self.db("read a passage"))
    }

    /// Closes the pool's connections (they also close when the store is dropped).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The embedder's vectors, checked: one per text, each of the table's size.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ContextError> {
        let vectors = self.embedder.embed(texts).await?;
        if vectors.len() != texts.len() {
            return Err(ContextError::EmbeddingShape(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dimensions) {
            return Err(ContextError::EmbeddingShape(format!(
                "a {}-dimension vector where table {} holds {} dimensions",
                v.len(),
                self.table,
                self.dimensions
            )));
        }
        Ok(vectors)
    }

    fn db(&self, action: &'static str) -> impl Fn(sqlx::Error) -> ContextError + '_ {
        move |source| ContextError::Database {
            url: self.url.clone(),
            table: self.table.clone(),
            action,
            source,
        }
    }
}

fn passage_of(row: &PgRow) -> Result<Passage, sqlx::Error> {
    Ok(Passage {
        id: row.try_get("id")?,
        path: row.try_get("path")?,
        heading: row.try_get("heading")?,
        text: row.try_get("text")?,
    })
}

/// What is embedded for a passage: its heading trail too, since the text
/// alone often does not say what it is about.
fn embedding_input(p: &Passage) -> String {
    if p.heading.is_empty() {
        p.text.clone()
    } else {
        format!("{}\n\n{}", p.heading, p.text)
    }
}

/// The hash of exactly what is embedded: equal hashes, equal embeddings
/// (for the same model: give each model its own table).
fn content_hash(p: &Passage) -> String {
    hex::encode(Sha256::digest(embedding_input(p).as_bytes()))
}

/// `table` as SQL: each part a plain identifier, lower-cased as PostgreSQL
/// folds unquoted names, then quoted so reserved words (`user`, `order`)
/// work too.
fn sql_table_name(table: &str) -> Result<String, ContextError> {
    let parts: Vec<&str> = table.split('.').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(plain) {
        return Err(ContextError::InvalidTable {
            table: table.to_owned(),
        });
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{}\"", p.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join("."))
}

/// The URL without its password (userinfo or `password=` parameter), to
/// show in errors and logs.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return "<a URL without scheme://>".to_owned(),
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(sql_table_name("docs").ok().as_deref(), Some("\"docs\""));
        assert_eq!(
            sql_table_name("Rag.Passages_1").ok().as_deref(),
            Some("\"rag\".\"passages_1\"")
        );
        for bad in [
            "",
            "1docs",
            "a.b.c",
            "docs; DROP TABLE x",
            "d\"x",
            "a.",
            "é",
            &"a".repeat(64),
        ] {
            assert!(sql_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_lose_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=require&password=x"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h"), "postgres://h");
        assert!(!redact_url("u:secret@h").contains("secret"));
    }
}
