//! The harness pipeline: normalizers → context builder → constraints → model
//! → JSON extraction → JSON Schema → validator plugins → repair → gates →
//! result.
//!
//! - [`Pipeline`]: one `[pipelines.NAME]` of the config, compiled (schema
//!   compiled, files read, providers resolved, plugins checked).
//! - [`engine`]: runs a [`Request`] through a pipeline on one plugin snapshot.
//! - [`extract`]: JSON out of code fences and prose.
//! - [`repair`]: the repair prompt.
//! - [`result`]: [`RunResult`], its trace and typed errors.

use crate::config::{
    CallerTools, Config, ConfigError, OnFail, OutputMode, PipelineConfig, SchemaSource,
    ValidatorConfig,
};
use crate::provider::{Breaker, Sampling};
use reins_runtime::{Accepts, Caller, Chunk, Layer, Message, PluginSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub mod cache;
pub mod engine;
pub mod execute;
pub mod extract;
pub mod fallback;
pub mod history;
pub mod journal;
pub(crate) mod judge;
pub mod repair;
pub mod result;
mod run_context;
pub mod stream;
pub use run_context::RunContext;

pub use execute::{ExecStatus, Execution};
pub use extract::extract_json;
pub use repair::RepairTemplate;
pub use result::{
    Attempt, ContextChunk, ContextReport, ExitCode, Finding, GateDecision, PendingApproval,
    RunError, RunResult, RunStatus, StopReason, Tokens, TraceStep,
};
/// The signal that a run's caller is gone ([`Request::cancel`]), re-exported
/// so embedders and the server name one type without depending on tokio-util.
pub use tokio_util::sync::CancellationToken;

/// What a caller asks a pipeline to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The conversation; the pipeline's system prompt is put before it.
    pub messages: Vec<Message>,
    /// The caller's own metadata (channel, locale...), handed to every
    /// plugin as hints. Identity is `caller`.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Who is calling, as a credential established it (the server resolves
    /// it from the bearer token or JWT; an embedder sets it). Anonymous by
    /// default. Plugins, rate limits, idempotency keys, sessions and run
    /// ownership key on it.
    #[serde(default, skip_serializing_if = "is_anonymous")]
    pub caller: Caller,
    /// Retrieved context for the context builder.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// A run id chosen by the caller (default: a fresh UUID).
    #[serde(default)]
    pub run_id: Option<String>,
    /// Cancelled when whoever waits for the answer is gone (the server's
    /// drop guard on a client that disconnected): the engine stops at its
    /// next boundary and the run ends `cancelled`. Never cancelled unless
    /// someone holds a clone and cancels it; not stored (a resumed run has
    /// no client left to lose).
    #[serde(skip)]
    pub cancel: CancellationToken,
    /// Check and gate every action but execute none (the result lists what
    /// would be done). A pipeline with `dry_run = true` is always a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// A JSON Schema of the caller's (e.g. an OpenAI `response_format`): the
    /// output must satisfy it as well as the pipeline's schema.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The tools the caller declares (e.g. OpenAI `tools`). They can only
    /// narrow the tools the constraints plugin allows: the model is offered
    /// the allowed tools the caller names, and a declared `parameters`
    /// schema is checked on top of the constraint's.
    #[serde(default)]
    pub tools: Option<Vec<RequestTool>>,
    /// The conversation this run belongs to: with `[pipelines.NAME.memory]`,
    /// it is given what the session's earlier runs said.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Sampling and tool-choice parameters the caller sent (the pipeline's
    /// `[sampling]` caps and overrides win over them).
    #[serde(default, skip_serializing_if = "Sampling::is_empty")]
    pub sampling: Sampling,
    /// The caller's own timeout, in ms (e.g. the OpenAI client's
    /// `timeout`, or `X-Reins-Timeout`): it shortens the pipeline's
    /// `deadline_ms`, so waits, retries, repairs and fallbacks all fit in
    /// the time the caller will wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The caller asks for one JSON document (OpenAI `response_format`
    /// `json_object` / `json_schema`), whatever the pipeline's default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
    /// The caller reads the answer as a stream: released text goes here as
    /// it passes the stream checkers (unless the pipeline buffers). Not
    /// stored (a resumed run has no client to stream to).
    #[serde(skip)]
    pub stream: Option<stream::StreamSink>,
    /// The caller's W3C trace context: the run's span is its child. Not
    /// stored (a resumed run starts a trace of its own).
    #[serde(skip)]
    pub trace_parent: Option<crate::telemetry::TraceParent>,
}

