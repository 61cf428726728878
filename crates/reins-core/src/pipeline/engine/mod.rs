//! Runs one request through one pipeline on one plugin snapshot.
//!
//! ```text
//! normalize.rs    normalizers (in order; an `error` finding rejects before any model call)
//! context.rs        → context builder
//! constraints.rs    → constraints (the tools of this request)
//! attempts.rs       → attempt loop:
//! degrade.rs             model (provider, then fallbacks, cache, static answer)
//! validate.rs            → extract JSON → JSON Schema → validator stages
//!                          (one stage's validators run concurrently; a `fix`
//!                           validator's document restarts validation)
//! gate.rs                → constraint check and gates for each proposed action
//!                        → done, or repair (the violations go back to the model), or stop
//! execute.rs        → executors for the approved actions
//! ```
//!
//! Each stage is an `impl Run` block in its own file; this file holds the
//! run's state and the order of the stages ([`Run::execute`]). Plugin calls
//! are blocking (bounded by each plugin's deadline) and cross to async in one
//! place, `bridge.rs`. A plugin that fails is skipped if its manifest says
//! `fail_mode = "open"` (the skip is traced and listed in
//! [`RunResult::skipped`]); otherwise the run fails.

use super::result::{
    Attempt, Finding, GateDecision, PendingApproval, RunError, RunResult, RunStatus, StopReason,
    Tokens, TraceStep,
};
use super::{CancellationToken, Pipeline, Request, RequestTool, RunContext, extract_json, repair};
use crate::config::{CallerTools, OnFail, OutputMode, RepairStrategy};
use crate::provider::{Sampling, ToolCall, ToolChoice};
use crate::tokens;
use reins_runtime::{
    Action, CallContext, CallFailure, Chunk, Decision, FailMode, Layer, Message, Plugin,
    PluginError, PluginSet, Severity, Tool, Violation,
};
use reins_state::StepKind;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

mod attempts;
mod bridge;
mod constraints;
mod context;
mod degrade;
mod execute;
mod gate;
mod normalize;
mod spans;
mod stream;
mod tool_call;
mod validate;
use bridge::*;
use degrade::{Degradation, ModelAnswer};
use gate::Gated;
use normalize::*;
pub(crate) use spans::run as run_span;
pub use tool_call::{CallVerdict, GatedCall, gate_tool_call, mcp_tools, screen_tool_result};
use validate::*;

/// Runs `request` through `pipeline`, calling plugins from `plugins` (hold
/// one snapshot for the whole run). Never panics on what a model, a plugin
/// or the caller sends; every failure is in the result.
pub async fn run(
    pipeline: &Pipeline,
    plugins: Arc<PluginSet>,
    request: Request,
    rc: &RunContext,
) -> RunResult {
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut run = Run::begin(pipeline, plugins, rc, run_id, &request);
    run.result.dry_run = pipeline.config.dry_run || request.dry_run;
    // The log's run span carries the trace's ids, so a JSON log line finds
    // its trace; at `error` level so that no `REINS_LOG` filter drops it.
    let span = tracing::error_span!(
        "run",
        run_id = %run.ctx.run_id,
        pipeline = %pipeline.name,
        trace_id = rc.trace.trace_id().unwrap_or_default(),
        span_id = rc.trace.span_id().unwrap_or_default(),
    );
    let outcome = tracing::Instrument::instrument(run.execute(request), span).await;
    let released = run.stream.as_ref().is_some_and(|s| s.released_any());
    let mut result = run.result;
    if let Err(e) = outcome {
        result.status = match &e {
            // The client has part of an answer: not a clean failure.
            _ if released => RunStatus::Partial,
            RunError::Rejected { .. } | RunError::Denied { .. } => RunStatus::Rejected,
            RunError::Cancelled { .. } => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        };
        result.error = Some(e);
    }
    run.deg.finish(pipeline, &mut result, &rc.cache_index);
    result.duration_us = rc.started.elapsed().as_micros() as u64;
    result.trace_id = rc.trace.trace_id();
    result.span_id = rc.trace.span_id();
    rc.trace.end_run(spans::run(pipeline, &result, rc.started));
    tracing::debug!(
        status = result.status.as_str(),
        attempts = result.attempts.len(),
        us = result.duration_us,
        "run finished"
    );
    result
}

