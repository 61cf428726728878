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
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod error;
mod resilience;
pub use error::ConfigError;
pub use resilience::{BreakerConfig, CacheMode, DegradedConfig, HttpConfig, default_degraded_message};

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
    /// Model providers by name; pipelines refer to these names.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Pipelines by name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
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
}

/// One model provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// OpenAI-compatible chat completions over HTTP (OpenAI, vLLM, llama.cpp
    /// server, Ollama...).
    Openai(OpenAiConfig),
    /// The Anthropic Messages API over HTTP.
    Anthropic(AnthropicConfig),
    /// Replays responses from a JSON or JSONL file; offline and deterministic.
    Scripted(ScriptedConfig),
}

impl ProviderConfig {
    /// The `kind` key.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Openai(_) => "openai",
            ProviderConfig::Anthropic(_) => "anthropic",
            ProviderConfig::Scripted(_) => "scripted",
        }
    }

    /// Where an HTTP provider sends its calls.
    pub fn base_url(&self) -> Option<&str> {
        match self {
            ProviderConfig::Openai(c) => Some(&c.base_url),
            ProviderConfig::Anthropic(c) => Some(&c.base_url),
            ProviderConfig::Scripted(_) => None,
        }
    }

    /// The timeouts, retries and breaker of an HTTP provider.
    pub fn http(&self) -> Option<&HttpConfig> {
        match self {
            ProviderConfig::Openai(c) => Some(&c.http),
            ProviderConfig::Anthropic(c) => Some(&c.http),
            ProviderConfig::Scripted(_) => None,
        }
    }
}

/// `kind = "openai"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// e.g. `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (none: no
    /// `Authorization` header, as local servers expect).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// How the pipeline's schema is passed on: `auto` (the default: try
    /// `json_schema`, and step down to `json_object` with the schema, then
    /// `json_object`, then nothing while the server refuses the mode),
    /// `json_schema`, `json_object` or `none` (for servers that accept neither).
    #[serde(default)]
    pub response_format: ResponseFormat,
    /// Timeouts, retries and the circuit breaker (keys of this table).
    #[serde(flatten)]
    pub http: HttpConfig,
}

/// `kind = "anthropic"`: the Anthropic Messages API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// `/v1/messages` is appended.
    #[serde(default = "defaults::anthropic_base_url")]
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key, sent as
    /// `x-api-key` (empty: no key is sent, e.g. for a local proxy).
    #[serde(default = "defaults::anthropic_api_key_env")]
    pub api_key_env: String,
    /// Sent when the caller and the pipeline's `[sampling]` set no token
    /// limit: the Messages API requires one.
    #[serde(default = "defaults::anthropic_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Timeouts, retries and the circuit breaker (keys of this table).
    #[serde(flatten)]
    pub http: HttpConfig,
}

/// How an OpenAI-compatible server is asked for JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Auto,
    JsonSchema,
    JsonObject,
    None,
}

/// `kind = "scripted"`: `file` or inline `responses`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedConfig {
    /// A JSON array, a JSON object `{"responses": [...]}`, or JSONL.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The entries inline (strings or tables, as in the file).
    #[serde(default)]
    pub responses: Option<Vec<Value>>,
    /// The model name reported in traces.
    #[serde(default = "defaults::scripted_model")]
    pub model: String,
}

