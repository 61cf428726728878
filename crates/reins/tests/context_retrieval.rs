//! Context orchestration end to end, with the real bundled plugins
//! (`context-budget`, `citations`) in the real wasmtime host: BM25
//! retrieval over a folder kept up to date by its watcher, caller chunks
//! next to retrieved ones, the budget (floor, near-duplicates, per-source
//! caps, ends-first order, the last chunk trimmed at a token boundary),
//! the tokenizer of the pipeline's model, the run's context report, the
//! preview endpoint, the conversation's history budget (dropped or
//! summarized, the summary cached by prefix), citations checked against
//! the context, and bad configs refused with the key at fault.

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins::provider::ScriptedProvider;
use reins::runtime::{Chunk, Message};
use reins_testing::plugins;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn docs(dir: &Path) {
    let d = dir.join("docs");
    std::fs::create_dir_all(d.join("guide")).expect("docs dir");
    std::fs::write(
        d.join("guide/install.md"),
        "# Install\n\n## Ports\n\nThe server listens on port 8470 for the web interface and the API. \
         The sync protocol uses port 8471.\n\n## Packages\n\nInstall the tern-server package with apt.\n",
    )
    .expect("write");
    std::fs::write(
        d.join("faq.md"),
        "# FAQ\n\n## Quotas\n\nEvery user gets a default quota of 50 GiB; a warning is sent at 90 percent.\n\n\
         ## Trash\n\nDeleted files stay in the trash for 14 days before they are purged.\n",
    )
    .expect("write");
    std::fs::write(
        d.join("notes.txt"),
        "Retention keeps 10 versions of every file for 30 days.\n\nThe metrics endpoint listens on port 9470.\n",
    )
    .expect("write");
}

fn config(extra: &str) -> String {
    format!(
        r#"
plugins_dir = {plugins:?}
[state]
kind = "memory"

[retrievers.docs]
kind = "bm25"
path = "docs"
chunk_tokens = 64
overlap_tokens = 8

[providers.writer]
kind = "scripted"
model = "gpt-4o"
responses = [
    {{ match = "sync", attempt = 1, content = "Sync uses port 8471 [guide/install.md#99]." }},
    {{ attempt = 2, content = "Sync uses port 8471 [guide/install.md#1]." }},
    "I do not know.",
]

[providers.local]
kind = "scripted"
model = "my-local-llm"
responses = ["fine"]

[pipelines.qa]
model = "writer"
output = "text"
context = {{ retrievers = ["docs"], budget_tokens = 400, top_k = 5 }}
validators = [{{ plugin = "citations" }}]

[pipelines.local]
model = "local"
output = "text"
context = {{ retrievers = ["docs"], budget_tokens = 400 }}
{extra}
"#,
        plugins = plugins::built_plugins_dir().display().to_string()
    )
}

async fn host(dir: &Path, extra: &str) -> Host {
    Host::builder()
        .config_str(config(extra), dir)
        .build()
        .await
        .expect("host")
}

fn calls(host: &Host, name: &str) -> Vec<reins::provider::ChatRequest> {
    host.provider(name)
        .expect("provider")
        .as_any()
        .downcast_ref::<ScriptedProvider>()
        .expect("scripted")
        .calls()
}

