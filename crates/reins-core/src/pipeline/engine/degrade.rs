//! The model call of one attempt and how it degrades: the run's deadline,
//! the provider chain (each provider behind its retries and breaker), then
//! the response cache, then the pipeline's static answer. A cached or static
//! answer is validated (JSON Schema, validator plugins) before it is served;
//! one that no longer passes is passed over.

use super::{Run, Validation, is_blocking};
use crate::config::OutputMode;
use crate::pipeline::Pipeline;
use crate::pipeline::cache::{CacheKey, CachedAnswer};
use crate::pipeline::result::{RunError, RunResult, RunStatus};
use crate::provider::{ChatRequest, ChatResponse, Usage};
use reins_runtime::{Message, Tool};
use reins_state::StateStore;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which step of the fallback chain answered an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// The first provider of the attempt's chain.
    First,
    /// A fallback provider.
    Fallback,
    Cache,
    Static,
}

/// What one attempt's model call returned.
pub(super) struct ModelAnswer {
    pub response: ChatResponse,
    /// The provider's name, or `cache` / `static`.
    pub provider: String,
    pub latency_us: u64,
    /// A cached or static answer comes validated already.
    pub validation: Option<Validation>,
}

/// A run's degradation state.
pub(super) struct Degradation {
    pub deadline: Option<Instant>,
    /// The response cache key of this request (when the cache is on).
    pub key: Option<CacheKey>,
    /// Which step served each attempt, in order.
    pub served: Vec<Served>,
}

