//! Model providers: where a pipeline's model calls go.
//!
//! - [`openai::OpenAiProvider`]: OpenAI-compatible chat completions over HTTP
//!   (OpenAI, vLLM, llama.cpp server, Ollama), with connect and total timeouts.
//! - [`anthropic::AnthropicProvider`]: the Anthropic Messages API over HTTP.
//! - [`scripted::ScriptedProvider`]: replays responses from a file, for
//!   offline runs and tests, and records every request it was sent.
//!
//! Every provider is wrapped in a [`Breaker`]: the run's deadline, the
//! provider's admission (limits, saturation and a fair queue:
//! [`admission`]), retries with full-jitter backoff ([`retry`]), and one
//! circuit breaker per provider ([`breaker`]). The pipeline walks its
//! fallback chain when a provider is unavailable or saturated.

use crate::config::{ConfigError, ProviderConfig};
use reins_runtime::{Message, Tool};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod admission;
pub mod anthropic;
pub mod breaker;
mod http;
pub mod openai;
pub mod retry;
pub mod scripted;
pub mod stream;

pub use admission::{Admission, AdmissionSettings, AdmissionSnapshot, Refusal};
pub use anthropic::AnthropicProvider;
pub use breaker::{BreakerSettings, BreakerSnapshot, CircuitBreaker, CircuitState};
use breaker::{Outcome, PermitGuard, Transition};
pub use openai::OpenAiProvider;
pub use retry::RetryPolicy;
pub use scripted::{ScriptEntry, ScriptedProvider};
pub use stream::{Collected, Delta, DeltaStream, StreamFuture};

/// One model call.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub run_id: String,
    pub pipeline: String,
    /// 1 for the first attempt, 2 for the first repair...
    pub attempt: u32,
    pub messages: Vec<Message>,
    /// The pipeline's output schema, for providers that can constrain decoding.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_schema"
    )]
    pub schema: Option<Arc<Value>>,
    /// The answer must be one JSON document (`schema` or not); `false` is a
    /// prose answer, and no structured-output mode is asked for.
    #[serde(default)]
    pub json: bool,
    /// Ask for the strictest structured-output mode the provider supports
    /// (a repair strategy when answers repeat themselves).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// The tools this request may use (from the constraints plugin).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Sampling and tool-choice parameters: the caller's, under the
    /// pipeline's caps and overrides.
    #[serde(default, skip_serializing_if = "Sampling::is_empty")]
    pub sampling: Sampling,
    /// When the run's deadline passes: no call, retry or wait goes past it.
    #[serde(skip)]
    pub deadline: Option<Instant>,
    /// The W3C `traceparent` naming this call's span, sent upstream.
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// Its place in a provider's queue.
    #[serde(skip)]
    pub turn: Turn,
}

/// Where a call stands in a provider's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    /// Whose turn it is: the caller's tenant, else its subject (see
    /// [`crate::identity::queue_key`]); empty for calls of no caller.
    pub tenant: String,
    /// Wait for a saturated provider, or fall back at once.
    pub on_saturated: crate::config::OnSaturated,
}

/// The parameters besides the conversation that shape an answer. Every
/// field is optional: `None` leaves the provider's own default (its config,
/// then the server's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens`; forwarded under the name the caller used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// The end user, for the upstream's abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `auto`, `none`, `required` or a named tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl Sampling {
    pub fn is_empty(&self) -> bool {
        self == &Sampling::default()
    }

    /// The token ceiling, whichever name it came under.
    pub fn token_limit(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    /// This tool, by name.
    Tool(String),
}

fn serialize_schema<S: serde::Serializer>(
    schema: &Option<Arc<Value>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    schema.as_deref().serialize(s)
}

impl ChatRequest {
    /// The content of the last `user` message, if any.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
    }
}

/// A tool call the model proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The model's id for the call (a `tool` result names it), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// Parsed arguments; arguments that were not JSON are kept as a string
    /// (and fail the tool's schema).
    #[serde(default)]
    pub arguments: Value,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What a model answered.
