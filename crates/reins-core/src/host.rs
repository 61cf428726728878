//! [`Host`]: Reins as a library. The CLI and the server use exactly this API.

use crate::approvals::{Approval, ApprovalError, ApprovalFilter, ApprovalStore};
use crate::config::{Config, ConfigError};
use crate::identity;
use crate::limits::{RateLimiter, limit_key};
use crate::pipeline::journal::Journal;
use crate::pipeline::{Pipeline, Request, RunContext, RunError, RunResult, RunStatus, engine};
use crate::provider::{Breaker, Provider};
use reins_runtime::PluginHost;
use reins_state::{RunRecord, StateStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod audit;
mod lease;
mod live;
mod mcp;
mod memory;
mod recent;
mod record;
mod resume;
pub use live::{ConfigStatus, Live, ReloadError, ReloadFailure, ReloadOutcome};
use record::StoredRequest;
pub use resume::ResumeError;

/// A loaded configuration: plugins, providers and compiled pipelines.
///
/// Build one per process (from a `reins.toml` or with [`Host::builder`]) and
/// share it: [`Host::run`] takes `&self` and runs any number of requests
/// concurrently. Every run holds the plugin snapshot it started with, so a
/// hot reload never changes a run midway.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use reins_core::Host;
/// use reins_core::pipeline::{Request, RunStatus};
///
/// let plugins = tempfile::tempdir()?; // no plugins: JSON Schema only
/// let config = r#"
///     plugins_dir = "."
///
///     [providers.replay]
///     kind = "scripted"
///     responses = [
///         'Here you go: {"total": "12 EUR"}',
///         '''```json
///         {"total": 12}
///         ```''',
///     ]
///
///     [pipelines.invoice]
///     model = "replay"
///     system_prompt = "Extract the invoice total as JSON."
///     schema = { type = "object", required = ["total"], properties = { total = { type = "number" } } }
///     repair = { max_attempts = 2 }
/// "#;
/// let host = Host::builder().config_str(config, plugins.path()).build().await?;
///
/// let result = host.run("invoice", Request::text("Total due: 12 EUR")).await;
/// assert_eq!(result.status, RunStatus::Completed);
/// assert_eq!(result.output, Some(serde_json::json!({"total": 12})));
/// assert_eq!(result.repairs(), 1); // the first answer had a string total
/// eprintln!("{}", result.trace_table());
/// # Ok(()) }
/// ```
pub struct Host {
    /// The config, providers and pipelines serving now; a reload swaps it.
    live: arc_swap::ArcSwap<Live>,
    /// Where the config comes from, and the reloads of it.
    reloader: live::Reloader,
    plugins: Arc<PluginHost>,
    approvals: ApprovalStore,
    limits: RateLimiter,
    state: Arc<dyn StateStore>,
    /// Run ownership: this node's name, the lease, the runs worked on here.
    leases: lease::Leases,
    /// Finished runs read lately, in front of the store.
    recent: recent::RecentRuns,
    /// The audit log's writer (rows go to the store off the request path).
    audit: audit::AuditWriter,
    /// Where runs' spans go (off unless the root turned exporting on).
    telemetry: crate::telemetry::Telemetry,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live.load();
        f.debug_struct("Host")
            .field("config", &live.config.origin)
            .field("version", &live.version)
            .field("pipelines", &live.pipelines.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads `reins.toml` at `path`: opens the plugins directory, builds the
    /// providers, compiles every pipeline and checks every plugin it names.
    pub async fn from_config(path: impl AsRef<Path>) -> Result<Host, ConfigError> {
        Host::builder().config_file(path).build().await
    }

    /// A builder, for configs that are not files, shared plugin hosts and
    /// providers made in code.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Runs `request` through pipeline `pipeline`. Never fails outright:
    /// every failure is in the result's `status` and `error`, next to the
    /// trace of what happened before it. The run is recorded in the state
    /// store (`running` before it starts, its result when it ends).
    pub async fn run(&self, pipeline: &str, request: impl Into<Request>) -> RunResult {
        self.run_keyed(pipeline, request, None).await
    }

    /// What `pipeline`'s context stage would give the model for `query`
    /// (retrieval and the context builder, as a run of `caller` would
    /// see it); nothing is recorded and no model is called.
    pub async fn preview_context(
        &self,
        pipeline: &str,
        query: &str,
        caller: &reins_runtime::Caller,
    ) -> Result<crate::pipeline::engine::ContextPreview, RunError> {
        let live = self.live.load_full();
        let p = live
            .pipelines
            .get(pipeline)
            .ok_or_else(|| RunError::UnknownPipeline(pipeline.to_owned()))?;
        if query.trim().is_empty() {
            return Err(RunError::BadRequest(
                "the preview needs a query: GET /v1/pipelines/NAME/context?q=…".to_owned(),
            ));
        }
        let caller = identity::effective(caller, &serde_json::json!({}), p.config.trust_metadata);
        let rc = RunContext::new(self.state.clone(), None);
        engine::preview_context(p, self.plugins.current(), query, caller, &rc).await
    }

    /// [`Host::run`], remembering the caller's idempotency key with the run
    /// (see [`Host::run_by_key`]).
    pub async fn run_keyed(
        &self,
        pipeline: &str,
        request: impl Into<Request>,
        key: Option<&str>,
    ) -> RunResult {
        let mut request = request.into();
        let run_id = request
            .run_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        // The run keeps the config it started with, whatever reloads meanwhile.
        let live = self.live.load_full();
        let Some(p) = live.pipelines.get(pipeline) else {
            let mut result = RunResult::new(run_id, pipeline);
            result.error = Some(RunError::UnknownPipeline(pipeline.to_owned()));
            return result;
        };
        // Identity first, before any plugin runs: a body that contradicts
        // the credential is refused, and the pipeline sees the effective
        // caller (metadata fills it in only where the pipeline trusts it).
        if let Err(e) = identity::check_metadata(&request.caller, &request.metadata) {
            let mut result = RunResult::new(run_id, pipeline);
            result.status = RunStatus::Rejected;
            result.error = Some(RunError::Forbidden {
                key: format!("metadata.{}", e.key),
                message: e.to_string(),
            });
            return result;
        }
        request.caller =
            identity::effective(&request.caller, &request.metadata, p.config.trust_metadata);
        // Backpressure first: a request that could only wait past its
        // deadline is refused before it costs a plugin call or a row.
        if let Some(e) = p.shed(request.timeout_ms) {
            let mut result = RunResult::new(run_id, pipeline);
            result.status = RunStatus::Rejected;
            result.error = Some(e);
            return result;
        }
        let Some(guard) = self.leases.active.enter(&run_id) else {
            return not_owned(&run_id, pipeline, "it is already running in this process");
        };
        let limited = match &p.config.limits {
            Some(limits) => {
                let lkey = limit_key(limits, &request.caller);
                if let Err(retry_after_s) = self.limits.admit(pipeline, &lkey, limits) {
                    let mut result = RunResult::new(run_id, pipeline);
                    result.status = RunStatus::Rejected;
                    result.error = Some(RunError::RateLimited {
                        key: lkey,
                        message: "too many requests or tokens in the window".into(),
                        retry_after_s,
                    });
                    return result;
                }
                Some((limits, lkey))
            }
            None => None,
        };
        let mut record = RunRecord::new(&run_id, pipeline, RunStatus::Running);
        // Keys and sessions are the caller's own: two tenants with one key
        // get two runs and two memories.
        record.idempotency_key = key.map(|k| identity::scoped(&request.caller, k));
        record.session_id = request
            .session_id
            .as_deref()
            .map(|s| identity::scoped(&request.caller, s));
        self.start(p, request, record, guard, limited, Vec::new())
            .await
    }

    /// Runs a run this process holds (`guard`) under its lease: records it
    /// as `running` (the stored request is what a resume starts from), keeps
    /// the lease renewed, and records its result.
    async fn start(
        &self,
        p: &Pipeline,
        mut request: Request,
        mut record: RunRecord,
        mut guard: lease::ActiveGuard,
        limited: Option<(&crate::config::RateLimitConfig, String)>,
        previous: Vec<reins_state::StepRecord>,
    ) -> RunResult {
        let run_id = record.run_id.clone();
        record.status = RunStatus::Running;
        StoredRequest::new(&request).write(&mut record);
        record.result = serde_json::json!({"run_id": &run_id, "pipeline": &p.name, "status": "running", "caller": &request.caller});
        record.owner = Some(self.leases.node.clone());
        record.lease_until_ms = self.lease_until();
        record.updated_ms = reins_state::now_ms();
        match self.state.put_run(&record).await {
            Ok(()) => {}
            Err(reins_state::StateError::LeaseLost { .. }) => {
                return not_owned(&run_id, &p.name, "another node holds its lease");
            }
            Err(e @ reins_state::StateError::Conflict(_)) => {
                // Two requests with one idempotency key: the other one runs.
                return not_owned(&run_id, &p.name, &e.to_string());
            }
            Err(e) => {
                tracing::warn!(run_id = %run_id, "state store: cannot record the run's start: {e}")
            }
        }
        let caller = audit::caller(&request);
        self.audit(audit::run_start(
            &run_id,
            &p.name,
            !previous.is_empty(),
            &caller,
        ))
        .await;
        self.keep_leased(&mut guard);
        let work = async move {
            self.remember(p, &mut request).await;
            if p.config.mode == crate::config::PipelineMode::Agent {
                return self.run_agent(p, request, record).await;
            }
            let journal = self.boot().state.checkpoints.then(|| {
                Journal::new(
                    self.state.clone(),
                    record.clone(),
                    self.leases.lease_ms,
                    &previous,
                )
            });
            let rc = RunContext::new(self.state.clone(), journal)
                .traced(self.telemetry.run(request.trace_parent.as_ref()));
            let result = engine::run(p, self.plugins.current(), request, &rc).await;
            if let Some((limits, lkey)) = limited {
                self.limits
                    .spend_tokens(&p.name, &lkey, limits, result.tokens.total);
            }
            self.finish(p, result, record).await
        };
        // A node that loses the lease (it stalled; another node took the
        // run over) stops at once rather than racing the new owner.
        let result = tokio::select! {
            biased;
            result = work => result,
            () = guard.lost() => not_owned(&run_id, &p.name, "this node lost the run's lease; another node continues it"),
        };
        self.audit_rows(audit::run_end(&result, &caller));
        result
    }

    /// Records a run's result; a run awaiting approval is held with its approvals.
    async fn finish(
        &self,
        p: &Pipeline,
        mut result: RunResult,
        mut record: RunRecord,
    ) -> RunResult {
        if result.status == RunStatus::Cancelled {
            tracing::info!(run_id = %result.run_id, pipeline = %p.name, "run cancelled: its client disconnected");
            metrics::counter!(reins_runtime::metric_names::RUNS_CANCELLED_TOTAL, "pipeline" => p.name.clone()).increment(1);
        }
        record.status = result.status;
        record.updated_ms = reins_state::now_ms();
        // Finished (or held for a human): nobody needs to own it now.
        record.owner = Some(self.leases.node.clone());
        record.lease_until_ms = 0;
        if result.status == RunStatus::AwaitingApproval {
            // What continuing the held run needs; a finished run needs none of it.
            StoredRequest::update(&mut record, |stored| {
                stored.action_indices = Some(result.action_indices.clone());
                stored.reservations =
                    reins_runtime::Reservation::list_to_json(&result.reservations);
            });
        }
        record.result = serde_json::to_value(&result).unwrap_or(Value::Null);
        if result.status == RunStatus::AwaitingApproval {
            match self
                .approvals
                .hold(&result, &record, &p.config.approvers)
                .await
            {
                Ok(held) => result.approvals = held.into_iter().map(|a| a.id).collect(),
                Err(e) => {
                    tracing::warn!(run_id = %result.run_id, "cannot hold the run for approval: {e}")
                }
            }
            return result;
        }
        match self.state.put_run(&record).await {
            Ok(()) => {}
            Err(reins_state::StateError::LeaseLost { .. }) => {
                return not_owned(
                    &result.run_id,
                    &p.name,
                    "this node stalled past its lease and another node took the run over",
                );
            }
            // Still readable here from memory while the store is down.
            Err(e) => {
                tracing::warn!(run_id = %result.run_id, "state store: cannot record the run's result: {e}")
            }
        }
        self.recent.offer(
            &record.run_id,
            record.status,
            std::mem::take(&mut record.result),
        );
        result
    }

    /// A run's stored result (any host on the same store, any earlier
    /// process); finished runs read lately come from memory.
    pub async fn stored_run(&self, run_id: &str) -> Option<Value> {
        if let Some(result) = self.recent.get(run_id) {
            return Some((*result).clone());
        }
        match self.state.run(run_id).await {
            Ok(r) => r.map(|r| {
                let result = r.result;
                if r.status.is_finished() {
                    self.recent.offer(&r.run_id, r.status, result.clone());
                }
                result
            }),
            Err(e) => {
                tracing::warn!(run_id, "state store: {e}");
                None
            }
        }
    }

    /// The stored result of the run `caller`'s idempotency key started
    /// (keys are per owner: another tenant's key finds nothing).
    pub async fn run_by_key(
        &self,
        pipeline: &str,
        caller: &reins_runtime::Caller,
        key: &str,
    ) -> Option<Value> {
        let key = identity::scoped(caller, key);
        self.state
            .run_by_key(pipeline, &key)
            .await
            .ok()
            .flatten()
            .map(|r| r.result)
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Pending and decided approvals.
    pub async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<Approval>, ApprovalError> {
        self.approvals.list(filter).await
    }

    /// One approval by id.
    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        self.approvals.get(id).await
    }

    /// A compiled pipeline of the serving config.
    pub fn pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.live.load().pipelines.get(name).cloned()
    }

    /// The names of the serving config's pipelines.
    pub fn pipeline_names(&self) -> Vec<String> {
        self.live.load().pipelines.keys().cloned().collect()
    }

    /// A provider by its config name (downcast with [`Provider::as_any`]).
    pub fn provider(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.breaker(name).map(|b| b.provider().clone())
    }

    /// A provider with its circuit breaker.
    pub fn breaker(&self, name: &str) -> Option<Arc<Breaker>> {
        self.live.load().providers.get(name).cloned()
    }

    /// The plugin host (statuses, reloads).
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    /// The serving configuration.
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// The configuration the process started with: what restart-only keys
    /// (the state store, the listener, the engine) were built from.
    pub fn boot(&self) -> &Config {
        &self.reloader.boot
    }
}

enum Source {
    File(PathBuf),
    Text { text: String, base_dir: PathBuf },
    Parsed(Box<Config>),
}

/// Builds a [`Host`].
#[derive(Default)]
pub struct HostBuilder {
    source: Option<Source>,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    plugins: Option<Arc<PluginHost>>,
    watch: Option<bool>,
    state: Option<Arc<dyn StateStore>>,
    node_id: Option<String>,
    telemetry: crate::telemetry::Telemetry,
}

impl HostBuilder {
    /// Reads the config from a file (relative paths resolve against its directory).
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.source = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// Parses config text; relative paths resolve against `base_dir`.
    pub fn config_str(mut self, text: impl Into<String>, base_dir: impl AsRef<Path>) -> Self {
        self.source = Some(Source::Text {
            text: text.into(),
            base_dir: base_dir.as_ref().to_owned(),
        });
        self
    }

    /// Uses an already parsed config.
    pub fn config(mut self, config: Config) -> Self {
        self.source = Some(Source::Parsed(Box::new(config)));
        self
    }

    /// Replaces the provider the config defines under `name` with one made in
    /// code (the config must still define `name`, so that pipelines can refer to it).
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// Uses an open plugin host instead of opening `plugins_dir`.
    pub fn plugin_host(mut self, plugins: Arc<PluginHost>) -> Self {
        self.plugins = Some(plugins);
        self
    }

    /// Uses an open state store instead of the config's `[state]`.
    pub fn state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// Overrides `[state] node_id` (this node's name in run leases).
    pub fn node_id(mut self, node: impl Into<String>) -> Self {
        self.node_id = Some(node.into());
        self
    }

    /// Traces runs to `telemetry` (the root builds its exporter from `[telemetry]`).
    pub fn telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Overrides the config's `watch` (hot reload of the plugins directory).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    pub async fn build(self) -> Result<Host, ConfigError> {
        let (config, source) = match self.source {
            None => {
                return Err(ConfigError::Io {
                    path: PathBuf::from("reins.toml"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no configuration given to the builder",
                    ),
                });
            }
            Some(Source::File(path)) => {
                let config = Config::from_file(&path)?;
                (config, live::Source::File(path))
            }
            Some(Source::Text { text, base_dir }) => {
                let config = Config::parse(&text, "<config>", &base_dir)?;
                let fixed = live::Source::Fixed(Box::new(config.clone()));
                (config, fixed)
            }
            Some(Source::Parsed(c)) => {
                let fixed = live::Source::Fixed(c.clone());
                (*c, fixed)
            }
        };
        let state = match self.state {
            Some(s) => s,
            None => reins_state::open(&config.state, &config.base_dir)
                .await
                .map_err(|e| ConfigError::State(Box::new(e)))?,
        };
        // Budgets and rate limits: in the store (shared by every node on it)
        // or in this process.
        let shared: Option<Arc<dyn reins_runtime::CounterStore>> = if config.state.counters_shared()
        {
            let counters = reins_state::counters::StoreCounters::new(&config.state, state.clone())
                .map_err(|e| ConfigError::State(Box::new(e)))?;
            Some(Arc::new(counters))
        } else {
            None
        };
        let plugins = match self.plugins {
            Some(p) => p,
            None => {
                let dir = config.plugins_dir();
                let settings = config.runtime.clone();
                let watch = self.watch.unwrap_or(config.watch);
                let open_dir = dir.clone();
                let counters = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let runtime = match counters {
                        Some(c) => reins_runtime::Runtime::with_counters(&settings, c)?,
                        None => reins_runtime::Runtime::new(&settings)?,
                    };
                    PluginHost::with_runtime(runtime, &open_dir, &settings, watch)
                })
                .await
                .map_err(|e| ConfigError::Runtime {
                    dir: dir.clone(),
                    source: Box::new(reins_runtime::RuntimeError::Engine {
                        message: format!("loader task failed: {e}"),
                    }),
                })?
                .map_err(|source| ConfigError::Runtime {
                    dir,
                    source: Box::new(source),
                })?
            }
        };
        let boot = Arc::new(config.clone());
        let reloader = live::Reloader::new(source, self.providers, boot.clone());
        let identity = live::identity(&config, reloader.source_path());
        let first = live::build(
            config,
            live::Inputs {
                code: &reloader.code,
                plugins: &plugins,
                previous: None,
                identity,
            },
        )
        .map_err(ConfigError::several)?;
        // Connect the vector stores now, so a bad URL or a missing
        // extension is in the log at start (runs report it too).
        for r in first.retrievers.values() {
            if let Err(e) = r.prepare().await {
                tracing::warn!("{e}");
            }
        }
        metrics::gauge!(reins_runtime::metric_names::CONFIG_VERSION).set(1.0);
        let config = &*boot;
        let audit = audit::AuditWriter::start(state.clone(), config.state.audit);
        let reloads = audit.clone();
        plugins.on_reload(move |report| reloads.send(audit::plugins_reload(report)));
        let node = self.node_id.unwrap_or_else(|| config.state.node());
        let lease_ms = i64::try_from(config.state.lease_ms.max(30)).unwrap_or(i64::MAX);
        Ok(Host {
            recent: recent::RecentRuns::new(
                config.state.recent_runs,
                config.state.recent_runs_bytes,
            ),
            live: arc_swap::ArcSwap::from_pointee(first),
            reloader,
            plugins,
            approvals: ApprovalStore::new(state.clone()),
            limits: RateLimiter::new(shared),
            leases: lease::Leases {
                node,
                lease_ms,
                active: lease::Active::default(),
            },
            state,
            audit,
            telemetry: self.telemetry,
        })
    }
}

