//! The host imports `count-tokens`, `context-chunks` and `explain-drop`
//! through real guests: the bundled `context-budget` (a context builder
//! that counts with the host and explains its drops) and `citations` (a
//! validator reading the run's context chunks). Both are built here for
//! wasm32-wasip2 (a no-op when they are up to date).

use reins_runtime::{CallContext, Chunk, Plugin, Runtime, RuntimeSettings, Tokenizer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Builds the two guests once per test binary.
fn guest_dir() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let root = repo_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("plugins/Cargo.toml"))
            .args(["-p", "context-budget", "-p", "citations"])
            .status()
            .expect("run cargo to build the guest plugins");
        assert!(status.success(), "building the guest plugins failed");
        root.join("target/wasm32-wasip2/release")
    })
}

/// Plugin `name` with its bundled sidecar, whose `[config]` a test may
/// replace with its own, and its isolation with `pooled`.
fn load(name: &str, config: Option<&str>, pooled: bool) -> (tempfile::TempDir, Plugin) {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join(format!("{name}.wasm"));
    std::fs::copy(
        guest_dir().join(format!("{}.wasm", name.replace('-', "_"))),
        &wasm,
    )
    .expect("copy wasm");
    let bundled = std::fs::read_to_string(repo_root().join(format!("plugins/{name}/{name}.toml")))
        .expect("sidecar");
    let sidecar = match config {
        // Everything before the bundled `[config]`, then the test's.
        Some(config) => format!(
            "{}[config]\n{config}\n",
            &bundled[..bundled.find("[config]").expect("[config]")]
        ),
        None => bundled,
    };
    let sidecar = if pooled {
        sidecar.replace(
            "isolation = \"per-call\"",
            "isolation = \"pooled\"\npool_size = 1",
        )
    } else {
        sidecar
    };
    std::fs::write(dir.path().join(format!("{name}.toml")), sidecar).expect("write sidecar");
    let settings = RuntimeSettings {
        cache_dir: Some(repo_root().join("target/reins-test-cache")),
        ..RuntimeSettings::default()
    };
    let runtime = Runtime::new(&settings).expect("runtime");
    let plugin = runtime.load_file(&wasm).expect("load plugin");
    (dir, plugin)
}

fn ctx(tokenizer: Tokenizer, context_chunks: &str) -> CallContext {
    CallContext {
        run_id: "r1".into(),
        pipeline: "test".into(),
        attempt: 1,
        tokenizer,
        context_chunks: Arc::from(context_chunks),
        ..Default::default()
    }
}

fn chunk(id: &str, score: f32, text: &str) -> Chunk {
    Chunk {
        id: id.into(),
        text: text.into(),
        score,
        source: id.split('#').next().unwrap_or_default().into(),
    }
}

fn label(id: &str) -> String {
    format!("\n\n[{id}] ")
}

#[test]
fn a_context_builder_counts_with_the_pipelines_tokenizer_and_explains_drops() {
    let (_dir, plugin) = load(
        "context-budget",
        Some("order = \"score\"\nmin_trim_tokens = 8\nmin_score = 0.1"),
        false,
    );
    let long = "Internationalization of the installer: localized strings, right-to-left layouts, \
                pluralization rules and date formats are configured per locale. "
        .repeat(6);
    let chunks = vec![
        chunk(
            "guide.md#1",
            0.9,
            "Run the installer as an administrator, then restart the service.",
        ),
        chunk("guide.md#2", 0.8, &long),
        chunk(
            "faq.md#4",
            0.5,
            "The installer needs 2 GB of free disk space.",
        ),
        chunk("old.md#9", 0.05, "Version 1 used a different installer."),
    ];
    for tokenizer in [Tokenizer::O200k, Tokenizer::Heuristic] {
        let first = tokenizer.count(&label("guide.md#1")) + tokenizer.count(&chunks[0].text);
        let budget = first + 40;
        let out = plugin
            .assemble(&ctx(tokenizer, ""), "installer", &chunks, budget as u32)
            .expect("assembles");
        let ids: Vec<&str> = out.chunks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["guide.md#1", "guide.md#2"], "{}", tokenizer.name());
        // What the guest packed is what the host counts: the budget holds.
        let used: usize = out
            .chunks
            .iter()
            .map(|c| tokenizer.count(&label(&c.id)) + tokenizer.count(&c.text))
            .sum();
        assert!(used <= budget, "{}: {used} > {budget}", tokenizer.name());
        let trimmed = &out.chunks[1].text;
        assert!(long.starts_with(trimmed.as_str()) && !trimmed.ends_with('…'));
        let reasons: Vec<(&str, &str)> = out
            .dropped
            .iter()
            .map(|d| (d.id.as_str(), d.reason.as_str()))
            .collect();
        let trim = format!(
            "trimmed to {} of {} tokens (budget)",
            tokenizer.count(trimmed),
            tokenizer.count(&long)
        );
        let left = budget - used;
        let over = format!(
            "over budget: needs {} tokens, {left} left",
            tokenizer.count(&label("faq.md#4")) + tokenizer.count(&chunks[2].text)
        );
        assert_eq!(
            reasons,
            [
                ("old.md#9", "score 0.05 under the floor 0.10"),
                ("guide.md#2", trim.as_str()),
                ("faq.md#4", over.as_str()),
            ],
            "{}",
            tokenizer.name()
        );
    }
    // The two tokenizers really differ on this text: the host answered with
    // the one the call named.
    assert_ne!(
        Tokenizer::O200k.count(&long),
        Tokenizer::Heuristic.count(&long)
    );
}

#[test]
fn a_validator_reads_the_runs_context_chunks() {
    let (_dir, plugin) = load("citations", None, true);
    let context = r#"[{"id":"a.md#1","source":"a.md","score":0.9,"kept":true},
                      {"id":"b.md#2","source":"b.md","score":0.4,"kept":false}]"#;
    let answer =
        serde_json::Value::String("Restart it [a.md#1], as [b.md#2] and [z.md#7] say.".into())
            .to_string();
    let verdict = plugin
        .validate(&ctx(Tokenizer::O200k, context), &answer)
        .expect("validates");
    let found: Vec<(&str, &str)> = verdict
        .violations
        .iter()
        .map(|v| (v.code.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "not-in-context",
                "cites [b.md#2], which was left out of the context the answer was written from; cite only these: [a.md#1]"
            ),
            (
                "unknown-citation",
                "cites [z.md#7], which is not in the context; cite only these: [a.md#1]"
            ),
        ]
    );
    // No context given: `[]`, so every citation is unknown.
    let verdict = plugin
        .validate(&ctx(Tokenizer::O200k, ""), &answer)
        .expect("validates");
    assert_eq!(verdict.violations.len(), 3);
    assert!(
        verdict
            .violations
            .iter()
            .all(|v| v.code == "unknown-citation")
    );
}

#[test]
fn explained_drops_do_not_leak_into_the_next_call_of_a_pooled_instance() {
    let (_dir, plugin) = load("context-budget", Some("min_score = 0.5"), true);
    let chunks = vec![chunk("a.md#1", 0.9, "kept"), chunk("b.md#2", 0.1, "weak")];
    let first = plugin
        .assemble(&ctx(Tokenizer::O200k, ""), "", &chunks, 100)
        .expect("assembles");
    assert_eq!(first.dropped.len(), 1);
    let second = plugin
        .assemble(&ctx(Tokenizer::O200k, ""), "", &chunks[..1], 100)
        .expect("assembles");
    assert!(second.dropped.is_empty(), "{:?}", second.dropped);
}
