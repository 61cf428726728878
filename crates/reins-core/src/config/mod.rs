//! `reins.toml`: the plugins directory, the model providers and the pipelines.
//!
//! Every table refuses unknown keys, so a typo never silently changes what a
//! pipeline does. Parse errors name the file, the line and the key; checks
//! that need more than the file (a plugin that is not in the plugins
//! directory, a schema that does not compile) name the pipeline and the thing
//! that is wrong. Relative paths are relative to the directory of the file.
//!
//! ```toml
//! plugins_dir = "../../target/plugins"
//!
//! [providers.replay]
//! kind = "scripted"
//! file = "responses.jsonl"
//!
//! [pipelines.contract-risks]
//! model = "replay"
//! system_prompt_file = "prompt.md"
//! normalizers = ["normalize-text"]
//! schema = "schema.json"
//! validators = [{ plugin = "ranges", on_fail = "repair" }]
//! repair = { max_attempts = 3, token_budget = 20000 }
//! ```

use reins_runtime::RuntimeSettings;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod context;
mod error;
mod mcp;
mod pipeline;
mod provider;
mod resilience;
pub use context::*;
pub use error::{ConfigError, layer_key};
pub use mcp::{McpConfig, McpServerConfig, Passthrough, PipelineMcp};
pub use pipeline::*;
pub use provider::*;
pub use resilience::{
    BreakerConfig, CacheMode, DegradedConfig, HttpConfig, OnSaturated, default_degraded_message,
};

/// The whole `reins.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of `*.wasm` plugins and their sidecars.
    pub plugins_dir: PathBuf,
    /// Reload plugins when files in `plugins_dir` change.
    #[serde(default)]
    pub watch: bool,
    /// Engine sizing, owned by the runtime.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// `[server]`: the listener, limits and credentials of `reins serve`.
    /// Owned and checked by `reins-server` (`ServerSettings::from_config`);
    /// kept as a table here so one `reins.toml` serves the library and the
    /// server without the library knowing HTTP.
    #[serde(default)]
    pub server: toml::Table,
    /// `[telemetry]`: OpenTelemetry export (OTLP endpoint, sampling,
    /// `capture_content`). Owned and checked by the root (`reins`), which
    /// builds the exporter and hands the host a [`crate::telemetry::Telemetry`].
    #[serde(default)]
    pub telemetry: toml::Table,
    /// Model providers by name; pipelines refer to these names.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Pipelines by name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// `[retrievers.NAME]`: where pipelines' context comes from.
    #[serde(default)]
    pub retrievers: BTreeMap<String, RetrieverConfig>,
    /// `[mcp]`: the MCP servers pipelines front.
    #[serde(default)]
    pub mcp: McpConfig,
    /// `[state]`: where runs, checkpoints, approvals and actions are kept
    /// (default: SQLite `reins-state.db` next to the config).
    #[serde(default)]
    pub state: reins_state::StateSettings,
    /// The directory relative paths are resolved against (the file's
    /// directory). Not a key of the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config came from, for error messages.
    #[serde(skip)]
    pub origin: PathBuf,
    /// The file as parsed: a reload compares it with the serving one to
    /// tell what changed (and what only a restart can apply).
    #[serde(skip)]
    pub raw: toml::Table,
}

/// A list of names for an error message ("none" when empty).
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// Keys a running process cannot take from a reload: the listener, the
/// state store, the engine and the plugins directory are built once.
pub const RESTART_ONLY: [&str; 6] = [
    "plugins_dir",
    "watch",
    "runtime",
    "server",
    "state",
    "telemetry",
];

