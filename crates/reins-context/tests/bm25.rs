//! The BM25 index: relevance, lenient queries, updates, the watcher,
//! persistence, caller-built corpora, and rank fusion.

use reins_context::{
    Bm25Index, ChunkOptions, ContextError, Hit, Passage, reciprocal_rank_fusion, whitespace_counter,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared by a host's tasks and the watcher thread.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Bm25Index>();
};

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// A small docs folder about unrelated things.
fn corpus(dir: &Path) {
    write(
        dir,
        "guide/install.md",
        "# Install\n\nDownload the release archive and unpack it.\n\n\
         ## Linux\n\nOn Debian use apt to install the package; on Fedora use dnf.\n\n\
         ## macOS\n\nUse Homebrew: brew install the formula.\n",
    );
    write(
        dir,
        "billing.md",
        "# Billing\n\nInvoices are sent monthly by email.\n\n\
         ## Refunds\n\nTo get a refund, open a ticket within 30 days of the charge; \
         refunds go back to the original card.\n",
    );
    write(
        dir,
        "api/limits.md",
        "# Rate limits\n\nEach key may send 600 requests per minute. Over the limit the \
         API answers 429 Too Many Requests with a Retry-After header.\n",
    );
    write(
        dir,
        "notes.txt",
        "Team offsite is in Lisbon this year.\n\nBring a laptop charger.\n",
    );
    // Not documents: hidden, another extension.
    write(dir, ".hidden/secret.md", "hidden zebra content");
    write(dir, "script.sh", "echo zebra");
}

fn open(docs: &Path, index_dir: Option<&Path>) -> Arc<Bm25Index> {
    Bm25Index::open(
        docs,
        index_dir,
        ChunkOptions::default(),
        whitespace_counter(),
    )
    .expect("open")
}

fn top_path(index: &Bm25Index, query: &str) -> Option<String> {
    index
        .search(query, 3)
        .expect("search")
        .first()
        .map(|h| h.passage.path.clone())
}

fn found(index: &Bm25Index, query: &str) -> bool {
    !index.search(query, 10).expect("search").is_empty()
}

#[test]
fn queries_find_the_right_document() {
    let docs = tempfile::tempdir().expect("tempdir");
    corpus(docs.path());
    let index = open(docs.path(), None);
    assert_eq!(index.stats().documents, 4);

    assert_eq!(
        top_path(&index, "how do I get a refund").as_deref(),
        Some("billing.md")
    );
    assert_eq!(
        top_path(&index, "429 too many requests").as_deref(),
        Some("api/limits.md")
    );
    assert_eq!(
        top_path(&index, "installing on debian").as_deref(),
        Some("guide/install.md")
    );
    assert_eq!(
        top_path(&index, "Lisbon offsite").as_deref(),
        Some("notes.txt")
    );
    // Hidden folders and other extensions are not indexed.
    assert!(!found(&index, "zebra"));

    let hits = index.search("homebrew", 5).expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].passage.heading, "Install > macOS");
    assert!(hits[0].score > 0.0);
    let again = index.passage(&hits[0].passage.id).expect("by id");
    assert_eq!(again, hits[0].passage);
    assert_eq!(index.passage("billing.md#99"), None);
}

#[test]
fn headings_weigh_more_than_text() {
    let passages = vec![
        Passage {
            id: "a.md#1".into(),
            path: "a.md".into(),
            heading: "Webhooks".into(),
            text: "How deliveries are signed and retried.".into(),
        },
        Passage {
            id: "b.md#1".into(),
            path: "b.md".into(),
            heading: "Changelog".into(),
            text: "Version 2 renamed the webhooks setting.".into(),
        },
    ];
    let index = Bm25Index::from_passages(passages).expect("index");
    let hits = index.search("webhooks", 2).expect("search");
    assert_eq!(hits[0].passage.id, "a.md#1", "{hits:#?}");
}

#[test]
fn hostile_queries_are_not_errors() {
    let docs = tempfile::tempdir().expect("tempdir");
    corpus(docs.path());
    let index = open(docs.path(), None);
    for q in [
        "\"a: (b] c",
        "refund: (",
        "title:refund",
        "[a TO",
        "{}}",
        "AND OR NOT",
        "***",
        "\\",
        "\"",
        "+-~^",
        "refund^abc",
        "",
        "   ",
        "path:",
        "日本語",
    ] {
        let hits = index.search(q, 5);
        assert!(hits.is_ok(), "{q:?}: {hits:?}");
    }
    // Garbage around real words still finds them.
    assert_eq!(
        top_path(&index, "\"refund: (ticket]").as_deref(),
        Some("billing.md")
    );
    assert!(index.search("refund", 0).expect("k = 0").is_empty());
}

