//! The `openai` provider: OpenAI-compatible chat completions over HTTP.
//!
//! `POST {base_url}/chat/completions` with the whole conversation (tool
//! calls, tool results, multi-part content), the sampling parameters, the
//! pipeline's schema as `response_format` and the request's tools; reads the
//! message text, the tool calls and `usage`. With `response_format = "auto"`
//! (the default) the provider negotiates the structured-output mode: a
//! server that refuses `json_schema` is asked again at once with
//! `json_object` and the schema, then `json_object`, then nothing, and the
//! mode that works is kept (and shown on `GET /v1/providers`).
//! The same wire format is served by OpenAI, vLLM, llama.cpp's server and
//! Ollama. One `complete` is one HTTP request, bounded by `connect_timeout_ms`
//! and `timeout_ms` (the whole request, body included, so a slow trickle
//! times out too); retries, `Retry-After` and the circuit breaker are the
//! [`super::Breaker`]'s. A body that is not a chat completion (garbage, a
//! truncated JSON document) is a [`ProviderError::BadResponse`]; a connection
//! that breaks mid-answer is a [`ProviderError::Interrupted`].

use super::stream::{Delta, StreamFuture};
use super::{
    ChatRequest, ChatResponse, CompletionFuture, EmbedFuture, EmbedRequest, Embeddings, Provider,
    ProviderError, ToolCall, ToolChoice, Usage,
};
use crate::config::{OpenAiConfig, ResponseFormat};
use reins_runtime::Message;
use serde_json::{Map, Value, json};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An OpenAI-compatible HTTP endpoint.
pub struct OpenAiProvider {
    name: String,
    config: OpenAiConfig,
    url: String,
    /// `{base_url}/embeddings`.
    embeddings_url: String,
    client: reqwest::Client,
    /// The structured-output mode that works with this server (`auto`
    /// negotiation): an index into [`LADDER`], only ever moving down, for
    /// the life of the process.
    negotiated: AtomicUsize,
}

/// Structured-output modes, strictest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `{"type": "json_schema", "json_schema": {...}}` (OpenAI, vLLM, Ollama).
    JsonSchema,
    /// `{"type": "json_object", "schema": {...}}` (llama.cpp's servers).
    JsonObjectSchema,
    /// `{"type": "json_object"}`.
    JsonObject,
    /// No `response_format`: the prompt alone asks for JSON.
    None,
}

const LADDER: [Mode; 4] = [
    Mode::JsonSchema,
    Mode::JsonObjectSchema,
    Mode::JsonObject,
    Mode::None,
];

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::JsonSchema => "json_schema",
            Mode::JsonObjectSchema => "json_object+schema",
            Mode::JsonObject => "json_object",
            Mode::None => "none",
        }
    }
}

impl OpenAiProvider {
    pub fn new(name: impl Into<String>, config: OpenAiConfig) -> OpenAiProvider {
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let embeddings_url = format!("{}/embeddings", config.base_url.trim_end_matches('/'));
        let client = super::http::client(&config.http);
        let first = match config.response_format {
            ResponseFormat::Auto | ResponseFormat::JsonSchema => 0,
            ResponseFormat::JsonObject => 2,
            ResponseFormat::None => 3,
        };
        OpenAiProvider {
            name: name.into(),
            config,
            url,
            embeddings_url,
            client,
            negotiated: AtomicUsize::new(first),
        }
    }

    /// The structured-output mode requests use now.
    fn mode(&self) -> Mode {
        LADDER[self
            .negotiated
            .load(Ordering::Relaxed)
            .min(LADDER.len() - 1)]
    }

    /// The JSON body sent for `request` in the mode negotiated so far.
    pub fn body(&self, request: &ChatRequest) -> Value {
        self.body_in(request, self.mode())
    }

