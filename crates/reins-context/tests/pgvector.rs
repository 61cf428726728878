//! The pgvector store against a real PostgreSQL (`REINS_TEST_PG_URL`, set
//! by `. scripts/pg-test.sh`, which also builds pgvector when missing). The
//! test fails, never skips, when the variable is unset.
#![cfg(feature = "pgvector")]

use reins_context::{
    ChunkOptions, ContextError, EmbedError, Embedder, PgVectorStore, chunk_document,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const DIMS: usize = 64;

/// A hashed bag of words, normalized: deterministic, and texts sharing
/// words are near each other.
#[derive(Default)]
struct BagOfWords {
    texts: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Embedder for BagOfWords {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.texts.fetch_add(texts.len(), Ordering::Relaxed);
        Ok(texts.iter().map(|t| bag(t)).collect())
    }
}

fn bag(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = Sha256::digest(word.to_lowercase().as_bytes());
        v[usize::from(h[0]) % DIMS] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn url() -> String {
    std::env::var("REINS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "REINS_TEST_PG_URL is not set: run `. scripts/pg-test.sh` first (it starts a test \
             PostgreSQL with pgvector and exports the URL), or run the tests through `bash scripts/test.sh`"
        )
    })
}

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).expect("write");
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

const OPTS: ChunkOptions = ChunkOptions {
    max_tokens: 40,
    overlap_tokens: 5,
};

/// Drops the test's table however the test ends.
struct DropTable(String);