/// One pipeline: its layers in order, its output contract and its repair policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub description: Option<String>,
    /// `single` (default): one answer. `agent`: model → tool calls (through
    /// constraints, gates, executors) → tool results as `tool` messages →
    /// model, up to `max_steps`, checkpointed after every step.
    #[serde(default)]
    pub mode: PipelineMode,
    /// Agent mode: the most model → tools turns of one run.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// The provider of the first attempt.
    pub model: String,
    /// Providers tried in order when the one before is unavailable.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The whole run's deadline (every attempt, retry and fallback), in ms;
    /// 0 = none. When it passes no provider is called any more; the cache
    /// and the static `degraded` answer may still serve.
    #[serde(default = "resilience::defaults::deadline_ms")]
    pub deadline_ms: u64,
    /// The response cache: `off`, `read` (serve cached answers when every
    /// provider is unavailable) or `read-write` (also store validated outputs).
    #[serde(default)]
    pub cache: CacheMode,
    /// How long a cached answer may be served.
    #[serde(default = "resilience::defaults::cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// Cached answers kept for this pipeline (least recently used go first).
    #[serde(default = "resilience::defaults::cache_max_entries")]
    pub cache_max_entries: usize,
    /// The static answer of last resort, after the providers and the cache.
    #[serde(default)]
    pub degraded: Option<DegradedConfig>,
    /// Prepended as a system message.
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub system_prompt_file: Option<PathBuf>,
    /// Normalizer plugins, in order.
    #[serde(default)]
    pub normalizers: Vec<String>,
    /// The context-builder plugin and its token budget.
    #[serde(default)]
    pub context: Option<ContextConfig>,
    /// The constraints plugin that lists the tools of a request.
    #[serde(default)]
    pub constraints: Option<String>,
    /// The output JSON Schema (draft 2020-12): a file path, or an inline table.
    #[serde(default)]
    pub schema: Option<SchemaSource>,
    /// What a JSON or schema violation does.
    #[serde(default)]
    pub schema_on_fail: OnFail,
    /// Validator plugins. Entries of the same `stage` run concurrently;
    /// stages run in ascending order.
    #[serde(default)]
    pub validators: Vec<ValidatorEntry>,
    /// Gate plugins, in order; every proposed action passes all of them.
    #[serde(default)]
    pub gates: Vec<String>,
    #[serde(default)]
    pub repair: RepairConfig,
    /// Check actions but approve none: the result lists what would be done.
    #[serde(default)]
    pub dry_run: bool,
    /// Where actions come from besides OpenAI `tool_calls`: a JSON Pointer
    /// into the validated output whose value is a list of `{tool, arguments}`.
    #[serde(default)]
    pub actions_field: Option<String>,
    /// An action that is not allowed (unknown tool, arguments that fail the
    /// tool's schema, a gate's deny): `repair` (tell the model) or `fail`.
    #[serde(default)]
    pub on_invalid_action: OnFail,
    /// Agent mode: when a human rejects an escalated action, `continue`
    /// (the default) tells the model — the action's tool result says it was
    /// rejected, by whom and why — and the agent goes on; `fail` ends the
    /// run. A single run always fails.
    #[serde(default)]
    pub on_rejection: OnRejection,
    /// How approved actions are carried out, by tool name. A tool with no
    /// entry is returned to the caller (the embedding case).
    #[serde(default)]
    pub executors: BTreeMap<String, ExecutorConfig>,
    /// Token names that may decide this pipeline's approvals (empty: any
    /// token with the `approve` scope).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Request and token rate limits per caller key.
    #[serde(default)]
    pub limits: Option<RateLimitConfig>,
    /// Session memory: a run with a `session_id` is given what the
    /// session's earlier runs said, within a token budget.
    #[serde(default)]
    pub memory: Option<MemoryConfig>,
    /// `text` (a prose answer, not parsed) or `json` (one JSON document).
    /// Default: `json` when the pipeline has a schema or a validator that
    /// accepts only JSON, else `text`.
    #[serde(default)]
    pub output: Option<OutputMode>,
    /// What tools a caller declares (OpenAI `tools`) mean: `narrow` (they
    /// can only narrow the constraints plugin's tools), `allow` (they go to
    /// the model; every call still passes argument checks, gates, budgets
    /// and approvals) or `deny` (a request with tools is refused). Default:
    /// `narrow` with a constraints plugin, `allow` without.
    #[serde(default)]
    pub caller_tools: Option<CallerTools>,
    /// Accept and ignore request parameters Reins does not support, instead
    /// of refusing the request with a 400 that names them.
    #[serde(default)]
    pub ignore_unknown_params: bool,
    /// Caps and overrides that win over what the caller sends.
    #[serde(default)]
    pub sampling: SamplingPolicy,
    /// Grants the pipeline's validators the `judge` import: a model they
    /// may ask (a model-graded check).
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
}

/// `judge = { provider = "grader" }`: who a validator's `judge.ask` asks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// The judge's provider; the pipeline's `fallbacks` follow it.
    pub provider: String,
    /// A ceiling on the judge's answer.
    #[serde(default = "defaults::judge_max_tokens")]
    pub max_tokens: u64,
}

/// What a pipeline answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    Text,
    Json,
}

impl OutputMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputMode::Text => "text",
            OutputMode::Json => "json",
        }
    }
}

/// What a caller's declared tools mean to a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallerTools {
    Narrow,
    Allow,
    Deny,
}

/// `[pipelines.NAME.sampling]`: the operator's word on sampling, over the caller's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingPolicy {
    /// Every call uses this temperature, whatever the caller asks.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Every call uses this top_p.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Every call uses this seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// A ceiling on `max_tokens` / `max_completion_tokens` (and the value
    /// used when the caller sends none).
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// What a rejected approval does to an agent run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRejection {
    #[default]
    Continue,
    Fail,
}

