//! Model providers: where a pipeline's model calls go.
//!
//! - [`openai::OpenAiProvider`]: OpenAI-compatible chat completions over HTTP
//!   (OpenAI, vLLM, llama.cpp server, Ollama), with timeouts and retries with
//!   jittered backoff.
//! - [`scripted::ScriptedProvider`]: replays responses from a file, for
//!   offline runs and tests, and records every request it was sent.
//!
//! Every provider is wrapped in a [`Breaker`] (one circuit breaker per
//! provider); the pipeline walks the fallback chain when a provider is
//! unavailable.

use crate::config::{ConfigError, ProviderConfig};
use crate::runtime::{Message, Tool};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod openai;
pub mod scripted;

pub use openai::OpenAiProvider;
pub use scripted::{ScriptEntry, ScriptedProvider};

/// One model call.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub run_id: String,
    pub pipeline: String,
    /// 1 for the first attempt, 2 for the first repair...
    pub attempt: u32,
    pub messages: Vec<Message>,
    /// The pipeline's output schema, for providers that can constrain decoding.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_schema")]
    pub schema: Option<Arc<Value>>,
    /// The tools this request may use (from the constraints plugin).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
}

fn serialize_schema<S: serde::Serializer>(schema: &Option<Arc<Value>>, s: S) -> Result<S::Ok, S::Error> {
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
    },
    #[error("provider `{provider}`: unreadable response: {message}")]
    BadResponse { provider: String, message: String },
    #[error("provider `{provider}`: environment variable {var} (api_key_env) is not set")]
    MissingApiKey { provider: String, var: String },
    #[error(
        "provider `{provider}`: circuit breaker open after {failures} consecutive failures; retrying in {retry_in_ms} ms"
    )]
    BreakerOpen {
        provider: String,
        failures: u32,
        retry_in_ms: u64,
    },
    #[error("provider `{provider}`: the script has no response for attempt {attempt}")]
    ScriptExhausted { provider: String, attempt: u32 },
    #[error("provider `{provider}`: {message}")]
    Scripted { provider: String, message: String },
}

impl ProviderError {
    /// Worth retrying on the same provider (the failure may be transient).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } | ProviderError::Timeout { .. } => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A stable short name for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Status { .. } => "status",
            ProviderError::BadResponse { .. } => "bad_response",
            ProviderError::MissingApiKey { .. } => "missing_api_key",
            ProviderError::BreakerOpen { .. } => "breaker_open",
            ProviderError::ScriptExhausted { .. } => "script_exhausted",
            ProviderError::Scripted { .. } => "scripted",
        }
    }
}

/// A boxed future of a model call.
pub type CompletionFuture<'a> = Pin<Box<dyn Future<Output = Result<ChatResponse, ProviderError>> + Send + 'a>>;

/// A model behind a chat-completions interface.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name in the config.
    fn name(&self) -> &str;
    /// The model it calls, for traces.
    fn model(&self) -> &str;
    /// One chat completion (retries on transient failures are the provider's job).
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a>;
    /// For downcasting to a concrete provider (e.g. a test's [`ScriptedProvider`]).
    fn as_any(&self) -> &dyn Any;
}

/// Builds the provider a config entry describes. Relative paths resolve against `base_dir`.
pub fn from_config(name: &str, config: &ProviderConfig, base_dir: &Path) -> Result<Arc<dyn Provider>, ConfigError> {
    Ok(match config {
        ProviderConfig::Openai(c) => Arc::new(OpenAiProvider::new(name, c.clone())),
        ProviderConfig::Scripted(c) => match (&c.file, &c.responses) {
            (Some(file), _) => Arc::new(ScriptedProvider::from_file(name, &c.model, &base_dir.join(file))?),
            (None, responses) => {
                let entries =
                    ScriptedProvider::from_values(responses.clone().unwrap_or_default()).map_err(|message| {
                        ConfigError::Script {
                            path: format!("providers.{name}.responses").into(),
                            message,
                        }
                    })?;
                Arc::new(ScriptedProvider::new(name, &c.model, entries))
            }
        },
    })
}

/// Settings of a provider's circuit breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (0 = never).
    pub threshold: u32,
    pub cooldown: Duration,
}

impl BreakerSettings {
    pub fn for_config(config: &ProviderConfig) -> BreakerSettings {
        match config {
            ProviderConfig::Openai(c) => BreakerSettings {
                threshold: c.breaker_threshold,
                cooldown: Duration::from_millis(c.breaker_cooldown_ms),
            },
            // A script is deterministic: a breaker would only hide its errors.
            ProviderConfig::Scripted(_) => BreakerSettings {
                threshold: 0,
                cooldown: Duration::ZERO,
            },
        }
    }
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    trips: u64,
}

/// A provider behind its circuit breaker: after `threshold` consecutive
/// failures it refuses calls for `cooldown`, then lets one through (half
/// open); a success closes it.
pub struct Breaker {
    provider: Arc<dyn Provider>,
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

impl Breaker {
    pub fn new(provider: Arc<dyn Provider>, settings: BreakerSettings) -> Breaker {
        Breaker {
            provider,
            settings,
            state: Mutex::new(BreakerState::default()),
        }
    }

    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// How many times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls the provider unless the breaker is open.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        if self.settings.threshold > 0 {
            let mut state = self.lock();
            if let Some(until) = state.open_until {
                let now = Instant::now();
                if now < until {
                    return Err(ProviderError::BreakerOpen {
                        provider: self.provider.name().to_owned(),
                        failures: state.failures,
                        retry_in_ms: until.duration_since(now).as_millis() as u64,
                    });
                }
                // Half open: let this call through; a failure re-opens at once.
                state.open_until = None;
                state.failures = self.settings.threshold.saturating_sub(1);
            }
        }
        let result = self.provider.complete(request).await;
        if self.settings.threshold > 0 {
            let mut state = self.lock();
            match &result {
                Ok(_) => state.failures = 0,
                Err(e) if e.retryable() || matches!(e, ProviderError::BadResponse { .. }) => {
                    state.failures += 1;
                    if state.failures >= self.settings.threshold {
                        state.open_until = Some(Instant::now() + self.settings.cooldown);
                        state.trips += 1;
                        tracing::warn!(
                            provider = self.provider.name(),
                            failures = state.failures,
                            "circuit breaker open"
                        );
                    }
                }
                Err(_) => {}
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl Provider for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn model(&self) -> &str {
            "m"
        }
        fn complete<'a>(&'a self, _: &'a ChatRequest) -> CompletionFuture<'a> {
            Box::pin(async {
                Err(ProviderError::Timeout {
                    provider: "failing".into(),
                    timeout_ms: 1,
                })
            })
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[tokio::test]
    async fn breaker_opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(
            Arc::new(Failing),
            BreakerSettings {
                threshold: 2,
                cooldown: Duration::from_millis(30),
            },
        );
        let req = ChatRequest {
            run_id: "r".into(),
            pipeline: "p".into(),
            attempt: 1,
            messages: vec![],
            schema: None,
            tools: vec![],
        };
        assert_eq!(b.complete(&req).await.unwrap_err().kind(), "timeout");
        assert_eq!(b.complete(&req).await.unwrap_err().kind(), "timeout");
        assert_eq!(b.complete(&req).await.unwrap_err().kind(), "breaker_open");
        assert_eq!(b.trips(), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Half open: one call goes through, fails, and re-opens the breaker.
        assert_eq!(b.complete(&req).await.unwrap_err().kind(), "timeout");
        assert_eq!(b.complete(&req).await.unwrap_err().kind(), "breaker_open");
        assert_eq!(b.trips(), 2);
    }
}