#[derive(Debug, Clone, Serialize)]
pub struct ChatResponse {
    /// The assistant message text (empty when the model only called tools).
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// As reported by the provider; `None` when it reported nothing.
    pub usage: Option<Usage>,
    /// The model that answered, as reported.
    pub model: String,
    /// Why generation stopped, as the upstream said (`stop`, `length`,
    /// `tool_calls`, `end_turn`...); `None` when it said nothing.
    pub finish_reason: Option<String>,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider `{provider}`: cannot connect to {url}: {message}")]
    Connect {
        provider: String,
        url: String,
        message: String,
    },
    #[error("provider `{provider}`: no response within {timeout_ms} ms")]
    Timeout { provider: String, timeout_ms: u64 },
    #[error("provider `{provider}`: HTTP {status}: {body}")]
    Status {
        provider: String,
        status: u16,
        body: String,
        /// What the upstream asked for in `Retry-After` / `retry-after-ms`.
        retry_after_ms: Option<u64>,
    },
    #[error("provider `{provider}`: the connection broke: {message}")]
    Interrupted { provider: String, message: String },
    #[error("provider `{provider}`: unreadable response: {message}")]
    BadResponse { provider: String, message: String },
    #[error("provider `{provider}`: environment variable {var} (api_key_env) is not set")]
    MissingApiKey { provider: String, var: String },
    #[error(
        "provider `{provider}`: circuit breaker open ({failures} of the last {calls} calls failed); next probe in {retry_in_ms} ms"
    )]
    BreakerOpen {
        provider: String,
        failures: u32,
        calls: u32,
        retry_in_ms: u64,
    },
    #[error("provider `{provider}`: the run's deadline passed")]
    DeadlineExceeded { provider: String },
    /// Asked of a provider what its API does not offer (embeddings of a
    /// chat-only API).
    #[error("provider `{provider}`: {message}")]
    Unsupported { provider: String, message: String },
    /// Not sent: the provider is saturated or at its limits, and the call
    /// could not wait (queue full, a wait past its deadline, or a pipeline
    /// that falls back rather than wait).
    #[error(
        "provider `{provider}`: not sent, {}; retry in {retry_after_ms} ms",
        saturation_reason(reason)
    )]
    Saturated {
        provider: String,
        reason: &'static str,
        retry_after_ms: u64,
    },
    #[error("provider `{provider}`: the script has no response for attempt {attempt}")]
    ScriptExhausted { provider: String, attempt: u32 },
    #[error("provider `{provider}`: {message}")]
    Scripted { provider: String, message: String },
}

impl ProviderError {
    /// A call the provider's admission refused, as the error the chain and
    /// the run report.
    pub fn saturated(provider: &str, refused: Refusal) -> ProviderError {
        ProviderError::Saturated {
            provider: provider.to_owned(),
            reason: refused.reason(),
            retry_after_ms: refused.retry_after().as_millis().max(1) as u64,
        }
    }
}

fn saturation_reason(reason: &str) -> &'static str {
    match reason {
        "queue_full" => "its queue is full",
        "past_deadline" => "the wait for it would outlast the run's deadline",
        _ => "it is saturated (the upstream asked to back off)",
    }
}

impl ProviderError {
    /// Worth retrying on the same provider (the failure may be transient).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Interrupted { .. } => true,
            ProviderError::Status { status, .. } => transient_status(*status),
            _ => false,
        }
    }

    /// How long the upstream asked to wait before the next call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status {
                retry_after_ms: Some(ms),
                ..
            }
            | ProviderError::Saturated {
                retry_after_ms: ms, ..
            } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// The upstream (or its admission) pushed back: a 429, a 503 with
    /// `Retry-After`, or a call that was not sent for it. Backpressure, not
    /// an outage: the breaker does not count it.
    pub fn is_backpressure(&self) -> bool {
        match self {
            ProviderError::Saturated { .. } => true,
            ProviderError::Status { status: 429, .. } => true,
            ProviderError::Status {
                status: 503,
                retry_after_ms: Some(_),
                ..
            } => true,
            _ => false,
        }
    }

    /// What the failure says about the upstream's health (for its breaker):
    /// a 400, a missing key or backpressure (429, 503 with `Retry-After`)
    /// says nothing; garbage, a broken connection, a timeout, 408 and other
    /// 5xx are failures.
    pub fn outcome(&self) -> Outcome {
        match self {
            e if e.is_backpressure() => Outcome::Neutral,
            ProviderError::Connect { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Interrupted { .. }
            | ProviderError::BadResponse { .. }
            | ProviderError::DeadlineExceeded { .. } => Outcome::Failure,
            ProviderError::Status { status, .. } if transient_status(*status) => Outcome::Failure,
            _ => Outcome::Neutral,
        }
    }

    /// A stable short name for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Status { .. } => "status",
            ProviderError::Unsupported { .. } => "unsupported",
            ProviderError::Interrupted { .. } => "interrupted",
            ProviderError::BadResponse { .. } => "bad_response",
            ProviderError::MissingApiKey { .. } => "missing_api_key",
            ProviderError::BreakerOpen { .. } => "breaker_open",
            ProviderError::DeadlineExceeded { .. } => "deadline",
            ProviderError::Saturated { .. } => "saturated",
            ProviderError::ScriptExhausted { .. } => "script_exhausted",
            ProviderError::Scripted { .. } => "scripted",
        }
    }
}