/// What the context stage gives the model for one query: the
/// `GET /v1/pipelines/{name}/context` preview, for debugging retrieval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContextPreview {
    pub pipeline: String,
    /// `None` when the pipeline has no context or nothing was found.
    pub report: Option<crate::pipeline::ContextReport>,
    /// The context block of the system prompt, as the model would see it.
    pub context: String,
    pub chunks: Vec<Chunk>,
}

/// Runs the context stage alone for `query` (retrieval and the context
/// builder), as a run of `caller` would; nothing is recorded and no model
/// is called.
pub async fn preview_context(
    pipeline: &Pipeline,
    plugins: Arc<PluginSet>,
    query: &str,
    caller: reins_runtime::Caller,
    rc: &RunContext,
) -> Result<ContextPreview, RunError> {
    let mut request = Request::text(query);
    request.caller = caller;
    let run_id = format!("preview-{}", uuid::Uuid::new_v4());
    let mut run = Run::begin(pipeline, plugins, rc, run_id, &request);
    let chunks = run.assemble(&request.messages, Vec::new()).await?;
    let context = run
        .conversation(Vec::new(), &chunks)
        .into_iter()
        .next()
        .map(|m| m.content)
        .unwrap_or_default();
    Ok(ContextPreview {
        pipeline: pipeline.name.clone(),
        report: run.result.context.take(),
        context,
        chunks,
    })
}

struct Run<'a> {
    p: &'a Pipeline,
    set: Arc<PluginSet>,
    /// What the run records into (journal, action log, cache index) and its clock.
    rc: &'a RunContext,
    result: RunResult,
    ctx: CallContext,
    /// The caller's schema, checked after the pipeline's.
    request_schema: Option<Arc<jsonschema::Validator>>,
    /// What the model is told to produce: the pipeline's schema, the caller's, or both (`allOf`).
    model_schema: Option<Arc<Value>>,
    /// The caller's tools, with their compiled argument schemas.
    caller_tools: Option<Vec<(RequestTool, Option<Arc<jsonschema::Validator>>)>>,
    /// What this run answers: prose, or one JSON document.
    mode: OutputMode,
    /// The caller's sampling under the pipeline's caps; repair strategies
    /// may raise the temperature.
    sampling: Sampling,
    /// Ask the provider for its strictest structured-output mode (a repair strategy).
    strict: bool,
    /// Providers of the repair chain passed over (the `model` strategy).
    chain_offset: usize,
    /// The judge validators may ask (a pipeline with `judge`).
    judge: Option<Arc<super::judge::RunJudge>>,
    /// Deadline, cache key and which fallback served each attempt.
    deg: Degradation,
    /// The caller is gone: stop at the next boundary (`Run::go_on`) or
    /// drop the model call in flight.
    cancel: CancellationToken,
    /// Where a streamed answer goes, while it streams (`checked`, `json`).
    stream: Option<stream::Streamer>,
}

fn violation(path: String, code: &str, message: String) -> Violation {
    Violation {
        path,
        code: code.to_owned(),
        message,
        severity: Severity::Error,
    }
}

fn finding(source: &str, violation: Violation) -> Finding {
    Finding {
        source: source.to_owned(),
        violation,
    }
}

fn is_blocking(f: &Finding) -> bool {
    f.violation.severity == Severity::Error
}

fn count_summary(findings: &[Finding]) -> String {
    let blocking = findings.iter().filter(|f| is_blocking(f)).count();
    match (blocking, findings.len()) {
        (0, 0) => "ok".to_owned(),
        (0, 1) => "ok (1 note)".to_owned(),
        (0, n) => format!("ok ({n} notes)"),
        (1, _) => "1 violation".to_owned(),
        (b, _) => format!("{b} violations"),
    }
}