impl Degradation {
    /// The run's deadline is the pipeline's `deadline_ms`, shortened by the
    /// caller's own timeout (`timeout_ms`) when that is sooner.
    pub fn new(
        pipeline: &Pipeline,
        started: Instant,
        caller_timeout_ms: Option<u64>,
    ) -> Degradation {
        let ms = pipeline.config.deadline_ms;
        let pipeline_deadline = (ms > 0).then(|| started + Duration::from_millis(ms));
        let caller_deadline = caller_timeout_ms.map(|ms| started + Duration::from_millis(ms));
        Degradation {
            deadline: match (pipeline_deadline, caller_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            key: None,
            served: Vec::new(),
        }
    }

    /// Computes the cache key of the conversation the model is sent.
    pub fn key_for(
        &mut self,
        p: &Pipeline,
        messages: &[Message],
        schema: Option<&Value>,
        tools: &[Tool],
        sampling: &crate::provider::Sampling,
        mode: OutputMode,
    ) {
        if p.cache.is_none() {
            return;
        }
        let mut params: Vec<Value> = p.providers.iter().map(|b| b.provider().params()).collect();
        // What the caller asked for besides the conversation decides the answer too.
        if !sampling.is_empty() || mode == OutputMode::Text {
            params.push(serde_json::json!({"sampling": sampling, "output": mode}));
        }
        self.key = Some(CacheKey::new(&p.name, messages, schema, tools, &params));
    }

    /// Marks the result (`degraded`, `served_by`, `notice`) and stores a
    /// validated output in the cache.
    pub fn finish(&self, p: &Pipeline, result: &mut RunResult, cache_index: &Arc<dyn StateStore>) {
        let (Some(served), Some(last)) = (self.served.last(), result.attempts.last()) else {
            return;
        };
        result.served_by = Some(last.provider.clone());
        result.degraded = *served != Served::First;
        if *served == Served::Static {
            result.notice = p.degraded.as_ref().map(|d| d.message.clone());
        }
        let from_provider = matches!(served, Served::First | Served::Fallback);
        // Only validated outputs, only a provider's, and never one that
        // proposes actions: replaying a side effect is no way to degrade.
        let proposes_actions = !last.tool_calls.is_empty()
            || !result.actions.is_empty()
            || result.decisions.iter().any(|d| d.attempt == last.attempt);
        if result.status == RunStatus::Completed
            && from_provider
            && !proposes_actions
            && p.config.cache.writes()
            && let (Some(cache), Some(key), Some(output)) = (&p.cache, self.key, &result.output)
        {
            let answer = CachedAnswer {
                content: output.to_string(),
                tool_calls: Vec::new(),
                provider: last.provider.clone(),
                model: last.model.clone(),
            };
            crate::pipeline::cache::remember(cache, key, &p.name, answer, cache_index.clone());
            metrics::counter!(reins_runtime::metric_names::CACHE_WRITES_TOTAL, "pipeline" => p.name.clone()).increment(1);
        }
    }
}

impl Run<'_> {
    /// The attempt's answer: the first provider of the chain that answers,
    /// else the cache, else the static answer; else `ModelUnavailable` with
    /// why each step could not serve.
    pub(super) async fn call_model(
        &mut self,
        attempt: u32,
        messages: Vec<Message>,
        tools: &[Tool],
    ) -> Result<ModelAnswer, RunError> {
        if let Some(recorded) = self.rc.replayed(attempt) {
            return Ok(self.replay(&recorded));
        }
        let mut request = ChatRequest {
            run_id: self.ctx.run_id.clone(),
            pipeline: self.p.name.clone(),
            attempt,
            messages,
            schema: self
                .model_schema
                .clone()
                .filter(|_| self.mode == OutputMode::Json),
            json: self.mode == OutputMode::Json,
            strict: self.strict,
            tools: tools.to_vec(),
            sampling: self.sampling.clone(),
            deadline: self.deg.deadline,
            traceparent: None,
            turn: self.turn(),
        };
        let p = self.p;
        let chain = if attempt == 1 {
            &p.providers[..]
        } else {
            // The `model` repair strategy passes over providers that keep repeating themselves.
            let skip = self
                .chain_offset
                .min(p.repair_providers.len().saturating_sub(1));
            &p.repair_providers[skip..]
        };
        let mut errors = Vec::new();
        let mut refused = None;
        // While every provider tried only pushed back: the soonest it may take a call.
        let mut backpressure: Option<Duration> = Some(Duration::ZERO);
        let capture = self.rc.trace.captures_content();
        for (i, breaker) in chain.iter().enumerate() {
            let name = breaker.provider().name().to_owned();
            let start = Instant::now();
            // The call's span id goes upstream before the call does.
            let span = self.rc.trace.child();
            request.traceparent = self.rc.trace.traceparent(span);
            if self.deg.deadline.is_some_and(|d| start >= d) {
                self.trace(
                    "model",
                    &name,
                    "skipped: deadline passed".to_owned(),
                    start,
                    start,
                );
                errors.push(format!(
                    "provider `{name}`: not called, the run's deadline ({} ms) had passed",
                    p.config.deadline_ms
                ));
                backpressure = None;
                continue;
            }
            // A caller that leaves drops the call: the upstream sees its
            // connection close instead of generating for nobody.
            let cancel = self.cancel.clone();
            // A JSON answer that broke its schema mid-stream, unreleased.
            let mut broke = None;
            let called = if self.stream.is_some() {
                match self.stream_model(breaker, &request).await {
                    Ok(super::stream::Streamed::Answer { response, tries }) => {
                        crate::provider::Called {
                            result: Ok(response),
                            tries,
                        }
                    }
                    Ok(super::stream::Streamed::Broke {
                        response,
                        tries,
                        violation,
                    }) => {
                        broke = Some(violation);
                        crate::provider::Called {
                            result: Ok(response),
                            tries,
                        }
                    }
                    Ok(super::stream::Streamed::Failed { error, tries }) => {
                        crate::provider::Called {
                            result: Err(error),
                            tries,
                        }
                    }
                    Err(e) => {
                        self.trace(
                            "model",
                            &name,
                            format!("stream ended: {}", e.kind()),
                            start,
                            Instant::now(),
                        );
                        return Err(e);
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        self.trace("model", &name, "cancelled: the client disconnected".to_owned(), start, Instant::now());
                        return Err(RunError::client_gone());
                    }
                    called = breaker.call(&request) => called,
                }
            };
            let end = Instant::now();
            let tries = if called.tries > 1 {
                format!(", {} tries", called.tries)
            } else {
                String::new()
            };
            match called.result {
                Ok(r) => {
                    self.trace_with(
                        "model",
                        &name,
                        format!("ok ({}{tries})", r.model),
                        start,
                        end,
                        || {
                            super::spans::model(
                                span,
                                breaker.provider().as_ref(),
                                &request,
                                Ok(&r),
                                capture,
                            )
                        },
                    );
                    if i > 0 {
                        metrics::counter!(reins_runtime::metric_names::FALLBACK_USES_TOTAL, "pipeline" => p.name.clone(), "step" => name.clone())
                            .increment(1);
                    }
                    self.deg.served.push(if i == 0 {
                        Served::First
                    } else {
                        Served::Fallback
                    });
                    return Ok(ModelAnswer {
                        response: r,
                        provider: name,
                        latency_us: end.saturating_duration_since(start).as_micros() as u64,
                        validation: broke.map(|v| Validation {
                            doc: None,
                            findings: vec![super::finding("schema", v)],
                            fixed_by: Vec::new(),
                        }),
                    });
                }
                Err(e) => {
                    if e.is_backpressure() {
                        // Backpressure under load is routine (the provider's
                        // saturation is logged once); a warning per call would flood the log.
                        tracing::debug!(provider = %name, error = %e, "model call not sent");
                    } else {
                        tracing::warn!(provider = %name, error = %e, "model call failed");
                    }
                    self.trace_with(
                        "model",
                        &name,
                        format!("failed: {}{tries}", e.kind()),
                        start,
                        end,
                        || {
                            super::spans::model(
                                span,
                                breaker.provider().as_ref(),
                                &request,
                                Err(&e),
                                capture,
                            )
                        },
                    );
                    if i == 0
                        && e.is_refusal()
                        && let crate::provider::ProviderError::Status { status, body, .. } = &e
                    {
                        refused = Some(RunError::UpstreamRefused {
                            provider: name.clone(),
                            status: *status,
                            message: body.clone(),
                        });
                    }
                    backpressure = match (backpressure, e.is_backpressure()) {
                        (Some(soonest), true) => {
                            let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
                            Some(if soonest.is_zero() {
                                wait
                            } else {
                                soonest.min(wait)
                            })
                        }
                        _ => None,
                    };
                    errors.push(e.to_string());
                }
            }
        }
        // The request's own shape, refused: telling the caller beats a
        // cached or static answer to something else.
        if let Some(refused) = refused {
            return Err(refused);
        }
        self.go_on()?;
        let overloaded = backpressure.filter(|_| !chain.is_empty());
        self.local_fallback(errors, overloaded).await
    }

