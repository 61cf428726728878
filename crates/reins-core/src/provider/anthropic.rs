//! The `anthropic` provider: the Anthropic Messages API over HTTP.
//!
//! `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`, the whole conversation translated:
//!
//! - `system` (and `developer`) messages → the top-level `system`, joined by
//!   blank lines, in order;
//! - an assistant's `tool_calls` → `tool_use` blocks (`input` = the parsed
//!   arguments);
//! - `tool` messages → `tool_result` blocks (`is_error` kept), consecutive
//!   ones (and a user message right after them) in one `user` message;
//! - OpenAI-shaped `image_url` parts → `image` blocks (a `data:` URL as a
//!   base64 source, else a URL source); other non-text parts go as they came;
//! - sampling → `temperature` (clamped to Anthropic's 0–1), `top_p`,
//!   `max_tokens` (the provider's `max_tokens` when nobody set one: the API
//!   requires it), `stop_sequences`, `metadata.user_id`; tools →
//!   `{name, description, input_schema}`; `tool_choice` → `auto` / `any` /
//!   `tool` / `none`, `parallel_tool_calls = false` →
//!   `disable_parallel_tool_use`. `seed`, the penalties and `logit_bias` have
//!   no Anthropic equivalent and are not sent.
//!
//! The Messages API has no structured-output mode, so a JSON answer is asked
//! for in the system prompt ([`JSON_INSTRUCTION`], with the schema); the
//! harness validates what comes back as always. The answer's `text` blocks
//! are the content, `tool_use` blocks the tool calls (with their ids), and
//! `usage` (input + cache tokens, output tokens) the tokens. Errors are
//! those of every HTTP provider ([`super::http`]): 429, 529 (overloaded) and
//! 5xx are retried by the [`super::Breaker`], honouring `retry-after`; 400,
//! 413 and 422 are refusals that go back to the caller.

use super::stream::{Delta, StreamFuture};
use super::{
    ChatRequest, ChatResponse, CompletionFuture, Provider, ProviderError, ToolCall, ToolChoice,
    Usage,
};
use crate::config::AnthropicConfig;
use reins_runtime::Message;
use serde_json::{Map, Value, json};
use std::any::Any;

/// The `anthropic-version` header sent with every call.
pub const API_VERSION: &str = "2023-06-01";

/// Appended to the system prompt when the answer must be one JSON document.
pub const JSON_INSTRUCTION: &str = "Answer with exactly one JSON document and nothing else: no prose before or after it, no code fences.";

/// The Anthropic Messages API.
pub struct AnthropicProvider {
    name: String,
    config: AnthropicConfig,
    url: String,
    client: reqwest::Client,
}

impl AnthropicProvider {
    pub fn new(name: impl Into<String>, config: AnthropicConfig) -> AnthropicProvider {
        let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
        let client = super::http::client(&config.http);
        AnthropicProvider {
            name: name.into(),
            config,
            url,
            client,
        }
    }

