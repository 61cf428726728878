//! Shared by the integration tests: builds the guest plugins once per test
//! binary (cargo makes repeat builds a no-op) and lays out plugin directories.
#![allow(dead_code)]

use reins::runtime::RuntimeSettings;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent")
}

/// Builds every guest crate for wasm32-wasip2 (once) and returns the output dir.
pub fn guest_out_dir() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let root = repo_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("plugins/Cargo.toml"))
            .status()
            .expect("run cargo to build the guest plugins");
        assert!(status.success(), "building the guest plugins failed");
        root.join("target/wasm32-wasip2/release")
    })
}

/// The built `.wasm` of plugin `name` (`json-schema` → `json_schema.wasm`).
pub fn wasm_path(name: &str) -> PathBuf {
    let p = guest_out_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(p.is_file(), "no built plugin at {}", p.display());
    p
}

/// The sidecar shipped with plugin `name`, if any.
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

/// A fresh plugins directory holding the named plugins and their sidecars.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in names {
        install(dir.path(), name, name);
    }
    dir
}

/// Copies plugin `name` (and its sidecar) into `dir` as `as_name`.
pub fn install(dir: &Path, name: &str, as_name: &str) {
    std::fs::copy(wasm_path(name), dir.join(format!("{as_name}.wasm"))).expect("copy wasm");
    if let Some(sidecar) = sidecar_path(name) {
        std::fs::copy(sidecar, dir.join(format!("{as_name}.toml"))).expect("copy sidecar");
    }
}

/// Runtime settings for tests: a compile cache shared by all tests of a run.
pub fn settings() -> RuntimeSettings {
    RuntimeSettings {
        cache_dir: Some(repo_root().join("target/reins-test-cache")),
        ..RuntimeSettings::default()
    }
}

/// A `reins serve` child process on an ephemeral loopback port; killed on drop.
pub struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reins serve --config CONFIG --listen 127.0.0.1:0` and waits for
/// the line that names the bound address.
pub fn serve(config: &Path) -> Served {
    serve_with(config, &[])
}

/// [`serve`] with more arguments (e.g. `--node-id`). Its stdout is drained
/// by a thread, so a chatty server never blocks on a full pipe.
pub fn serve_with(config: &Path, args: &[&str]) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_reins"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start reins serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(base) => Served { child, base },
        Err(_) => {
            let _ = child.kill();
            panic!("reins serve did not start listening");
        }
    }
}

/// A tool-manifest sidecar granting one `issue_refund(order, amount)` tool,
/// shared by the tests of gated actions.
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