    fn body_in(&self, request: &ChatRequest, mode: Mode) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.config.model));
        body.insert(
            "messages".into(),
            Value::Array(wire_messages(&request.messages)),
        );
        let s = &request.sampling;
        let temperature = s.temperature.or(self.config.temperature.map(f64::from));
        if let Some(t) = temperature {
            body.insert("temperature".into(), json!(t));
        }
        match (
            s.max_tokens,
            s.max_completion_tokens,
            self.config.max_tokens,
        ) {
            (None, None, Some(n)) => {
                body.insert("max_tokens".into(), json!(n));
            }
            (max, completion, _) => {
                if let Some(n) = max {
                    body.insert("max_tokens".into(), json!(n));
                }
                if let Some(n) = completion {
                    body.insert("max_completion_tokens".into(), json!(n));
                }
            }
        }
        let optional: [(&str, Option<Value>); 7] = [
            ("top_p", s.top_p.map(|v| json!(v))),
            ("stop", (!s.stop.is_empty()).then(|| json!(s.stop))),
            ("seed", s.seed.map(|v| json!(v))),
            ("presence_penalty", s.presence_penalty.map(|v| json!(v))),
            ("frequency_penalty", s.frequency_penalty.map(|v| json!(v))),
            ("logit_bias", s.logit_bias.clone().map(Value::Object)),
            ("user", s.user.clone().map(Value::String)),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                body.insert(key.into(), v);
            }
        }
        if request.json {
            let format = match (&request.schema, mode) {
                (Some(schema), Mode::JsonSchema) => Some(json!({
                    "type": "json_schema",
                    "json_schema": {"name": schema_name(&request.pipeline), "schema": schema.as_ref(), "strict": request.strict},
                })),
                (Some(schema), Mode::JsonObjectSchema) => {
                    Some(json!({"type": "json_object", "schema": schema.as_ref()}))
                }
                (_, Mode::None) => None,
                _ => Some(json!({"type": "json_object"})),
            };
            if let Some(f) = format {
                body.insert("response_format".into(), f);
            }
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
            if let Some(choice) = &s.tool_choice {
                body.insert(
                    "tool_choice".into(),
                    match choice {
                        ToolChoice::Auto => json!("auto"),
                        ToolChoice::None => json!("none"),
                        ToolChoice::Required => json!("required"),
                        ToolChoice::Tool(name) => {
                            json!({"type": "function", "function": {"name": name}})
                        }
                    },
                );
            }
            if let Some(p) = s.parallel_tool_calls {
                body.insert("parallel_tool_calls".into(), json!(p));
            }
        }
        Value::Object(body)
    }

    /// Whether `error` is the server refusing the structured-output mode
    /// (rather than an outage or the conversation itself).
    fn refuses_format(error: &ProviderError) -> bool {
        let ProviderError::Status { status, body, .. } = error else {
            return false;
        };
        if *status == 429 || *status == 408 || *status < 400 {
            return false;
        }
        let body = body.to_ascii_lowercase();
        ["response_format", "json_schema", "json_object", "schema"]
            .iter()
            .any(|k| body.contains(k))
    }

    /// One request, stepping down the structured-output ladder while the
    /// server refuses the mode (`response_format = "auto"`): each refusal is
    /// retried at once with the next mode, and the mode that works is kept
    /// for the provider's life.
    async fn negotiate<T, F, Fut>(&self, request: &ChatRequest, send: F) -> Result<T, ProviderError>
    where
        F: Fn(Value) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let negotiates = self.config.response_format == ResponseFormat::Auto && request.json;
        loop {
            let at = self
                .negotiated
                .load(Ordering::Relaxed)
                .min(LADDER.len() - 1);
            let mode = LADDER[at];
            let result = send(self.body_in(request, mode)).await;
            match result {
                Err(e) if negotiates && at + 1 < LADDER.len() && Self::refuses_format(&e) => {
                    let next = LADDER[at + 1];
                    // Another request may have stepped down meanwhile: only move down.
                    if self
                        .negotiated
                        .compare_exchange(at, at + 1, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        tracing::warn!(
                            provider = %self.name,
                            refused = mode.as_str(),
                            now = next.as_str(),
                            error = %e,
                            "the server refused the structured-output mode; using the next one from now on"
                        );
                        metrics::counter!(reins_runtime::metric_names::PROVIDER_FORMAT_DOWNGRADES_TOTAL, "provider" => self.name.clone(), "to" => next.as_str())
                            .increment(1);
                    }
                }
                other => return other,
            }
        }
    }

    fn encode(&self, body: &Value) -> Result<Vec<u8>, ProviderError> {
        serde_json::to_vec(body).map_err(|e| ProviderError::BadResponse {
            provider: self.name.clone(),
            message: format!("cannot encode the request: {e}"),
        })
    }

    fn post(
        &self,
        body: Vec<u8>,
        api_key: Option<&str>,
        traceparent: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut builder = crate::telemetry::traced(
            self.client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
            traceparent,
        );
        if let Some(key) = api_key {
            builder = builder.bearer_auth(key);
        }
        builder
    }

    fn api_key(&self) -> Result<Option<String>, ProviderError> {
        match &self.config.api_key_env {
            None => Ok(None),
            Some(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| ProviderError::MissingApiKey {
                    provider: self.name.clone(),
                    var: var.clone(),
                }),
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

    fn system(&self) -> &'static str {
        "openai"
    }

    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move {
            let api_key = self.api_key()?;
            let key = api_key.as_deref();
            self.negotiate(request, |body| async move {
                super::http::exchange(
                    &self.name,
                    &self.url,
                    &self.config.http,
                    self.post(self.encode(&body)?, key, request.traceparent.as_deref()),
                    parse_response,
                )
                .await
            })
            .await
        })
    }

    /// The upstream's event stream, with the usage asked for at its end;
    /// the structured-output mode is negotiated as for a call.
    fn stream<'a>(&'a self, request: &'a ChatRequest) -> StreamFuture<'a> {
        Box::pin(async move {
            let api_key = self.api_key()?;
            let key = api_key.as_deref();
            self.negotiate(request, |mut body| async move {
                body["stream"] = json!(true);
                body["stream_options"] = json!({"include_usage": true});
                super::stream::open(
                    &self.name,
                    &self.url,
                    &self.config.http,
                    self.post(self.encode(&body)?, key, request.traceparent.as_deref()),
                    super::stream::Parsers {
                        event: parse_event,
                        whole: parse_response,
                    },
                )
                .await
            })
            .await
        })
    }

    fn embed<'a>(&'a self, request: &'a EmbedRequest) -> EmbedFuture<'a> {
        Box::pin(async move {
            let api_key = self.api_key()?;
            let mut body = json!({
                "model": request.model.as_deref().unwrap_or(&self.config.model),
                "input": request.input,
                "encoding_format": "float",
            });
            if let Some(d) = request.dimensions {
                body["dimensions"] = json!(d);
            }
            let mut builder = self
                .client
                .post(&self.embeddings_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(self.encode(&body)?);
            if let Some(key) = api_key.as_deref() {
                builder = builder.bearer_auth(key);
            }
            let out = super::http::exchange(
                &self.name,
                &self.embeddings_url,
                &self.config.http,
                builder,
                parse_embeddings,
            )
            .await?;
            if out.vectors.len() != request.input.len() {
                return Err(ProviderError::BadResponse {
                    provider: self.name.clone(),
                    message: format!(
                        "asked for {} embeddings, got {}",
                        request.input.len(),
                        out.vectors.len()
                    ),
                });
            }
            Ok(out)
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

    fn can_tighten(&self) -> bool {
        // `strict: true` exists only for json_schema; a server that took
        // json_object with the schema already decodes under its grammar.
        self.mode() == Mode::JsonSchema
    }

    fn status(&self) -> Value {
        json!({"response_format": self.config.response_format, "structured_output": self.mode().as_str()})
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An OpenAI embeddings answer: `data[i].embedding`, put back in input
/// order by `data[i].index`.
pub fn parse_embeddings(bytes: &[u8]) -> Result<Embeddings, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    let mut vectors: Vec<(usize, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .map_or(i, |n| n as usize);
        let embedding = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("data[{i}] has no `embedding` array"))?;
        let vector = embedding
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| {
                format!(
                    "data[{i}].embedding is not a list of numbers (a server without pooling answers one vector per token: start it with mean pooling)"
                )
            })?;
        vectors.push((index, vector));
    }
    vectors.sort_by_key(|(i, _)| *i);
    let usage = body.get("usage").and_then(|u| {
        let prompt = u.get("prompt_tokens")?.as_u64()?;
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: 0,
            total_tokens: u
                .get("total_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(prompt),
        })
    });
    Ok(Embeddings {
        vectors: vectors.into_iter().map(|(_, v)| v).collect(),
        usage,
    })
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
    if name.is_empty() {
        "output".to_owned()
    } else {
        name
    }
}

/// Reads a chat-completions response body.
pub fn parse_response(bytes: &[u8]) -> Result<ChatResponse, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let message = body
        .pointer("/choices/0/message")
        .ok_or("no choices[0].message")?;
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
            let function = call
                .get("function")
                .ok_or("a tool call without `function`")?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a tool call without a name")?;
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                }
                Some(v) => v.clone(),
            };
            tool_calls.push(ToolCall {
                id: call.get("id").and_then(Value::as_str).map(str::to_owned),
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
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let finish_reason = body["choices"][0]
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(ChatResponse {
        content,
        tool_calls,
        usage,
        model,
        finish_reason,
    })
}

/// One `chat.completion.chunk` event as deltas; `[DONE]` ends the stream.
pub fn parse_event(_event: &str, data: &str) -> Result<Option<Vec<Delta>>, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(None);
    }
    if data.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let chunk: Value = serde_json::from_str(data).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        return Err(format!("the upstream sent an error: {error}"));
    }
    let mut out = Vec::new();
    if let Some(model) = chunk.get("model").and_then(Value::as_str) {
        out.push(Delta::Model(model.to_owned()));
    }
    if let Some(choice) = chunk.pointer("/choices/0") {
        let delta = &choice["delta"];
        match delta.get("content") {
            Some(Value::String(t)) if !t.is_empty() => out.push(Delta::Text(t.clone())),
            _ => {}
        }
        for (i, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let text = |k: &str| call.pointer(k).and_then(Value::as_str).map(str::to_owned);
            out.push(Delta::ToolCall {
                index: call
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(i, |n| n as usize),
                id: text("/id"),
                name: text("/function/name"),
                arguments: text("/function/arguments").unwrap_or_default(),
            });
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(Delta::Finish(reason.to_owned()));
        }
    }
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        let usage: Usage =
            serde_json::from_value(usage.clone()).map_err(|e| format!("bad usage: {e}"))?;
        out.push(Delta::Usage(usage));
    }
    Ok(Some(out))
}

