//! Context orchestration (see BENCHMARKS.md, "Context (issue 19)"):
//!
//! 1. **Index build**: a BM25 index over a folder of N chunks (Markdown
//!    files of generated paragraphs, vocabulary from `examples/docs-qa`),
//!    chunked with the `o200k_base` tokenizer, and one file changed
//!    afterwards (the watcher's incremental update).
//! 2. **Assembly latency**, p50 and p99: `Host::preview_context` (retrieve
//!    top 20, then the real `context-budget` plugin in wasmtime: floor,
//!    near-duplicates, caps, `count-tokens` for every chunk, trim, order)
//!    against the baseline of the BM25 search alone (native, same index
//!    size, same queries).
//! 3. **Recall within the budget** on `examples/docs-qa/questions.json`:
//!    is the gold passage among the kept chunks, with `order = "score"`
//!    and `order = "ends"`, at two budgets; and where it sits (at an end,
//!    or in the middle).
//!
//! cargo bench -p reins --bench context [-- SIZES...]   (default: 10000 100000)

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reins::Host;
use reins::context::{Bm25Index, ChunkOptions};
use reins_testing::bench::{quantile, us};
use reins_testing::plugins;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const QUERIES: usize = 300;

fn repo() -> PathBuf {
    plugins::repo_root().to_owned()
}

/// Every word of the docs-qa corpus, for generated text that reads like it.
fn vocabulary() -> Vec<String> {
    let mut words = Vec::new();
    let docs = repo().join("examples/docs-qa/docs");
    for (_, path) in reins::context::list_documents(&docs).expect("docs-qa docs") {
        let text = std::fs::read_to_string(path).expect("read");
        words.extend(
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 2)
                .map(str::to_lowercase),
        );
    }
    words
}

/// `n` paragraphs of about 120 words (one chunk each at 200 tokens), 100
/// to a file.
fn corpus(dir: &Path, n: usize, vocab: &[String]) {
    let mut rng = StdRng::seed_from_u64(19);
    let mut file = String::new();
    for i in 0..n {
        if i % 100 == 0 {
            file.push_str(&format!("# Section {}\n\n", i / 100));
        }
        let words: Vec<&str> = (0..120)
            .map(|_| vocab[rng.random_range(0..vocab.len())].as_str())
            .collect();
        file.push_str(&words.join(" "));
        file.push_str(".\n\n");
        if i % 100 == 99 || i == n - 1 {
            std::fs::write(dir.join(format!("doc-{:05}.md", i / 100)), &file).expect("write");
            file.clear();
        }
    }
}