impl ProviderError {
    /// The upstream refused the request itself (400, 413, 422): the
    /// caller's request, not an outage, so it goes back to the caller with
    /// the upstream's message. (401, 403 and 404 are the operator's key or
    /// model: the model is unavailable to this caller.)
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProviderError::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }
}

/// 408, 429 and 5xx may change on their own; other statuses will not.
fn transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// A boxed future of a model call.
pub type CompletionFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ChatResponse, ProviderError>> + Send + 'a>>;

/// One embeddings call (`POST /embeddings` on an OpenAI-compatible server).
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest {
    pub input: Vec<String>,
    /// The embedding model; `None` uses the provider's `model`.
    pub model: Option<String>,
    /// Asked of models that can shorten their vectors (`dimensions`).
    pub dimensions: Option<usize>,
    pub deadline: Option<Instant>,
    pub turn: Turn,
}

/// The vectors of an [`EmbedRequest`], in the order of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub usage: Option<Usage>,
}

pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Embeddings, ProviderError>> + Send + 'a>>;

/// What the guards of a call ([`Breaker`]) need to know of it, whatever
/// the call is (chat or embeddings).
#[derive(Clone, Copy)]
struct Guarded<'r> {
    deadline: Option<Instant>,
    turn: &'r Turn,
}

impl<'r> From<&'r ChatRequest> for Guarded<'r> {
    fn from(r: &'r ChatRequest) -> Self {
        Guarded {
            deadline: r.deadline,
            turn: &r.turn,
        }
    }
}

impl<'r> From<&'r EmbedRequest> for Guarded<'r> {
    fn from(r: &'r EmbedRequest) -> Self {
        Guarded {
            deadline: r.deadline,
            turn: &r.turn,
        }
    }
}

/// A model behind a chat-completions interface.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name in the config.
    fn name(&self) -> &str;
    /// The model it calls, for traces.
    fn model(&self) -> &str;
    /// The API it speaks, as the GenAI conventions' `gen_ai.provider.name`.
    fn system(&self) -> &'static str {
        "reins"
    }
    /// One chat completion: one call upstream (retries, the breaker and the
    /// run's deadline are the [`Breaker`]'s job).
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a>;
    /// The answer as it is generated: one call upstream, as for
    /// [`Provider::complete`]. A provider that cannot stream answers whole,
    /// as one delta.
    fn stream<'a>(&'a self, request: &'a ChatRequest) -> StreamFuture<'a> {
        Box::pin(async move { self.complete(request).await.map(stream::whole) })
    }
    /// Embeddings of texts: one call upstream. Only OpenAI-compatible
    /// providers serve them; the others say so.
    fn embed<'a>(&'a self, _request: &'a EmbedRequest) -> EmbedFuture<'a> {
        let name = self.name().to_owned();
        let system = self.system();
        Box::pin(async move {
            Err(ProviderError::Unsupported {
                provider: name,
                message: format!(
                    "a `{system}` provider serves no embeddings: name a `kind = \"openai\"` provider (an OpenAI-compatible /v1/embeddings) in the retriever's `embeddings`"
                ),
            })
        })
    }
    /// What besides the messages decides the answer (model, sampling): part
    /// of the response cache's key.
    fn params(&self) -> Value {
        json!({"model": self.model()})
    }
    /// Whether asking with `strict` would constrain the answer more than
    /// the provider does now (the `strict_format` repair strategy is
    /// skipped when it would change nothing).
    fn can_tighten(&self) -> bool {
        false
    }
    /// What the provider learned about its upstream while serving (e.g. the
    /// structured-output mode it negotiated), for `GET /v1/providers`.
    fn status(&self) -> Value {
        Value::Null
    }
    /// For downcasting to a concrete provider (e.g. a test's [`ScriptedProvider`]).
    fn as_any(&self) -> &dyn Any;
}

