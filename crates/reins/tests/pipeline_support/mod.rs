//! Helpers shared by the `pipeline_*` integration tests: a config around a
//! plugins directory, a scripted model the test keeps a handle on, and
//! sidecars written for the test.
#![allow(dead_code)]

use reins::Host;
use reins::provider::{ScriptEntry, ScriptedProvider};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The output schema most tests use.
pub fn refund_schema() -> Value {
    json!({
        "type": "object",
        "required": ["amount", "currency", "reason"],
        "additionalProperties": false,
        "properties": {
            "amount": {"type": "number", "minimum": 0},
            "currency": {"enum": ["USD", "EUR"]},
            "reason": {"type": "string", "minLength": 3}
        }
    })
}

/// A scripted model from JSON entries (strings or objects, as in a script file).
pub fn script(entries: Vec<Value>) -> Arc<ScriptedProvider> {
    let entries = ScriptedProvider::from_values(entries).expect("valid script");
    Arc::new(ScriptedProvider::new("model", "scripted-test", entries))
}

/// A scripted entry answering with `content` (a JSON value is sent as text).
pub fn answer(content: Value) -> Value {
    json!({"content": content})
}

/// Writes (or replaces) the sidecar of `name` in `dir`.
pub fn sidecar(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write sidecar");
}

/// The config head every test shares: the plugins dir, the test compile cache
/// and a scripted provider named `model` (replaced by the test's own).
pub fn config(plugins: &Path, body: &str) -> String {
    let cache = plugins::settings().resolved_cache_dir();
    format!(
        "plugins_dir = {:?}\n\n[runtime]\ncache_dir = {:?}\n\n[providers.model]\nkind = \"scripted\"\nresponses = []\n\n{body}",
        plugins.display().to_string(),
        cache.display().to_string()
    )
}

/// A host over `plugins` with `body` (pipelines, more providers) and `model` as the scripted model.
pub async fn host(plugins: &Path, body: &str, model: &Arc<ScriptedProvider>) -> Host {
    Host::builder()
        .config_str(config(plugins, body), plugins)
        .provider("model", model.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("config error: {e}"))
}

/// The same, returning the config error.
pub async fn host_err(plugins: &Path, body: &str) -> String {
    match Host::builder()
        .config_str(config(plugins, body), plugins)
        .build()
        .await
    {
        Ok(_) => panic!("expected a config error"),
        Err(e) => e.to_string(),
    }
}

/// Entries that answer attempt `n` with `answers[n-1]`.
pub fn by_attempt(answers: &[Value]) -> Vec<Value> {
    answers
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"attempt": i + 1, "content": a}))
        .collect()
}

pub fn entry_text(text: &str) -> ScriptEntry {
    ScriptEntry::text(text)
}