/// The result of a run this node does not (or no longer) own.
fn not_owned(run_id: &str, pipeline: &str, message: &str) -> RunResult {
    let mut result = RunResult::new(run_id.to_owned(), pipeline.to_owned());
    result.error = Some(RunError::NotOwned {
        run_id: run_id.to_owned(),
        message: message.to_owned(),
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ExitCode;
    use crate::provider::{ChatRequest, CompletionFuture};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A model that never answers; it tells when it is called and when the
    /// call it is making is dropped.
    #[derive(Default)]
    struct Stuck {
        calls: AtomicUsize,
        called: tokio::sync::Notify,
        dropped: Arc<AtomicBool>,
    }

    struct OnDrop(Arc<AtomicBool>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Provider for Stuck {
        fn name(&self) -> &str {
            "stuck"
        }
        fn model(&self) -> &str {
            "stuck"
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn complete<'a>(&'a self, _: &'a ChatRequest) -> CompletionFuture<'a> {
            let dropped = OnDrop(self.dropped.clone());
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.called.notify_one();
            Box::pin(async move {
                let _dropped = dropped;
                std::future::pending().await
            })
        }
    }

    async fn host(model: Arc<Stuck>) -> (tempfile::TempDir, Arc<Host>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = "plugins_dir = \".\"\n\n[providers.stuck]\nkind = \"scripted\"\nresponses = [\"x\"]\n\n\
                      [pipelines.p]\nmodel = \"stuck\"\n\n[state]\nkind = \"memory\"\n";
        let host = Host::builder()
            .config_str(config, dir.path())
            .provider("stuck", model)
            .build()
            .await
            .expect("host");
        (dir, Arc::new(host))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cancelled_run_drops_its_model_call_and_is_stored_cancelled() {
        let model = Arc::new(Stuck::default());
        let (_dir, host) = host(model.clone()).await;
        let request = Request::text("hello");
        let cancel = request.cancel.clone();
        let running = host.clone();
        let run = tokio::spawn(async move { running.run("p", request).await });
        tokio::time::timeout(Duration::from_secs(60), model.called.notified())
            .await
            .expect("the model is called");
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the run stops")
            .expect("the run's task");
        assert_eq!(result.status, RunStatus::Cancelled);
        assert_eq!(result.error.as_ref().map(RunError::kind), Some("cancelled"));
        assert_eq!(result.exit_code(), ExitCode::Cancelled.code());
        assert!(
            model.dropped.load(Ordering::SeqCst),
            "the model call in flight was dropped"
        );
        assert!(
            result
                .trace
                .iter()
                .any(|s| s.layer == "model" && s.result.starts_with("cancelled"))
        );
        let stored = host
            .state()
            .run(&result.run_id)
            .await
            .expect("store")
            .expect("recorded");
        assert_eq!(stored.status, RunStatus::Cancelled);
        assert_eq!(stored.lease_until_ms, 0, "nobody holds a cancelled run");
        let read = host.stored_run(&result.run_id).await.expect("readable");
        assert_eq!(
            (read["status"].as_str(), read["error"]["kind"].as_str()),
            (Some("cancelled"), Some("cancelled"))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_run_whose_caller_left_before_it_started_never_calls_the_model() {
        let model = Arc::new(Stuck::default());
        let (_dir, host) = host(model.clone()).await;
        let request = Request::text("hello");
        request.cancel.cancel();
        let result = host.run("p", request).await;
        assert_eq!(result.status, RunStatus::Cancelled);
        assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    }
}
