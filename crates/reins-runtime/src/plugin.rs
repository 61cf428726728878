//! One loaded plugin: its compiled component, its manifest, and the calls the
//! pipeline makes into it under the manifest's limits.

use super::bindings::{
    constraints, context, gate, normalizer, stream_checker, validator, wit_types,
};
use super::counters::CounterStore;
use super::engine::EngineHandle;
use super::error::{CallFailure, PluginError};
use super::manifest::{FailMode, Isolation, Manifest};
use super::state::{CounterEntry, StoreState};
use super::types::{
    Access, Action, Assembled, CallContext, Chunk, Decision, Dropped, Layer, Message, Normalized,
    Severity, StreamVerdict, Tool, Verdict, Violation,
};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Store, Trap};

/// Facts about a loaded plugin, shown by `/v1/plugins` and `plugin check`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub layer: Layer,
    pub world: &'static str,
    pub digest: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Unix milliseconds.
    pub loaded_at_ms: u64,
    pub compile_ms: f64,
    pub compile_cached: bool,
    /// Interfaces the component imports (what it asks the host for).
    pub imports: Vec<String>,
    /// How the plugin was set up: `none` (it exports no `init`), `snapshot`
    /// (`init` ran once at load; instances start from the snapshot),
    /// `per-instance` (`init` runs on every fresh instance) or `off` (the
    /// host was told not to call it).
    pub init: &'static str,
    /// The snapshot came from the disk cache (`init` did not run this load).
    pub init_cached: bool,
    /// Time spent on `init` and the snapshot at load (0 when cached or none).
    pub init_ms: f64,
}

/// A plugin ready to be called. Shared (`Arc`) by every request that started
/// while it was current; dropping the last reference frees its instances.
pub struct Plugin {
    info: PluginInfo,
    manifest: Manifest,
    fingerprint: String,
    config_json: String,
    name: Arc<str>,
    pre: LayerPre,
    /// `init` to call on every fresh instance (when it could not be snapshotted).
    init: Option<ComponentExportIndex>,
    engine: Arc<EngineHandle>,
    counters: Arc<dyn CounterStore>,
    idle: Mutex<Vec<Live>>,
    /// Registered once at load so a call pays no label allocation.
    latency: metrics::Histogram,
    /// Whether the component imports `count-tokens`: its calls have the
    /// tokenizer built first (see [`Tokenizer::warm`](crate::Tokenizer::warm)).
    counts_tokens: bool,
}

/// The pre-linked component and where its layer's exports are, typed by
/// the world it exports.
pub(crate) struct LayerPre {
    pre: InstancePre<StoreState>,
    indices: LayerIndices,
    /// The `stream-checker` export: a stream checker's only one, or one a
    /// validator carries next to its layer (`redact-secrets`).
    stream: Option<stream_checker::StreamCheckerPluginIndices>,
}

enum LayerIndices {
    Normalizer(normalizer::NormalizerPluginIndices),
    Validator(validator::ValidatorPluginIndices),
    Constraints(constraints::ConstraintsPluginIndices),
    Gate(gate::GatePluginIndices),
    Context(context::ContextPluginIndices),
    /// A stream checker alone: its export is `LayerPre::stream`.
    StreamChecker,
}

impl LayerPre {
    /// Checks that the component's exports have the types of `layer`'s
    /// world (and of `stream-checker`, where it exports that too).
    pub(crate) fn new(layer: Layer, pre: InstancePre<StoreState>) -> wasmtime::Result<Self> {
        let streams = pre
            .component()
            .get_export_index(None, Layer::StreamChecker.interface())
            .is_some();
        let stream = if streams {
            Some(stream_checker::StreamCheckerPluginIndices::new(&pre)?)
        } else {
            None
        };
        let indices = match layer {
            Layer::Normalizer => {
                LayerIndices::Normalizer(normalizer::NormalizerPluginIndices::new(&pre)?)
            }
            Layer::Validator => {
                LayerIndices::Validator(validator::ValidatorPluginIndices::new(&pre)?)
            }
            Layer::Constraints => {
                LayerIndices::Constraints(constraints::ConstraintsPluginIndices::new(&pre)?)
            }
            Layer::Gate => LayerIndices::Gate(gate::GatePluginIndices::new(&pre)?),
            Layer::Context => LayerIndices::Context(context::ContextPluginIndices::new(&pre)?),
            Layer::StreamChecker => LayerIndices::StreamChecker,
        };
        Ok(Self {
            pre,
            indices,
            stream,
        })
    }