/// A tool the caller declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments the caller accepts.
    #[serde(default)]
    pub parameters: Option<Value>,
}

fn is_anonymous(caller: &Caller) -> bool {
    *caller == Caller::anonymous()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Default for Request {
    fn default() -> Request {
        Request {
            messages: Vec::new(),
            metadata: empty_object(),
            caller: Caller::anonymous(),
            chunks: Vec::new(),
            run_id: None,
            cancel: CancellationToken::new(),
            dry_run: false,
            schema: None,
            tools: None,
            session_id: None,
            sampling: Sampling::default(),
            timeout_ms: None,
            json: false,
            stream: None,
            trace_parent: None,
        }
    }
}

impl Request {
    /// A request of one user message.
    pub fn text(content: impl Into<String>) -> Request {
        Request {
            messages: vec![Message::new("user", content)],
            ..Request::default()
        }
    }

    /// Sets the caller's metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Request {
        self.metadata = metadata;
        self
    }

    /// Sets who is calling (see [`Request::caller`]).
    pub fn with_caller(mut self, caller: Caller) -> Request {
        self.caller = caller;
        self
    }

    /// Adds a caller's JSON Schema that the output must also satisfy.
    pub fn with_schema(mut self, schema: Value) -> Request {
        self.schema = Some(schema);
        self
    }

    /// Declares the caller's tools (they narrow the constraint's tools).
    pub fn with_tools(mut self, tools: Vec<RequestTool>) -> Request {
        self.tools = Some(tools);
        self
    }

    /// Adds retrieved chunks for the context builder.
    pub fn with_chunks(mut self, chunks: Vec<Chunk>) -> Request {
        self.chunks = chunks;
        self
    }
}

impl From<&str> for Request {
    fn from(text: &str) -> Request {
        Request::text(text)
    }
}

impl From<String> for Request {
    fn from(text: String) -> Request {
        Request::text(text)
    }
}

impl From<Vec<Message>> for Request {
    fn from(messages: Vec<Message>) -> Request {
        Request {
            messages,
            ..Request::default()
        }
    }
}

/// A pipeline ready to run.
pub struct Pipeline {
    pub name: String,
    pub config: PipelineConfig,
    pub(crate) system_prompt: Option<String>,
    /// Token counts of this pipeline's recent prompts and answers, for the
    /// estimates of runs whose provider reports no usage (counting them
    /// anew cost a fifth of a served run).
    pub(crate) tokens: crate::tokens::Memo,
    pub(crate) schema: Option<Arc<Value>>,
    pub(crate) schema_validator: Option<jsonschema::Validator>,
    pub(crate) template: RepairTemplate,
    /// The repair template of text answers, when the pipeline sets no template.
    pub(crate) text_template: Option<RepairTemplate>,
    /// Validators grouped by stage, stages ascending, config order within.
    pub(crate) stages: Vec<Vec<ValidatorConfig>>,
    /// The first attempt's provider and its fallbacks.
    pub(crate) providers: Vec<Arc<Breaker>>,
    /// Providers of repair attempts (the same chain unless `repair.model` is set).
    pub(crate) repair_providers: Vec<Arc<Breaker>>,
    /// The judge's provider and the pipeline's fallbacks (`judge`).
    pub(crate) judge_providers: Vec<Arc<Breaker>>,
    /// The provider that summarizes session memory (`memory.mode = "summarize"`).
    pub(crate) memory_provider: Option<Arc<Breaker>>,
    /// The response cache (`cache` not `off`) and the static degraded answer.
    pub(crate) cache: Option<Arc<cache::ResponseCache>>,
    pub(crate) degraded: Option<fallback::StaticAnswer>,
    /// Compiled tool-argument schemas, by schema text.
    tool_schemas: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// Plugins this pipeline sets up with settings of its own, by layer and
    /// name: the plugin set serves each under its variant's key.
    variants: Variants,
    /// The MCP servers it fronts (`mcp_servers`), in order.
    pub(crate) upstreams: Vec<Arc<crate::mcp::Upstream>>,
    /// The `context.retrievers`, in order.
    pub(crate) retrievers: Vec<Arc<crate::retrieval::Retriever>>,
    /// The tokenizer of its first model: what budgets and the
    /// `count-tokens` import count in.
    pub(crate) tokenizer: reins_runtime::Tokenizer,
    /// The conversation's budget and its summaries (`history`).
    pub(crate) history: Option<history::History>,
}