/// Builds the provider a config entry describes. Relative paths resolve against `base_dir`.
pub fn from_config(
    name: &str,
    config: &ProviderConfig,
    base_dir: &Path,
) -> Result<Arc<dyn Provider>, ConfigError> {
    Ok(match config {
        ProviderConfig::Openai(c) => Arc::new(OpenAiProvider::new(name, c.clone())),
        ProviderConfig::Anthropic(c) => Arc::new(AnthropicProvider::new(name, c.clone())),
        ProviderConfig::Scripted(c) => match (&c.file, &c.responses) {
            (Some(file), _) => Arc::new(ScriptedProvider::from_file(
                name,
                &c.model,
                &base_dir.join(file),
            )?),
            (None, responses) => {
                let entries = ScriptedProvider::from_values(responses.clone().unwrap_or_default())
                    .map_err(|message| ConfigError::Script {
                        path: format!("providers.{name}.responses").into(),
                        message,
                    })?;
                Arc::new(ScriptedProvider::new(name, &c.model, entries))
            }
        },
    })
}

/// How a provider's calls are guarded: admission, retries and the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderSettings {
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub admission: AdmissionSettings,
}

impl ProviderSettings {
    /// No retries, no breaker, no limits: every call goes to the provider once.
    pub const NONE: ProviderSettings = ProviderSettings {
        retry: RetryPolicy::NONE,
        breaker: BreakerSettings::DISABLED,
        admission: AdmissionSettings::UNLIMITED,
    };

    pub fn for_config(config: &ProviderConfig) -> ProviderSettings {
        ProviderSettings {
            retry: RetryPolicy::for_config(config),
            breaker: BreakerSettings::for_config(config),
            admission: AdmissionSettings::for_config(config),
        }
    }
}

/// One call through a [`Breaker`]: the result and how many upstream calls it took.
#[derive(Debug)]
pub struct Called<T = ChatResponse> {
    pub result: Result<T, ProviderError>,
    /// Calls that reached the provider (retries included; 0 when the breaker
    /// refused or the deadline had passed).
    pub tries: u32,
}

/// A provider behind its guards. Every call:
///
/// 1. fails at once with [`ProviderError::DeadlineExceeded`] if the
///    request's deadline has passed;
/// 2. asks the [`CircuitBreaker`]: an open breaker fails fast with
///    [`ProviderError::BreakerOpen`], without touching the upstream;
/// 3. takes a slot from the provider's [`Admission`]: at once, after a
///    wait in its queue, or [`ProviderError::Saturated`] (queue full, a
///    wait past the deadline, or a saturated provider the pipeline falls
///    back from);
/// 4. calls the provider, cut at the request's deadline (a cut counts as a
///    failure: the upstream did not answer in the time the run had);
/// 5. reports the outcome to the breaker (backpressure is neutral) and to
///    the admission (a 429, or a 503 with `Retry-After`, saturates it);
/// 6. retries a retryable failure (connect errors, broken connections,
///    timeouts, 408, 429, 5xx) after a full-jitter backoff, or, after
///    backpressure, through the admission again (which holds it until the
///    saturation ends) — unless the upstream's `Retry-After` is longer than
///    the policy's `max_wait` or than what is left before the deadline, or
///    the retries are used up, or the breaker now refuses.
pub struct Breaker {
    provider: Arc<dyn Provider>,
    settings: ProviderSettings,
    circuit: CircuitBreaker,
    admission: Arc<Admission>,
}

impl Breaker {
    pub fn new(provider: Arc<dyn Provider>, settings: ProviderSettings) -> Breaker {
        if settings.breaker.enabled {
            metrics::gauge!(reins_runtime::metric_names::BREAKER_STATE, "provider" => provider.name().to_owned())
                .set(CircuitState::Closed.gauge());
        }
        Breaker {
            circuit: CircuitBreaker::new(settings.breaker),
            admission: Admission::new(provider.name(), settings.admission),
            provider,
            settings,
        }
    }

