//! `[pipelines.NAME]`: one pipeline's layers, output contract, repair
//! policy, limits, memory and executors.

use super::*;

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
    /// While a provider is saturated (it answered 429, or 503 with
    /// `Retry-After`) or at its limits: `queue` (default) waits in its
    /// queue as long as the deadline allows; `fallback` goes on to the next
    /// provider of the chain at once.
    #[serde(default)]
    pub on_saturated: OnSaturated,
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
    pub normalizers: Vec<PluginEntry>,
    /// Retrieval and the context builder, under a token budget.
    #[serde(default)]
    pub context: Option<ContextConfig>,
    /// The conversation under a token budget: the middle of a longer one
    /// is dropped or summarized.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
    /// The constraints plugin that lists the tools of a request.
    #[serde(default)]
    pub constraints: Option<PluginEntry>,
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
    pub gates: Vec<PluginEntry>,
    /// How a `stream: true` answer is sent: `buffered` (validated whole,
    /// then sent), `checked` (sent as it is generated, each piece after the
    /// stream checkers passed it; the validators judge the whole answer at
    /// the end) or `json` (a JSON answer sent as it is generated, each
    /// prefix checked against the schema). Default: `buffered` for a
    /// pipeline that answers JSON, `checked` for one that answers text.
    #[serde(default)]
    pub stream: Option<StreamMode>,
    /// Stream checker plugins, in order: every piece of a streamed answer
    /// passes all of them before the client sees it.
    #[serde(default)]
    pub stream_checkers: Vec<PluginEntry>,
    /// The hold-back window: streamed text is offered to the checkers once
    /// this many characters are pending (and at the end).
    #[serde(default = "defaults::stream_window_chars")]
    pub stream_window_chars: usize,
    /// Where pending text is cut for release: `word` or `sentence`.
    #[serde(default)]
    pub stream_release: ReleaseAt,
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
    /// What a run does when the client waiting for its answer disconnects:
    /// `cancel` (the model call in flight is dropped, no action not yet
    /// started is sent, the run ends `cancelled`) or `finish` (it runs to
    /// the end and its result is stored). Unset, each surface decides:
    /// `cancel` on `/v1/chat/completions` and `/v1/messages`, whose answer
    /// nobody can fetch later, `finish` on `POST /v1/pipelines/{name}/runs`,
    /// whose result is read back by id. Set, it holds on every surface (a
    /// pipeline whose actions must go out sets `finish`).
    #[serde(default)]
    pub on_disconnect: Option<OnDisconnect>,
    /// How approved actions are carried out, by tool name. A tool with no
    /// entry is returned to the caller (the embedding case).
    #[serde(default)]
    pub executors: BTreeMap<String, ExecutorConfig>,
    /// The `[mcp.servers]` this pipeline fronts at `/mcp/{pipeline}` (and
    /// whose tools `executor.kind = "mcp"` may call).
    #[serde(default)]
    pub mcp_servers: Vec<String>,
    /// How the pipeline's MCP endpoint treats resources, prompts and
    /// escalated calls.
    #[serde(default)]
    pub mcp: super::mcp::PipelineMcp,
    /// Token names that may decide this pipeline's approvals (empty: any
    /// token with the `approve` scope).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whose approvals an approver sees and decides: `tenant` (only its own
    /// tenant's runs; the default) or `any`.
    #[serde(default)]
    pub approval_scope: ApprovalScope,
    /// May the caller who started a run approve its own escalation? Off by
    /// default: an escalation exists so that someone else looks.
    #[serde(default)]
    pub self_approval: bool,
    /// Read the caller's tenant and roles from the body's `metadata` when
    /// the credential gives none. Meant for open local development only: a
    /// caller can then claim any tenant and role.
    #[serde(default)]
    pub trust_metadata: bool,
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

/// One plugin of a pipeline with the layer it must be, and the pipeline's
/// own settings of it.
#[derive(Debug, Clone, Copy)]
pub struct LayerPlugin<'a> {
    pub layer: reins_runtime::Layer,
    pub plugin: &'a str,
    pub config: Option<&'a Map<String, Value>>,
    pub config_file: Option<&'a PathBuf>,
}