/// A pipeline's plugins with settings of its own: by layer, then plugin name
/// (looked up by `&str` on every plugin call, so nothing is allocated), the
/// variant's key and the variant.
type Variants = BTreeMap<Layer, BTreeMap<String, (String, reins_runtime::Variant)>>;

/// Compiled tool schemas kept per pipeline before the cache starts over.
const TOOL_SCHEMA_CACHE: usize = 256;

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Whether a request given `timeout_ms` would be refused at once for
    /// backpressure: its first provider (or, with `on_saturated =
    /// "fallback"`, every provider of its chain) would refuse its call, and
    /// no cache or static answer could serve instead. Lets the host shed it
    /// before any plugin runs or any row is written.
    pub fn shed(&self, timeout_ms: Option<u64>) -> Option<RunError> {
        if self.cache.is_some() || self.degraded.is_some() {
            return None;
        }
        let ms = [
            Some(self.config.deadline_ms).filter(|ms| *ms > 0),
            timeout_ms,
        ]
        .into_iter()
        .flatten()
        .min();
        let deadline =
            ms.map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms));
        let chain = match self.config.on_saturated {
            crate::config::OnSaturated::Queue => &self.providers[..1.min(self.providers.len())],
            crate::config::OnSaturated::Fallback => &self.providers[..],
        };
        let mut errors = Vec::new();
        let mut refusals = Vec::new();
        let mut soonest: Option<std::time::Duration> = None;
        for breaker in chain {
            let refusal = breaker
                .admission()
                .would_refuse(deadline, self.config.on_saturated)?;
            refusals.push((breaker, refusal));
            errors.push(
                crate::provider::ProviderError::saturated(breaker.provider().name(), refusal)
                    .to_string(),
            );
            soonest = Some(soonest.map_or(refusal.retry_after(), |s| s.min(refusal.retry_after())));
        }
        for (breaker, refusal) in refusals {
            breaker.admission().count_shed(refusal);
        }
        soonest.map(|wait| RunError::Overloaded {
            errors,
            retry_after_ms: wait.as_millis().max(1) as u64,
        })
    }

    /// Compiles `config.pipelines[name]`: reads its files, compiles its schema
    /// and template, and resolves its providers in `providers`.
    pub fn compile(
        config: &Config,
        name: &str,
        providers: &BTreeMap<String, Arc<Breaker>>,
        upstreams: &BTreeMap<String, Arc<crate::mcp::Upstream>>,
        retrievers: &BTreeMap<String, Arc<crate::retrieval::Retriever>>,
    ) -> Result<Pipeline, ConfigError> {
        let p = config
            .pipelines
            .get(name)
            .ok_or_else(|| ConfigError::UnknownPipeline(name.to_owned()))?;
        let origin = &config.origin;
        let read = |path: &std::path::Path| {
            let path = config.resolve(path);
            std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path, source })
        };
        let system_prompt = match (&p.system_prompt, &p.system_prompt_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(f)) => Some(read(f)?),
            (None, None) => None,
        };
        let (schema, schema_origin) = match &p.schema {
            None => (None, String::new()),
            Some(SchemaSource::Inline(v)) => (Some(v.clone()), "(inline)".to_owned()),
            Some(SchemaSource::File(f)) => {
                let text = read(f)?;
                let shown = config.resolve(f).display().to_string();
                let v = serde_json::from_str(&text).map_err(|e| ConfigError::Schema {
                    path: origin.clone(),
                    pipeline: name.to_owned(),
                    origin: shown.clone(),
                    message: format!("not JSON: {e}"),
                })?;
                (Some(v), shown)
            }
        };
        let schema_validator = match &schema {
            None => None,
            Some(s) => Some(compile_schema(s).map_err(|message| ConfigError::Schema {
                path: origin.clone(),
                pipeline: name.to_owned(),
                origin: schema_origin.clone(),
                message,
            })?),
        };
        let text_template = match (&p.repair.template, &p.repair.template_file) {
            (None, None) => Some(RepairTemplate::text_default()),
            _ => None,
        };
        let template_text = match (&p.repair.template, &p.repair.template_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => repair::DEFAULT_TEMPLATE.to_owned(),
        };
        let template =
            RepairTemplate::parse(&template_text).map_err(|message| ConfigError::Template {
                path: origin.clone(),
                pipeline: name.to_owned(),
                message,
            })?;
        if p.schema_on_fail == OnFail::Fix {
            return Err(ConfigError::Invalid {
                path: origin.clone(),
                key: format!("pipelines.{name}.schema_on_fail"),
                message: "must be `repair` or `fail`: the host has no fix for a schema violation (use a validator with on_fail = \"fix\")".to_owned(),
            });
        }
        let mut stages: BTreeMap<u32, Vec<ValidatorConfig>> = BTreeMap::new();
        for v in &p.validators {
            stages.entry(v.0.stage).or_default().push(v.0.clone());
        }
        let chain = |first: &String| -> Vec<Arc<Breaker>> {
            std::iter::once(first)
                .chain(p.fallbacks.iter())
                .filter_map(|n| providers.get(n).cloned())
                .collect()
        };
        let providers_chain = chain(&p.model);
        let repair_providers = match &p.repair.model {
            Some(m) => chain(m),
            None => providers_chain.clone(),
        };
        if providers_chain.is_empty() {
            return Err(ConfigError::UnknownProvider {
                path: origin.clone(),
                key: format!("pipelines.{name}.model"),
                provider: p.model.clone(),
                known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let memory_provider = match &p.memory {
            Some(m) if m.mode == crate::config::MemoryMode::Summarize => {
                let wanted = m.model.as_ref().unwrap_or(&p.model);
                Some(providers.get(wanted).cloned().ok_or_else(|| {
                    ConfigError::UnknownProvider {
                        path: origin.clone(),
                        key: format!("pipelines.{name}.memory.model"),
                        provider: wanted.clone(),
                        known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
                    }
                })?)
            }
            _ => None,
        };
        let history =
            match &p.history {
                Some(h) => {
                    let wanted = h.model.as_ref().unwrap_or(&p.model);
                    let provider = providers.get(wanted).cloned().ok_or_else(|| {
                        ConfigError::UnknownProvider {
                            path: origin.clone(),
                            key: format!("pipelines.{name}.history.model"),
                            provider: wanted.clone(),
                            known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
                        }
                    })?;
                    Some(history::History::new(h.clone(), provider))
                }
                None => None,
            };
        let tokenizer = reins_runtime::Tokenizer::for_model(providers_chain[0].provider().model());
        let judge_providers = p
            .judge
            .as_ref()
            .map(|j| chain(&j.provider))
            .unwrap_or_default();
        let (cache, degraded) = fallback::compile(config, name, p, schema_validator.as_ref())?;
        let variants = variants(config, name, p, schema.as_ref())?;
        Ok(Pipeline {
            variants,
            history,
            tokenizer,
            retrievers: p
                .context
                .iter()
                .flat_map(|c| c.retrievers.iter())
                .filter_map(|r| retrievers.get(r).cloned())
                .collect(),
            judge_providers,
            memory_provider,
            name: name.to_owned(),
            config: p.clone(),
            system_prompt,
            tokens: crate::tokens::Memo::default(),
            schema: schema.map(Arc::new),
            schema_validator,
            template,
            text_template,
            stages: stages.into_values().collect(),
            providers: providers_chain,
            repair_providers,
            cache: cache.map(Arc::new),
            degraded,
            tool_schemas: Mutex::new(HashMap::new()),
            upstreams: p
                .mcp_servers
                .iter()
                .filter_map(|s| upstreams.get(s).cloned())
                .collect(),
        })
    }

    /// The MCP servers this pipeline fronts.
    pub fn upstreams(&self) -> &[Arc<crate::mcp::Upstream>] {
        &self.upstreams
    }

    /// One of its MCP servers, by name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<crate::mcp::Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// The name the plugin set serves `plugin` under for this pipeline's
    /// `layer`: a variant's key where the pipeline gives it settings of its
    /// own, else the plugin's name.
    pub fn plugin_key<'a>(&'a self, layer: Layer, plugin: &'a str) -> &'a str {
        self.variant(layer, plugin)
            .map_or(plugin, |(key, _)| key.as_str())
    }

    fn variant(&self, layer: Layer, plugin: &str) -> Option<&(String, reins_runtime::Variant)> {
        self.variants.get(&layer).and_then(|m| m.get(plugin))
    }

    /// The plugins this pipeline sets up with settings of its own.
    pub fn variants(&self) -> impl Iterator<Item = &reins_runtime::Variant> {
        self.variants
            .values()
            .flat_map(|m| m.values().map(|(_, v)| v))
    }

    /// Keeps `previous`'s response cache when it has the same bounds: what
    /// it holds stays valid (its keys cover the schema, the conversation and
    /// every provider's parameters), and a reload should not empty it.
    pub(crate) fn adopt_cache(&mut self, previous: &Pipeline) {
        if let (Some(mine), Some(theirs)) = (&self.cache, &previous.cache)
            && mine.same_bounds(theirs)
        {
            self.cache = Some(theirs.clone());
        }
    }

    /// The compiled validator of a tool's argument schema or a request's schema (cached).
    pub(crate) fn tool_validator(
        &self,
        schema: &Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        let mut cache = self.tool_schemas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&key) {
            return Ok(v.clone());
        }
        let compiled = Arc::new(compile_schema(schema)?);
        if cache.len() >= TOOL_SCHEMA_CACHE {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The response cache, when the pipeline's `cache` is not `off`.
    pub fn cache(&self) -> Option<Arc<cache::ResponseCache>> {
        self.cache.clone()
    }

    /// The output schema, if the pipeline has one.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_deref()
    }

    /// Every plugin the pipeline uses, with the layer it must be.
    pub fn plugins(&self) -> Vec<(Layer, &str)> {
        self.config
            .layer_plugins()
            .into_iter()
            .map(|l| (l.layer, l.plugin))
            .collect()
    }

    /// What the pipeline answers, and why: its `output`, else `json` for a
    /// schema, an `actions_field` or a validator that accepts only JSON,
    /// else `text`. Validators'
    /// `accepts` come from the plugin set the run holds.
    pub fn output_mode(&self, set: &PluginSet) -> (OutputMode, String) {
        if let Some(mode) = self.config.output {
            return (mode, "set by `output`".to_owned());
        }
        if self.schema.is_some() {
            return (OutputMode::Json, "the pipeline has a schema".to_owned());
        }
        if self.config.actions_field.is_some() {
            return (
                OutputMode::Json,
                "actions_field reads actions out of a JSON answer".to_owned(),
            );
        }
        let json_only = self.config.validators.iter().find(|v| {
            set.get(self.plugin_key(Layer::Validator, &v.0.plugin))
                .is_some_and(|p| p.manifest().accepts == Accepts::Json)
        });
        match json_only {
            Some(v) => (
                OutputMode::Json,
                format!("validator `{}` accepts only JSON", v.0.plugin),
            ),
            None => (
                OutputMode::Text,
                "no schema and no JSON-only validator".to_owned(),
            ),
        }
    }

    /// The caller's sampling under this pipeline's `[sampling]`: fixed
    /// values replace the caller's, `max_tokens` caps both token limits (and
    /// fills in when the caller sent none).
    pub fn sampling_for(&self, caller: &Sampling) -> Sampling {
        let policy = &self.config.sampling;
        let mut s = caller.clone();
        if policy.temperature.is_some() {
            s.temperature = policy.temperature;
        }
        if policy.top_p.is_some() {
            s.top_p = policy.top_p;
        }
        if policy.seed.is_some() {
            s.seed = policy.seed;
        }
        if let Some(cap) = policy.max_tokens {
            s.max_tokens = s.max_tokens.map(|n| n.min(cap));
            s.max_completion_tokens = s.max_completion_tokens.map(|n| n.min(cap));
            if s.max_tokens.is_none() && s.max_completion_tokens.is_none() {
                s.max_tokens = Some(cap);
            }
        }
        s
    }

    /// What the pipeline is and does, for `GET /v1/pipelines` and `reins
    /// check`: its output mode and why, what caller tools mean, its model
    /// chain and its layers.
    pub fn describe(&self, set: &PluginSet) -> Value {
        let (output, why) = self.output_mode(set);
        let c = &self.config;
        serde_json::json!({
            "name": self.name,
            "description": c.description,
            "mode": match c.mode { crate::config::PipelineMode::Single => "single", crate::config::PipelineMode::Agent => "agent" },
            "output": output,
            "output_reason": why,
            "caller_tools": self.caller_tools(),
            "model": c.model,
            "fallbacks": c.fallbacks,
            "normalizers": c.normalizers.iter().map(|e| &e.plugin).collect::<Vec<_>>(),
            "constraints": c.constraints.as_ref().map(|e| &e.plugin),
            "validators": c.validators.iter().map(|v| serde_json::json!({"plugin": v.0.plugin, "on_fail": v.0.on_fail, "stage": v.0.stage})).collect::<Vec<_>>(),
            "gates": c.gates.iter().map(|e| &e.plugin).collect::<Vec<_>>(),
            // `null`: buffered for JSON answers, checked for text.
            "stream": {"mode": c.stream, "checkers": c.stream_checkers.iter().map(|e| &e.plugin).collect::<Vec<_>>(),
                "window_chars": c.stream_window_chars, "release": c.stream_release},
            // Plugins set up with this pipeline's own settings: the key each is served under.
            "plugin_settings": self.variants.iter().flat_map(|(layer, m)| m.iter().map(move |(plugin, (key, _))| serde_json::json!({"layer": layer, "plugin": plugin, "key": key}))).collect::<Vec<_>>(),
            "schema": self.schema.is_some(),
            "repair": {"max_attempts": c.repair.max_attempts, "strategies": c.repair.strategies},
            // `null`: each surface's own (cancel on the chat surfaces, finish on the runs endpoint).
            "on_disconnect": c.on_disconnect,
        })
    }

    /// What the caller's declared tools mean here (`caller_tools`, else
    /// `narrow` with a constraints plugin and `allow` without).
    pub fn caller_tools(&self) -> CallerTools {
        self.config
            .caller_tools
            .unwrap_or(if self.config.constraints.is_some() {
                CallerTools::Narrow
            } else {
                CallerTools::Allow
            })
    }

    /// The repair template for answers of this mode.
    pub(crate) fn template_for(&self, mode: OutputMode) -> &RepairTemplate {
        match (&self.text_template, mode) {
            (Some(t), OutputMode::Text) => t,
            _ => &self.template,
        }
    }

    /// Checks that every plugin the pipeline names is loaded and of the right
    /// layer, and that its validators can check what it answers.
    pub fn check_plugins(&self, config: &Config, set: &PluginSet, dir: &Path) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let get = |layer: Layer, plugin: &str| set.get(self.plugin_key(layer, plugin));
        let validator = |v: &crate::config::ValidatorEntry| get(Layer::Validator, &v.0.plugin);
        let settings_of = |plugin: &str| match self.variant(Layer::Validator, plugin) {
            Some(_) => format!("its settings in pipelines.{}.validators", self.name),
            None => format!("its sidecar {plugin}.toml"),
        };
        if self.config.judge.is_none()
            && let Some(v) = self
                .config
                .validators
                .iter()
                .find(|v| validator(v).is_some_and(|p| p.asks_judge()))
        {
            errors.push(ConfigError::Invalid {
                path: config.origin.clone(),
                key: format!("pipelines.{}.judge", self.name),
                message: format!(
                    "validator `{}` asks the judge (it imports reins:policy/judge), but pipeline `{}` grants none: add judge = {{ provider = \"…\" }} to the pipeline",
                    v.0.plugin, self.name
                ),
            });
        }
        // A validator that reads prose is called once with an empty answer:
        // a refusal then is its configuration (a pattern that does not
        // compile, a missing key), and better refused now than per request.
        for v in &self.config.validators {
            let Some(p) = validator(v) else {
                continue;
            };
            if p.manifest().accepts == Accepts::Json || p.asks_judge() {
                continue;
            }
            let ctx = reins_runtime::CallContext {
                run_id: "load-check".into(),
                pipeline: self.name.clone(),
                attempt: 0,
                metadata: Value::Object(Default::default()),
                ..Default::default()
            };
            if let Err(e) = p.validate(&ctx, "\"\"") {
                errors.push(ConfigError::Invalid {
                    path: config.origin.clone(),
                    key: format!("pipelines.{}.validators", self.name),
                    message: format!(
                        "validator `{}` refuses to run with its configuration ({}): {e}",
                        v.0.plugin,
                        settings_of(&v.0.plugin)
                    ),
                });
            }
        }
        if self.config.output == Some(OutputMode::Text) {
            for v in &self.config.validators {
                if let Some(p) = validator(v)
                    && p.manifest().accepts == Accepts::Json
                {
                    errors.push(ConfigError::Invalid {
                        path: config.origin.clone(),
                        key: format!("pipelines.{}.validators", self.name),
                        message: format!(
                            "pipeline `{}` answers text (output = \"text\"), but validator `{}` accepts only JSON (its sidecar says accepts = \"json\" or nothing): remove it, use output = \"json\", or use a validator that accepts text",
                            self.name, v.0.plugin
                        ),
                    });
                }
            }
        }
        for (layer, plugin) in self.plugins() {
            match get(layer, plugin) {
                Some(p) if p.serves(layer) => {}
                Some(p) => errors.push(ConfigError::WrongLayer {
                    path: config.origin.clone(),
                    pipeline: self.name.clone(),
                    plugin: plugin.to_owned(),
                    expected: layer,
                    actual: p.layer(),
                }),
                None => {
                    let statuses = set.statuses();
                    let key = self.plugin_key(layer, plugin);
                    let status = statuses
                        .iter()
                        .find(|s| s.name == key)
                        .or_else(|| statuses.iter().find(|s| s.name == plugin));
                    let detail = match status {
                        Some(s) if s.status == "disabled" => {
                            " (it is disabled in its sidecar)".to_owned()
                        }
                        Some(s) => format!(
                            " ({}: {})",
                            s.status,
                            s.last_error.clone().unwrap_or_default()
                        ),
                        None => format!(" (no {plugin}.wasm there)"),
                    };
                    errors.push(ConfigError::MissingPlugin {
                        path: config.origin.clone(),
                        pipeline: self.name.clone(),
                        layer,
                        plugin: plugin.to_owned(),
                        dir: dir.to_owned(),
                        detail,
                    });
                }
            }
        }
        errors
    }
}

