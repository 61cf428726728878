//! `[providers.NAME]`: the model providers pipelines name.

use super::*;

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