fn queries(vocab: &[String]) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..QUERIES)
        .map(|_| {
            (0..5)
                .map(|_| vocab[rng.random_range(0..vocab.len())].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn config(docs: &Path, budget: u32, order: &str, extra: &str) -> String {
    format!(
        r#"plugins_dir = {plugins:?}
[runtime]
cache_dir = {cache:?}
[state]
kind = "memory"

[retrievers.docs]
kind = "bm25"
path = {docs:?}
watch = false
{extra}

[providers.model]
kind = "scripted"
model = "gpt-4o"
responses = ["ok"]

[pipelines.ctx]
model = "model"
output = "text"
context = {{ retrievers = ["docs"], budget_tokens = {budget}, top_k = 20, config = {{ order = "{order}" }} }}
"#,
        plugins = plugins::built_plugins_dir().display().to_string(),
        cache = plugins::settings()
            .resolved_cache_dir()
            .display()
            .to_string(),
        docs = docs.display().to_string(),
    )
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (quantile(&samples, 0.5), quantile(&samples, 0.99))
}

async fn latency(size: usize, vocab: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).expect("docs");
    corpus(&docs, size, vocab);

    let counter = reins::retrieval::chunk_counter();
    let start = Instant::now();
    let index = Bm25Index::open(&docs, None, ChunkOptions::default(), counter).expect("index");
    let build = start.elapsed();
    let chunks = index.stats().passages;
    // One file changed: what the watcher does with it.
    let changed = docs.join("doc-00000.md");
    let mut text = std::fs::read_to_string(&changed).expect("read");
    text.push_str("\nA new paragraph about nightly snapshot schedules.\n");
    std::fs::write(&changed, text).expect("write");
    let start = Instant::now();
    index.update_path(&changed).expect("update");
    let update = start.elapsed();
    println!(
        "| {size} | {chunks} | {:.1} s | {} |",
        build.as_secs_f64(),
        us(update)
    );

    let qs = queries(vocab);
    // Baseline: the BM25 search alone.
    let mut native = Vec::with_capacity(qs.len());
    for q in &qs {
        let t = Instant::now();
        let hits = index.search(q, 20).expect("search");
        native.push(t.elapsed());
        std::hint::black_box(hits);
    }
    drop(index);
    let host = Host::builder()
        .config_str(config(&docs, 2000, "ends", ""), dir.path())
        .build()
        .await
        .expect("host");
    let caller = reins::runtime::Caller::anonymous();
    for q in qs.iter().take(20) {
        host.preview_context("ctx", q, &caller)
            .await
            .expect("warm up");
    }
    let mut full = Vec::with_capacity(qs.len());
    let mut kept = 0usize;
    for q in &qs {
        let t = Instant::now();
        let preview = host
            .preview_context("ctx", q, &caller)
            .await
            .expect("preview");
        full.push(t.elapsed());
        kept += preview.chunks.len();
    }
    let (n50, n99) = stats(native);
    let (f50, f99) = stats(full);
    LATENCY.with(|l| {
        l.borrow_mut().push(format!(
            "| {size} | {} / {} | {} / {} | {:.1}× / {:.1}× | {:.1} |",
            us(n50),
            us(n99),
            us(f50),
            us(f99),
            f50.as_secs_f64() / n50.as_secs_f64().max(1e-9),
            f99.as_secs_f64() / n99.as_secs_f64().max(1e-9),
            kept as f64 / qs.len() as f64
        ))
    });
}

thread_local! {
    static LATENCY: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

async fn recall() {
    let docs = repo().join("examples/docs-qa/docs");
    let questions: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/docs-qa/questions.json"))
            .expect("questions"),
    )
    .expect("questions JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let caller = reins::runtime::Caller::anonymous();
    println!();
    println!(
        "| budget | order | gold retrieved (top 20) | gold kept | gold at an end (1st or last) | gold in the middle |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for budget in [300u32, 600] {
        for order in ["score", "ends"] {
            let host = Host::builder()
                .config_str(
                    config(
                        &docs,
                        budget,
                        order,
                        "chunk_tokens = 160\noverlap_tokens = 24",
                    ),
                    dir.path(),
                )
                .build()
                .await
                .expect("host");
            let (mut retrieved, mut kept, mut ends, mut middle) = (0, 0, 0, 0);
            for q in &questions {
                let question = q["question"].as_str().unwrap_or_default();
                let path = q["path"].as_str().unwrap_or_default();
                let contains = q["contains"].as_str().unwrap_or_default();
                let p = host
                    .preview_context("ctx", question, &caller)
                    .await
                    .expect("preview");
                let Some(report) = &p.report else { continue };
                let texts = host_passages(&p);
                let is_gold = |id: &str| {
                    id.starts_with(&format!("{path}#")) && reins_gold(&docs, id, contains, &texts)
                };
                let gold_offered = report.offered.iter().any(|c| is_gold(&c.id));
                if gold_offered {
                    retrieved += 1;
                }
                if let Some(at) = p
                    .chunks
                    .iter()
                    .position(|c| is_gold(&c.id) && c.text.contains(contains))
                {
                    kept += 1;
                    if at == 0 || at + 1 == p.chunks.len() {
                        ends += 1;
                    } else {
                        middle += 1;
                    }
                }
            }
            let n = questions.len() as f64;
            println!(
                "| {budget} | {order} | {:.0} % | {:.0} % | {:.0} % | {:.0} % |",
                100.0 * retrieved as f64 / n,
                100.0 * kept as f64 / n,
                100.0 * ends as f64 / n,
                100.0 * middle as f64 / n
            );
        }
    }
}

/// The kept chunks' texts by id (the report carries ids and tokens only).
fn host_passages(p: &reins::pipeline::engine::ContextPreview) -> Vec<(String, String)> {
    p.chunks
        .iter()
        .map(|c| (c.id.clone(), c.text.clone()))
        .collect()
}

/// Whether chunk `id` holds `contains`: from the kept texts when it was
/// kept, else by chunking its document again (as the index did).
fn reins_gold(docs: &Path, id: &str, contains: &str, kept: &[(String, String)]) -> bool {
    if let Some((_, text)) = kept.iter().find(|(k, _)| k == id) {
        return text.contains(contains);
    }
    let Some((path, _)) = id.split_once('#') else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(docs.join(path)) else {
        return false;
    };
    let counter = reins::retrieval::chunk_counter();
    let opts = ChunkOptions {
        max_tokens: 160,
        overlap_tokens: 24,
    };
    reins::context::chunk_document(path, &text, &opts, &*counter)
        .into_iter()
        .any(|p| p.id == id && p.text.contains(contains))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let vocab = vocabulary();
    println!("| chunks asked | chunks indexed | index build | one file re-indexed (µs) |");
    println!("|---:|---:|---:|---:|");
    for &size in &sizes {
        latency(size, &vocab).await;
    }
    println!();
    println!(
        "| chunks | BM25 search alone p50 / p99 (µs) | retrieve + context-budget p50 / p99 (µs) | ratio p50 / p99 | chunks kept |"
    );
    println!("|---:|---:|---:|---:|---:|");
    LATENCY.with(|l| {
        for line in l.borrow().iter() {
            println!("{line}");
        }
    });
    recall().await;
}