/// Messages in OpenAI's chat format, with their whole structure: an
/// assistant's `tool_calls`, a tool result's `tool_call_id`, `name`, and
/// multi-part content as it came (text parts carry the normalized text).
///
/// Agent runs recorded before messages had structure stored a turn as an
/// `assistant` message whose content is `{"tool_calls": [{name, arguments}]}`
/// followed by `tool` messages without ids; those are rewritten to real
/// `tool_calls` with positional ids (stable across resumes).
pub fn wire_messages(messages: &[Message]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    let mut open: std::collections::VecDeque<String> = Default::default();
    for (i, m) in messages.iter().enumerate() {
        if m.role == "assistant" && !m.tool_calls.is_empty() {
            open.clear();
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                json!(m.content)
            };
            out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
            continue;
        }
        if m.role == "tool" {
            let id = m.tool_call_id.clone().or_else(|| open.pop_front());
            match id {
                Some(id) => {
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": content_of(m)}))
                }
                // A result with no call before it: OpenAI would refuse it as a tool message.
                None => out.push(json!({"role": "user", "content": content_of(m)})),
            }
            continue;
        }
        // A legacy agent turn: only one that the next message answers (an
        // output that merely has a `tool_calls` field stays text).
        let answered = messages
            .get(i + 1)
            .is_some_and(|n| n.role == "tool" && n.tool_call_id.is_none());
        let legacy = (m.role == "assistant" && answered)
            .then(|| serde_json::from_str::<Value>(&m.content).ok())
            .flatten()
            .and_then(|v| v.get("tool_calls").and_then(Value::as_array).cloned());
        if let Some(calls) = legacy {
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
            continue;
        }
        open.clear();
        let mut wire = json!({"role": m.role, "content": content_of(m)});
        if let Some(name) = &m.name {
            wire["name"] = json!(name);
        }
        out.push(wire);
    }
    out
}

