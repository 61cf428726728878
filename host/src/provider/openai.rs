//! The `openai` provider: OpenAI-compatible chat completions over HTTP.
//!
//! `POST {base_url}/chat/completions` with the conversation, the pipeline's
//! schema as `response_format` (`json_schema`, `json_object` or nothing) and
//! the request's tools; reads the message text, the tool calls and `usage`.
//! The same wire format is served by OpenAI, vLLM, llama.cpp's server and
//! Ollama. One `complete` is one HTTP request, bounded by `connect_timeout_ms`
//! and `timeout_ms` (the whole request, body included, so a slow trickle
//! times out too); retries, `Retry-After` and the circuit breaker are the
//! [`super::Breaker`]'s. A body that is not a chat completion (garbage, a
//! truncated JSON document) is a [`ProviderError::BadResponse`]; a connection
//! that breaks mid-answer is a [`ProviderError::Interrupted`].

use super::{ChatRequest, ChatResponse, CompletionFuture, Provider, ProviderError, ToolCall, Usage};
use crate::config::{OpenAiConfig, ResponseFormat};
use serde_json::{Map, Value, json};
use std::any::Any;
use std::time::{Duration, SystemTime};

/// An OpenAI-compatible HTTP endpoint.
pub struct OpenAiProvider {
    name: String,
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
}

