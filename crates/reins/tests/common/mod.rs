//! Shared by the integration tests: builds the guest plugins once per test
//! binary (cargo makes repeat builds a no-op) and lays out plugin directories.
#![allow(dead_code)]

use reins::runtime::RuntimeSettings;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
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

/// Copies an example directory (without any `.wasm`: tests copy the built plugins in).
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

/// Serves `app` on an ephemeral loopback port; returns `http://ADDR`.
pub async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// An OpenAI chat completion answering with `message`.
pub fn completion(message: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

/// An OpenAI assistant message calling `issue_refund(order, amount)`.
pub fn refund_call(order: &str, amount: f64) -> serde_json::Value {
    let arguments = serde_json::json!({"order": order, "amount": amount}).to_string();
    serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "issue_refund", "arguments": arguments}}
    ]})
}

/// An in-process agent model: turn n (n = `tool` messages so far) asks for
/// refund `A-n` of 1 until `steps`, then answers `{"done": steps}`.
pub struct AgentModel {
    pub steps: usize,
    /// The turn whose call fails (the model is gone).
    pub fail_at: Option<usize>,
    /// The turn that asks for a refund of 500 (an escalation) instead of 1.
    pub big_at: Option<usize>,
    /// How long each call takes.
    pub latency: std::time::Duration,
}

impl AgentModel {
    pub fn new(steps: usize) -> AgentModel {
        AgentModel {
            steps,
            fail_at: None,
            big_at: None,
            latency: std::time::Duration::ZERO,
        }
    }
}

impl reins::provider::Provider for AgentModel {
    fn name(&self) -> &str {
        "agent"
    }
    fn model(&self) -> &str {
        "agent-test"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn complete<'a>(&'a self, request: &'a reins::provider::ChatRequest) -> reins::provider::CompletionFuture<'a> {
        use reins::provider::{ChatResponse, ProviderError, ToolCall};
        let n = request.messages.iter().filter(|m| m.role == "tool").count();
        let fail = self.fail_at == Some(n);
        let amount = if self.big_at == Some(n) { 500 } else { 1 };
        let (steps, latency) = (self.steps, self.latency);
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if fail {
                return Err(ProviderError::BadResponse {
                    provider: "agent".into(),
                    message: "crash".into(),
                });
            }
            let (content, tool_calls) = if n < steps {
                let call = ToolCall {
                    id: None,
                    name: "issue_refund".into(),
                    arguments: serde_json::json!({"order": format!("A-{n}"), "amount": amount}),
                };
                (String::new(), vec![call])
            } else {
                (serde_json::json!({"done": n}).to_string(), Vec::new())
            };
            Ok(ChatResponse {
                content,
                tool_calls,
                usage: None,
                model: "agent-test".into(),
            })
        })
    }
}

/// The `q` quantile of sorted durations (benches).
pub fn quantile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Whole microseconds, for tables (benches).
pub fn us(d: std::time::Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}