mod defaults {
    pub fn stream_window_chars() -> usize {
        24
    }
    pub fn memory_budget() -> u64 {
        500
    }
    pub fn memory_runs() -> u32 {
        20
    }
    pub fn webhook_timeout_ms() -> u64 {
        5_000
    }
    pub fn webhook_retries() -> u32 {
        3
    }
    pub fn limit_key() -> String {
        "tenant".to_owned()
    }
    pub fn limit_window() -> u32 {
        60
    }
    pub fn anthropic_base_url() -> String {
        "https://api.anthropic.com".to_owned()
    }
    pub fn anthropic_api_key_env() -> String {
        "ANTHROPIC_API_KEY".to_owned()
    }
    pub fn anthropic_max_tokens() -> u32 {
        1024
    }
    pub fn scripted_model() -> String {
        "scripted".to_owned()
    }
    pub fn context_budget() -> u32 {
        2_000
    }
    pub fn context_plugin() -> String {
        "context-budget".to_owned()
    }
    pub fn chunk_tokens() -> usize {
        200
    }
    pub fn overlap_tokens() -> usize {
        30
    }
    pub fn top_k() -> usize {
        20
    }
    pub fn rrf_k() -> f32 {
        60.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn pgvector_table() -> String {
        "reins_chunks".to_owned()
    }
    pub fn embed_batch() -> usize {
        64
    }
    pub fn embed_cache() -> usize {
        10_000
    }
    pub fn summary_tokens() -> u32 {
        256
    }
    pub fn summary_cache() -> usize {
        1_000
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn repair_strategies() -> Vec<super::RepairStrategy> {
        use super::RepairStrategy::*;
        vec![StrictFormat, Temperature, Model]
    }
    pub fn judge_max_tokens() -> u64 {
        256
    }
    pub fn temperature_step() -> f64 {
        0.4
    }
    pub fn max_fix_rounds() -> u32 {
        3
    }
}

impl Config {
    /// Reads and parses a `reins.toml`; relative paths resolve against its directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_owned)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, &base)
    }

    /// Parses config text. `origin` names it in errors; `base_dir` resolves relative paths.
    pub fn parse(
        text: &str,
        origin: impl AsRef<Path>,
        base_dir: impl AsRef<Path>,
    ) -> Result<Config, ConfigError> {
        let origin = origin.as_ref().to_owned();
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.base_dir = base_dir.as_ref().to_owned();
        config.origin = origin;
        config.raw = text.parse().unwrap_or_default();
        config.check()?;
        Ok(config)
    }

    /// Every file the config reads besides itself (prompts, schemas,
    /// templates, scripted responses), resolved: what a reload watches.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        for p in self.pipelines.values() {
            files.extend(p.system_prompt_file.iter().cloned());
            files.extend(p.repair.template_file.iter().cloned());
            if let Some(SchemaSource::File(f)) = &p.schema {
                files.push(f.clone());
            }
            files.extend(
                p.layer_plugins()
                    .into_iter()
                    .filter_map(|l| l.config_file.cloned()),
            );
        }
        for provider in self.providers.values() {
            if let ProviderConfig::Scripted(s) = provider {
                files.extend(s.file.iter().cloned());
            }
        }
        let mut files: Vec<PathBuf> = files.iter().map(|f| self.resolve(f)).collect();
        files.sort();
        files.dedup();
        files
    }

    /// The restart-only keys (see [`RESTART_ONLY`]) whose values differ in
    /// `next`, dotted one level deep (`server.listen`, `state.kind`).
    pub fn restart_keys(&self, next: &Config) -> Vec<String> {
        let mut keys = Vec::new();
        for key in RESTART_ONLY {
            match (self.raw.get(key), next.raw.get(key)) {
                (a, b) if a == b => {}
                (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                    let names: std::collections::BTreeSet<&String> =
                        a.keys().chain(b.keys()).collect();
                    keys.extend(
                        names
                            .into_iter()
                            .filter(|k| a.get(*k) != b.get(*k))
                            .map(|k| format!("{key}.{k}")),
                    );
                }
                _ => keys.push(key.to_owned()),
            }
        }
        keys
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The plugins directory, resolved.
    pub fn plugins_dir(&self) -> PathBuf {
        self.resolve(&self.plugins_dir)
    }

    /// Checks that need the whole file but nothing outside it; every
    /// mistake is reported, not only the first.
    fn check(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            path: self.origin.clone(),
            key,
            message: message.to_owned(),
        };
        for (name, p) in &self.pipelines {
            let key = |k: &str| format!("pipelines.{name}.{k}");
            let providers = std::iter::once(("model", &p.model))
                .chain(p.fallbacks.iter().map(|f| ("fallbacks", f)))
                .chain(p.repair.model.iter().map(|m| ("repair.model", m)))
                .chain(p.judge.iter().map(|j| ("judge.provider", &j.provider)));
            for (k, provider) in providers {
                if !self.providers.contains_key(provider) {
                    errors.push(ConfigError::UnknownProvider {
                        path: self.origin.clone(),
                        key: key(k),
                        provider: provider.clone(),
                        known: self
                            .providers
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            if p.cache.reads() && p.cache_max_entries == 0 {
                errors.push(invalid(
                    key("cache_max_entries"),
                    "must be at least 1 when the cache is on",
                ));
            }
            if p.repair.max_attempts == 0 {
                errors.push(invalid(key("repair.max_attempts"), "must be at least 1"));
            }
            if p.repair.template.is_some() && p.repair.template_file.is_some() {
                errors.push(invalid(
                    key("repair.template"),
                    "set template or template_file, not both",
                ));
            }
            if p.system_prompt.is_some() && p.system_prompt_file.is_some() {
                errors.push(invalid(
                    key("system_prompt"),
                    "set system_prompt or system_prompt_file, not both",
                ));
            }
            if p.output == Some(OutputMode::Text) && p.actions_field.is_some() {
                errors.push(invalid(
                    key("output"),
                    "actions_field reads actions out of a JSON answer: remove it or set output = \"json\"",
                ));
            }
            if p.output == Some(OutputMode::Text) && p.schema.is_some() {
                errors.push(invalid(
                    key("output"),
                    "a pipeline with a schema answers JSON: remove `schema` or set output = \"json\"",
                ));
            }
            if !(p.repair.temperature_step > 0.0 && p.repair.temperature_step <= 2.0) {
                errors.push(invalid(key("repair.temperature_step"), "must be in (0, 2]"));
            }
            let mut strategies = std::collections::BTreeSet::new();
            // `temperature` may be listed more than once: each raises it again.
            for s in &p.repair.strategies {
                if *s != RepairStrategy::Temperature && !strategies.insert(s.as_str()) {
                    errors.push(invalid(
                        key("repair.strategies"),
                        &format!("`{}` is listed twice", s.as_str()),
                    ));
                }
            }
            for (i, server) in p.mcp_servers.iter().enumerate() {
                if !self.mcp.servers.contains_key(server) {
                    errors.push(invalid(
                        key(&format!("mcp_servers[{i}]")),
                        &format!(
                            "names MCP server `{server}`, which is not defined in [mcp.servers] (defined: {})",
                            known(self.mcp.servers.keys())
                        ),
                    ));
                }
            }
            for (tool, executor) in &p.executors {
                if let ExecutorConfig::Mcp { server, .. } = executor
                    && !p.mcp_servers.contains(server)
                {
                    errors.push(invalid(
                        key(&format!("executors.{tool}.server")),
                        &format!(
                            "MCP server `{server}` is not one of this pipeline's `mcp_servers` ({}); add it there",
                            known(p.mcp_servers.iter())
                        ),
                    ));
                }
            }
            if p.mcp.approval_wait_ms == 0 {
                errors.push(invalid(
                    key("mcp.approval_wait_ms"),
                    "must be at least 1 ms",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in &p.validators {
                if !seen.insert(v.0.plugin.as_str()) {
                    errors.push(invalid(
                        key("validators"),
                        &format!("validator `{}` is listed twice", v.0.plugin),
                    ));
                }
            }
        }
        for (k, message) in self.mcp.problems() {
            errors.push(invalid(k, &message));
        }
        for (name, provider) in &self.providers {
            if name == "cache" || name == "static" {
                errors.push(invalid(
                    format!("providers.{name}"),
                    "`cache` and `static` name the pipeline's own fallbacks; choose another provider name",
                ));
            }
            if let Some(http) = provider.http() {
                if let Err((k, message)) = resilience::check_breaker(&http.breaker) {
                    errors.push(invalid(format!("providers.{name}.{k}"), message));
                }
                if let Err((k, message)) = resilience::check_limits(http) {
                    errors.push(invalid(format!("providers.{name}.{k}"), message));
                }
                if http.timeout_ms == 0 || http.connect_timeout_ms == 0 {
                    errors.push(invalid(
                        format!("providers.{name}.timeout_ms"),
                        "timeouts must be at least 1 ms",
                    ));
                }
            }
            if let Some(url) = provider.base_url()
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                errors.push(invalid(
                    format!("providers.{name}.base_url"),
                    "must start with http:// or https://",
                ));
            }
            if let ProviderConfig::Scripted(s) = provider
                && s.file.is_some() == s.responses.is_some()
            {
                errors.push(invalid(
                    format!("providers.{name}"),
                    "a scripted provider needs `file` or `responses` (one of them)",
                ));
            }
        }
        self.check_context(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::several(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "reins.toml", ".")
    }

    const BASE: &str = r#"
plugins_dir = "plugins"
[providers.replay]
kind = "scripted"
file = "r.jsonl"
"#;

    #[test]
    fn full_pipeline_parses() {
        let c = parse(&format!(
            "{BASE}
[pipelines.p]
model = \"replay\"
normalizers = [\"normalize-text\"]
validators = [\"ranges\", {{ plugin = \"coerce-numbers\", on_fail = \"fix\", stage = 1 }}]
gates = [\"spend-limit\"]
schema = {{ type = \"object\", required = [\"a\"] }}
repair = {{ max_attempts = 2, token_budget = 100 }}
"
        ))
        .unwrap();
        let p = &c.pipelines["p"];
        assert_eq!(p.validators[0].0.plugin, "ranges");
        assert_eq!(p.validators[0].0.on_fail, OnFail::Repair);
        assert_eq!(p.validators[1].0.on_fail, OnFail::Fix);
        assert_eq!(p.validators[1].0.stage, 1);
        assert_eq!(p.repair.max_attempts, 2);
        assert_eq!(p.repair.token_budget, Some(100));
        assert_eq!(
            p.schema,
            Some(SchemaSource::Inline(
                serde_json::json!({"type": "object", "required": ["a"]})
            ))
        );
    }

    #[test]
    fn unknown_top_level_key_names_key_and_line() {
        let e = parse(&format!("plugin_dir = \"x\"\n{BASE}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reins.toml"), "{e}");
        assert!(e.contains("unknown field `plugin_dir`"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_key_in_validator_table_names_key() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nvalidators = [{{ plugin = \"x\", onfail = \"fix\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `onfail`"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn bad_on_fail_value_lists_the_choices() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nvalidators = [{{ plugin = \"x\", on_fail = \"retry\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("retry") && e.contains("repair"), "{e}");
    }

    #[test]
    fn unknown_key_in_repair_names_key() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\n[pipelines.p.repair]\nmax_attempt = 2\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_attempt"), "{e}");
        assert!(e.contains("line 10"), "{e}");
    }

    #[test]
    fn unknown_key_in_provider_names_key() {
        let e = parse(
            "plugins_dir = \"p\"\n[providers.o]\nkind = \"openai\"\nbase_url = \"http://x\"\nmodel = \"m\"\napi_key = \"sk\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api_key"), "{e}");
    }

    #[test]
    fn an_anthropic_provider_has_defaults_and_shares_the_http_keys() {
        let c = parse(
            "plugins_dir = \"p\"\n[providers.claude]\nkind = \"anthropic\"\nmodel = \"claude-x\"\nmax_retries = 5\nbreaker = { probes = 3 }\n",
        )
        .unwrap();
        let ProviderConfig::Anthropic(a) = &c.providers["claude"] else {
            panic!("anthropic")
        };
        assert_eq!(
            (
                a.base_url.as_str(),
                a.api_key_env.as_str(),
                a.max_tokens,
                a.temperature
            ),
            ("https://api.anthropic.com", "ANTHROPIC_API_KEY", 1024, None)
        );
        assert_eq!(
            (a.http.max_retries, a.http.backoff_ms, a.http.breaker.probes),
            (5, 250, 3)
        );
        assert_eq!(c.providers["claude"].kind(), "anthropic");
        // Unknown keys are still refused by name, next to the shared ones.
        let e = parse("plugins_dir = \"p\"\n[providers.claude]\nkind = \"anthropic\"\nmodel = \"m\"\nmax_retry = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `max_retry`"), "{e}");
        let e = parse("plugins_dir = \"p\"\n[providers.claude]\nkind = \"anthropic\"\nmodel = \"m\"\nbase_url = \"api.anthropic.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.claude.base_url"), "{e}");
        let e = parse("plugins_dir = \"p\"\n[providers.claude]\nkind = \"anthropic\"\nmodel = \"m\"\ntimeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.claude.timeout_ms"), "{e}");
    }

    #[test]
    fn unknown_provider_kind_is_named() {
        let e = parse("plugins_dir = \"p\"\n[providers.o]\nkind = \"gemini\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemini"), "{e}");
    }

    #[test]
    fn unknown_provider_reference_names_pipeline_and_provider() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nfallbacks = [\"gpt\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pipelines.p.fallbacks") && e.contains("`gpt`"),
            "{e}"
        );
    }

    #[test]
    fn zero_attempts_is_refused() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nrepair = {{ max_attempts = 0 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("pipelines.p.repair.max_attempts"), "{e}");
    }

    #[test]
    fn schema_string_is_a_path_or_json() {
        let c = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nschema = \"s.json\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.pipelines["p"].schema,
            Some(SchemaSource::File("s.json".into()))
        );
        let c = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nschema = '{{\"type\": \"array\"}}'\n"
        ))
        .unwrap();
        assert_eq!(
            c.pipelines["p"].schema,
            Some(SchemaSource::Inline(serde_json::json!({"type": "array"})))
        );
    }

    #[test]
    fn duplicate_validator_is_refused() {
        let e = parse(&format!(
            "{BASE}\n[pipelines.p]\nmodel = \"replay\"\nvalidators = [\"a\", \"a\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`a`"), "{e}");
    }
}