    /// The run's place in its providers' queues.
    pub(super) fn turn(&self) -> crate::provider::Turn {
        crate::provider::Turn {
            tenant: crate::identity::queue_key(&self.ctx.caller),
            on_saturated: self.p.config.on_saturated,
        }
    }

    /// An attempt recorded before the run was interrupted, answered again
    /// without calling the model.
    fn replay(&mut self, recorded: &Value) -> ModelAnswer {
        let start = Instant::now();
        let text = |k: &str| {
            recorded
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let count = |k: &str| {
            recorded["tokens"]
                .get(k)
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let provider = text("provider");
        let response = crate::provider::ChatResponse {
            content: text("raw"),
            tool_calls: recorded
                .get("tool_calls")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
            usage: Some(crate::provider::Usage {
                prompt_tokens: count("prompt"),
                completion_tokens: count("completion"),
                total_tokens: count("total"),
            }),
            model: text("model"),
            finish_reason: None,
        };
        self.trace(
            "model",
            &provider,
            "replayed from the run's checkpoint".to_owned(),
            start,
            Instant::now(),
        );
        self.deg.served.push(Served::First);
        ModelAnswer {
            response,
            provider,
            latency_us: 0,
            validation: None,
        }
    }

    /// The cache, then the static answer; each only if it passes validation.
    /// `overloaded`: every provider pushed back, and the soonest one may
    /// take a call again after this (the run fails as `overloaded`, a 429).
    async fn local_fallback(
        &mut self,
        mut errors: Vec<String>,
        overloaded: Option<Duration>,
    ) -> Result<ModelAnswer, RunError> {
        let p = self.p;
        if let (Some(cache), Some(key)) = (&p.cache, self.deg.key) {
            let start = Instant::now();
            match crate::pipeline::cache::lookup(cache, &key, &*self.rc.cache_index).await {
                None => {
                    metrics::counter!(reins_runtime::metric_names::CACHE_MISSES_TOTAL, "pipeline" => p.name.clone()).increment(1);
                    self.trace(
                        "model",
                        "cache",
                        format!("miss ({})", key.short()),
                        start,
                        Instant::now(),
                    );
                    errors.push("cache: no answer stored for this request".to_owned());
                }
                Some((answer, age)) => {
                    metrics::counter!(reins_runtime::metric_names::CACHE_HITS_TOTAL, "pipeline" => p.name.clone()).increment(1);
                    self.trace(
                        "model",
                        "cache",
                        format!(
                            "hit ({}, from {}, {} s old)",
                            key.short(),
                            answer.provider,
                            age.as_secs()
                        ),
                        start,
                        Instant::now(),
                    );
                    let response = local_response(answer.content.clone(), answer.model.clone());
                    if let Some(answer) = self
                        .checked(response, "cache", Served::Cache, start)
                        .await?
                    {
                        return Ok(answer);
                    }
                    errors.push("cache: the stored answer no longer passes validation".to_owned());
                }
            }
        }
        if let Some(degraded) = &p.degraded {
            let start = Instant::now();
            self.trace(
                "model",
                "static",
                "degraded answer".to_owned(),
                start,
                start,
            );
            let response = local_response(degraded.answer.clone(), "static".to_owned());
            if let Some(answer) = self
                .checked(response, "static", Served::Static, start)
                .await?
            {
                return Ok(answer);
            }
            errors.push("static: the degraded answer does not pass validation".to_owned());
        }
        if let Some(wait) = overloaded {
            return Err(RunError::Overloaded {
                errors,
                retry_after_ms: wait.as_millis().max(1) as u64,
            });
        }
        Err(RunError::ModelUnavailable { errors })
    }

    /// Validates a local answer; `None` when it has blocking violations.
    async fn checked(
        &mut self,
        response: ChatResponse,
        step: &'static str,
        served: Served,
        start: Instant,
    ) -> Result<Option<ModelAnswer>, RunError> {
        let validation = self.validate(&response.content).await?;
        if validation.findings.iter().any(is_blocking) {
            let now = Instant::now();
            self.trace(
                "model",
                step,
                "passed over: fails validation".to_owned(),
                now,
                now,
            );
            return Ok(None);
        }
        metrics::counter!(reins_runtime::metric_names::FALLBACK_USES_TOTAL, "pipeline" => self.p.name.clone(), "step" => step).increment(1);
        self.deg.served.push(served);
        Ok(Some(ModelAnswer {
            response,
            provider: step.to_owned(),
            latency_us: start.elapsed().as_micros() as u64,
            validation: Some(validation),
        }))
    }
}

/// A cached or static answer as a response: no tokens were spent on it.
fn local_response(content: String, model: String) -> ChatResponse {
    ChatResponse {
        content,
        tool_calls: Vec::new(),
        usage: Some(Usage::default()),
        model,
        finish_reason: None,
    }
}