    /// A raw instance (its start-up code run), before its exports are typed.
    pub(crate) fn instantiate_raw(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<wasmtime::component::Instance> {
        self.pre.instantiate(store)
    }

    fn load(
        &self,
        store: &mut Store<StoreState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Instance> {
        let layer = match &self.indices {
            LayerIndices::Normalizer(i) => Exports::Normalizer(i.load(&mut *store, instance)?),
            LayerIndices::Validator(i) => Exports::Validator(i.load(&mut *store, instance)?),
            LayerIndices::Constraints(i) => Exports::Constraints(i.load(&mut *store, instance)?),
            LayerIndices::Gate(i) => Exports::Gate(i.load(&mut *store, instance)?),
            LayerIndices::Context(i) => Exports::Context(i.load(&mut *store, instance)?),
            LayerIndices::StreamChecker => Exports::StreamChecker,
        };
        let stream = match &self.stream {
            Some(i) => Some(i.load(&mut *store, instance)?),
            None => None,
        };
        Ok(Instance { layer, stream })
    }
}

/// An instance's typed exports: its layer's, and its stream checker's.
struct Instance {
    layer: Exports,
    stream: Option<stream_checker::StreamCheckerPlugin>,
}

enum Exports {
    Normalizer(normalizer::NormalizerPlugin),
    Validator(validator::ValidatorPlugin),
    Constraints(constraints::ConstraintsPlugin),
    Gate(gate::GatePlugin),
    Context(context::ContextPlugin),
    StreamChecker,
}

/// A live instance and the store it lives in.
struct Live {
    store: Store<StoreState>,
    instance: Instance,
    uses: u32,
}

/// How much of the text already released a stream checker is shown: enough
/// for context across a piece boundary, without resending a long answer on
/// every piece.
pub const RELEASED_TAIL: usize = 4096;

/// What a guest function returned, before the host checks it.
type GuestResult<T> = wasmtime::Result<Result<T, String>>;

/// What a call left with the host besides its answer.
struct CallSide {
    /// Every `counter-add` it made.
    journal: Vec<CounterEntry>,
    /// What it said through `explain-drop` (an `assemble` call only).
    dropped: Vec<Dropped>,
}

impl Plugin {
    pub(crate) fn new(
        info: PluginInfo,
        manifest: Manifest,
        fingerprint: String,
        pre: LayerPre,
        init: Option<ComponentExportIndex>,
        engine: Arc<EngineHandle>,
        counters: Arc<dyn CounterStore>,
    ) -> Self {
        let latency = metrics::histogram!(
            crate::metric_names::PLUGIN_CALL_SECONDS,
            "plugin" => info.name.clone(),
            "layer" => info.layer.as_str(),
            "digest" => super::error::short_digest(&info.digest).to_string()
        );
        let counts_tokens = imports_host_function(&pre.pre, engine.engine(), "count-tokens");
        Self {
            name: Arc::from(info.name.as_str()),
            config_json: manifest.config_json(),
            latency,
            counts_tokens,
            info,
            manifest,
            fingerprint,
            pre,
            init,
            engine,
            counters,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn layer(&self) -> Layer {
        self.info.layer
    }

    /// Hex sha256 of the `.wasm` this plugin was built from.
    pub fn digest(&self) -> &str {
        &self.info.digest
    }

    pub fn fail_mode(&self) -> FailMode {
        self.manifest.fail_mode
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Whether the component imports the `judge` interface (and so needs a
    /// pipeline that grants it).
    pub fn asks_judge(&self) -> bool {
        self.info
            .imports
            .iter()
            .any(|i| i.starts_with("reins:policy/judge"))
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Identity of the file and manifest this plugin was loaded from; an
    /// unchanged fingerprint lets a reload reuse the compiled plugin.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Runs a normalizer over the conversation.
    pub fn normalize(
        &self,
        ctx: &CallContext,
        messages: &[Message],
    ) -> Result<Normalized, PluginError> {
        let msgs: Vec<wit_types::Message> = messages
            .iter()
            .map(|m| wit_types::Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let out = self.call(Layer::Normalizer, ctx, |store, inst, wctx| {
            match &inst.layer {
                Exports::Normalizer(p) => p
                    .reins_policy_normalizer()
                    .call_normalize(store, wctx, &msgs),
                _ => unreachable_layer(),
            }
        })?;
        let size = out
            .messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
            + violations_size(&out.findings);
        self.check_size(size)?;
        Ok(Normalized {
            messages: out
                .messages
                .into_iter()
                .map(|m| Message::new(m.role, m.content))
                .collect(),
            findings: self.violations(out.findings)?,
        })
    }

    /// Runs a validator over one output document (JSON text).
    pub fn validate(&self, ctx: &CallContext, output: &str) -> Result<Verdict, PluginError> {
        let output = output.to_string();
        let out = self.call(Layer::Validator, ctx, |store, inst, wctx| {
            match &inst.layer {
                Exports::Validator(p) => p
                    .reins_policy_validator()
                    .call_validate(store, wctx, &output),
                _ => unreachable_layer(),
            }
        })?;
        self.check_size(
            violations_size(&out.violations) + out.fixed.as_ref().map_or(0, String::len),
        )?;
        let fixed = match out.fixed {
            None => None,
            Some(text) => Some(self.parse_json("fixed", &text)?),
        };
        Ok(Verdict {
            violations: self.violations(out.violations)?,
            fixed,
        })
    }

    /// Asks a constraints plugin which tools this request may use.
    pub fn tools(&self, ctx: &CallContext) -> Result<Vec<Tool>, PluginError> {
        let out = self.call(Layer::Constraints, ctx, |store, inst, wctx| {
            match &inst.layer {
                Exports::Constraints(p) => p.reins_policy_constraints().call_tools(store, wctx),
                _ => unreachable_layer(),
            }
        })?;
        self.check_size(
            out.iter()
                .map(|t| t.name.len() + t.description.len() + t.parameters.len())
                .sum(),
        )?;
        out.into_iter()
            .map(|t| {
                Ok(Tool {
                    parameters: self.parse_json("tool parameters", &t.parameters)?,
                    name: t.name,
                    description: t.description,
                    access: access_from_wit(t.access),
                })
            })
            .collect()
    }

    /// Asks a gate what to do with one proposed action.
    pub fn check(&self, ctx: &CallContext, action: &Action) -> Result<Decision, PluginError> {
        self.check_reserving(ctx, action).map(|(d, _)| d)
    }

    /// Like [`check`](Self::check), and also returns what the gate added to
    /// host counters during the call (a budget reservation), so the caller
    /// can [`release`](Reservation::release) it if the action never happens.
    pub fn check_reserving(
        &self,
        ctx: &CallContext,
        action: &Action,
    ) -> Result<(Decision, Reservation), PluginError> {
        let wit_action = gate::exports::reins::policy::gate::Action {
            tool: action.tool.clone(),
            arguments: action.arguments.to_string(),
            access: access_to_wit(action.access),
        };
        let (out, side) =
            self.call_journaled(Layer::Gate, ctx, |store, inst, wctx| match &inst.layer {
                Exports::Gate(p) => p.reins_policy_gate().call_check(store, wctx, &wit_action),
                _ => unreachable_layer(),
            })?;
        let reservation = Reservation {
            scope: self.name.clone(),
            entries: net(side.journal),
            counters: self.counters.clone(),
        };
        use gate::exports::reins::policy::gate::Decision as W;
        let decision = match out {
            W::Allow => Decision::Allow,
            W::Deny(r) => {
                self.check_size(r.len())?;
                Decision::Deny(r)
            }
            W::Escalate(r) => {
                self.check_size(r.len())?;
                Decision::Escalate(r)
            }
            W::Rewrite(args) => {
                self.check_size(args.len())?;
                Decision::Rewrite(self.parse_json("rewrite arguments", &args)?)
            }
        };
        Ok((decision, reservation))
    }

    /// Asks a context builder to choose and order chunks within a token
    /// budget; [`Assembled::dropped`] carries what it said, through
    /// `explain-drop`, about the chunks it left out or trimmed.
    pub fn assemble(
        &self,
        ctx: &CallContext,
        query: &str,
        chunks: &[Chunk],
        budget_tokens: u32,
    ) -> Result<Assembled, PluginError> {
        use context::exports::reins::policy::context_builder::Chunk as W;
        let wit_chunks: Vec<W> = chunks
            .iter()
            .map(|c| W {
                id: c.id.clone(),
                text: c.text.clone(),
                score: c.score,
                source: c.source.clone(),
            })
            .collect();
        let (out, side) =
            self.call_journaled(Layer::Context, ctx, |store, inst, wctx| match &inst.layer {
                Exports::Context(p) => p.reins_policy_context_builder().call_assemble(
                    store,
                    wctx,
                    query,
                    &wit_chunks,
                    budget_tokens,
                ),
                _ => unreachable_layer(),
            })?;
        self.check_size(
            out.iter()
                .map(|c| c.id.len() + c.text.len() + c.source.len())
                .sum(),
        )?;
        Ok(Assembled {
            chunks: out
                .into_iter()
                .map(|c| Chunk {
                    id: c.id,
                    text: c.text,
                    score: c.score,
                    source: c.source,
                })
                .collect(),
            dropped: side.dropped,
        })
    }

    /// Asks a stream checker whether `pending` may go to the client.
    /// `released` is cut to its last [`RELEASED_TAIL`] bytes.
    pub fn check_stream(
        &self,
        ctx: &CallContext,
        released: &str,
        pending: &str,
        last: bool,
    ) -> Result<StreamVerdict, PluginError> {
        let mut from = released.len().saturating_sub(RELEASED_TAIL);
        while !released.is_char_boundary(from) {
            from += 1;
        }
        let released = &released[from..];
        let out = self.call(Layer::StreamChecker, ctx, |store, inst, wctx| {
            match &inst.stream {
                Some(p) => p
                    .reins_policy_stream_checker()
                    .call_check(store, wctx, released, pending, last),
                None => unreachable_layer(),
            }
        })?;
        use stream_checker::exports::reins::policy::stream_checker::Verdict as W;
        Ok(match out {
            W::Pass => StreamVerdict::Pass,
            W::Hold => StreamVerdict::Hold,
            W::Cut(reason) => {
                self.check_size(reason.len())?;
                StreamVerdict::Cut(reason)
            }
            W::Replace(text) => {
                self.check_size(text.len())?;
                StreamVerdict::Replace(text)
            }
        })
    }

    /// Whether a pipeline may use the plugin as a `layer` plugin.
    pub fn serves(&self, layer: Layer) -> bool {
        self.layer() == layer || (layer == Layer::StreamChecker && self.streams())
    }

    /// Whether the plugin checks streams (a stream checker, or a layer
    /// that also exports `stream-checker`).
    pub fn streams(&self) -> bool {
        self.pre.stream.is_some()
    }

    /// The one place every call goes through: picks an instance per the
    /// isolation mode, arms the deadline and fuel, calls, and turns anything
    /// but a clean answer into a [`PluginError`].
    fn call<T>(
        &self,
        expected: Layer,
        ctx: &CallContext,
        f: impl FnOnce(&mut Store<StoreState>, &Instance, &wit_types::CallContext) -> GuestResult<T>,
    ) -> Result<T, PluginError> {
        self.call_journaled(expected, ctx, f).map(|(t, _)| t)
    }

    /// [`call`](Self::call), also returning what the call left with the
    /// host (counter adds, explained drops).
    fn call_journaled<T>(
        &self,
        expected: Layer,
        ctx: &CallContext,
        f: impl FnOnce(&mut Store<StoreState>, &Instance, &wit_types::CallContext) -> GuestResult<T>,
    ) -> Result<(T, CallSide), PluginError> {
        if self.info.layer != expected && !(expected == Layer::StreamChecker && self.streams()) {
            return Err(self.error(CallFailure::WrongLayer {
                expected,
                actual: self.info.layer,
            }));
        }
        let span = tracing::trace_span!("plugin_call", plugin = %self.info.name, layer = %expected);
        let _enter = span.enter();
        if self.counts_tokens {
            // Before the deadline is armed: building a BPE is not the call's time.
            ctx.tokenizer.warm();
        }
        let wctx = wit_types::CallContext {
            run_id: ctx.run_id.clone(),
            pipeline: ctx.pipeline.clone(),
            attempt: ctx.attempt,
            caller: wit_types::Caller {
                subject: ctx.caller.subject.clone(),
                tenant: ctx.caller.tenant.clone(),
                roles: ctx.caller.roles.clone(),
                credential: ctx.caller.credential.clone(),
                claims: serde_json::Value::Object(ctx.caller.claims.clone()).to_string(),
            },
            metadata: if ctx.metadata.is_null() {
                "{}".to_string()
            } else {
                ctx.metadata.to_string()
            },
            config: self.config_json.clone(),
        };
        let pooled = self.manifest.isolation == Isolation::Pooled;
        let reused = if pooled { self.take_idle() } else { None };
        let mut live = match reused {
            Some(live) => live,
            None => self.instantiate()?,
        };
        if live.uses > 0 {
            // A reused instance gets a fresh budget for this call.
            self.arm(&mut live.store);
        }
        live.uses += 1;
        live.store.data_mut().request_text = ctx.request_text.clone();
        live.store.data_mut().upstream_tools = if ctx.upstream_tools.is_empty() {
            Arc::from("[]")
        } else {
            ctx.upstream_tools.clone()
        };
        live.store.data_mut().judge = ctx.judge.clone();
        live.store.data_mut().call_deadline = Some(
            std::time::Instant::now() + Duration::from_millis(self.manifest.limits.deadline_ms),
        );
        {
            let state = live.store.data_mut();
            state.tokenizer = ctx.tokenizer;
            state.context_chunks = if ctx.context_chunks.is_empty() {
                Arc::from("[]")
            } else {
                ctx.context_chunks.clone()
            };
            state.explaining = expected == Layer::Context;
            state.dropped.clear();
            state.drops_ignored = 0;
        }
        let started = std::time::Instant::now();
        let result = f(&mut live.store, &live.instance, &wctx);
        self.latency.record(started.elapsed().as_secs_f64());
        let state = live.store.data_mut();
        let side = CallSide {
            journal: std::mem::take(&mut state.journal),
            dropped: std::mem::take(&mut state.dropped),
        };
        if state.drops_ignored > 0 {
            tracing::debug!(
                plugin = %self.info.name,
                ignored = state.drops_ignored,
                "explain-drop: more than {} entries in one call; the rest were ignored",
                super::types::MAX_DROPPED
            );
        }
        // A pooled instance keeps no judge (nor context) of a finished run.
        state.judge = None;
        state.context_chunks = Arc::from("[]");
        match result {
            Ok(answer) => {
                if pooled {
                    self.give_back(live);
                }
                answer.map(|t| (t, side)).map_err(|message| {
                    self.error(CallFailure::Refused {
                        message: truncate(&message, 2048),
                    })
                })
            }
            // The instance is poisoned after any trap: drop it.
            Err(e) => Err(self.error(self.classify(e))),
        }
    }

    fn instantiate(&self) -> Result<Live, PluginError> {
        let mut store = new_store(
            &self.engine,
            self.name.clone(),
            &self.manifest,
            self.counters.clone(),
        );
        let instance = self.pre.instantiate_raw(&mut store).map_err(|e| {
            self.error(match classify(e, &self.manifest) {
                CallFailure::Trap { message } => CallFailure::Instantiate { message },
                other => other,
            })
        })?;
        if let Some(index) = &self.init {
            super::init::call(
                &mut store,
                &instance,
                index,
                &self.config_json,
                &self.manifest,
            )
            .map_err(|cause| self.error(init_failure(cause)))?;
            // The call gets a budget of its own.
            arm(&self.engine, &self.manifest, &mut store);
        }
        let instance = self.pre.load(&mut store, &instance).map_err(|e| {
            self.error(CallFailure::Instantiate {
                message: format!("{e:#}"),
            })
        })?;
        Ok(Live {
            store,
            instance,
            uses: 0,
        })
    }

    fn arm(&self, store: &mut Store<StoreState>) {
        arm(&self.engine, &self.manifest, store);
    }

    fn take_idle(&self) -> Option<Live> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, live: Live) {
        if live.uses >= self.manifest.max_uses {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.manifest.pool_size {
                idle.push(live);
            }
        }
    }

    fn classify(&self, e: wasmtime::Error) -> CallFailure {
        classify(e, &self.manifest)
    }

    fn check_size(&self, bytes: usize) -> Result<(), PluginError> {
        let limit = self.manifest.limits.max_output_kib.saturating_mul(1024);
        if bytes as u64 > limit {
            return Err(self.error(CallFailure::Malformed {
                message: format!(
                    "result is {bytes} bytes, over the limit of {} KiB",
                    self.manifest.limits.max_output_kib
                ),
            }));
        }
        Ok(())
    }

    fn parse_json(&self, what: &str, text: &str) -> Result<serde_json::Value, PluginError> {
        serde_json::from_str(text).map_err(|e| {
            self.error(CallFailure::Malformed {
                message: format!("{what} is not valid JSON: {e}"),
            })
        })
    }

    fn violations(&self, list: Vec<wit_types::Violation>) -> Result<Vec<Violation>, PluginError> {
        list.into_iter()
            .map(|v| {
                if !(v.path.is_empty() || v.path.starts_with('/')) {
                    return Err(self.error(CallFailure::Malformed {
                        message: format!(
                            "violation path {:?} is not a JSON Pointer",
                            truncate(&v.path, 80)
                        ),
                    }));
                }
                Ok(Violation {
                    path: v.path,
                    code: v.code,
                    message: v.message,
                    severity: match v.severity {
                        wit_types::Severity::Info => Severity::Info,
                        wit_types::Severity::Warning => Severity::Warning,
                        wit_types::Severity::Error => Severity::Error,
                    },
                })
            })
            .collect()
    }

    fn error(&self, cause: CallFailure) -> PluginError {
        tracing::debug!(plugin = %self.info.name, kind = cause.kind(), "plugin call failed: {cause}");
        metrics::counter!(
            crate::metric_names::PLUGIN_FAILURES_TOTAL,
            "plugin" => self.info.name.clone(),
            "digest" => super::error::short_digest(&self.info.digest).to_string(),
            "kind" => cause.kind()
        )
        .increment(1);
        PluginError {
            plugin: self.info.name.clone(),
            digest: self.info.digest.clone(),
            cause,
        }
    }
}

/// What went wrong in a guest call, from wasmtime's error.
pub(crate) fn classify(e: wasmtime::Error, manifest: &Manifest) -> CallFailure {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => CallFailure::Timeout {
                deadline_ms: manifest.limits.deadline_ms,
            },
            Trap::OutOfFuel => CallFailure::OutOfFuel {
                fuel: manifest.limits.fuel.unwrap_or(u64::MAX),
            },
            other => CallFailure::Trap {
                message: other.to_string(),
            },
        };
    }
    let text = format!("{e:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
        return CallFailure::MemoryLimit {
            limit_mib: manifest.limits.memory_mib,
        };
    }
    if text.contains("concurrent") && text.contains("limit") {
        return CallFailure::Instantiate {
            message: format!("instance pool exhausted: {}", first_line(&text)),
        };
    }
    CallFailure::Trap {
        message: truncate(first_line(&text), 512),
    }
}

/// A fresh store for one instance of a plugin: WASI with only what the
/// manifest grants, its memory limit, and the call's deadline and fuel.
pub(crate) fn new_store(
    engine: &EngineHandle,
    name: Arc<str>,
    manifest: &Manifest,
    counters: Arc<dyn CounterStore>,
) -> Store<StoreState> {
    let memory = (manifest.limits.memory_mib << 20) as usize;
    let state = StoreState::new(name, &manifest.grants, memory, counters);
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|s| &mut s.limits);
    // Start-up code runs under the same deadline and fuel as the call.
    arm(engine, manifest, &mut store);
    store
}

/// Arms `store` with the manifest's deadline (in epoch ticks) and fuel.
pub(crate) fn arm(engine: &EngineHandle, manifest: &Manifest, store: &mut Store<StoreState>) {
    let deadline = Duration::from_millis(manifest.limits.deadline_ms);
    store.set_epoch_deadline(engine.ticks_for(deadline));
    let fuel = manifest.limits.fuel.unwrap_or(u64::MAX);
    // Fuel is enabled engine-wide, so setting it cannot fail.
    let _ = store.set_fuel(fuel);
}

/// An `init` that failed on a fresh instance: the instance cannot serve.
fn init_failure(cause: CallFailure) -> CallFailure {
    match cause {
        CallFailure::Refused { message } | CallFailure::Trap { message } => {
            CallFailure::Instantiate {
                message: format!("init: {message}"),
            }
        }
        other => other,
    }
}

/// Whether `pre`'s component imports function `func` of the `host` interface.
fn imports_host_function(
    pre: &InstancePre<StoreState>,
    engine: &wasmtime::Engine,
    func: &str,
) -> bool {
    use wasmtime::component::types::ComponentItem;
    pre.component()
        .component_type()
        .imports(engine)
        .any(|(name, import)| {
            name.starts_with("reins:policy/host@")
                && matches!(&import.ty, ComponentItem::ComponentInstance(i) if i.get_export(engine, func).is_some())
        })
}

fn unreachable_layer<T>() -> GuestResult<T> {
    // `call` checks the layer before dispatching, so an instance always
    // matches the function asked for; report rather than panic if not.
    Err(wasmtime::Error::msg(
        "instance does not match the requested layer",
    ))
}

fn violations_size(list: &[wit_types::Violation]) -> usize {
    list.iter()
        .map(|v| v.path.len() + v.code.len() + v.message.len())
        .sum()
}

fn access_from_wit(a: wit_types::Access) -> Access {
    match a {
        wit_types::Access::Read => Access::Read,
        wit_types::Access::Write => Access::Write,
        wit_types::Access::Irreversible => Access::Irreversible,
    }
}

fn access_to_wit(a: Access) -> wit_types::Access {
    match a {
        Access::Read => wit_types::Access::Read,
        Access::Write => wit_types::Access::Write,
        Access::Irreversible => wit_types::Access::Irreversible,
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Wall-clock time now, in Unix milliseconds: the one clock for every
/// timestamp the host reports (loaded_at, approvals, `created`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sums a call's counter adds per key. A gate that reserved and then gave
/// back (a denial) holds nothing: releasing its two entries one by one would
/// briefly lower the total and let a concurrent check through.
fn net(journal: Vec<CounterEntry>) -> Vec<CounterEntry> {
    let mut out: Vec<CounterEntry> = Vec::new();
    for e in journal {
        match out
            .iter_mut()
            .find(|o| o.key == e.key && o.window_seconds == e.window_seconds)
        {
            Some(o) => o.delta += e.delta,
            None => out.push(e),
        }
    }
    out.retain(|e| e.delta != 0);
    out
}

/// Counter adds a gate made while deciding on one action: a budget held for
/// that action. Release it when the action does not happen (denied later,
/// rejected by a human, or its execution failed).
#[derive(Clone)]
pub struct Reservation {
    scope: Arc<str>,
    entries: Vec<CounterEntry>,
    counters: Arc<dyn CounterStore>,
}

impl Reservation {
    /// A reservation written down by another process (`scope`: the gate
    /// plugin's name), released through `counters` — the shared store, for
    /// it to undo what that process added.
    fn restore(
        scope: &str,
        entries: Vec<CounterEntry>,
        counters: Arc<dyn CounterStore>,
    ) -> Reservation {
        Reservation {
            scope: scope.into(),
            entries,
            counters,
        }
    }

    /// Reservations by action index, written down for another process
    /// (`[{index, scope, entries}]`; empty ones left out).
    pub fn list_to_json(list: &[(usize, Reservation)]) -> serde_json::Value {
        serde_json::Value::Array(
            list.iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(i, r)| serde_json::json!({"index": i, "scope": &*r.scope, "entries": r.entries}))
                .collect(),
        )
    }

    /// What [`Reservation::list_to_json`] wrote, released through `counters`.
    pub fn list_from_json(
        v: &serde_json::Value,
        counters: &Arc<dyn CounterStore>,
    ) -> Vec<(usize, Reservation)> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let index = usize::try_from(v.get("index")?.as_u64()?).ok()?;
                let scope = v.get("scope")?.as_str()?;
                let entries = serde_json::from_value(v.get("entries")?.clone()).ok()?;
                Some((
                    index,
                    Reservation::restore(scope, entries, counters.clone()),
                ))
            })
            .collect()
    }

    /// True when the gate reserved nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Undoes every add (idempotent: the entries are consumed).
    pub fn release(&mut self) {
        for e in self.entries.drain(..) {
            let window =
                (e.window_seconds > 0).then(|| Duration::from_secs(u64::from(e.window_seconds)));
            self.counters.add(&self.scope, &e.key, -e.delta, window);
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("scope", &self.scope)
            .field("entries", &self.entries)
            .finish()
    }
}