    /// The provider's limits, saturation and queue.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// How many times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.circuit.trips()
    }

    /// The breaker's state now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.circuit.snapshot(Instant::now())
    }

    /// Calls the provider through the guards (see [`Breaker`]).
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.call(request).await.result
    }

    /// Like [`Breaker::complete`], and says how many upstream calls it took.
    pub async fn call(&self, request: &ChatRequest) -> Called {
        let tokens = self.estimate_tokens(request);
        self.retrying(request.into(), tokens, |tokens| self.once(request, tokens))
            .await
    }

    /// Opens the provider's stream through the same guards as a call, and
    /// hands it on once its first delta arrived: a failure before that
    /// (a refused connection, an error status, a stream that ends or stalls
    /// at once) is retried like a failed call, so the caller sees either a
    /// stream that has started or the error. The breaker and the admission
    /// hear of the outcome when the stream ends ([`Streaming::finish`]).
    pub async fn stream<'b>(&'b self, request: &ChatRequest) -> Called<Streaming<'b>> {
        let tokens = self.estimate_tokens(request);
        self.retrying(request.into(), tokens, |tokens| {
            self.once_stream(request, tokens)
        })
        .await
    }

    /// The retry loop around `once` (see [`Breaker`]).
    async fn retrying<T, F>(
        &self,
        request: Guarded<'_>,
        tokens: u32,
        once: impl Fn(u32) -> F,
    ) -> Called<T>
    where
        F: Future<Output = (Result<T, ProviderError>, u32)>,
    {
        let policy = self.settings.retry;
        let mut tries = 0;
        let mut previous: Option<ProviderError> = None;
        loop {
            let error = match once(tokens).await {
                (Ok(response), reached) => {
                    return Called {
                        result: Ok(response),
                        tries: tries + reached,
                    };
                }
                (Err(e), reached) => {
                    tries += reached;
                    e
                }
            };
            // A retry the breaker refused: the upstream's own error says more.
            if let (ProviderError::BreakerOpen { .. }, Some(previous)) = (&error, previous.take()) {
                return Called {
                    result: Err(previous),
                    tries,
                };
            }
            let retry = tries.saturating_sub(1);
            if !error.retryable() || retry >= policy.max_retries {
                return Called {
                    result: Err(error),
                    tries,
                };
            }
            let wait = match error.retry_after() {
                Some(asked) if asked > policy.max_wait => {
                    tracing::debug!(
                        provider = self.provider.name(),
                        ?asked,
                        "Retry-After is over max_backoff_ms; not retrying"
                    );
                    return Called {
                        result: Err(error),
                        tries,
                    };
                }
                Some(asked) => asked,
                None => policy.backoff(retry),
            };
            if request.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Called {
                    result: Err(error),
                    tries,
                };
            }
            metrics::counter!(reins_runtime::metric_names::PROVIDER_RETRIES_TOTAL, "provider" => self.provider.name().to_owned(), "reason" => error.kind())
                .increment(1);
            tracing::debug!(provider = self.provider.name(), error = %error, retry, ?wait, "retrying model call");
            // After backpressure the admission holds the retry until the
            // saturation ends (in its queue, fairly); other failures back off here.
            if !error.is_backpressure() {
                tokio::time::sleep(wait).await;
            }
            previous = Some(error);
        }
    }

    /// Tokens a call is counted for against `tpm` before it goes: its
    /// prompt and the most it may answer.
    fn estimate_tokens(&self, request: &ChatRequest) -> u32 {
        if self.settings.admission.tpm.is_none() {
            return 1;
        }
        let prompt: u64 = request
            .messages
            .iter()
            .map(|m| crate::tokens::count(&m.content) + crate::tokens::MESSAGE_OVERHEAD)
            .sum();
        let answer = request.sampling.token_limit().unwrap_or(0);
        u32::try_from(prompt + answer).unwrap_or(u32::MAX)
    }

    /// One guarded call; the count is 1 when it reached the provider.
    async fn once(
        &self,
        request: &ChatRequest,
        tokens: u32,
    ) -> (Result<ChatResponse, ProviderError>, u32) {
        self.guarded(
            request.into(),
            tokens,
            || self.provider.complete(request),
            |r| r.usage,
        )
        .await
    }

    /// One call through the admission and the breaker, bounded by the
    /// run's deadline; the count is 1 when it reached the provider.
    async fn guarded<T, F>(
        &self,
        guard: Guarded<'_>,
        tokens: u32,
        call: impl FnOnce() -> F,
        usage: impl Fn(&T) -> Option<Usage>,
    ) -> (Result<T, ProviderError>, u32)
    where
        F: Future<Output = Result<T, ProviderError>>,
    {
        let admitted = match self.admit(guard, tokens).await {
            Ok(a) => a,
            Err(e) => return (Err(e), 0),
        };
        let call = call();
        let result = match admitted.remaining {
            None => call.await,
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(self.deadline_exceeded())),
        };
        let used = result.as_ref().ok().and_then(&usage);
        self.settle(admitted, result.as_ref().map(|_| used).map_err(|e| e));
        (result, 1)
    }

    /// One guarded stream, open once its first delta came.
    async fn once_stream<'b>(
        &'b self,
        request: &ChatRequest,
        tokens: u32,
    ) -> (Result<Streaming<'b>, ProviderError>, u32) {
        let admitted = match self.admit(request.into(), tokens).await {
            Ok(a) => a,
            Err(e) => return (Err(e), 0),
        };
        let deadline = request.deadline;
        let opened = async {
            let mut deltas = self.provider.stream(request).await?;
            match futures_util::StreamExt::next(&mut deltas).await {
                Some(Ok(first)) => Ok((deltas, first)),
                Some(Err(e)) => Err(e),
                None => Err(ProviderError::Interrupted {
                    provider: self.provider.name().to_owned(),
                    message: "the event stream ended before its first event".to_owned(),
                }),
            }
        };
        let opened = match admitted.remaining {
            None => opened.await,
            Some(limit) => tokio::time::timeout(limit, opened)
                .await
                .unwrap_or_else(|_| Err(self.deadline_exceeded())),
        };
        match opened {
            Ok((deltas, first)) => (
                Ok(Streaming {
                    breaker: self,
                    admitted: Some(admitted),
                    deltas,
                    first: Some(first),
                    deadline,
                }),
                1,
            ),
            Err(e) => {
                self.settle(admitted, Err(&e));
                (Err(e), 1)
            }
        }
    }

    /// Embeds texts through the same guards as a chat call: the deadline,
    /// the admission, retries with backoff and the circuit breaker.
    pub async fn embed(&self, request: &EmbedRequest) -> Result<Embeddings, ProviderError> {
        let tokens = if self.settings.admission.tpm.is_none() {
            1
        } else {
            let n: u64 = request.input.iter().map(|t| crate::tokens::count(t)).sum();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        self.retrying(request.into(), tokens, |tokens| {
            self.once_embed(request, tokens)
        })
        .await
        .result
    }

    async fn once_embed(
        &self,
        request: &EmbedRequest,
        tokens: u32,
    ) -> (Result<Embeddings, ProviderError>, u32) {
        self.guarded(
            request.into(),
            tokens,
            || self.provider.embed(request),
            |r| r.usage,
        )
        .await
    }

    fn deadline_exceeded(&self) -> ProviderError {
        ProviderError::DeadlineExceeded {
            provider: self.provider.name().to_owned(),
        }
    }

    /// The guards before a call: the deadline, the admission's slot, then
    /// the breaker's permit.
    async fn admit(
        &self,
        request: Guarded<'_>,
        tokens: u32,
    ) -> Result<Admitted<'_>, ProviderError> {
        let name = self.provider.name();
        let now = Instant::now();
        if request.deadline.is_some_and(|d| d <= now) {
            return Err(self.deadline_exceeded());
        }
        let ask = admission::Ask {
            tenant: &request.turn.tenant,
            tokens,
            deadline: request.deadline,
            on_saturated: request.turn.on_saturated,
        };
        let slot = self
            .admission
            .acquire(ask)
            .await
            .map_err(|refused| ProviderError::saturated(name, refused))?;
        // The breaker is asked after the wait: its state may have changed meanwhile.
        let now = Instant::now();
        let (permit, transition) = self.circuit.acquire(now);
        self.note(transition);
        let permit = match permit {
            Ok(p) => PermitGuard::new(&self.circuit, p),
            Err(refused) => {
                metrics::counter!(reins_runtime::metric_names::BREAKER_REJECTIONS_TOTAL, "provider" => name.to_owned()).increment(1);
                return Err(ProviderError::BreakerOpen {
                    provider: name.to_owned(),
                    failures: refused.failures,
                    calls: refused.calls,
                    retry_in_ms: refused.retry_in.as_millis() as u64,
                });
            }
        };
        Ok(Admitted {
            slot,
            permit,
            remaining: request.deadline.map(|d| d.saturating_duration_since(now)),
        })
    }

    /// The guards after a call: the breaker and the admission hear how it
    /// went (`Ok` with the tokens it used).
    fn settle(&self, admitted: Admitted<'_>, result: Result<Option<Usage>, &ProviderError>) {
        let name = self.provider.name();
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        };
        self.note(admitted.permit.record(outcome, Instant::now()));
        if let Err(e) = result
            && e.is_backpressure()
        {
            self.admission.saturate(e.retry_after());
        }
        admitted.slot.end(admission::Ended {
            signal: match result {
                Ok(_) => admission::Signal::Ok,
                Err(e) if e.is_backpressure() => admission::Signal::Overloaded,
                Err(ProviderError::Timeout { .. } | ProviderError::DeadlineExceeded { .. }) => {
                    admission::Signal::Overloaded
                }
                Err(_) => admission::Signal::Neutral,
            },
            tokens_used: result.ok().flatten().map(|u| u.total_tokens),
        });
        let label = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!(reins_runtime::metric_names::PROVIDER_CALLS_TOTAL, "provider" => name.to_owned(), "outcome" => label).increment(1);
    }

    fn note(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let name = self.provider.name().to_owned();
        metrics::gauge!(reins_runtime::metric_names::BREAKER_STATE, "provider" => name.clone())
            .set(t.to.gauge());
        if t.is_trip() {
            metrics::counter!(reins_runtime::metric_names::BREAKER_TRIPS_TOTAL, "provider" => name.clone()).increment(1);
            tracing::warn!(provider = %name, from = t.from.as_str(), "circuit breaker open");
        } else {
            tracing::info!(provider = %name, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker");
        }
    }
}