fn system_of(call: &reins::provider::ChatRequest) -> String {
    call.messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieved_chunks_reach_the_model_and_citations_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let host = host(dir.path(), "").await;

    let result = host
        .run(
            "qa",
            Request::text("Which port does the sync protocol use?"),
        )
        .await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    // The first answer cited a chunk that is not in the context: the
    // citations validator sent it back, the repair cites a real one.
    assert_eq!(result.attempts.len(), 2, "{:?}", result.attempts);
    let first = serde_json::to_string(&result.attempts[0]).expect("json");
    assert!(
        first.contains("unknown-citation") && first.contains("guide/install.md#99"),
        "{first}"
    );
    assert_eq!(
        result.output,
        Some(Value::String(
            "Sync uses port 8471 [guide/install.md#1].".into()
        ))
    );
    // The model was given the passage that answers, labelled with its id.
    let call = &calls(&host, "writer")[0];
    let system = system_of(call);
    assert!(
        system.contains("[guide/install.md#1]") && system.contains("port 8471"),
        "{system}"
    );
    // The report says what was retrieved, kept and dropped, in which
    // tokenizer (gpt-4o's), within the budget.
    let report = result.context.expect("a context report");
    assert_eq!(report.tokenizer, "o200k_base");
    assert_eq!(report.sources.len(), 1);
    assert_eq!(report.sources[0].retriever, "docs");
    assert!(!report.kept.is_empty());
    assert_eq!(
        report.kept.len() + report.dropped.len(),
        report.offered.len()
    );
    assert!(report.used_tokens <= 400, "{}", report.used_tokens);
    assert!(report.kept.iter().all(|c| c.tokens > 0));
    assert!(
        report
            .offered
            .iter()
            .any(|c| c.id == "guide/install.md#1" && c.source == "docs:guide/install.md"),
        "{:?}",
        report.offered
    );
    // The trace shows the retrieval and the context builder.
    let layers: Vec<&str> = result.trace.iter().map(|t| t.layer).collect();
    assert!(
        layers.contains(&"retrieve") && layers.contains(&"context"),
        "{layers:?}"
    );

    // A model whose tokenizer is unknown is counted by the heuristic, and
    // the report says so.
    let result = host
        .run(
            "local",
            Request::text("How long do deleted files stay in the trash?"),
        )
        .await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let report = result.context.expect("report");
    assert_eq!(report.tokenizer, "heuristic");
    assert!(
        report.kept.iter().any(|c| c.id.starts_with("faq.md#")),
        "{:?}",
        report.kept
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_drops_weak_duplicate_and_capped_chunks_and_keeps_the_strongest_at_the_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let extra = r#"
[pipelines.caller]
model = "local"
output = "text"
context = { budget_tokens = 120, config = { min_score = 0.2, max_per_source = 2, near_duplicate = 0.8, min_trim_tokens = 8 } }
"#;
    let host = host(dir.path(), extra).await;
    let long = "The quick brown fox jumps over the lazy dog near the river bank today. ";
    let chunk = |id: &str, source: &str, score: f32, text: &str| Chunk {
        id: id.into(),
        text: text.into(),
        score,
        source: source.into(),
    };
    let chunks = vec![
        chunk(
            "a",
            "s1",
            0.95,
            "Alpha: port 8470 serves the web interface.",
        ),
        chunk("b", "s2", 0.90, "Bravo: quotas default to 50 GiB per user."),
        chunk(
            "c",
            "s3",
            0.85,
            "Charlie: the trash keeps files for 14 days.",
        ),
        chunk(
            "d",
            "s4",
            0.80,
            "Delta: retention keeps ten versions per file.",
        ),
        // A near-duplicate of `a`.
        chunk(
            "a2",
            "s5",
            0.79,
            "Alpha: port 8470 serves the web interface!",
        ),
        // Under the floor.
        chunk("weak", "s6", 0.05, "Weak: something barely related."),
        // A third chunk of s1 (cap 2).
        chunk("a3", "s1", 0.78, "Alpha three: more on the interface."),
        chunk("a4", "s1", 0.77, "Alpha four: the interface again."),
        // Long: does not fit whole, trimmed to what is left.
        chunk("long", "s7", 0.60, &long.repeat(20)),
        chunk("after", "s8", 0.50, "After: nothing is left for this one."),
    ];
    let request = Request::text("What does port 8470 serve?").with_chunks(chunks);
    let result = host.run("caller", request).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let report = result.context.expect("report");
    let reason = |id: &str| {
        report
            .dropped
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.reason.clone())
            .unwrap_or_else(|| panic!("`{id}` not dropped: {report:?}"))
    };
    assert!(reason("weak").contains("floor"), "{}", reason("weak"));
    assert!(
        reason("a2").contains("near-duplicate of a"),
        "{}",
        reason("a2")
    );
    assert!(reason("a4").contains("max_per_source"), "{}", reason("a4"));
    assert!(reason("after").contains("budget"), "{}", reason("after"));
    let kept: Vec<&str> = report.kept.iter().map(|c| c.id.as_str()).collect();
    // Strongest first, second strongest last, weakest in the middle.
    assert_eq!(kept.first(), Some(&"a"), "{kept:?}");
    assert_eq!(kept.last(), Some(&"b"), "{kept:?}");
    let trimmed = report
        .kept
        .iter()
        .find(|c| c.id == "long")
        .expect("the long chunk is kept, trimmed");
    assert!(
        trimmed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("trimmed")),
        "{trimmed:?}"
    );
    assert!(report.used_tokens <= 120, "{}", report.used_tokens);
    assert!(
        report.used_tokens >= 100,
        "the budget is used: {}",
        report.used_tokens
    );
    // What the model saw: the kept chunks in that order, the trimmed one cut.
    let system = system_of(&calls(&host, "local")[0]);
    let at = |id: &str| system.find(&format!("[{id}] ")).unwrap_or(usize::MAX);
    assert!(at("a") < at("c") && at("c") < at("b"), "{system}");
    assert!(
        !system.contains("[weak]") && !system.contains("[after]"),
        "{system}"
    );
    assert!(!system.contains(&long.repeat(20)), "trimmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_folder_and_the_preview_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let host = host(dir.path(), "").await;
    let caller = reins::runtime::Caller::anonymous();

    let preview = host
        .preview_context("qa", "Which port does the metrics endpoint use?", &caller)
        .await
        .expect("preview");
    assert!(preview.context.contains("port 9470"), "{}", preview.context);
    assert!(
        preview.context.starts_with("Context:"),
        "{}",
        preview.context
    );

    // A new document is found once the watcher has indexed it; an edited
    // one answers with its new text only.
    std::fs::write(
        dir.path().join("docs/guide/backup.md"),
        "# Backups\n\nSnapshots run nightly at 02:30 and are kept for 21 days.\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt.bak"), "not in the docs folder").expect("write");
    std::fs::write(
        dir.path().join("docs/notes.txt"),
        "The metrics endpoint moved to port 9999 in version 3.\n",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = host
            .preview_context("qa", "When do snapshots run?", &caller)
            .await
            .expect("preview");
        let b = host
            .preview_context("qa", "Which port does the metrics endpoint use?", &caller)
            .await
            .expect("preview");
        if a.context.contains("02:30") && b.context.contains("9999") {
            assert!(
                !b.context.contains("9470"),
                "the old text is gone: {}",
                b.context
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not index the change: {} / {}",
            a.context,
            b.context
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A pipeline that does not exist, and an empty query, are clear errors.
    let e = host
        .preview_context("nope", "x", &caller)
        .await
        .expect_err("unknown pipeline");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = host
        .preview_context("qa", "  ", &caller)
        .await
        .expect_err("empty query");
    assert!(e.to_string().contains("q="), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_keeps_its_system_prompt_and_last_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let extra = r#"
[providers.summarizer]
kind = "scripted"
responses = ["The user introduced themselves as Ada and asked about ports; 8470 was the answer."]

[pipelines.dropping]
model = "local"
output = "text"
history = { budget_tokens = 120 }

[pipelines.summing]
model = "local"
output = "text"
history = { budget_tokens = 160, overflow = "summarize", model = "summarizer", summary_tokens = 40 }
"#;
    let host = host(dir.path(), extra).await;
    let mut messages = vec![Message::new("system", "You are terse.")];
    for i in 0..12 {
        messages.push(Message::new(
            "user",
            format!(
                "Question number {i}: tell me something about the server and its many ports please."
            ),
        ));
        messages.push(Message::new(
            "assistant",
            format!("Answer number {i}: the server listens on several ports for different things."),
        ));
    }
    messages.push(Message::new("user", "And the last question?"));

    let result = host.run("dropping", Request::from(messages.clone())).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let sent = calls(&host, "local")
        .last()
        .expect("a call")
        .messages
        .clone();
    assert_eq!(sent[0].content, "You are terse.");
    assert_eq!(
        sent.last().map(|m| m.content.as_str()),
        Some("And the last question?")
    );
    assert!(
        sent.len() < messages.len(),
        "{} of {}",
        sent.len(),
        messages.len()
    );
    assert!(
        !sent.iter().any(|m| m.content.contains("number 0:")),
        "the oldest went"
    );
    let report = result.history.expect("a history report");
    assert!(report.tokens_after <= 120, "{report:?}");
    assert!(report.tokens_before > 120, "{report:?}");
    assert_eq!(report.overflow, "drop");

    // Summarized: the middle becomes one system message; the same prefix
    // again (the conversation grew by its last turn) reuses the summary.
    let result = host.run("summing", Request::from(messages.clone())).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let sent = calls(&host, "local")
        .last()
        .expect("a call")
        .messages
        .clone();
    assert_eq!(sent[0].content, "You are terse.");
    assert!(
        sent[1].role == "system" && sent[1].content.contains("Ada"),
        "{:?}",
        sent[1]
    );
    let report = result.history.expect("report");
    assert_eq!(report.overflow, "summarize");
    assert!(!report.cached);
    assert_eq!(calls(&host, "summarizer").len(), 1);
    let result = host.run("summing", Request::from(messages.clone())).await;
    assert!(result.history.expect("report").cached);
    assert_eq!(
        calls(&host, "summarizer").len(),
        1,
        "the summary was cached"
    );
    let layers: Vec<&str> = result.trace.iter().map(|t| t.layer).collect();
    assert!(layers.contains(&"history"), "{layers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_context_configs_are_refused_with_the_key_at_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let cases = [
        (
            "[pipelines.bad]\nmodel = \"local\"\ncontext = { retrievers = [\"nope\"] }\n",
            "pipelines.bad.context.retrievers",
        ),
        (
            "[retrievers.gone]\nkind = \"bm25\"\npath = \"missing-folder\"\n",
            "retrievers.gone.path",
        ),
        (
            "[retrievers.vec]\nkind = \"pgvector\"\nurl = \"postgres://x@127.0.0.1:1/x\"\ndimensions = 8\nembeddings = { provider = \"local\" }\n",
            "retrievers.vec.embeddings.provider",
        ),
        (
            "[retrievers.odd]\nkind = \"bm25\"\npath = \"docs\"\nchunk_tokens = 64\noverlap_tokens = 64\n",
            "retrievers.odd.overlap_tokens",
        ),
        (
            "[pipelines.h]\nmodel = \"local\"\nhistory = { budget_tokens = 100, model = \"ghost\" }\n",
            "pipelines.h.history.model",
        ),
    ];
    for (extra, key) in cases {
        let e = Host::builder()
            .config_str(config(extra), dir.path())
            .build()
            .await
            .expect_err(key)
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// Inputs embedded so far (every `/embeddings` request's `input`).
fn embedded(upstream: &reins_testing::model::Upstream) -> Vec<String> {
    upstream
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/embeddings"))
        .flat_map(|s| {
            s.body["input"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_and_hybrid_retrieval_with_embeddings_from_a_provider() {
    use reins_testing::model::{self, Upstream};
    let url = std::env::var("REINS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("REINS_TEST_PG_URL is not set: run `. scripts/pg-test.sh` first")
    });
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let embeddings_down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = embeddings_down.clone();
    let upstream = Upstream::replying(move |seen| {
        if seen.path.ends_with("/embeddings") {
            if down.load(std::sync::atomic::Ordering::SeqCst) {
                return model::status(500, "embedding model crashed");
            }
            return model::embeddings(seen, 64);
        }
        model::ok(&model::completion(model::assistant("ok")))
    })
    .await;
    let table = format!("ctx_{}", uuid::Uuid::new_v4().simple());
    let extra = format!(
        r#"
[providers.emb]
kind = "openai"
base_url = "{base}"
model = "hashed-64"
max_retries = 1
backoff_ms = 1

[retrievers.vec]
kind = "pgvector"
url = "{url}"
table = "{table}"
dimensions = 64
path = "docs"
chunk_tokens = 64
overlap_tokens = 8
embeddings = {{ provider = "emb", batch = 2 }}

[pipelines.vec]
model = "local"
output = "text"
context = {{ retrievers = ["vec"], budget_tokens = 400, top_k = 3 }}

[pipelines.hybrid]
model = "local"
output = "text"
context = {{ retrievers = ["docs", "vec"], budget_tokens = 400, top_k = 3 }}
"#,
        base = upstream.base_url()
    );
    let host = host(dir.path(), &extra).await;
    // At start the table was filled from the folder, in batches of 2.
    let first_sync = embedded(&upstream);
    assert!(first_sync.len() >= 5, "{first_sync:?}");
    assert!(
        upstream
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/embeddings"))
            .all(|s| s.body["input"].as_array().is_some_and(|i| i.len() <= 2)),
        "batches of at most 2"
    );

    let q = "How long do deleted files stay in the trash before they are purged?";
    let result = host.run("vec", Request::text(q)).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let report = result.context.expect("report");
    assert_eq!(report.sources[0].kind, "pgvector");
    assert_eq!(
        report.kept.first().map(|c| c.id.as_str()),
        Some("faq.md#2"),
        "the nearest passage is the trash one: {report:?}"
    );
    assert!(report.kept.iter().all(|c| c.score > 0.0 && c.score <= 1.0));
    // The same query again: its embedding comes from the cache.
    let before = embedded(&upstream).len();
    host.run("vec", Request::text(q)).await;
    assert_eq!(
        embedded(&upstream).len(),
        before,
        "the query's vector was cached"
    );

    // Both sources, fused by reciprocal rank.
    let result = host.run("hybrid", Request::text(q)).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let report = result.context.expect("report");
    let kinds: Vec<&str> = report.sources.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["bm25", "pgvector"]);
    assert_eq!(
        report.offered.first().map(|c| c.id.as_str()),
        Some("faq.md#2")
    );
    assert!(
        (report.offered[0].score - 1.0).abs() < 1e-6,
        "first in both lists: {report:?}"
    );

    // The embedding model fails: the run fails with a clear error naming
    // the retriever (no answer without the context it was meant to have).
    embeddings_down.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = host
        .run(
            "vec",
            Request::text("Which port does the metrics endpoint use?"),
        )
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    let e = result.error.expect("an error").to_string();
    assert!(e.contains("retriever `vec`") && e.contains("500"), "{e}");
    embeddings_down.store(false, std::sync::atomic::Ordering::SeqCst);
    drop(host);

    // A restart after one document changed embeds only that document's chunks.
    std::fs::write(
        dir.path().join("docs/notes.txt"),
        "Retention keeps 12 versions of every file for 60 days.\n",
    )
    .expect("write");
    let before = embedded(&upstream).len();
    let host = self::host(dir.path(), &extra).await;
    let resynced = embedded(&upstream)[before..].to_vec();
    assert!(!resynced.is_empty(), "the changed file was embedded");
    assert!(
        resynced.iter().all(|t| t.contains("12 versions")),
        "only the changed file's chunks: {resynced:?}"
    );
    let result = host
        .run(
            "vec",
            Request::text("How many versions does retention keep?"),
        )
        .await;
    let report = result.context.expect("report");
    assert_eq!(
        report.kept.first().map(|c| c.id.as_str()),
        Some("notes.txt#1"),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reins_serve_previews_a_pipelines_context_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    docs(dir.path());
    let path = dir.path().join("reins.toml");
    std::fs::write(&path, config("")).expect("config");
    let served = reins_testing::server::serve(&path);
    let client = reqwest::Client::new();
    let get = |uri: String| {
        let client = client.clone();
        async move {
            let r = client.get(uri).send().await.expect("GET");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = get(format!(
        "{}/v1/pipelines/qa/context?q=Which+port+does+sync+use%3F",
        served.base
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pipeline"], "qa");
    assert!(
        body["context"]
            .as_str()
            .is_some_and(|c| c.contains("[guide/install.md#1]")),
        "{body}"
    );
    let report = &body["report"];
    assert_eq!(report["tokenizer"], "o200k_base");
    assert!(
        report["kept"].as_array().is_some_and(|k| !k.is_empty()),
        "{body}"
    );
    assert_eq!(report["sources"][0]["retriever"], "docs");

    let (status, body) = get(format!("{}/v1/pipelines/qa/context", served.base)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("?q="), "{body}");
    let (status, _) = get(format!("{}/v1/pipelines/nope/context?q=x", served.base)).await;
    assert_eq!(status, 404);
}
