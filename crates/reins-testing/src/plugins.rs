//! The guest plugins as the tests use them: built once per test binary
//! (cargo makes a repeat build a no-op) and copied into fresh directories,
//! so a test that changes a plugin directory never affects another.

use reins::runtime::RuntimeSettings;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root, from this crate's place in it, so tests find
/// `plugins/`, `examples/` and `target/` wherever they run from.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Builds every guest crate for wasm32-wasip2 (once) and returns the output
/// dir. The guests live in their own workspace, so the host's build never
/// builds them.
pub fn guest_out_dir() -> &'static Path {
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
            .status()
            .expect("run cargo to build the guest plugins");
        assert!(status.success(), "building the guest plugins failed");
        root.join("target/wasm32-wasip2/release")
    })
}

/// Every bundled plugin with a case file of its own (`judge` needs a
/// pipeline's judge model: `pipeline_dropin` and the support-chat example
/// test it).
pub const BUNDLED: [&str; 14] = [
    "normalize-text",
    "json-schema",
    "coerce-numbers",
    "ranges",
    "sql-guard",
    "spend-limit",
    "tool-manifest",
    "pii",
    "redact-secrets",
    "blocklist",
    "grounded",
    "tool-rules",
    "context-budget",
    "citations",
];

/// The built `.wasm` of plugin `name` (`json-schema` → `json_schema.wasm`:
/// cargo names artifacts after the crate, with underscores).
pub fn wasm_path(name: &str) -> PathBuf {
    let p = guest_out_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(p.is_file(), "no built plugin at {}", p.display());
    p
}

/// `target/plugins/` as `scripts/build-plugins.sh` lays it out: every
/// bundled plugin and its sidecar. The examples' configs read it. Filled
/// once per test process; each file is replaced by a rename, so another
/// process reading it never sees half a file.
pub fn built_plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/plugins");
        std::fs::create_dir_all(&dir).expect("target/plugins");
        let mut names: Vec<&str> = BUNDLED.to_vec();
        names.push("judge");
        for name in names {
            let mut files = vec![(wasm_path(name), format!("{name}.wasm"))];
            files.extend(sidecar_path(name).map(|s| (s, format!("{name}.toml"))));
            for (from, to) in files {
                let tmp = dir.join(format!(".{to}.{}", std::process::id()));
                std::fs::copy(&from, &tmp).expect("copy into target/plugins");
                std::fs::rename(&tmp, dir.join(&to)).expect("rename into target/plugins");
            }
        }
        dir
    })
}

/// A copy of `examples/NAME` in a temp dir, its `plugins_dir` pointed at
/// [`built_plugins_dir`] (the example's own says `../../target/plugins`,
/// relative to the repository).
pub fn example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&repo_root().join("examples").join(name), dir.path());
    let config = dir.path().join("reins.toml");
    let text = std::fs::read_to_string(&config).expect("the example's reins.toml");
    let line = "plugins_dir = \"../../target/plugins\"";
    assert!(
        text.contains(line),
        "examples/{name}/reins.toml reads target/plugins"
    );
    let built = format!(
        "plugins_dir = {:?}",
        built_plugins_dir().display().to_string()
    );
    std::fs::write(&config, text.replace(line, &built)).expect("write reins.toml");
    dir
}

/// The sidecar shipped with plugin `name`, if any: bundled plugins keep it
/// next to their crate, test fixtures under `plugins/testing/`.
pub fn sidecar_path(name: &str) -> Option<PathBuf> {
    let root = repo_root().join("plugins");
    [root.join(name), root.join("testing").join(name)]
        .into_iter()
        .map(|d| d.join(format!("{name}.toml")))
        .find(|p| p.is_file())
}

/// The case file shipped with bundled plugin `name`.
pub fn cases_path(name: &str) -> PathBuf {
    repo_root().join("plugins").join(name).join("cases.json")
}

/// A fresh plugins directory holding the named plugins and their sidecars;
/// removed when dropped.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in names {
        install(dir.path(), name, name);
    }
    dir
}

/// Copies plugin `name` (and its sidecar) into `dir` as `as_name`, so one
/// build can stand under several names.
pub fn install(dir: &Path, name: &str, as_name: &str) {
    std::fs::copy(wasm_path(name), dir.join(format!("{as_name}.wasm"))).expect("copy wasm");
    if let Some(sidecar) = sidecar_path(name) {
        std::fs::copy(sidecar, dir.join(format!("{as_name}.toml"))).expect("copy sidecar");
    }
}

/// Writes (or replaces) the sidecar of plugin `name` in `dir`.
pub fn sidecar(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write sidecar");
}

/// Where every test of a run keeps compiled components: compiling a
/// component takes seconds, deserializing it milliseconds.
pub fn cache_dir() -> PathBuf {
    repo_root().join("target/reins-test-cache")
}

/// Runtime settings for tests: the shared compile cache of [`cache_dir`].
pub fn settings() -> RuntimeSettings {
    RuntimeSettings {
        cache_dir: Some(cache_dir()),
        ..RuntimeSettings::default()
    }
}

/// A tool-manifest sidecar granting one `issue_refund(order, amount)` tool:
/// the action most tests of gates, executors and clients take.
pub const REFUND_TOOL: &str = r#"
[[config.tools]]
name = "issue_refund"
description = "Refund an order"
access = "write"
[config.tools.parameters]
type = "object"
required = ["order", "amount"]
properties = { order = { type = "string" }, amount = { type = "number" } }
"#;

/// The refund tool's gate sidecars in `dir`: `tool-manifest` declaring
/// [`REFUND_TOOL`], and `spend-limit` escalating refunds above
/// `escalate_above` within a `daily_budget`.
pub fn refund_sidecars(dir: &Path, escalate_above: f64, daily_budget: f64) {
    std::fs::write(dir.join("tool-manifest.toml"), REFUND_TOOL).expect("sidecar");
    std::fs::write(
        dir.join("spend-limit.toml"),
        format!("[config]\nescalate_above = {escalate_above:?}\ndaily_budget = {daily_budget:?}\n"),
    )
    .expect("sidecar");
}

/// Copies an example directory without any `.wasm`: tests copy the
/// freshly built plugins in, never a stale build.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.path().extension().is_none_or(|e| e != "wasm") {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The call context the runtime tests call plugins with (run `r1` of
/// pipeline `test`, attempt 1), with `metadata` as the caller's.
pub fn call_context(metadata: serde_json::Value) -> reins::runtime::CallContext {
    reins::runtime::CallContext {
        run_id: "r1".into(),
        pipeline: "test".into(),
        attempt: 1,
        metadata,
        ..Default::default()
    }
}