impl OpenAiProvider {
    pub fn new(name: impl Into<String>, config: OpenAiConfig) -> OpenAiProvider {
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the HTTP client; using defaults");
                reqwest::Client::new()
            });
        OpenAiProvider {
            name: name.into(),
            config,
            url,
            client,
        }
    }

    /// The JSON body sent for `request` (see [`wire_messages`]).
    pub fn body(&self, request: &ChatRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.config.model));
        body.insert("messages".into(), Value::Array(wire_messages(&request.messages)));
        if let Some(t) = self.config.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(n) = self.config.max_tokens {
            body.insert("max_tokens".into(), json!(n));
        }
        match (&request.schema, self.config.response_format) {
            (Some(schema), ResponseFormat::JsonSchema) => {
                body.insert(
                    "response_format".into(),
                    json!({
                        "type": "json_schema",
                        "json_schema": {"name": schema_name(&request.pipeline), "schema": schema.as_ref(), "strict": false},
                    }),
                );
            }
            (Some(_), ResponseFormat::JsonObject) => {
                body.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
        if !request.tools.is_empty() {
            body.insert(
                "tools".into(),
                Value::Array(
                    request
                        .tools
                        .iter()
                        .map(|t| {
                            json!({"type": "function", "function": {
                                "name": t.name, "description": t.description, "parameters": t.parameters,
                            }})
                        })
                        .collect(),
                ),
            );
        }
        Value::Object(body)
    }

    async fn send_once(&self, body: &[u8], api_key: Option<&str>) -> Result<ChatResponse, ProviderError> {
        let mut builder = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = if status.is_success() {
            None
        } else {
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
            super::retry::parse_retry_after(header("retry-after-ms"), header("retry-after"), SystemTime::now())
        };
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(ProviderError::Status {
                provider: self.name.clone(),
                status: status.as_u16(),
                body: snippet(&bytes),
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            });
        }
        parse_response(&bytes).map_err(|message| ProviderError::BadResponse {
            provider: self.name.clone(),
            message: format!("{message}; body: {}", snippet(&bytes)),
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return ProviderError::Timeout {
                provider: self.name.clone(),
                timeout_ms: if e.is_connect() {
                    self.config.connect_timeout_ms
                } else {
                    self.config.timeout_ms
                },
            };
        }
        // Walk the source chain: reqwest's own message is terse.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_connect() {
            ProviderError::Connect {
                provider: self.name.clone(),
                url: self.url.clone(),
                message,
            }
        } else {
            // Reset, closed before the answer, or a body cut short.
            ProviderError::Interrupted {
                provider: self.name.clone(),
                message,
            }
        }
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move {
            let api_key = match &self.config.api_key_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| ProviderError::MissingApiKey {
                    provider: self.name.clone(),
                    var: var.clone(),
                })?),
            };
            let body = serde_json::to_vec(&self.body(request)).map_err(|e| ProviderError::BadResponse {
                provider: self.name.clone(),
                message: format!("cannot encode the request: {e}"),
            })?;
            self.send_once(&body, api_key.as_deref()).await
        })
    }

    fn params(&self) -> Value {
        json!({
            "model": self.config.model,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "response_format": self.config.response_format,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `json_schema.name` must match `^[a-zA-Z0-9_-]{1,64}$`.
fn schema_name(pipeline: &str) -> String {
    let name: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() { "output".to_owned() } else { name }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Reads a chat-completions response body.
pub fn parse_response(bytes: &[u8]) -> Result<ChatResponse, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let message = body.pointer("/choices/0/message").ok_or("no choices[0].message")?;
    let content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Some servers send content parts: [{"type": "text", "text": "..."}].
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        Some(other) => return Err(format!("choices[0].message.content is {other}")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let function = call.get("function").ok_or("a tool call without `function`")?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a tool call without a name")?;
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
                Some(v) => v.clone(),
            };
            tool_calls.push(ToolCall {
                name: name.to_owned(),
                arguments,
            });
        }
    }
    let usage = body
        .get("usage")
        .filter(|u| u.is_object())
        .map(|u| serde_json::from_value::<Usage>(u.clone()))
        .transpose()
        .map_err(|e| format!("bad usage: {e}"))?
        .map(|mut u| {
            if u.total_tokens == 0 {
                u.total_tokens = u.prompt_tokens + u.completion_tokens;
            }
            u
        });
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(ChatResponse {
        content,
        tool_calls,
        usage,
        model,
    })
}

/// Messages in OpenAI's chat format. An agent run records a turn as an
/// `assistant` message whose content is `{"tool_calls": [{name, arguments}]}`
/// followed by one `tool` message per call; OpenAI wants the calls as
/// `tool_calls` with ids and each result tagged with its call's id, so
/// those are rewritten (ids are positional, hence stable across resumes).
pub fn wire_messages(messages: &[crate::runtime::Message]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    let mut open: std::collections::VecDeque<String> = Default::default();
    for (i, m) in messages.iter().enumerate() {
        // Only a turn that the next message answers (an output that merely
        // has a `tool_calls` field stays text).
        let answered = messages.get(i + 1).is_some_and(|n| n.role == "tool");
        let calls = (m.role == "assistant" && answered)
            .then(|| serde_json::from_str::<Value>(&m.content).ok())
            .flatten()
            .and_then(|v| v.get("tool_calls").and_then(Value::as_array).cloned());
        if let Some(calls) = calls {
            open.clear();
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let id = format!("call_{i}_{j}");
                    open.push_back(id.clone());
                    let arguments = match c.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => "{}".to_owned(),
                    };
                    json!({"id": id, "type": "function", "function": {"name": c.get("name").cloned().unwrap_or(Value::Null), "arguments": arguments}})
                })
                .collect();
            out.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
        } else if m.role == "tool" {
            match open.pop_front() {
                Some(id) => out.push(json!({"role": "tool", "tool_call_id": id, "content": m.content})),
                // A result with no call before it: OpenAI would refuse it as a tool message.
                None => out.push(json!({"role": "user", "content": m.content})),
            }
        } else {
            open.clear();
            out.push(json!({"role": m.role, "content": m.content}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_turns_become_tool_calls_with_ids() {
        use crate::runtime::Message;
        let calls = json!({"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]});
        let wire = wire_messages(&[
            Message::new("user", "go"),
            Message::new("assistant", calls.to_string()),
            Message::new("tool", "r1"),
            Message::new("tool", "r2"),
            Message::new("assistant", "plain {\"tool_calls\": 1} text"),
        ]);
        assert_eq!(wire[1]["tool_calls"][0]["id"], "call_1_0");
        assert_eq!(wire[1]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(wire[2], json!({"role": "tool", "tool_call_id": "call_1_0", "content": "r1"}));
        assert_eq!(wire[3]["tool_call_id"], "call_1_1");
        assert_eq!(wire[4], json!({"role": "assistant", "content": "plain {\"tool_calls\": 1} text"}));
    }

    #[test]
    fn parses_content_tool_calls_and_usage() {
        let r = parse_response(
            br#"{"model": "m", "choices": [{"message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3}}"#,
        )
        .unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls[0].arguments, json!({"a": 1}));
        assert_eq!(r.usage.unwrap().total_tokens, 10);
        assert!(parse_response(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            parse_response(br#"{"choices": []}"#)
                .unwrap_err()
                .contains("choices[0]")
        );
    }

    #[test]
    fn schema_names_are_sanitized() {
        assert_eq!(schema_name("contract risks/v1"), "contract_risks_v1");
    }
}