    /// The JSON body sent for `request`.
    pub fn body(&self, request: &ChatRequest) -> Value {
        let (system, messages) = wire_messages(&request.messages);
        let mut system = system;
        if request.json {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(JSON_INSTRUCTION);
            if let Some(schema) = &request.schema {
                system.push_str("\nIt must validate against this JSON Schema:\n");
                system.push_str(&schema.to_string());
            }
        }
        let s = &request.sampling;
        let mut body = Map::new();
        body.insert("model".into(), json!(self.config.model));
        body.insert(
            "max_tokens".into(),
            json!(s.token_limit().unwrap_or(u64::from(self.config.max_tokens))),
        );
        if !system.is_empty() {
            body.insert("system".into(), json!(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        // Anthropic's range is 0-1 (a repair strategy may raise it to 2).
        if let Some(t) = s.temperature.or(self.config.temperature.map(f64::from)) {
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = s.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !s.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(s.stop));
        }
        if let Some(user) = &s.user {
            body.insert("metadata".into(), json!({"user_id": user}));
        }
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| {
                    let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                    if !t.description.is_empty() {
                        tool["description"] = json!(t.description);
                    }
                    tool
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            let serial = s.parallel_tool_calls == Some(false);
            if s.tool_choice.is_some() || serial {
                let mut choice = match &s.tool_choice {
                    None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
                    Some(ToolChoice::Required) => json!({"type": "any"}),
                    Some(ToolChoice::None) => json!({"type": "none"}),
                    Some(ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
                };
                if serial && s.tool_choice != Some(ToolChoice::None) {
                    choice["disable_parallel_tool_use"] = json!(true);
                }
                body.insert("tool_choice".into(), choice);
            }
        }
        let unsent: Vec<&str> = [
            ("seed", s.seed.is_some()),
            ("presence_penalty", s.presence_penalty.is_some()),
            ("frequency_penalty", s.frequency_penalty.is_some()),
            ("logit_bias", s.logit_bias.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if !unsent.is_empty() {
            tracing::debug!(provider = %self.name, ?unsent, "no Anthropic equivalent; not sent");
        }
        Value::Object(body)
    }

    /// The request, ready to send (`stream`: ask for the event stream).
    fn post(
        &self,
        request: &ChatRequest,
        api_key: Option<&str>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut body = self.body(request);
        if stream {
            body["stream"] = json!(true);
        }
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::BadResponse {
            provider: self.name.clone(),
            message: format!("cannot encode the request: {e}"),
        })?;
        let mut builder = crate::telemetry::traced(
            self.client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("anthropic-version", API_VERSION)
                .body(body),
            request.traceparent.as_deref(),
        );
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
                ProviderError::MissingApiKey {
                    provider: self.name.clone(),
                    var: self.config.api_key_env.clone(),
                }
            })?;
            value.set_sensitive(true);
            builder = builder.header("x-api-key", value);
        }
        Ok(builder)
    }

    fn api_key(&self) -> Result<Option<String>, ProviderError> {
        let var = &self.config.api_key_env;
        if var.is_empty() {
            return Ok(None);
        }
        std::env::var(var)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Some)
            .ok_or_else(|| ProviderError::MissingApiKey {
                provider: self.name.clone(),
                var: var.clone(),
            })
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn system(&self) -> &'static str {
        "anthropic"
    }

    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move {
            let api_key = self.api_key()?;
            let builder = self.post(request, api_key.as_deref(), false)?;
            super::http::exchange(
                &self.name,
                &self.url,
                &self.config.http,
                builder,
                parse_response,
            )
            .await
        })
    }

    fn stream<'a>(&'a self, request: &'a ChatRequest) -> StreamFuture<'a> {
        Box::pin(async move {
            let api_key = self.api_key()?;
            let builder = self.post(request, api_key.as_deref(), true)?;
            super::stream::open(
                &self.name,
                &self.url,
                &self.config.http,
                builder,
                super::stream::Parsers {
                    event: parse_event,
                    whole: parse_response,
                },
            )
            .await
        })
    }

    fn params(&self) -> Value {
        json!({
            "kind": "anthropic",
            "model": self.config.model,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        })
    }

    fn status(&self) -> Value {
        json!({"anthropic_version": API_VERSION})
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The conversation in the Messages API's shape: the system text (every
/// `system` / `developer` message, in order) and the `messages`, where
/// consecutive messages of one role are one message of several blocks.
pub fn wire_messages(messages: &[Message]) -> (String, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.push(&m.content);
                continue;
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(&c.arguments)}));
                }
                ("assistant", blocks)
            }
            "tool" => match &m.tool_call_id {
                Some(id) => {
                    let content = match &m.parts {
                        Some(parts) => Value::Array(parts.iter().map(block).collect()),
                        None => Value::String(m.content.clone()),
                    };
                    let mut result =
                        json!({"type": "tool_result", "tool_use_id": id, "content": content});
                    if m.is_error {
                        result["is_error"] = json!(true);
                    }
                    ("user", vec![result])
                }
                // A result with no call to answer: the Messages API would refuse it as a tool_result.
                None => ("user", vec![json!({"type": "text", "text": m.content})]),
            },
            _ => {
                let blocks = match &m.parts {
                    Some(parts) => parts.iter().map(block).collect(),
                    None => vec![json!({"type": "text", "text": m.content})],
                };
                ("user", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            let plain =
                blocks.len() == 1 && blocks[0].get("type").and_then(Value::as_str) == Some("text");
            let content = if plain {
                blocks
                    .pop()
                    .and_then(|b| b.get("text").cloned())
                    .unwrap_or_default()
            } else {
                Value::Array(blocks)
            };
            json!({"role": role, "content": content})
        })
        .collect();
    (system.join("\n\n"), messages)
}

/// A tool call's arguments as a `tool_use` input, which must be an object:
/// arguments that are not a JSON object are passed under `arguments`.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({"arguments": other}),
        Err(_) => json!({"arguments": arguments}),
    }
}

/// One content part (OpenAI-shaped, as Reins keeps them) as a content block.
fn block(part: &Value) -> Value {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            json!({"type": "text", "text": part.get("text").cloned().unwrap_or_default()})
        }
        Some("image_url") => image_block(part).unwrap_or_else(|| part.clone()),
        // Anything else (e.g. an Anthropic block kept as it came) goes as it is.
        _ => part.clone(),
    }
}