/// `[pipelines.NAME.memory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The most tokens the injected memory message may take.
    #[serde(default = "defaults::memory_budget")]
    pub budget_tokens: u64,
    /// `truncate` (default): the newest exchanges verbatim, as many as fit.
    /// `summarize`: a model call summarizes the session, cut to the budget.
    #[serde(default)]
    pub mode: MemoryMode,
    /// The provider that summarizes (default: the pipeline's model).
    #[serde(default)]
    pub model: Option<String>,
    /// How many of the session's latest runs are considered.
    #[serde(default = "defaults::memory_runs")]
    pub max_runs: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryMode {
    #[default]
    Truncate,
    Summarize,
}

/// How one tool's approved actions are executed.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// POST the action as JSON to `url` with an `Idempotency-Key` header;
    /// retried on 5xx and connection errors with the same key.
    Webhook {
        url: String,
        #[serde(default = "defaults::webhook_timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "defaults::webhook_retries")]
        retries: u32,
    },
    /// Hand the action back to the caller, who executes it.
    Return,
}

/// Sliding-window limits per caller key (a metadata field, e.g. `tenant`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The metadata field that names the caller; missing → `"anonymous"`.
    #[serde(default = "defaults::limit_key")]
    pub key: String,
    #[serde(default = "defaults::limit_window")]
    pub window_seconds: u32,
    /// Runs per window.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Tokens (all attempts) per window; checked before a run starts.
    #[serde(default)]
    pub tokens: Option<u64>,
}

/// `context = { plugin = "...", budget_tokens = 2000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    pub plugin: String,
    #[serde(default = "defaults::context_budget")]
    pub budget_tokens: u32,
}

/// The repair policy of a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairConfig {
    /// Model calls in total, the first attempt included (1 = never repair).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Tokens (prompt + completion) all attempts together may spend.
    #[serde(default)]
    pub token_budget: Option<u64>,
    /// The repair message; see [`crate::pipeline::repair`] for placeholders.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_file: Option<PathBuf>,
    /// A different provider for repair attempts (attempt 2 on).
    #[serde(default)]
    pub model: Option<String>,
    /// Deterministic fixes applied to one attempt before it counts as failed.
    #[serde(default = "defaults::max_fix_rounds")]
    pub max_fix_rounds: u32,
    /// What changes, in this order, when an attempt repeats the previous
    /// attempt's violations: `strict_format` (the strictest structured-output
    /// mode the provider supports), `temperature` (raise it by
    /// `temperature_step`), `model` (the repair model's chain, or the
    /// fallback). A run stops as `repeated` only when all are spent.
    #[serde(default = "defaults::repair_strategies")]
    pub strategies: Vec<RepairStrategy>,
    /// How much the `temperature` strategy raises the temperature.
    #[serde(default = "defaults::temperature_step")]
    pub temperature_step: f64,
}

/// One way to make a repeated repair come out differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStrategy {
    StrictFormat,
    Temperature,
    Model,
}

impl RepairStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairStrategy::StrictFormat => "strict_format",
            RepairStrategy::Temperature => "temperature",
            RepairStrategy::Model => "model",
        }
    }
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            token_budget: None,
            template: None,
            template_file: None,
            model: None,
            max_fix_rounds: defaults::max_fix_rounds(),
            strategies: defaults::repair_strategies(),
            temperature_step: defaults::temperature_step(),
        }
    }
}

/// What a failed validation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// Send the output and the violations back to the model.
    #[default]
    Repair,
    /// Take the plugin's `fixed` document and re-validate it (no model call).
    Fix,
    /// Fail the run at once.
    Fail,
}

/// A validator of a pipeline: `"name"` or `{ plugin = "name", on_fail = "fix", stage = 1 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    pub plugin: String,
    #[serde(default)]
    pub on_fail: OnFail,
    #[serde(default)]
    pub stage: u32,
}

/// Deserialized from a plugin name or a [`ValidatorConfig`] table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorEntry(pub ValidatorConfig);

impl<'de> Deserialize<'de> for ValidatorEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValidatorEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plugin name or a table { plugin, on_fail, stage }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ValidatorEntry(ValidatorConfig {
                    plugin: v.to_owned(),
                    on_fail: OnFail::default(),
                    stage: 0,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ValidatorConfig::deserialize(de::value::MapAccessDeserializer::new(map)).map(ValidatorEntry)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Where a schema comes from: a path (relative to the config file), JSON
/// text, or an inline TOML table.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaSource {
    File(PathBuf),
    Inline(Value),
}

impl<'de> Deserialize<'de> for SchemaSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SchemaSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a schema file path, JSON text, or an inline table")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.trim_start().starts_with('{') {
                    serde_json::from_str(v)
                        .map(SchemaSource::Inline)
                        .map_err(|e| E::custom(format!("schema is not valid JSON: {e}")))
                } else {
                    Ok(SchemaSource::File(PathBuf::from(v)))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(SchemaSource::Inline)
            }
        }
        deserializer.deserialize_any(V)
    }
}