impl PipelineConfig {
    /// Every plugin the pipeline names, in the order its layers run.
    pub fn layer_plugins(&self) -> Vec<LayerPlugin<'_>> {
        use reins_runtime::Layer;
        fn entry(layer: Layer, e: &PluginEntry) -> LayerPlugin<'_> {
            LayerPlugin {
                layer,
                plugin: e.plugin.as_str(),
                config: e.config.as_ref(),
                config_file: e.config_file.as_ref(),
            }
        }
        let mut out: Vec<LayerPlugin<'_>> = self
            .normalizers
            .iter()
            .map(|e| entry(Layer::Normalizer, e))
            .collect();
        out.extend(self.context.iter().map(|c| LayerPlugin {
            layer: Layer::Context,
            plugin: c.plugin.as_str(),
            config: c.config.as_ref(),
            config_file: c.config_file.as_ref(),
        }));
        out.extend(
            self.constraints
                .iter()
                .map(|e| entry(Layer::Constraints, e)),
        );
        out.extend(
            self.stream_checkers
                .iter()
                .map(|e| entry(Layer::StreamChecker, e)),
        );
        out.extend(self.validators.iter().map(|v| LayerPlugin {
            layer: Layer::Validator,
            plugin: v.0.plugin.as_str(),
            config: v.0.config.as_ref(),
            config_file: v.0.config_file.as_ref(),
        }));
        out.extend(self.gates.iter().map(|e| entry(Layer::Gate, e)));
        out
    }
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

/// How a streamed answer is sent (see `PipelineConfig::stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    Buffered,
    Checked,
    Json,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Buffered => "buffered",
            StreamMode::Checked => "checked",
            StreamMode::Json => "json",
        }
    }
}

/// Where streamed text may be cut for release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseAt {
    /// After whitespace: a word (a key, a URL) is never split.
    #[default]
    Word,
    /// After `.`, `!`, `?` or a newline followed by whitespace.
    Sentence,
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

/// Whose approvals an approver may see and decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalScope {
    /// Only those of runs started by its own tenant.
    #[default]
    Tenant,
    /// Every approval of the pipeline.
    Any,
}

/// What a rejected approval does to an agent run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRejection {
    #[default]
    Continue,
    Fail,
}

/// What a run does when its client disconnects (see `on_disconnect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    Finish,
    Cancel,
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
    /// Call `tool` on the MCP server `server` (one of `[mcp.servers]`),
    /// within the server's `timeout_ms`.
    Mcp { server: String, tool: String },
}

/// Sliding-window limits per caller key (a metadata field, e.g. `tenant`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The caller key: `tenant` (the default), `subject`, or a claim of the
    /// verified caller (metadata only where the pipeline trusts it);
    /// missing → `"anonymous"`.
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

/// A plugin of a layer: `"name"`, or `{ plugin = "name", config = {…} }`
/// or `{ plugin = "name", config_file = "…" }` (TOML or JSON, relative to
/// the config). The pipeline's settings are merged over the sidecar's
/// `config`, key by key; a value `"@pipeline"` is replaced by the
/// pipeline's own schema. Two pipelines can thus use one plugin with
/// different settings, and none needs a copy of its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    pub plugin: String,
    pub config: Option<Map<String, Value>>,
    pub config_file: Option<PathBuf>,
}

impl PluginEntry {
    /// A plugin by name, with its sidecar's settings.
    pub fn named(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            config: None,
            config_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginTable {
    plugin: String,
    #[serde(default)]
    config: Option<Map<String, Value>>,
    #[serde(default)]
    config_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for PluginEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PluginEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plugin name or a table { plugin, config, config_file }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PluginEntry::named(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let t = PluginTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PluginEntry {
                    plugin: t.plugin,
                    config: t.config,
                    config_file: t.config_file,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    pub plugin: String,
    #[serde(default)]
    pub on_fail: OnFail,
    #[serde(default)]
    pub stage: u32,
    /// This pipeline's settings of the plugin (see [`PluginEntry`]).
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    #[serde(default)]
    pub config_file: Option<PathBuf>,
}

/// Deserialized from a plugin name or a [`ValidatorConfig`] table.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorEntry(pub ValidatorConfig);

impl<'de> Deserialize<'de> for ValidatorEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValidatorEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a plugin name or a table { plugin, on_fail, stage, config, config_file }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ValidatorEntry(ValidatorConfig {
                    plugin: v.to_owned(),
                    on_fail: OnFail::default(),
                    stage: 0,
                    config: None,
                    config_file: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ValidatorConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ValidatorEntry)
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
                Value::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SchemaSource::Inline)
            }
        }
        deserializer.deserialize_any(V)
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
