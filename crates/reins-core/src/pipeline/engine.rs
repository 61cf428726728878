//! Runs one request through one pipeline on one plugin snapshot.
//!
//! ```text
//! normalizers (in order; an `error` finding rejects before any model call)
//!   → context builder → constraints (the tools of this request)
//!   → attempt loop:
//!        model (provider, then fallbacks)
//!        → extract JSON → JSON Schema → validator stages
//!          (one stage's validators run concurrently; a `fix` validator's
//!           document restarts validation on the fixed document)
//!        → constraint check and gates for each proposed action
//!        → done, or repair (the violations go back to the model), or stop
//! ```
//!
//! Plugin calls are blocking (bounded by each plugin's deadline) and run on
//! tokio's blocking pool. A plugin that fails is skipped if its manifest says
//! `fail_mode = "open"` (the skip is traced and listed in
//! [`RunResult::skipped`]); otherwise the run fails.

use super::result::{
    Attempt, Finding, GateDecision, PendingApproval, RunError, RunResult, RunStatus, StopReason, Tokens, TraceStep,
};
use super::{Pipeline, Request, RequestTool, extract_json, repair};
use crate::config::{CallerTools, OnFail, OutputMode, RepairStrategy};
use crate::provider::{Sampling, ToolCall, ToolChoice};
use reins_runtime::{
    Action, CallContext, CallFailure, Chunk, Decision, FailMode, Layer, Message, Plugin, PluginError, PluginSet,
    Severity, Tool, Violation,
};
use crate::tokens;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

mod degrade;
use degrade::{Degradation, ModelAnswer};

/// Runs `request` through `pipeline`, calling plugins from `plugins` (hold
/// one snapshot for the whole run). Never panics on what a model, a plugin
/// or the caller sends; every failure is in the result.
pub async fn run(pipeline: &Pipeline, plugins: Arc<PluginSet>, request: Request) -> RunResult {
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut run = Run {
        p: pipeline,
        set: plugins,
        started: Instant::now(),
        result: RunResult::new(run_id.clone(), pipeline.name.clone()),
        ctx: CallContext {
            run_id,
            pipeline: pipeline.name.clone(),
            attempt: 0,
            metadata: request.metadata.clone(),
            request_text: std::sync::Arc::from(""),
            judge: None,
        },
        request_schema: None,
        model_schema: pipeline.schema.clone(),
        caller_tools: None,
        mode: OutputMode::Json,
        sampling: Sampling::default(),
        strict: false,
        chain_offset: 0,
        judge: None,
        deg: Degradation::new(pipeline, Instant::now()),
    };
    run.result.dry_run = pipeline.config.dry_run || request.dry_run;
    let span = tracing::debug_span!("run", run_id = %run.ctx.run_id, pipeline = %pipeline.name);
    let _enter = span.enter();
    let outcome = run.execute(request).await;
    let mut result = run.result;
    if let Err(e) = outcome {
        result.status = match &e {
            RunError::Rejected { .. } | RunError::Denied { .. } => RunStatus::Rejected,
            _ => RunStatus::Failed,
        };
        result.error = Some(e);
    }
    run.deg.finish(pipeline, &mut result);
    result.duration_us = run.started.elapsed().as_micros() as u64;
    tracing::debug!(
        status = result.status.as_str(),
        attempts = result.attempts.len(),
        us = result.duration_us,
        "run finished"
    );
    result
}

struct Run<'a> {
    p: &'a Pipeline,
    set: Arc<PluginSet>,
    started: Instant,
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
}

/// A plugin call's result and when it ran.
struct Timed<T> {
    result: Result<T, PluginError>,
    start: Instant,
    end: Instant,
}

/// A plugin call started on the blocking pool.
struct Pending<T> {
    handle: tokio::task::JoinHandle<Timed<T>>,
    plugin: Arc<Plugin>,
    queued: Instant,
}

/// Starts `f(plugin)` on the blocking pool at once.
fn spawn_call<T, F>(plugin: &Arc<Plugin>, f: F) -> Pending<T>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
{
    let p = plugin.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let result = f(&p);
        Timed {
            result,
            start,
            end: Instant::now(),
        }
    });
    Pending {
        handle,
        plugin: plugin.clone(),
        queued: Instant::now(),
    }
}

impl<T> Pending<T> {
    async fn wait(self) -> Timed<T> {
        let Pending { handle, plugin, queued } = self;
        handle.await.unwrap_or_else(|e| Timed {
            result: Err(PluginError {
                plugin: plugin.name().to_owned(),
                digest: plugin.digest().to_owned(),
                cause: CallFailure::Trap {
                    message: format!("host task failed: {e}"),
                },
            }),
            start: queued,
            end: Instant::now(),
        })
    }
}