mod defaults {
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
    pub fn parse(text: &str, origin: impl AsRef<Path>, base_dir: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let origin = origin.as_ref().to_owned();
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.base_dir = base_dir.as_ref().to_owned();
        config.origin = origin;
        config.check()?;
        Ok(config)
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

    /// Checks that need the whole file but nothing outside it.
    fn check(&self) -> Result<(), ConfigError> {
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
                    return Err(ConfigError::UnknownProvider {
                        path: self.origin.clone(),
                        key: key(k),
                        provider: provider.clone(),
                        known: self.providers.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
            if p.cache.reads() && p.cache_max_entries == 0 {
                return Err(invalid(key("cache_max_entries"), "must be at least 1 when the cache is on"));
            }
            if p.repair.max_attempts == 0 {
                return Err(invalid(key("repair.max_attempts"), "must be at least 1"));
            }
            if p.repair.template.is_some() && p.repair.template_file.is_some() {
                return Err(invalid(
                    key("repair.template"),
                    "set template or template_file, not both",
                ));
            }
            if p.system_prompt.is_some() && p.system_prompt_file.is_some() {
                return Err(invalid(
                    key("system_prompt"),
                    "set system_prompt or system_prompt_file, not both",
                ));
            }
            if p.output == Some(OutputMode::Text) && p.actions_field.is_some() {
                return Err(invalid(
                    key("output"),
                    "actions_field reads actions out of a JSON answer: remove it or set output = \"json\"",
                ));
            }
            if p.output == Some(OutputMode::Text) && p.schema.is_some() {
                return Err(invalid(
                    key("output"),
                    "a pipeline with a schema answers JSON: remove `schema` or set output = \"json\"",
                ));
            }
            if !(p.repair.temperature_step > 0.0 && p.repair.temperature_step <= 2.0) {
                return Err(invalid(key("repair.temperature_step"), "must be in (0, 2]"));
            }
            let mut strategies = std::collections::BTreeSet::new();
            // `temperature` may be listed more than once: each raises it again.
            for s in &p.repair.strategies {
                if *s != RepairStrategy::Temperature && !strategies.insert(s.as_str()) {
                    return Err(invalid(
                        key("repair.strategies"),
                        &format!("`{}` is listed twice", s.as_str()),
                    ));
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in &p.validators {
                if !seen.insert(v.0.plugin.as_str()) {
                    return Err(invalid(
                        key("validators"),
                        &format!("validator `{}` is listed twice", v.0.plugin),
                    ));
                }
            }
        }
        for (name, provider) in &self.providers {
            if name == "cache" || name == "static" {
                return Err(invalid(
                    format!("providers.{name}"),
                    "`cache` and `static` name the pipeline's own fallbacks; choose another provider name",
                ));
            }
            if let Some(http) = provider.http() {
                if let Err((k, message)) = resilience::check_breaker(&http.breaker) {
                    return Err(invalid(format!("providers.{name}.{k}"), message));
                }
                if http.timeout_ms == 0 || http.connect_timeout_ms == 0 {
                    return Err(invalid(format!("providers.{name}.timeout_ms"), "timeouts must be at least 1 ms"));
                }
            }
            if let Some(url) = provider.base_url()
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(format!("providers.{name}.base_url"), "must start with http:// or https://"));
            }
            if let ProviderConfig::Scripted(s) = provider
                && s.file.is_some() == s.responses.is_some()
            {
                return Err(invalid(
                    format!("providers.{name}"),
                    "a scripted provider needs `file` or `responses` (one of them)",
                ));
            }
        }
        Ok(())
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
        let e = parse(&format!("plugin_dir = \"x\"\n{BASE}")).unwrap_err().to_string();
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
            (a.base_url.as_str(), a.api_key_env.as_str(), a.max_tokens, a.temperature),
            ("https://api.anthropic.com", "ANTHROPIC_API_KEY", 1024, None)
        );
        assert_eq!((a.http.max_retries, a.http.backoff_ms, a.http.breaker.probes), (5, 250, 3));
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
        assert!(e.contains("pipelines.p.fallbacks") && e.contains("`gpt`"), "{e}");
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
        assert_eq!(c.pipelines["p"].schema, Some(SchemaSource::File("s.json".into())));
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

/// How a pipeline runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineMode {
    #[default]
    Single,
    Agent,
}

fn default_max_steps() -> u32 {
    10
}