#[test]
fn update_path_replaces_and_removes_a_document() {
    let docs = tempfile::tempdir().expect("tempdir");
    corpus(docs.path());
    let index = open(docs.path(), None);
    let before = index.stats();
    assert!(found(&index, "Homebrew"));

    write(
        docs.path(),
        "guide/install.md",
        "# Install\n\nUse the Flatpak bundle from now on.\n",
    );
    let report = index
        .update_path(&docs.path().join("guide/install.md"))
        .expect("update");
    assert_eq!(report.path, "guide/install.md");
    assert_eq!(report.removed, 3);
    assert_eq!(report.added, 1);
    assert!(!report.unchanged);
    assert!(found(&index, "flatpak"));
    assert!(!found(&index, "Homebrew"));
    assert_eq!(index.passage("guide/install.md#2"), None);
    let after = index.stats();
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(after.chunked, before.chunked + 1);

    // Unchanged: nothing to do, no commit.
    let report = index
        .update_path(Path::new("guide/install.md"))
        .expect("relative path");
    assert!(report.unchanged);
    assert_eq!(index.stats().generation, after.generation);

    // Deleted: its passages go.
    std::fs::remove_file(docs.path().join("billing.md")).expect("rm");
    let report = index.update_path(Path::new("billing.md")).expect("update");
    assert_eq!((report.removed, report.added), (2, 0));
    assert!(!found(&index, "refund"));
    assert_eq!(index.stats().documents, 3);

    // A new file.
    write(
        docs.path(),
        "faq.md",
        "Quokkas are allowed in the office.\n",
    );
    let report = index.update_path(Path::new("faq.md")).expect("update");
    assert_eq!((report.removed, report.added), (0, 1));
    assert_eq!(top_path(&index, "quokkas").as_deref(), Some("faq.md"));

    // A folder stands for the documents under it; the docs folder itself
    // for all of them.
    write(
        docs.path(),
        "api/errors.md",
        "Error 503 means try again later.\n",
    );
    std::fs::remove_file(docs.path().join("api/limits.md")).expect("rm");
    let report = index
        .update_path(&docs.path().join("api"))
        .expect("update folder");
    assert_eq!(
        (report.path.as_str(), report.removed, report.added),
        ("api", 1, 1)
    );
    assert!(found(&index, "503"));
    assert!(!found(&index, "429"));
    write(docs.path(), "notes.txt", "Offsite cancelled.\n");
    let report = index.update_path(docs.path()).expect("update all");
    assert_eq!(
        (report.path.as_str(), report.removed, report.added),
        ("", 1, 1)
    );
    assert!(found(&index, "cancelled"));

    // Outside the folder: refused, with both paths named.
    let outside = index.update_path(Path::new("/etc/hostname"));
    match outside {
        Err(e @ ContextError::OutsideDocs { .. }) => {
            assert!(e.to_string().contains("/etc/hostname"), "{e}")
        }
        other => panic!("expected OutsideDocs, got {other:?}"),
    }
    assert!(matches!(
        index.update_path(Path::new("../x.md")),
        Err(ContextError::OutsideDocs { .. })
    ));
}

#[test]
fn the_watcher_picks_up_changes_one_file_at_a_time() {
    let docs = tempfile::tempdir().expect("tempdir");
    corpus(docs.path());
    let index = open(docs.path(), None);
    index.watch(Duration::from_millis(100)).expect("watch");
    index
        .watch(Duration::from_millis(100))
        .expect("watch twice");
    let start = index.stats();

    let poll = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "the watcher did not {what} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    write(
        docs.path(),
        "new/axolotl.md",
        "# Pets\n\nThe axolotl lives in the lab.\n",
    );
    poll("index a new file", &|| found(&index, "axolotl"));

    // Written beside it and renamed into place, as editors save.
    write(
        docs.path(),
        ".tmp-save",
        "Capybaras replaced the axolotl.\n",
    );
    std::fs::rename(
        docs.path().join(".tmp-save"),
        docs.path().join("new/axolotl.md"),
    )
    .expect("rename");
    poll("reindex a replaced file", &|| found(&index, "capybaras"));
    assert!(
        index
            .search("lab", 10)
            .expect("search")
            .iter()
            .all(|h| h.passage.path != "new/axolotl.md")
    );

    std::fs::remove_file(docs.path().join("billing.md")).expect("rm");
    poll("drop a deleted file", &|| !found(&index, "refund"));

    // A whole folder removed at once.
    std::fs::remove_dir_all(docs.path().join("guide")).expect("rm -r");
    poll("drop a deleted folder", &|| !found(&index, "homebrew"));

    // Only the changed files were chunked: at most a couple of chunkings per
    // change (an editor's save can arrive as two events), never the folder.
    let chunked = index.stats().chunked - start.chunked;
    assert!((2..=4).contains(&chunked), "chunked {chunked} documents");
    assert_eq!(index.stats().documents, 3);
}