/// Calls `f(plugin)` and waits for it. On a multi-thread runtime the call
/// runs on this thread under `block_in_place` (tokio moves this worker's
/// other tasks away meanwhile), which saves two thread hand-offs per call;
/// elsewhere it goes to the blocking pool.
async fn blocking<T, F>(plugin: &Arc<Plugin>, f: F) -> Timed<T>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
{
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| {
            let start = Instant::now();
            let result = f(plugin.as_ref());
            Timed {
                result,
                start,
                end: Instant::now(),
            }
        })
    } else {
        spawn_call(plugin, f).wait().await
    }
}

/// What validating one answer found.
struct Validation {
    /// The (possibly fixed) document; `None` when the answer was not JSON or
    /// there was no answer text to validate.
    doc: Option<Value>,
    findings: Vec<Finding>,
    fixed_by: Vec<String>,
}

/// What the gates made of an attempt's actions.
#[derive(Default)]
struct Gated {
    findings: Vec<Finding>,
    /// (index among the proposed actions, action) that every gate allowed.
    approved: Vec<(usize, Action)>,
    pending: Vec<PendingApproval>,
    /// Budget the gates reserved for approved and pending actions.
    reservations: Vec<(usize, reins_runtime::Reservation)>,
    /// Reservations of the action being gated right now.
    held: Vec<reins_runtime::Reservation>,
}

impl Gated {
    /// The attempt is discarded (it goes back for repair): nothing it
    /// reserved may stay spent.
    fn release_all(&mut self) {
        for (_, r) in &mut self.reservations {
            r.release();
        }
        for r in &mut self.held {
            r.release();
        }
    }
}

/// The `{tool, arguments}` entries at JSON Pointer `field` of the output.
/// A missing field means no actions; a malformed one is a violation.
fn actions_in_output(doc: &Value, field: &str) -> Result<Vec<ToolCall>, Violation> {
    let Some(list) = doc.pointer(field) else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err(violation(
            field.to_owned(),
            "actions",
            "must be a list of {\"tool\": name, \"arguments\": {...}}".to_owned(),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.get("tool").and_then(Value::as_str) {
            Some(tool) => Ok(ToolCall {
                id: None,
                name: tool.to_owned(),
                arguments: item.get("arguments").cloned().unwrap_or_else(|| Value::Object(Default::default())),
            }),
            None => Err(violation(
                format!("{field}/{i}"),
                "actions",
                "each action needs a \"tool\" name and an \"arguments\" object".to_owned(),
            )),
        })
        .collect()
}

/// A normalizer's messages in place of the ones it was given, keeping what
/// it does not see (tool calls, ids, non-text parts): by position when it
/// kept the count, else only if nothing had such structure to lose.
fn merge_normalized(plugin: &str, before: Vec<Message>, after: Vec<Message>) -> Result<Vec<Message>, RunError> {
    if before.len() == after.len() {
        return Ok(before
            .into_iter()
            .zip(after)
            .map(|(old, new)| Message {
                role: new.role.clone(),
                ..old.with_text(new.content)
            })
            .collect());
    }
    let structured = before
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some() || m.parts.is_some() || m.name.is_some() || m.is_error);
    if structured {
        return Err(RunError::Plugin {
            layer: Layer::Normalizer.as_str(),
            plugin: plugin.to_owned(),
            kind: "malformed",
            message: format!(
                "normalizer `{plugin}` returned {} messages for {}: in a conversation with tool calls or multi-part content a normalizer must keep every message (rewrite its text, or reject with a finding)",
                after.len(),
                before.len()
            ),
        });
    }
    Ok(after)
}