/// A call past the guards, holding its slot and permit.
struct Admitted<'b> {
    slot: admission::Slot,
    permit: PermitGuard<'b>,
    /// Until the request's deadline.
    remaining: Option<Duration>,
}

/// A stream that has started, still holding its provider's slot and
/// breaker permit: [`Streaming::finish`] reports how it ended (dropped
/// unfinished, the permit is given back uncounted, as for a cancelled call).
pub struct Streaming<'b> {
    breaker: &'b Breaker,
    admitted: Option<Admitted<'b>>,
    deltas: DeltaStream,
    first: Option<Delta>,
    deadline: Option<Instant>,
}

impl Streaming<'_> {
    /// The next delta; `None` at the end of the answer. A stream still
    /// open at the run's deadline ends with [`ProviderError::DeadlineExceeded`].
    pub async fn next(&mut self) -> Option<Result<Delta, ProviderError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let next = futures_util::StreamExt::next(&mut self.deltas);
        match self.deadline {
            None => next.await,
            Some(d) => tokio::time::timeout_at(d.into(), next)
                .await
                .unwrap_or_else(|_| Some(Err(self.breaker.deadline_exceeded()))),
        }
    }

    /// Reports the stream's outcome to the breaker and the admission.
    pub fn finish(mut self, result: Result<Option<Usage>, &ProviderError>) {
        if let Some(admitted) = self.admitted.take() {
            self.breaker.settle(admitted, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Answers call `n` with `replies[n]` (the last one repeats).
    struct Flaky {
        calls: AtomicU32,
        replies: Vec<Result<(), ProviderError>>,
        delay: Duration,
    }

    fn status(code: u16, retry_after_ms: Option<u64>) -> Result<(), ProviderError> {
        Err(ProviderError::Status {
            provider: "flaky".into(),
            status: code,
            body: String::new(),
            retry_after_ms,
        })
    }

    fn flaky(replies: Vec<Result<(), ProviderError>>) -> Arc<Flaky> {
        Arc::new(Flaky {
            calls: AtomicU32::new(0),
            replies,
            delay: Duration::ZERO,
        })
    }

    impl Provider for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn model(&self) -> &str {
            "m"
        }
        fn complete<'a>(&'a self, _: &'a ChatRequest) -> CompletionFuture<'a> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                let reply = self.replies[n.min(self.replies.len() - 1)].clone();
                reply.map(|()| ChatResponse {
                    content: "{}".into(),
                    tool_calls: vec![],
                    usage: None,
                    model: "m".into(),
                    finish_reason: None,
                })
            })
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn request(deadline: Option<Instant>) -> ChatRequest {
        ChatRequest {
            run_id: "r".into(),
            pipeline: "p".into(),
            attempt: 1,
            messages: vec![],
            schema: None,
            json: true,
            strict: false,
            tools: vec![],
            sampling: Sampling::default(),
            deadline,
            traceparent: None,
            turn: Turn::default(),
        }
    }

    fn settings(max_retries: u32, breaker: BreakerSettings) -> ProviderSettings {
        ProviderSettings {
            retry: RetryPolicy {
                max_retries,
                base: Duration::from_millis(1),
                max_wait: Duration::from_millis(200),
            },
            breaker,
            admission: AdmissionSettings::UNLIMITED,
        }
    }

    fn opens_after(n: u32) -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            failure_rate: 1.0,
            min_calls: n,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(60),
            probes: 1,
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_up_to_the_bound() {
        let p = flaky(vec![status(503, None), status(500, None), Ok(())]);
        let b = Breaker::new(p.clone(), settings(2, BreakerSettings::DISABLED));
        let called = b.call(&request(None)).await;
        assert!(called.result.is_ok());
        assert_eq!((called.tries, p.calls.load(Ordering::SeqCst)), (3, 3));

        let p = flaky(vec![status(500, None)]);
        let b = Breaker::new(p.clone(), settings(2, BreakerSettings::DISABLED));
        let called = b.call(&request(None)).await;
        assert_eq!(called.result.unwrap_err().kind(), "status");
        assert_eq!(
            p.calls.load(Ordering::SeqCst),
            3,
            "one call and two retries"
        );
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried_and_does_not_count_against_the_breaker() {
        let p = flaky(vec![status(400, None)]);
        let b = Breaker::new(p.clone(), settings(3, opens_after(1)));
        for _ in 0..3 {
            assert_eq!(b.call(&request(None)).await.tries, 1);
        }
        assert_eq!(p.calls.load(Ordering::SeqCst), 3);
        assert_eq!(b.snapshot().state, CircuitState::Closed);
    }

    #[tokio::test]
    async fn a_retry_after_over_the_bound_is_not_waited_for() {
        let p = flaky(vec![status(429, Some(60_000)), Ok(())]);
        let b = Breaker::new(p.clone(), settings(3, BreakerSettings::DISABLED));
        let called = b.call(&request(None)).await;
        assert_eq!(
            called.result.unwrap_err().retry_after(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_retry_waits_past_the_deadline_and_no_call_starts_after_it() {
        let p = flaky(vec![status(429, Some(150)), Ok(())]);
        let b = Breaker::new(p.clone(), settings(3, BreakerSettings::DISABLED));
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(
            b.call(&request(Some(deadline)))
                .await
                .result
                .unwrap_err()
                .kind(),
            "status"
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
        let past = Instant::now() - Duration::from_millis(1);
        let called = b.call(&request(Some(past))).await;
        assert_eq!(
            (called.result.unwrap_err().kind(), called.tries),
            ("deadline", 0)
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_hanging_call_is_cut_at_the_deadline_and_counts_as_a_failure() {
        let p = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            replies: vec![Ok(())],
            delay: Duration::from_secs(30),
        });
        let b = Breaker::new(p.clone(), settings(0, opens_after(1)));
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            b.call(&request(Some(deadline)))
                .await
                .result
                .unwrap_err()
                .kind(),
            "deadline"
        );
        assert_eq!(b.snapshot().state, CircuitState::Open);
    }

    #[tokio::test]
    async fn an_open_breaker_fails_fast_and_stops_the_retries() {
        let p = flaky(vec![Err(ProviderError::Timeout {
            provider: "flaky".into(),
            timeout_ms: 1,
        })]);
        let b = Breaker::new(p.clone(), settings(5, opens_after(2)));
        let called = b.call(&request(None)).await;
        // Two calls open the breaker; the refused third returns the upstream's error.
        assert_eq!(
            (called.result.unwrap_err().kind(), called.tries),
            ("timeout", 2)
        );
        let called = b.call(&request(None)).await;
        assert_eq!(
            (called.result.unwrap_err().kind(), called.tries),
            ("breaker_open", 0)
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
        assert_eq!(b.trips(), 1);
        let snap = b.snapshot();
        assert_eq!((snap.state, snap.rejected), (CircuitState::Open, 2));
    }
}