impl<'a> Run<'a> {
    /// A run's state before its first stage.
    fn begin(
        pipeline: &'a Pipeline,
        plugins: Arc<PluginSet>,
        rc: &'a RunContext,
        run_id: String,
        request: &Request,
    ) -> Run<'a> {
        let mut result = RunResult::new(run_id.clone(), pipeline.name.clone());
        result.caller = request.caller.clone();
        Run {
            p: pipeline,
            set: plugins,
            rc,
            result,
            ctx: CallContext {
                run_id,
                pipeline: pipeline.name.clone(),
                attempt: 0,
                metadata: request.metadata.clone(),
                caller: request.caller.clone(),
                request_text: std::sync::Arc::from(""),
                judge: None,
                upstream_tools: std::sync::Arc::from(""),
                tokenizer: pipeline.tokenizer,
                context_chunks: std::sync::Arc::from(""),
            },
            request_schema: None,
            model_schema: pipeline.schema.clone(),
            caller_tools: None,
            mode: OutputMode::Json,
            sampling: Sampling::default(),
            strict: false,
            chain_offset: 0,
            judge: None,
            deg: Degradation::new(pipeline, rc.started, request.timeout_ms),
            cancel: request.cancel.clone(),
            stream: None,
        }
    }
}

impl Run<'_> {
    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.rc.started).as_micros() as u64
    }

    fn trace(
        &mut self,
        layer: &'static str,
        name: &str,
        result: String,
        start: Instant,
        end: Instant,
    ) {
        self.trace_with(layer, name, result, start, end, spans::Extra::default);
    }

    /// [`Run::trace`], with what the step's span says beyond its layer and
    /// result (built only when the run is traced).
    fn trace_with(
        &mut self,
        layer: &'static str,
        name: &str,
        result: String,
        start: Instant,
        end: Instant,
        extra: impl FnOnce() -> spans::Extra,
    ) {
        if self.rc.trace.recording() {
            self.rc.trace.record(spans::step(
                layer,
                name,
                self.ctx.attempt,
                &result,
                start,
                end,
                extra(),
            ));
        }
        self.trace_only(layer, name, result, start, end);
    }

    /// A step of the run's trace whose span was recorded where it ran
    /// (an action's, by `execute_all`: its id went out with the action).
    fn trace_only(
        &mut self,
        layer: &'static str,
        name: &str,
        result: String,
        start: Instant,
        end: Instant,
    ) {
        let step = TraceStep {
            layer,
            name: name.to_owned(),
            attempt: self.ctx.attempt,
            result,
            start_us: self.micros(start),
            duration_us: end.saturating_duration_since(start).as_micros() as u64,
        };
        self.result.trace.push(step);
    }

    fn plugin(&self, layer: Layer, name: &str) -> Result<Arc<Plugin>, RunError> {
        match self.set.get(self.p.plugin_key(layer, name)) {
            Some(p) if p.serves(layer) => Ok(p.clone()),
            _ => Err(RunError::MissingPlugin {
                layer: layer.as_str(),
                plugin: name.to_owned(),
            }),
        }
    }

    /// Traces a plugin call; `Ok(None)` is a fail-open skip.
    fn settle<T: spans::Outcome>(
        &mut self,
        layer: Layer,
        plugin: &Plugin,
        timed: Timed<T>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<Option<T>, RunError> {
        match timed.result {
            Ok(value) => {
                let s = summary(&value);
                self.trace_with(
                    layer.as_str(),
                    plugin.name(),
                    s,
                    timed.start,
                    timed.end,
                    || spans::plugin(plugin, "ok", Some(&value)),
                );
                Ok(Some(value))
            }
            Err(e) if plugin.fail_mode() == FailMode::Open => {
                tracing::warn!(plugin = plugin.name(), error = %e, "plugin failed; skipped (fail_mode = open)");
                self.trace_with(
                    layer.as_str(),
                    plugin.name(),
                    format!("skipped (fail open): {}", e.kind()),
                    timed.start,
                    timed.end,
                    || spans::plugin::<T>(plugin, "skipped", None),
                );
                self.result.skipped.push(plugin.name().to_owned());
                Ok(None)
            }
            Err(e) => {
                self.trace_with(
                    layer.as_str(),
                    plugin.name(),
                    format!("failed: {}", e.kind()),
                    timed.start,
                    timed.end,
                    || spans::Extra {
                        error: Some(e.to_string()),
                        ..spans::plugin::<T>(plugin, e.kind(), None)
                    },
                );
                Err(RunError::Plugin {
                    layer: layer.as_str(),
                    plugin: plugin.name().to_owned(),
                    kind: e.kind(),
                    message: e.to_string(),
                })
            }
        }
    }

    async fn execute(&mut self, request: Request) -> Result<(), RunError> {
        if request.messages.is_empty() {
            return Err(RunError::BadRequest(
                "the request has no messages".to_owned(),
            ));
        }
        if !request.metadata.is_object() {
            return Err(RunError::BadRequest(
                "metadata must be a JSON object".to_owned(),
            ));
        }
        if let Some(schema) = &request.schema {
            let compiled = self.p.tool_validator(schema).map_err(|e| {
                RunError::BadRequest(format!(
                    "the request's schema is not a valid JSON Schema: {e}"
                ))
            })?;
            self.request_schema = Some(compiled);
            self.model_schema = Some(Arc::new(match self.p.schema.as_deref() {
                Some(own) => serde_json::json!({"allOf": [own, schema]}),
                None => schema.clone(),
            }));
        }
        self.mode = if request.json {
            OutputMode::Json
        } else {
            self.p.output_mode(&self.set).0
        };
        self.start_streaming(request.stream.clone())?;
        self.sampling = self.p.sampling_for(&request.sampling);
        if request.tools.as_ref().is_some_and(|t| !t.is_empty())
            && self.p.caller_tools() == CallerTools::Deny
        {
            return Err(RunError::BadRequest(format!(
                "pipeline `{}` does not take the caller's tools (caller_tools = \"deny\"): send the request without `tools`",
                self.p.name
            )));
        }
        if let Some(tools) = &request.tools {
            let mut compiled = Vec::with_capacity(tools.len());
            for t in tools {
                let check = match &t.parameters {
                    None => None,
                    Some(schema) => Some(self.p.tool_validator(schema).map_err(|e| {
                        RunError::BadRequest(format!(
                            "the parameters of tool `{}` are not a valid JSON Schema: {e}",
                            t.name
                        ))
                    })?),
                };
                compiled.push((t.clone(), check));
            }
            self.caller_tools = Some(compiled);
        }
        self.go_on()?;
        let messages = self.normalize(request.messages).await?;
        let messages = self.fit_history(messages).await;
        self.go_on()?;
        let chunks = self.assemble(&messages, request.chunks).await?;
        self.ctx.request_text = request_text(&messages, &chunks);
        if let (Some(config), Ok(runtime)) =
            (&self.p.config.judge, tokio::runtime::Handle::try_current())
            && !self.p.judge_providers.is_empty()
        {
            let judge = Arc::new(super::judge::RunJudge::new(
                self.p.judge_providers.clone(),
                &self.ctx.run_id,
                &self.p.name,
                config.max_tokens,
                self.deg.deadline,
                self.turn(),
                runtime,
            ));
            self.ctx.judge = Some(reins_runtime::JudgeHandle(judge.clone()));
            self.judge = Some(judge);
        }
        self.go_on()?;
        let tools = self.constraints().await?;
        if let Some(ToolChoice::Tool(name)) = &self.sampling.tool_choice
            && !tools.iter().any(|t| &t.name == name)
        {
            return Err(RunError::BadRequest(format!(
                "tool_choice names `{name}`, which is not a tool of this request (tools: {})",
                tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.rc.journals(StepKind::Input) {
            let input = serde_json::json!({
                "messages": &messages,
                "chunks": chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
                "tools": tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            });
            if let Err(e) = self.rc.checkpoint(StepKind::Input, input).await {
                return Err(self.lost(e));
            }
        }
        let conversation = self.conversation(messages, &chunks);
        let schema = self.model_schema.clone();
        self.deg.key_for(
            self.p,
            &conversation,
            schema.as_deref(),
            &tools,
            &self.sampling,
            self.mode,
        );
        self.attempts(conversation, tools).await
    }

    /// Stops a run whose caller is gone. Checked where stopping leaves
    /// nothing half done: between plugin stages, before each model call and
    /// before each action; a plugin call in progress is not interrupted
    /// (it is bounded by its own deadline).
    fn go_on(&self) -> Result<(), RunError> {
        if self.cancel.is_cancelled() {
            return Err(RunError::client_gone());
        }
        Ok(())
    }

    /// The error of a run whose checkpoint found its lease taken.
    fn lost(&self, e: reins_state::StateError) -> RunError {
        RunError::NotOwned {
            run_id: self.result.run_id.clone(),
            message: e.to_string(),
        }
    }
}