/// What the request says, for grounding: every user and tool message and
/// every context chunk, after normalization.
fn request_text(messages: &[Message], chunks: &[Chunk]) -> Arc<str> {
    let mut text = String::new();
    let parts = messages
        .iter()
        .filter(|m| m.role == "user" || m.role == "tool")
        .map(|m| m.content.as_str())
        .chain(chunks.iter().map(|c| c.text.as_str()));
    for part in parts {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(part);
    }
    Arc::from(text)
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

impl Run<'_> {
    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_micros() as u64
    }

    fn trace(&mut self, layer: &'static str, name: &str, result: String, start: Instant, end: Instant) {
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
        match self.set.get(name) {
            Some(p) if p.layer() == layer => Ok(p.clone()),
            _ => Err(RunError::MissingPlugin {
                layer: layer.as_str(),
                plugin: name.to_owned(),
            }),
        }
    }

    /// Traces a plugin call; `Ok(None)` is a fail-open skip.
    fn settle<T>(
        &mut self,
        layer: Layer,
        plugin: &Plugin,
        timed: Timed<T>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<Option<T>, RunError> {
        match timed.result {
            Ok(value) => {
                let s = summary(&value);
                self.trace(layer.as_str(), plugin.name(), s, timed.start, timed.end);
                Ok(Some(value))
            }
            Err(e) if plugin.fail_mode() == FailMode::Open => {
                tracing::warn!(plugin = plugin.name(), error = %e, "plugin failed; skipped (fail_mode = open)");
                self.trace(
                    layer.as_str(),
                    plugin.name(),
                    format!("skipped (fail open): {}", e.kind()),
                    timed.start,
                    timed.end,
                );
                self.result.skipped.push(plugin.name().to_owned());
                Ok(None)
            }
            Err(e) => {
                self.trace(
                    layer.as_str(),
                    plugin.name(),
                    format!("failed: {}", e.kind()),
                    timed.start,
                    timed.end,
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
            return Err(RunError::BadRequest("the request has no messages".to_owned()));
        }
        if !request.metadata.is_object() {
            return Err(RunError::BadRequest("metadata must be a JSON object".to_owned()));
        }
        if let Some(schema) = &request.schema {
            let compiled = self
                .p
                .tool_validator(schema)
                .map_err(|e| RunError::BadRequest(format!("the request's schema is not a valid JSON Schema: {e}")))?;
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
        self.sampling = self.p.sampling_for(&request.sampling);
        if request.tools.as_ref().is_some_and(|t| !t.is_empty()) && self.p.caller_tools() == CallerTools::Deny {
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
        let messages = self.normalize(request.messages).await?;
        let chunks = self.assemble(&messages, request.chunks).await?;
        self.ctx.request_text = request_text(&messages, &chunks);
        if let (Some(config), Ok(runtime)) = (&self.p.config.judge, tokio::runtime::Handle::try_current())
            && !self.p.judge_providers.is_empty()
        {
            let judge = Arc::new(super::judge::RunJudge::new(
                self.p.judge_providers.clone(),
                &self.ctx.run_id,
                &self.p.name,
                config.max_tokens,
                self.deg.deadline,
                runtime,
            ));
            self.ctx.judge = Some(reins_runtime::JudgeHandle(judge.clone()));
            self.judge = Some(judge);
        }
        let tools = self.constraints().await?;
        if let Some(ToolChoice::Tool(name)) = &self.sampling.tool_choice
            && !tools.iter().any(|t| &t.name == name)
        {
            return Err(RunError::BadRequest(format!(
                "tool_choice names `{name}`, which is not a tool of this request (tools: {})",
                tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if reins_state::journal::wants(reins_state::StepKind::Input) {
            let input = serde_json::json!({
                "messages": &messages,
                "chunks": chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
                "tools": tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            });
            if let Err(e) = reins_state::journal::record(reins_state::StepKind::Input, input).await {
                return Err(self.lost(e));
            }
        }
        let conversation = self.conversation(messages, &chunks);
        let schema = self.model_schema.clone();
        self.deg
            .key_for(self.p, &conversation, schema.as_deref(), &tools, &self.sampling, self.mode);
        self.attempts(conversation, tools).await
    }

    async fn normalize(&mut self, mut messages: Vec<Message>) -> Result<Vec<Message>, RunError> {
        let p = self.p;
        for name in &p.config.normalizers {
            let plugin = self.plugin(Layer::Normalizer, name)?;
            let ctx = self.ctx.clone();
            let input = messages.clone();
            let timed = blocking(&plugin, move |p| p.normalize(&ctx, &input)).await;
            let Some(normalized) = self.settle(Layer::Normalizer, &plugin, timed, |n| {
                let errors = n.findings.iter().filter(|f| f.severity == Severity::Error).count();
                match (errors, n.findings.len()) {
                    (0, 0) => "ok".to_owned(),
                    (0, 1) => "ok (1 finding)".to_owned(),
                    (0, k) => format!("ok ({k} findings)"),
                    (e, _) => format!("reject ({e} errors)"),
                }
            })?
            else {
                continue;
            };
            let reasons: Vec<String> = normalized
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} [{}]", f.message, f.code))
                .collect();
            self.result
                .findings
                .extend(normalized.findings.into_iter().map(|v| finding(name, v)));
            if !reasons.is_empty() {
                return Err(RunError::Rejected {
                    plugin: name.clone(),
                    reason: reasons.join("; "),
                });
            }
            messages = merge_normalized(name, messages, normalized.messages)?;
        }
        if messages.is_empty() {
            return Err(RunError::BadRequest(
                "no messages are left after normalization".to_owned(),
            ));
        }
        Ok(messages)
    }

    async fn assemble(&mut self, messages: &[Message], chunks: Vec<Chunk>) -> Result<Vec<Chunk>, RunError> {
        let p = self.p;
        let Some(context) = &p.config.context else {
            return Ok(chunks);
        };
        if chunks.is_empty() {
            return Ok(chunks);
        }
        let plugin = self.plugin(Layer::Context, &context.plugin)?;
        let query = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let ctx = self.ctx.clone();
        let budget = context.budget_tokens;
        let input = chunks.clone();
        let timed = blocking(&plugin, move |p| p.assemble(&ctx, &query, &input, budget)).await;
        let total = chunks.len();
        Ok(self
            .settle(Layer::Context, &plugin, timed, |c| {
                format!("{} of {total} chunks", c.len())
            })?
            .unwrap_or(chunks))
    }

    async fn constraints(&mut self) -> Result<Vec<Tool>, RunError> {
        let p = self.p;
        let mut tools = match &p.config.constraints {
            None => Vec::new(),
            Some(name) => {
                let plugin = self.plugin(Layer::Constraints, name)?;
                let ctx = self.ctx.clone();
                let timed = blocking(&plugin, move |p| p.tools(&ctx)).await;
                // A skipped constraints plugin leaves the model with no tools: the safe side.
                self.settle(Layer::Constraints, &plugin, timed, |t| format!("{} tools", t.len()))?
                    .unwrap_or_default()
            }
        };
        let Some(declared) = &self.caller_tools else {
            return Ok(tools);
        };
        match p.caller_tools() {
            // The caller can narrow the allowed tools, never widen them.
            CallerTools::Narrow | CallerTools::Deny => {
                tools.retain(|t| declared.iter().any(|(d, _)| d.name == t.name));
            }
            // The caller's tools go to the model too (a manifest's entry of
            // the same name wins: its schema and access level are the operator's).
            CallerTools::Allow => {
                for (d, _) in declared {
                    if !tools.iter().any(|t| t.name == d.name) {
                        tools.push(Tool {
                            name: d.name.clone(),
                            description: d.description.clone(),
                            parameters: d.parameters.clone().unwrap_or_else(|| serde_json::json!({"type": "object"})),
                            access: reins_runtime::Access::Write,
                        });
                    }
                }
            }
        }
        Ok(tools)
    }

    /// System prompt (with the context appended) + the normalized conversation.
    fn conversation(&self, messages: Vec<Message>, chunks: &[Chunk]) -> Vec<Message> {
        let mut system = self.p.system_prompt.clone().unwrap_or_default();
        if !chunks.is_empty() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("Context:");
            for c in chunks {
                system.push_str(&format!("\n\n[{}] {}", c.id, c.text));
            }
        }
        let mut out = Vec::with_capacity(messages.len() + 1);
        if !system.is_empty() {
            out.push(Message::new("system", system));
        }
        out.extend(messages);
        out
    }

    /// The attempt loop: call, validate, gate, repair.
    async fn attempts(&mut self, base: Vec<Message>, tools: Vec<Tool>) -> Result<(), RunError> {
        let max_attempts = self.p.config.repair.max_attempts;
        let budget = self.p.config.repair.token_budget;
        // Prompt-token estimates: the base conversation is counted once.
        let mut base_tokens: Option<u64> = None;
        let mut estimate_prompt = |repair: Option<&(String, String)>| {
            let base_count = *base_tokens.get_or_insert_with(|| tokens::count_messages(&base));
            base_count
                + repair.map_or(0, |(answer, prompt)| {
                    2 * tokens::MESSAGE_OVERHEAD + 2 + tokens::count(answer) + tokens::count(prompt)
                })
        };
        let mut messages = base.clone();
        // The previous answer and the repair message on top of `base`.
        let mut repair_turn: Option<(String, String)> = None;
        let mut previous: Option<Vec<Violation>> = None;
        let mut strategies = self.p.config.repair.strategies.clone().into_iter();
        let mut attempt = 1;
        loop {
            self.ctx.attempt = attempt;
            let ModelAnswer {
                response,
                provider,
                latency_us,
                validation: checked,
            } = self.call_model(attempt, messages, &tools).await?;
            let tokens = match response.usage {
                Some(u) => Tokens {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                    total: u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
                    estimated: false,
                },
                None => {
                    let prompt = estimate_prompt(repair_turn.as_ref());
                    let completion = tokens::count(&response.content)
                        + response
                            .tool_calls
                            .iter()
                            .map(|c| tokens::count(&c.name) + tokens::count(&c.arguments.to_string()))
                            .sum::<u64>();
                    Tokens {
                        prompt,
                        completion,
                        total: prompt + completion,
                        estimated: true,
                    }
                }
            };
            self.result.tokens.prompt += tokens.prompt;
            self.result.tokens.completion += tokens.completion;
            self.result.tokens.total += tokens.total;
            self.result.tokens.estimated |= tokens.estimated;

            // Validate the answer text (an answer of tool calls only has none).
            let tools_only = response.content.trim().is_empty() && !response.tool_calls.is_empty();
            let validation = if let Some(checked) = checked {
                checked
            } else if tools_only {
                Validation {
                    doc: None,
                    findings: Vec::new(),
                    fixed_by: Vec::new(),
                }
            } else {
                self.validate(&response.content).await?
            };
            self.note_judge_calls();
            let mut findings = validation.findings;
            let mut gated = Gated::default();
            // Proposed actions: the model's tool calls, then any listed in
            // the output's `actions_field`.
            let mut calls = response.tool_calls.clone();
            if let (Some(field), Some(doc)) = (&self.p.config.actions_field, &validation.doc) {
                match actions_in_output(doc, field) {
                    Ok(listed) => calls.extend(listed),
                    Err(v) => findings.push(finding("constraints", v)),
                }
            }
            let decided_before = self.result.decisions.len();
            if !findings.iter().any(is_blocking) && !calls.is_empty() {
                gated = self.gate(&calls, &tools).await?;
                findings.append(&mut gated.findings);
            }
            let blocking: Vec<Violation> = findings
                .iter()
                .filter(|f| is_blocking(f))
                .map(|f| f.violation.clone())
                .collect();
            let fail_fast = findings
                .iter()
                .any(|f| is_blocking(f) && self.on_fail(&f.source) == OnFail::Fail);
            let denied_only = !blocking.is_empty() && blocking.iter().all(|v| v.code == "denied");
            let answer = if tools_only {
                serde_json::json!({"tool_calls": response.tool_calls}).to_string()
            } else {
                response.content.clone()
            };
            self.result.attempts.push(Attempt {
                attempt,
                provider,
                model: response.model,
                raw: response.content,
                tool_calls: response.tool_calls,
                violations: findings,
                fixed_by: validation.fixed_by,
                tokens,
                latency_us,
            });
            if reins_state::journal::wants(reins_state::StepKind::Attempt) {
                let decided = &self.result.decisions[decided_before.min(self.result.decisions.len())..];
                let step = serde_json::json!({"attempt": self.result.attempts.last(), "decisions": decided});
                if let Err(e) = reins_state::journal::record(reins_state::StepKind::Attempt, step).await {
                    gated.release_all();
                    return Err(self.lost(e));
                }
            }

            if blocking.is_empty() {
                self.result.output = validation.doc;
                self.result.actions = gated.approved.iter().map(|(_, a)| a.clone()).collect();
                self.result.action_indices = gated.approved.iter().map(|(i, _)| *i).collect();
                self.result.reservations = std::mem::take(&mut gated.reservations);
                if gated.pending.is_empty() {
                    self.result.status = RunStatus::Completed;
                    return self.execute_actions(attempt, &gated.approved).await;
                }
                self.result.pending = gated.pending;
                self.result.status = RunStatus::AwaitingApproval;
                return Ok(());
            }
            gated.release_all();

            // Repair, or stop?
            let spent = self.result.tokens.total;
            let repeated = previous.as_ref() == Some(&blocking);
            let mut stop = if fail_fast {
                Some(StopReason::FailFast)
            } else if repeated && (attempt >= max_attempts || !self.change_strategy(&mut strategies)) {
                Some(StopReason::Repeated)
            } else if attempt >= max_attempts {
                Some(StopReason::MaxAttempts)
            } else if budget.is_some_and(|b| spent >= b) {
                Some(StopReason::TokenBudget)
            } else {
                None
            };
            let mut next_turn = None;
            if stop.is_none() {
                let prompt = self
                    .p
                    .template_for(self.mode)
                    .render(&blocking, attempt + 1, max_attempts, self.model_schema.as_deref());
                let turn = (answer, prompt);
                // Not even the next prompt fits what is left of the budget.
                if let Some(b) = budget
                    && spent + estimate_prompt(Some(&turn)) > b
                {
                    stop = Some(StopReason::TokenBudget);
                }
                next_turn = Some(turn);
            }
            let now = Instant::now();
            match (stop, next_turn) {
                (None, Some(turn)) => {
                    self.trace(
                        "repair",
                        "",
                        format!("{} violation(s) sent back", blocking.len()),
                        now,
                        now,
                    );
                    messages = repair::repair_messages(&base, &turn.0, turn.1.clone());
                    repair_turn = Some(turn);
                    previous = Some(blocking);
                    attempt += 1;
                }
                (stop, _) => {
                    let stop = stop.unwrap_or(StopReason::MaxAttempts);
                    self.trace("repair", "", format!("stop: {stop}"), now, now);
                    if denied_only && stop != StopReason::FailFast {
                        let denial = self.result.decisions.iter().rev().find_map(|d| match &d.decision {
                            Decision::Deny(reason) if d.attempt == attempt => {
                                Some((d.gate.clone(), d.tool.clone(), reason.clone()))
                            }
                            _ => None,
                        });
                        if let Some((gate, tool, reason)) = denial {
                            return Err(RunError::Denied { gate, tool, reason });
                        }
                    }
                    let summary = blocking
                        .iter()
                        .map(|v| {
                            let path = if v.path.is_empty() {
                                "(document)"
                            } else {
                                v.path.as_str()
                            };
                            format!("{path} [{}]: {}", v.code, v.message)
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(RunError::ValidationFailed {
                        attempts: attempt,
                        stop,
                        summary,
                    });
                }
            }
        }
    }

    /// The provider the next repair attempt asks first.
    fn next_provider(&self) -> Option<&Arc<crate::provider::Breaker>> {
        self.p.repair_providers.get(self.chain_offset)
    }

    /// Counts the judge's tokens in the run's usage and traces each question
    /// with its answer.
    fn note_judge_calls(&mut self) {
        let Some(judge) = &self.judge else { return };
        for call in judge.drain() {
            let (prompt, completion) = match call.usage {
                Some(u) => (u.prompt_tokens, u.completion_tokens),
                None => {
                    let answer = call.answer.as_deref().unwrap_or_default();
                    self.result.tokens.estimated = true;
                    (tokens::count(&call.question), tokens::count(answer))
                }
            };
            self.result.tokens.prompt += prompt;
            self.result.tokens.completion += completion;
            self.result.tokens.total += prompt + completion;
            let shown = |s: &str| -> String {
                let s = s.trim();
                match s.char_indices().nth(120) {
                    Some((i, _)) => format!("{}…", &s[..i]),
                    None => s.to_owned(),
                }
            };
            let result = match &call.answer {
                Ok(a) => format!("asked {:?} -> {:?}", shown(&call.question), shown(a)),
                Err(e) => format!("asked {:?} -> failed: {}", shown(&call.question), shown(e)),
            };
            self.trace("judge", &call.provider, result, call.start, call.end);
        }
    }

    /// The answer repeated the previous one's violations: change what the
    /// next attempt does, by the next strategy that can change anything.
    /// `false` when every strategy is spent.
    fn change_strategy(&mut self, strategies: &mut impl Iterator<Item = RepairStrategy>) -> bool {
        for strategy in strategies.by_ref() {
            let what = match strategy {
                RepairStrategy::StrictFormat
                    if self.mode == OutputMode::Json
                        && !self.strict
                        && self.next_provider().is_some_and(|b| b.provider().can_tighten()) =>
                {
                    self.strict = true;
                    "the strictest structured-output mode".to_owned()
                }
                RepairStrategy::Temperature => {
                    let from = self.sampling.temperature.unwrap_or(0.0);
                    let to = (from + self.p.config.repair.temperature_step).min(2.0);
                    if to <= from {
                        continue;
                    }
                    self.sampling.temperature = Some(to);
                    format!("temperature {from} -> {to}")
                }
                RepairStrategy::Model if self.p.repair_providers.len() > self.chain_offset + 1 => {
                    self.chain_offset += 1;
                    let next = self.p.repair_providers[self.chain_offset].provider().name().to_owned();
                    format!("model `{next}`")
                }
                _ => continue,
            };
            let now = Instant::now();
            self.trace("repair", strategy.as_str(), format!("answers repeat; next attempt: {what}"), now, now);
            return true;
        }
        false
    }

    /// The `on_fail` of what reported a violation.
    /// Carries out the approved actions of a completed run (or plans them,
    /// in a dry run). A failed action fails the run.
    async fn execute_actions(&mut self, step: u32, approved: &[(usize, Action)]) -> Result<(), RunError> {
        if approved.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let executions = super::execute::execute_all(
            &self.p.config,
            &self.p.name,
            &self.ctx.run_id,
            step,
            approved,
            &mut self.result.reservations,
            self.result.dry_run,
        )
        .await;
        for e in &executions {
            let what = match e.status {
                super::ExecStatus::Done => format!("done ({} tries)", e.tries),
                other => format!("{other:?}").to_lowercase(),
            };
            self.trace("execute", &e.tool, what, start, Instant::now());
        }
        let failed = executions
            .iter()
            .find(|e| e.status == super::ExecStatus::Failed)
            .map(|e| RunError::ActionFailed {
                tool: e.tool.clone(),
                message: e.error.clone().unwrap_or_default(),
            });
        self.result.executions = executions;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn on_fail(&self, source: &str) -> OnFail {
        match source {
            "json" | "schema" => self.p.config.schema_on_fail,
            "constraints" => self.p.config.on_invalid_action,
            gate if self.p.config.gates.iter().any(|g| g == gate) => self.p.config.on_invalid_action,
            _ => self
                .p
                .config
                .validators
                .iter()
                .find(|v| v.0.plugin == source)
                // A fix that produced no document falls back to a repair.
                .map_or(OnFail::Repair, |v| match v.0.on_fail {
                    OnFail::Fix => OnFail::Repair,
                    other => other,
                }),
        }
    }

    /// Extract → schema → validator stages, re-validating after each fix.
    async fn validate(&mut self, raw: &str) -> Result<Validation, RunError> {
        let start = Instant::now();
        let extracted = match self.mode {
            // Prose is not parsed: validators get it as a JSON string.
            OutputMode::Text if raw.trim().is_empty() => Err(violation(
                String::new(),
                "empty",
                "The answer is empty. Answer the request in words.".to_owned(),
            )),
            OutputMode::Text => Ok(Value::String(raw.to_owned())),
            OutputMode::Json => extract_json(raw),
        };
        let mut doc = match extracted {
            Ok(doc) => {
                let what = if self.mode == OutputMode::Text { "text (not parsed)" } else { "ok" };
                self.trace("extract", "", what.to_owned(), start, Instant::now());
                doc
            }
            Err(v) => {
                let what = if self.mode == OutputMode::Text { "empty" } else { "not JSON" };
                self.trace("extract", "", what.to_owned(), start, Instant::now());
                let source = if self.mode == OutputMode::Text { "output" } else { "json" };
                return Ok(Validation {
                    doc: None,
                    findings: vec![finding(source, v)],
                    fixed_by: Vec::new(),
                });
            }
        };
        let p = self.p;
        let mut fixed_by = Vec::new();
        // Notes (non-blocking findings) of rounds a fix superseded, e.g. what it converted.
        let mut carried: Vec<Finding> = Vec::new();
        let max_fixes = p.config.repair.max_fix_rounds as usize;
        'round: loop {
            let mut findings = Vec::new();
            if let Some(validator) = &p.schema_validator {
                let start = Instant::now();
                findings.extend(validator.iter_errors(&doc).map(|e| {
                    finding(
                        "schema",
                        violation(e.instance_path().to_string(), e.kind().keyword(), e.to_string()),
                    )
                }));
                self.trace("schema", "", count_summary(&findings), start, Instant::now());
            }
            if let Some(validator) = self.request_schema.clone() {
                let start = Instant::now();
                let own: Vec<Finding> = validator
                    .iter_errors(&doc)
                    .map(|e| {
                        finding(
                            "schema",
                            violation(e.instance_path().to_string(), e.kind().keyword(), e.to_string()),
                        )
                    })
                    .collect();
                self.trace("schema", "request", count_summary(&own), start, Instant::now());
                findings.extend(own);
            }
            if p.stages.is_empty() {
                carried.extend(findings);
                return Ok(Validation {
                    doc: Some(doc),
                    findings: carried,
                    fixed_by,
                });
            }
            let text: Arc<str> = Arc::from(doc.to_string());
            for stage in &p.stages {
                // Start every validator of the stage, then collect in config order.
                // All but the last go to the blocking pool; the last runs here.
                let mut running = Vec::with_capacity(stage.len());
                let plugins = stage
                    .iter()
                    .map(|v| self.plugin(Layer::Validator, &v.plugin))
                    .collect::<Result<Vec<_>, _>>()?;
                for (v, plugin) in stage.iter().zip(&plugins).take(stage.len().saturating_sub(1)) {
                    let ctx = self.ctx.clone();
                    let text = text.clone();
                    running.push((v, Some(spawn_call(plugin, move |p| p.validate(&ctx, &text)))));
                }
                let mut last = None;
                if let (Some(v), Some(plugin)) = (stage.last(), plugins.last()) {
                    let ctx = self.ctx.clone();
                    let text = text.clone();
                    last = Some(blocking(plugin, move |p| p.validate(&ctx, &text)).await);
                    running.push((v, None));
                }
                let mut fix: Option<(String, Value)> = None;
                for ((v, pending), plugin) in running.into_iter().zip(&plugins) {
                    let timed = match pending {
                        Some(pending) => pending.wait().await,
                        None => match last.take() {
                            Some(timed) => timed,
                            None => continue,
                        },
                    };
                    let Some(verdict) = self.settle(Layer::Validator, plugin, timed, |verdict| {
                        let mut s = count_summary(
                            &verdict
                                .violations
                                .iter()
                                .map(|x| finding("", x.clone()))
                                .collect::<Vec<_>>(),
                        );
                        if verdict.fixed.is_some() {
                            s.push_str(", fixed");
                        }
                        s
                    })?
                    else {
                        continue;
                    };
                    findings.extend(verdict.violations.into_iter().map(|x| finding(&v.plugin, x)));
                    if v.on_fail == OnFail::Fix
                        && fix.is_none()
                        && let Some(fixed) = verdict.fixed
                        && fixed != doc
                    {
                        fix = Some((v.plugin.clone(), fixed));
                    }
                }
                if let Some((plugin, fixed)) = fix
                    && fixed_by.len() < max_fixes
                {
                    let now = Instant::now();
                    self.trace("fix", &plugin, "applied; re-validating".to_owned(), now, now);
                    doc = fixed;
                    fixed_by.push(plugin);
                    carried.extend(findings.into_iter().filter(|f| !is_blocking(f)));
                    continue 'round;
                }
            }
            carried.extend(findings);
            return Ok(Validation {
                doc: Some(doc),
                findings: carried,
                fixed_by,
            });
        }
    }

    /// The error of a run whose checkpoint found its lease taken.
    fn lost(&self, e: reins_state::StateError) -> RunError {
        RunError::NotOwned {
            run_id: self.result.run_id.clone(),
            message: e.to_string(),
        }
    }

    /// Constraint check and gates for each proposed action.
    async fn gate(&mut self, calls: &[ToolCall], tools: &[Tool]) -> Result<Gated, RunError> {
        let mut out = Gated::default();
        match self.gate_into(calls, tools, &mut out).await {
            Ok(()) => Ok(out),
            Err(e) => {
                // The run fails: no reservation of it may stay spent.
                out.release_all();
                Err(e)
            }
        }
    }

    async fn gate_into(&mut self, calls: &[ToolCall], tools: &[Tool], out: &mut Gated) -> Result<(), RunError> {
        let p = self.p;
        for (i, call) in calls.iter().enumerate() {
            let at = format!("/actions/{i}");
            let start = Instant::now();
            let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
                let available = if tools.is_empty() {
                    "this request has no tools".to_owned()
                } else {
                    format!(
                        "the tools are: {}",
                        tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                };
                out.findings.push(finding(
                    "constraints",
                    violation(
                        at,
                        "tool-not-allowed",
                        format!("`{}` is not an available tool; {available}", call.name),
                    ),
                ));
                self.trace(
                    "action",
                    &call.name,
                    "not an available tool".to_owned(),
                    start,
                    Instant::now(),
                );
                continue;
            };
            let problems = self.check_arguments(tool, &call.arguments, &at);
            self.trace("action", &call.name, count_summary(&problems), start, Instant::now());
            if !problems.is_empty() {
                out.findings.extend(problems);
                continue;
            }
            let mut action = Action {
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
                access: tool.access,
            };
            let mut allowed = true;
            let mut escalated = false;
            for gate in &p.config.gates {
                let plugin = self.plugin(Layer::Gate, gate)?;
                let ctx = self.ctx.clone();
                let input = action.clone();
                let timed = blocking(&plugin, move |p| p.check_reserving(&ctx, &input)).await;
                let Some((decision, reservation)) =
                    self.settle(Layer::Gate, &plugin, timed, |(d, _)| d.kind().to_owned())?
                else {
                    continue;
                };
                if !reservation.is_empty() {
                    out.held.push(reservation);
                }
                self.result.decisions.push(GateDecision {
                    attempt: self.ctx.attempt,
                    action: i,
                    tool: action.tool.clone(),
                    gate: gate.clone(),
                    decision: decision.clone(),
                });
                match decision {
                    Decision::Allow => {}
                    Decision::Deny(reason) => {
                        out.findings.push(finding(
                            gate,
                            violation(at.clone(), "denied", format!("`{}` was denied: {reason}", action.tool)),
                        ));
                        allowed = false;
                        // What earlier gates reserved for this action is not spent.
                        for mut r in out.held.drain(..) {
                            r.release();
                        }
                        break;
                    }
                    Decision::Escalate(reason) => {
                        out.pending.push(PendingApproval {
                            index: i,
                            action: action.clone(),
                            gate: gate.clone(),
                            reason,
                        });
                        escalated = true;
                        break;
                    }
                    Decision::Rewrite(arguments) => {
                        let problems = self.check_arguments(tool, &arguments, &at);
                        if !problems.is_empty() {
                            // A gate's rewrite must still fit the tool: a broken gate fails closed.
                            return Err(RunError::Plugin {
                                layer: Layer::Gate.as_str(),
                                plugin: gate.clone(),
                                kind: "bad_rewrite",
                                message: format!(
                                    "gate `{gate}` rewrote `{}` to arguments that fail its schema: {}",
                                    action.tool, problems[0].violation.message
                                ),
                            });
                        }
                        action.arguments = arguments;
                    }
                }
            }
            if allowed {
                let held = std::mem::take(&mut out.held);
                out.reservations.extend(held.into_iter().map(|r| (i, r)));
                if !escalated {
                    out.approved.push((i, action));
                }
            }
        }
        Ok(())
    }

    /// The tool's argument schema, then the caller's declared one, if any.
    fn check_arguments(&self, tool: &Tool, arguments: &Value, at: &str) -> Vec<Finding> {
        let errors = |validator: &jsonschema::Validator, whose: &str| -> Vec<Finding> {
            validator
                .iter_errors(arguments)
                .map(|e| {
                    finding(
                        "constraints",
                        violation(
                            format!("{at}/arguments{}", e.instance_path()),
                            "tool-arguments",
                            format!("arguments of `{}`{whose}: {e}", tool.name),
                        ),
                    )
                })
                .collect()
        };
        let mut out = match self.p.tool_validator(&tool.parameters) {
            Err(message) => vec![finding(
                "constraints",
                violation(
                    at.to_owned(),
                    "tool-schema",
                    format!("tool `{}` has an unusable schema: {message}", tool.name),
                ),
            )],
            Ok(validator) => errors(&validator, ""),
        };
        let declared = self
            .caller_tools
            .iter()
            .flatten()
            .find(|(t, _)| t.name == tool.name)
            .and_then(|(_, check)| check.as_ref());
        if out.is_empty()
            && let Some(validator) = declared
        {
            out = errors(validator, " (as the caller declared them)");
        }
        out
    }
}