impl Drop for DropTable {
    fn drop(&mut self) {
        let (url, table) = (url(), self.0.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_store_syncs_incrementally_and_searches() {
    let url = url();
    let table = format!("reins_ctx_test_{}", uuid::Uuid::new_v4().simple());
    let _cleanup = DropTable(table.clone());
    let docs = tempfile::tempdir().expect("tempdir");
    let long: String = (0..30)
        .map(|i| format!("Paragraph {i} talks about glaciers and fjords in the north."))
        .collect::<Vec<_>>()
        .join("\n\n");
    write(docs.path(), "glaciers.txt", &long);
    write(
        docs.path(),
        "cooking.txt",
        "Knead the dough and let the bread rise overnight.",
    );
    write(
        docs.path(),
        "network.md",
        "# Network\n\nThe router forwards packets between subnets.",
    );

    let embedder = Arc::new(BagOfWords::default());
    let store = PgVectorStore::connect(&url, &table, DIMS, embedder.clone())
        .await
        .expect("connect")
        .with_batch_size(8);

    // First sync: everything embedded, in batches.
    let total: usize = ["glaciers.txt", "cooking.txt", "network.md"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(docs.path().join(f)).expect("read");
            chunk_document(f, &text, &OPTS, &words).len()
        })
        .sum();
    assert!(
        total > 8,
        "the test wants several batches, has {total} passages"
    );
    let report = store
        .sync_folder(docs.path(), &OPTS, &words)
        .await
        .expect("sync");
    assert_eq!(
        (report.embedded, report.unchanged, report.removed),
        (total, 0, 0)
    );
    assert_eq!(embedder.texts.load(Ordering::Relaxed), total);
    assert_eq!(embedder.calls.load(Ordering::Relaxed), total.div_ceil(8));

    // Again, unchanged: nothing embedded.
    let report = store
        .sync_folder(docs.path(), &OPTS, &words)
        .await
        .expect("resync");
    assert_eq!(
        (report.embedded, report.unchanged, report.removed),
        (0, total, 0)
    );
    assert_eq!(embedder.texts.load(Ordering::Relaxed), total);

    // One file changed: only its passages are embedded.
    let cooking = "Knead the dough twice. Bake the sourdough bread at 250 degrees.";
    write(docs.path(), "cooking.txt", cooking);
    let report = store
        .sync_folder(docs.path(), &OPTS, &words)
        .await
        .expect("resync");
    assert_eq!(
        (report.embedded, report.unchanged, report.removed),
        (1, total - 1, 0)
    );
    assert_eq!(embedder.texts.load(Ordering::Relaxed), total + 1);

    // The passage whose text is the query comes first, at similarity ~1.
    let hits = store.search(cooking, 3).await.expect("search");
    assert_eq!(hits[0].passage.id, "cooking.txt#1");
    assert_eq!(hits[0].passage.text, cooking);
    assert!(hits[0].score > 0.999, "{}", hits[0].score);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let hits = store
        .search("The router forwards packets between subnets.", 1)
        .await
        .expect("search");
    assert_eq!(hits[0].passage.path, "network.md");
    assert_eq!(hits[0].passage.heading, "Network");
    // k above pgvector's default ef_search (40) still returns k rows.
    assert_eq!(
        store.search("glaciers", 45).await.expect("search").len(),
        45.min(total)
    );
    assert!(store.search("x", 0).await.expect("k = 0").is_empty());

    // By id.
    let p = store.passage("network.md#1").await.expect("passage");
    assert_eq!(p.map(|p| p.heading).as_deref(), Some("Network"));
    assert_eq!(store.passage("nope#1").await.expect("passage"), None);

    // A removed file: its rows go, nothing embedded.
    std::fs::remove_file(docs.path().join("network.md")).expect("rm");
    let report = store
        .sync_folder(docs.path(), &OPTS, &words)
        .await
        .expect("resync");
    assert_eq!((report.embedded, report.removed), (0, 1));
    assert_eq!(store.passage("network.md#1").await.expect("passage"), None);

    // upsert by hand replaces by id.
    let mut p = store
        .passage("cooking.txt#1")
        .await
        .expect("passage")
        .expect("present");
    p.text = "Replaced text about kayaks.".into();
    assert_eq!(
        store.upsert(&[p.clone(), p.clone()]).await.expect("upsert"),
        1
    );
    let hits = store.search("kayaks", 1).await.expect("search");
    assert_eq!(hits[0].passage, p);

    // Connecting again with other dimensions: a clear refusal.
    match PgVectorStore::connect(&url, &table, 32, embedder.clone()).await {
        Err(e @ ContextError::DimensionMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&table) && msg.contains("64") && msg.contains("32"),
                "{msg}"
            );
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    // Same dimensions: reconnects to the existing table.
    PgVectorStore::connect(&url, &table, DIMS, embedder.clone())
        .await
        .expect("reconnect");
    store.close().await;
}

#[tokio::test]
async fn bad_table_names_and_dimensions_are_refused_before_connecting() {
    let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords::default());
    // The URL is never used: validation comes first.
    for table in ["docs; DROP TABLE users", "a.b.c", "1docs", "\"quoted\""] {
        match PgVectorStore::connect(
            "postgres://nobody@127.0.0.1:1/x",
            table,
            DIMS,
            embedder.clone(),
        )
        .await
        {
            Err(e @ ContextError::InvalidTable { .. }) => assert!(e.to_string().contains(table)),
            other => panic!("{table}: expected InvalidTable, got {other:?}"),
        }
    }
    for dims in [0, 2001] {
        assert!(matches!(
            PgVectorStore::connect(
                "postgres://nobody@127.0.0.1:1/x",
                "docs",
                dims,
                embedder.clone()
            )
            .await,
            Err(ContextError::Dimensions { .. })
        ));
    }
}

#[tokio::test]
async fn a_refused_connection_names_the_server_but_not_the_password() {
    // The test server, as a user it does not know (refused at once; a
    // refused TCP connection would be retried until the pool's timeout).
    let url = url();
    let (scheme, rest) = url.split_once("://").expect("URL with scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let bad = format!("{scheme}://nobody_here:hunter2@{host}");
    let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords::default());
    match PgVectorStore::connect(&bad, "docs", DIMS, embedder).await {
        Err(e @ ContextError::Connect { .. }) => {
            let msg = e.to_string();
            let shown = format!("nobody_here:***@{host}");
            assert!(!msg.contains("hunter2") && msg.contains(&shown), "{msg}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}