/// `{"type": "image_url", "image_url": {"url": ...}}` as an `image` block.
fn image_block(part: &Value) -> Option<Value> {
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)?;
    if let Some(data_url) = url.strip_prefix("data:") {
        let (meta, data) = data_url.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        return Some(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    Some(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// Reads a Messages API response body.
pub fn parse_response(bytes: &[u8]) -> Result<ChatResponse, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if body.get("type").and_then(Value::as_str) == Some("error") {
        return Err(format!("an error answer: {}", body["error"]));
    }
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no `content` list")?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push_str(
                b.get("text")
                    .and_then(Value::as_str)
                    .ok_or("a text block without text")?,
            ),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).map(str::to_owned),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool_use block without a name")?
                    .to_owned(),
                arguments: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            // Thinking and server-tool blocks are not the answer.
            _ => {}
        }
    }
    let usage = body.get("usage").filter(|u| u.is_object()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        let prompt =
            n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
        let completion = n("output_tokens");
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    });
    Ok(ChatResponse {
        content,
        tool_calls,
        usage,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        finish_reason: body
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// One Messages API stream event as deltas; `message_stop` ends the stream.
pub fn parse_event(event: &str, data: &str) -> Result<Option<Vec<Delta>>, String> {
    if data.trim().is_empty() {
        return Ok(Some(Vec::new()));
    }
    let body: Value = serde_json::from_str(data).map_err(|e| format!("not JSON: {e}"))?;
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(event)
        .to_owned();
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let index = || body.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    Ok(Some(match kind.as_str() {
        "message_start" => {
            let message = &body["message"];
            let u = &message["usage"];
            let prompt = n(u, "input_tokens")
                + n(u, "cache_creation_input_tokens")
                + n(u, "cache_read_input_tokens");
            let mut out = vec![Delta::Usage(Usage {
                prompt_tokens: prompt,
                completion_tokens: n(u, "output_tokens"),
                total_tokens: 0,
            })];
            if let Some(model) = message.get("model").and_then(Value::as_str) {
                out.push(Delta::Model(model.to_owned()));
            }
            out
        }
        "content_block_start" => {
            let block = &body["content_block"];
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => vec![Delta::ToolCall {
                    index: index(),
                    id: block.get("id").and_then(Value::as_str).map(str::to_owned),
                    name: block.get("name").and_then(Value::as_str).map(str::to_owned),
                    arguments: String::new(),
                }],
                Some("text") => match block.get("text").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() => vec![Delta::Text(t.to_owned())],
                    _ => vec![],
                },
                _ => vec![],
            }
        }
        "content_block_delta" => {
            let delta = &body["delta"];
            match delta.get("type").and_then(Value::as_str) {
                Some("text_delta") => vec![Delta::Text(
                    delta
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )],
                Some("input_json_delta") => vec![Delta::ToolCall {
                    index: index(),
                    id: None,
                    name: None,
                    arguments: delta
                        .get("partial_json")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }],
                // Thinking and signatures are not the answer.
                _ => vec![],
            }
        }
        "message_delta" => {
            let mut out = Vec::new();
            let u = &body["usage"];
            if u.is_object() {
                out.push(Delta::Usage(Usage {
                    prompt_tokens: n(u, "input_tokens"),
                    completion_tokens: n(u, "output_tokens"),
                    total_tokens: 0,
                }));
            }
            if let Some(reason) = body.pointer("/delta/stop_reason").and_then(Value::as_str) {
                out.push(Delta::Finish(reason.to_owned()));
            }
            out
        }
        "message_stop" => return Ok(None),
        "error" => return Err(format!("the upstream sent an error: {}", body["error"])),
        // ping, content_block_stop, and events added later.
        _ => vec![],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reins_runtime::MessageToolCall;

    #[test]
    fn tool_results_and_a_following_user_message_are_one_turn() {
        let mut failed = Message::tool_result("t2", "no such city");
        failed.is_error = true;
        let (system, wire) = wire_messages(&[
            Message::new("system", "a"),
            Message::new("user", "go"),
            Message::tool_calls(
                "",
                vec![
                    MessageToolCall {
                        id: "t1".into(),
                        name: "f".into(),
                        arguments: "{\"x\":1}".into(),
                    },
                    MessageToolCall {
                        id: "t2".into(),
                        name: "g".into(),
                        arguments: "not json".into(),
                    },
                ],
            ),
            Message::tool_result("t1", "ok"),
            failed,
            Message::new("user", "and?"),
            Message::new("developer", "b"),
        ]);
        assert_eq!(system, "a\n\nb");
        assert_eq!(wire.len(), 3);
        assert_eq!(wire[0], json!({"role": "user", "content": "go"}));
        assert_eq!(
            wire[1]["content"][1]["input"],
            json!({"arguments": "not json"})
        );
        assert_eq!(
            wire[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "no such city", "is_error": true},
                {"type": "text", "text": "and?"},
            ])
        );
    }

    #[test]
    fn images_become_image_blocks() {
        let data = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}});
        let url = json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}});
        assert_eq!(
            block(&data),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}})
        );
        assert_eq!(
            block(&url),
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
        );
        let odd = json!({"type": "image_url", "image_url": {"url": "data:text/plain,hi"}});
        assert_eq!(block(&odd), odd, "not base64: passed on as it came");
    }

    #[test]
    fn parses_text_tool_use_and_usage() {
        let r = parse_response(
            br#"{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Let me look."},
                            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 2, "output_tokens": 3}}"#,
        )
        .unwrap();
        assert_eq!(r.content, "Let me look.");
        assert_eq!(
            r.tool_calls,
            vec![ToolCall {
                id: Some("toolu_1".into()),
                name: "f".into(),
                arguments: json!({"a": 1})
            }]
        );
        let u = r.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (9, 3, 12)
        );
        assert_eq!(r.model, "claude-x");
        assert!(parse_response(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            parse_response(br#"{"type": "message"}"#)
                .unwrap_err()
                .contains("content")
        );
    }
}