#[test]
fn a_persisted_index_reopens_without_rechunking() {
    let docs = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    corpus(docs.path());
    let first = open(docs.path(), Some(dir.path()));
    assert_eq!(first.opened().chunked, 4);
    let stats = first.stats();
    drop(first);

    // Nothing changed: nothing chunked, nothing committed.
    let second = open(docs.path(), Some(dir.path()));
    assert_eq!(second.opened().chunked, 0);
    assert_eq!(second.opened().unchanged, 4);
    assert_eq!(second.stats().chunked, 0);
    assert_eq!(second.stats().passages, stats.passages);
    assert_eq!(second.stats().generation, stats.generation);
    assert_eq!(top_path(&second, "refund").as_deref(), Some("billing.md"));

    // While one process holds the index, another cannot write to it.
    let locked = Bm25Index::open(
        docs.path(),
        Some(dir.path()),
        ChunkOptions::default(),
        whitespace_counter(),
    );
    assert!(
        matches!(locked, Err(ContextError::IndexLocked { .. })),
        "{locked:?}"
    );
    drop(second);

    // One changed, one removed, one added while it was closed.
    write(docs.path(), "notes.txt", "The offsite moved to Porto.\n");
    std::fs::remove_file(docs.path().join("billing.md")).expect("rm");
    write(docs.path(), "faq.md", "Quokkas are welcome.\n");
    let third = open(docs.path(), Some(dir.path()));
    let opened = third.opened();
    assert_eq!(
        (opened.unchanged, opened.chunked, opened.removed),
        (2, 2, 1)
    );
    assert!(found(&third, "porto"));
    assert!(!found(&third, "lisbon"));
    assert!(!found(&third, "refund"));
    assert!(found(&third, "quokkas"));
    assert!(found(&third, "homebrew"));
    drop(third);

    // Other chunk options make other passages: everything is re-chunked.
    let other = Bm25Index::open(
        docs.path(),
        Some(dir.path()),
        ChunkOptions {
            max_tokens: 50,
            overlap_tokens: 5,
        },
        whitespace_counter(),
    )
    .expect("open");
    assert_eq!(other.opened().chunked, 4);
    assert!(found(&other, "quokkas"));
}

#[test]
fn ten_thousand_caller_built_passages() {
    let passages: Vec<Passage> = (0..10_000)
        .map(|i| Passage {
            id: format!("doc{}.md#{}", i / 10, i % 10 + 1),
            path: format!("doc{}.md", i / 10),
            heading: format!("Section {}", i % 7),
            text: format!(
                "passage number w{i} about topic{} and common filler words for the index",
                i % 97
            ),
        })
        .collect();
    let index = Bm25Index::from_passages(passages).expect("index");
    let stats = index.stats();
    assert_eq!(stats.passages, 10_000);
    assert_eq!(stats.documents, 1_000);

    let hits = index.search("w4321", 5).expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].passage.id, "doc432.md#2");
    assert_eq!(index.search("topic13", 1000).expect("search").len(), 103);
    assert_eq!(
        index.passage("doc999.md#10").map(|p| p.text),
        Some("passage number w9999 about topic8 and common filler words for the index".into())
    );
    // No folder to follow.
    assert!(matches!(
        index.update_path(Path::new("doc1.md")),
        Err(ContextError::NoDocsFolder { .. })
    ));
}

fn hit(id: &str, score: f32) -> Hit {
    Hit {
        passage: Passage {
            id: id.into(),
            path: id.into(),
            heading: String::new(),
            text: String::new(),
        },
        score,
    }
}

#[test]
fn reciprocal_rank_fusion_orders_by_summed_reciprocal_ranks() {
    let bm25 = vec![hit("a", 12.0), hit("b", 9.0), hit("c", 1.0)];
    let vector = vec![hit("b", 0.9), hit("c", 0.8), hit("d", 0.7)];
    let fused = reciprocal_rank_fusion(&[bm25, vector], 60.0);
    let ids: Vec<&str> = fused.iter().map(|h| h.passage.id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "a", "d"]);
    let expected_b = 1.0 / 62.0 + 1.0 / 61.0;
    assert!((fused[0].score - expected_b).abs() < 1e-6);
    assert!((fused[3].score - 1.0 / 63.0).abs() < 1e-6);

    // Equal scores: by id. A repeated id counts once per list.
    let fused = reciprocal_rank_fusion(
        &[vec![hit("y", 1.0), hit("y", 0.5)], vec![hit("x", 1.0)]],
        60.0,
    );
    let ids: Vec<&str> = fused.iter().map(|h| h.passage.id.as_str()).collect();
    assert_eq!(ids, ["x", "y"]);
    assert_eq!(fused[0].score, fused[1].score);
    assert!(reciprocal_rank_fusion(&[], 60.0).is_empty());
}