/// A message's content on the wire: its parts when it came in parts, else
/// its text; a failed tool result is marked (OpenAI has no error flag).
fn content_of(m: &Message) -> Value {
    let content = match &m.parts {
        Some(parts) => Value::Array(parts.clone()),
        None => Value::String(m.content.clone()),
    };
    if m.is_error {
        reins_runtime::mark_tool_error(content)
    } else {
        content
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_messages_go_out_as_they_came() {
        use reins_runtime::{Message, MessageToolCall};
        let image =
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}});
        let mut user = Message::new("user", "look").with_text("look".into());
        user.parts = Some(vec![json!({"type": "text", "text": "look"}), image.clone()]);
        let user = user.with_text("look closely".into());
        let wire = wire_messages(&[
            user,
            Message::tool_calls(
                "",
                vec![MessageToolCall {
                    id: "call_9".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
            ),
            Message::tool_result("call_9", "42"),
        ]);
        assert_eq!(
            wire[0]["content"],
            json!([{"type": "text", "text": "look closely"}, image])
        );
        assert_eq!(
            wire[1],
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]})
        );
        assert_eq!(
            wire[2],
            json!({"role": "tool", "tool_call_id": "call_9", "content": "42"})
        );
    }

    #[test]
    fn agent_turns_become_tool_calls_with_ids() {
        use reins_runtime::Message;
        let calls = json!({"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]});
        let wire = wire_messages(&[
            Message::new("user", "go"),
            Message::new("assistant", calls.to_string()),
            Message::new("tool", "r1"),
            Message::new("tool", "r2"),
            Message::new("assistant", "plain {\"tool_calls\": 1} text"),
        ]);
        assert_eq!(wire[1]["tool_calls"][0]["id"], "call_1_0");
        assert_eq!(
            wire[1]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(
            wire[2],
            json!({"role": "tool", "tool_call_id": "call_1_0", "content": "r1"})
        );
        assert_eq!(wire[3]["tool_call_id"], "call_1_1");
        assert_eq!(
            wire[4],
            json!({"role": "assistant", "content": "plain {\"tool_calls\": 1} text"})
        );
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