/// The pipeline's own settings of its plugins, as variants: a `config_file`
/// first, `config` over it, `"@pipeline"` replaced by the pipeline's schema.
fn variants(
    config: &Config,
    name: &str,
    p: &PipelineConfig,
    schema: Option<&Value>,
) -> Result<Variants, ConfigError> {
    let mut out = BTreeMap::new();
    for l in p.layer_plugins() {
        if l.config.is_none() && l.config_file.is_none() {
            continue;
        }
        let key = format!("pipelines.{name}.{}", crate::config::layer_key(&l.layer));
        let invalid = |message: String| ConfigError::Invalid {
            path: config.origin.clone(),
            key: key.clone(),
            message,
        };
        let mut settings = serde_json::Map::new();
        if let Some(file) = l.config_file {
            let path = config.resolve(file);
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            let parsed: Result<serde_json::Map<String, Value>, String> =
                if path.extension().is_some_and(|x| x == "json") {
                    serde_json::from_str(&text).map_err(|e| e.to_string())
                } else {
                    toml::from_str(&text).map_err(|e| e.to_string())
                };
            settings = parsed.map_err(|e| {
                invalid(format!(
                    "config_file {} of `{}`: {}",
                    path.display(),
                    l.plugin,
                    e.trim_end()
                ))
            })?;
        }
        for (k, v) in l.config.into_iter().flatten() {
            settings.insert(k.clone(), v.clone());
        }
        for (k, v) in settings.iter_mut() {
            if v.as_str() == Some("@pipeline") {
                *v = schema.cloned().ok_or_else(|| {
                    invalid(format!(
                        "`{}`'s config.{k} asks for the pipeline's schema (\"@pipeline\"), but the pipeline has none: add `schema`",
                        l.plugin
                    ))
                })?;
            }
        }
        let variant = reins_runtime::Variant {
            plugin: l.plugin.to_owned(),
            config: settings,
        };
        let vkey = variant.key();
        let layer: &mut BTreeMap<_, _> = out.entry(l.layer).or_default();
        match layer.get(l.plugin) {
            Some((other, _)) if *other != vkey => {
                return Err(invalid(format!(
                    "`{}` is listed twice with different settings; a pipeline sets up a plugin one way",
                    l.plugin
                )));
            }
            _ => {
                layer.insert(l.plugin.to_owned(), (vkey, variant));
            }
        }
    }
    Ok(out)
}

/// Compiles a draft 2020-12 schema (a schema that says `$schema` keeps its
/// draft), after checking it against its meta-schema.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    if let Err(e) = jsonschema::meta::validate(schema) {
        let at = e.instance_path().to_string();
        return Err(if at.is_empty() {
            e.to_string()
        } else {
            format!("at {at}: {e}")
        });
    }
    let mut options = jsonschema::options();
    if schema.get("$schema").is_none() {
        options = options.with_draft(jsonschema::Draft::Draft202012);
    }
    options.build(schema).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_are_checked_against_the_meta_schema() {
        assert!(compile_schema(&json!({"type": "object"})).is_ok());
        let e = compile_schema(&json!({"type": "objekt"})).unwrap_err();
        assert!(e.contains("objekt"), "{e}");
        let e = compile_schema(&json!({"properties": {"a": {"minimum": "3"}}})).unwrap_err();
        assert!(e.contains("/properties/a/minimum"), "{e}");
    }

    #[test]
    fn requests_parse_from_json() {
        let r: Request =
            serde_json::from_str(r#"{"messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(r.metadata, json!({}));
        assert!(serde_json::from_str::<Request>(r#"{"messages": [], "metdata": {}}"#).is_err());
    }
}
