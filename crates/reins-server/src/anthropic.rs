//! The Anthropic Messages surface: an app written for the Anthropic API
//! gets a harness by changing its base URL. `model` names the pipeline; the
//! answer is the validated output as a Message (or as the Messages event
//! stream), never an unvalidated token. Errors are in Anthropic's shape
//! (`{"type": "error", "error": {"type", "message"}}`) with the status the
//! SDKs map to their exception classes. See docs/anthropic.md.
//!
//! A request becomes the same [`Request`] the OpenAI surface makes: text
//! and image blocks become a message's text and parts (images as OpenAI
//! `image_url` parts with a `data:` URL, the shape Reins keeps and every
//! provider translates), `tool_use` blocks an assistant's tool calls,
//! `tool_result` blocks one `tool` message each.

use super::AppState;
use super::answer;
use super::error::{ApiError, JsonBody};
use super::openai::{bad, take_bool, take_count, take_number};
use super::settings::Scope;
use reins_core::pipeline::{Request, RequestTool, RunResult, RunStatus};
use reins_core::provider::ToolChoice;
use reins_runtime::{Message, MessageToolCall};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::convert::Infallible;

/// A Messages API request as Reins reads it: every field it supports is
/// taken over, and anything else is refused by name (or ignored, with the
/// pipeline's `ignore_unknown_params`).
#[derive(Debug)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    pub request: Request,
}

/// Parameters of the Messages API that Reins cannot honour.
const UNSUPPORTED: [&str; 6] = ["top_k", "thinking", "service_tier", "container", "mcp_servers", "context_management"];

impl MessagesRequest {
    /// Reads a request body. `ignore_unknown` (the pipeline's
    /// `ignore_unknown_params`) lets unknown parameters pass unused.
    pub fn parse(body: Value, ignore_unknown: impl Fn(&str) -> bool) -> Result<MessagesRequest, ApiError> {
        let Value::Object(mut body) = body else {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        };
        // An explicit null is the same as leaving a parameter out.
        body.retain(|_, v| !v.is_null());
        let model = match body.remove("model") {
            Some(Value::String(m)) => m,
            Some(_) => return Err(bad("model", "model: must be a string naming a Reins pipeline")),
            None => return Err(bad("model", "model: Field required (it names the Reins pipeline)")),
        };
        let ignore = ignore_unknown(&model);
        let max_tokens = match take_count(&mut body, "max_tokens")? {
            Some(n) => n,
            None => return Err(bad("max_tokens", "max_tokens: Field required")),
        };
        let mut messages = Vec::new();
        if let Some(system) = body.remove("system") {
            let text = system_text(system)?;
            if !text.is_empty() {
                messages.push(Message::new("system", text));
            }
        }
        match body.remove("messages") {
            Some(Value::Array(list)) if !list.is_empty() => messages.extend(parse_messages(list)?),
            Some(Value::Array(_)) => return Err(bad("messages", "messages: must not be empty")),
            Some(_) => return Err(bad("messages", "messages: must be a list of messages")),
            None => return Err(bad("messages", "messages: Field required")),
        }
        let mut request = Request::from(messages);
        let stream = take_bool(&mut body, "stream")?.unwrap_or(false);
        let sampling = &mut request.sampling;
        sampling.max_tokens = Some(max_tokens);
        sampling.temperature = take_number(&mut body, "temperature", 0.0, 1.0)?;
        sampling.top_p = take_number(&mut body, "top_p", 0.0, 1.0)?;
        sampling.stop = match body.remove("stop_sequences") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad("stop_sequences", "stop_sequences: must be a list of strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("stop_sequences", "stop_sequences: must be a list of strings")),
        };
        // `metadata.user_id` is the end user; the whole object is the
        // caller's metadata, handed to every plugin (as on the OpenAI surface).
        let mut metadata = match body.remove("metadata") {
            None => json!({}),
            Some(m @ Value::Object(_)) => m,
            Some(_) => return Err(bad("metadata", "metadata: must be an object")),
        };
        if let Some(user) = metadata.get("user_id") {
            let user = user
                .as_str()
                .ok_or_else(|| bad("metadata.user_id", "metadata.user_id: must be a string"))?
                .to_owned();
            if let Some(obj) = metadata.as_object_mut() {
                obj.entry("user").or_insert_with(|| json!(user));
            }
            sampling.user = Some(user);
        }
        if let Some(tools) = body.remove("tools") {
            let Value::Array(tools) = tools else {
                return Err(bad("tools", "tools: must be a list"));
            };
            request.tools = Some(request_tools(&tools)?);
        }
        if let Some(choice) = body.remove("tool_choice") {
            let (choice, parallel) = tool_choice(&choice)?;
            request.sampling.tool_choice = Some(choice);
            request.sampling.parallel_tool_calls = parallel;
        }
        for name in UNSUPPORTED {
            if body.remove(name).is_some() && !ignore {
                return Err(bad(
                    name,
                    format!("{name}: not supported by Reins; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"),
                ));
            }
        }
        if let Some(unknown) = body.keys().next()
            && !ignore
        {
            return Err(bad(
                unknown,
                format!("{unknown}: unknown parameter; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"),
            ));
        }
        request.metadata = metadata;
        Ok(MessagesRequest { model, stream, request })
    }
}

/// `system`: a string or a list of text blocks.
fn system_text(system: Value) -> Result<String, ApiError> {
    match system {
        Value::String(s) => Ok(s),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let at = format!("system[{j}]");
                match content_block(b, &at)? {
                    ("text", obj) => text_of(obj, &at),
                    (other, _) => Err(bad(&at, format!("{at}: `{other}` blocks are not allowed in system (only text)"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err(bad("system", "system: must be a string or a list of text blocks")),
    }
}

/// The conversation, with its whole structure; every `tool_result` must
/// answer a `tool_use` of an earlier assistant message.
fn parse_messages(list: Vec<Value>) -> Result<Vec<Message>, ApiError> {
    let mut calls_seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].{k}");
        let Value::Object(mut m) = m else {
            return Err(bad(&format!("messages[{i}]"), format!("messages[{i}]: must be an object")));
        };
        m.retain(|_, v| !v.is_null());
        let role = match m.remove("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => r,
            Some(Value::String(r)) => {
                return Err(bad(
                    &at("role"),
                    format!("{}: `{r}` is not supported (user or assistant; a system prompt goes in the top-level `system`)", at("role")),
                ));
            }
            _ => return Err(bad(&at("role"), format!("{}: Field required (user or assistant)", at("role")))),
        };
        let content = m
            .remove("content")
            .ok_or_else(|| bad(&at("content"), format!("{}: Field required", at("content"))))?;
        if let Some(unknown) = m.keys().next() {
            return Err(bad(&at(unknown), format!("{}: not supported on a message", at(unknown))));
        }
        match content {
            Value::String(s) => out.push(Message::new(role, s)),
            Value::Array(blocks) if role == "assistant" => out.push(assistant_message(i, &blocks, &mut calls_seen)?),
            Value::Array(blocks) => user_messages(i, &blocks, &calls_seen, &mut out)?,
            _ => {
                return Err(bad(
                    &at("content"),
                    format!("{}: must be a string or a list of content blocks", at("content")),
                ));
            }
        }
    }
    Ok(out)
}

/// An assistant turn: its text blocks are the text, its `tool_use` blocks
/// the tool calls.
fn assistant_message(i: usize, blocks: &[Value], calls_seen: &mut HashSet<String>) -> Result<Message, ApiError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match content_block(b, &at)? {
            ("text", obj) => texts.push(text_of(obj, &at)?),
            ("tool_use", obj) => {
                allow_keys(obj, &["id", "name", "input"], &at)?;
                let field = |k: &str| {
                    obj.get(k)
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&format!("{at}.{k}"), format!("{at}.{k}: Field required (a string)")))
                };
                let (id, name) = (field("id")?, field("name")?);
                let input = match obj.get("input") {
                    None | Some(Value::Null) => json!({}),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(_) => return Err(bad(&format!("{at}.input"), format!("{at}.input: must be an object"))),
                };
                calls_seen.insert(id.to_owned());
                calls.push(MessageToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: input.to_string(),
                });
            }
            (other, _) => {
                return Err(bad(
                    &format!("{at}.type"),
                    format!("{at}.type: `{other}` blocks are not supported in an assistant message (text, tool_use)"),
                ));
            }
        }
    }
    Ok(Message::tool_calls(texts.join("\n"), calls))
}

/// A user turn: its `tool_result` blocks become `tool` messages and the
/// text and image blocks between them `user` messages, in their order.
fn user_messages(i: usize, blocks: &[Value], calls_seen: &HashSet<String>, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let mut pending: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match content_block(b, &at)? {
            ("tool_result", obj) => {
                if let Some(m) = parts_message("user", std::mem::take(&mut pending)) {
                    out.push(m);
                }
                out.push(tool_message(obj, &at, calls_seen)?);
            }
            (kind, obj) => pending.push(part(kind, obj, &at)?),
        }
    }
    if let Some(m) = parts_message("user", pending) {
        out.push(m);
    }
    Ok(())
}

/// One `tool` message per `tool_result`; `is_error` is kept on the message.
fn tool_message(obj: &Map<String, Value>, at: &str, calls_seen: &HashSet<String>) -> Result<Message, ApiError> {
    allow_keys(obj, &["tool_use_id", "content", "is_error"], at)?;
    let id = obj
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{at}.tool_use_id"), format!("{at}.tool_use_id: Field required (a string)")))?;
    if !calls_seen.contains(id) {
        return Err(bad(
            &format!("{at}.tool_use_id"),
            format!("{at}.tool_use_id: `{id}` answers no tool_use block of an earlier assistant message"),
        ));
    }
    let mut message = match obj.get("content") {
        None | Some(Value::Null) => Message::tool_result(id, ""),
        Some(Value::String(s)) => Message::tool_result(id, s.clone()),
        Some(Value::Array(blocks)) => {
            let parts = blocks
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let at = format!("{at}.content[{k}]");
                    let (kind, obj) = content_block(b, &at)?;
                    part(kind, obj, &at)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut m = parts_message("tool", parts).unwrap_or_else(|| Message::new("tool", ""));
            m.tool_call_id = Some(id.to_owned());
            m
        }
        Some(_) => {
            return Err(bad(
                &format!("{at}.content"),
                format!("{at}.content: must be a string or a list of text and image blocks"),
            ));
        }
    };
    message.is_error = match obj.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad(&format!("{at}.is_error"), format!("{at}.is_error: must be true or false"))),
    };
    Ok(message)
}

/// A text or image block as a content part (the OpenAI part shape Reins keeps).
fn part(kind: &str, obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    match kind {
        "text" => Ok(json!({"type": "text", "text": text_of(obj, at)?})),
        "image" => image_part(obj, at),
        other => Err(bad(
            &format!("{at}.type"),
            format!("{at}.type: `{other}` blocks are not supported here (text, image, tool_result)"),
        )),
    }
}

/// Text and image parts as one message: the text parts' text joined by
/// newlines, and the parts themselves kept when there is an image among them.
fn parts_message(role: &str, parts: Vec<Value>) -> Option<Message> {
    if parts.is_empty() {
        return None;
    }
    let text = parts
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut m = Message::new(role, text);
    if parts.iter().any(|p| p["type"] != "text") {
        m.parts = Some(parts);
    }
    Some(m)
}

/// An `image` block as an `image_url` part: a base64 source as a `data:` URL.
fn image_part(obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    allow_keys(obj, &["source"], at)?;
    let source = obj
        .get("source")
        .ok_or_else(|| bad(&format!("{at}.source"), format!("{at}.source: Field required")))?;
    let field = |k: &str| {
        source
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{at}.source.{k}"), format!("{at}.source.{k}: Field required (a string)")))
    };
    let url = match field("type")? {
        "base64" => format!("data:{};base64,{}", field("media_type")?, field("data")?),
        "url" => field("url")?.to_owned(),
        other => {
            return Err(bad(
                &format!("{at}.source.type"),
                format!("{at}.source.type: `{other}` is not supported (base64 or url)"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A content block's type and fields. `cache_control` (a prompt-caching
/// hint, meaningless to Reins) is accepted everywhere.
fn content_block<'a>(b: &'a Value, at: &str) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
    let obj = b
        .as_object()
        .ok_or_else(|| bad(at, format!("{at}: must be a content block object")))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{at}.type"), format!("{at}.type: Field required")))?;
    Ok((kind, obj))
}

/// A text block's text (its `citations`, echoed from an answer, are ignored).
fn text_of(obj: &Map<String, Value>, at: &str) -> Result<String, ApiError> {
    allow_keys(obj, &["text", "citations"], at)?;
    obj.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(&format!("{at}.text"), format!("{at}.text: Field required (a string)")))
}

/// Refuses a block field that is not `type`, `cache_control` or one of `allowed`.
fn allow_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), ApiError> {
    match obj
        .keys()
        .find(|k| !(k.as_str() == "type" || k.as_str() == "cache_control" || allowed.contains(&k.as_str())))
    {
        Some(k) => Err(bad(&format!("{at}.{k}"), format!("{at}.{k}: not supported on this block"))),
        None => Ok(()),
    }
}

/// Client `tools` (`{name, description, input_schema}`) as the tools the
/// caller declares; server tools (a `type` other than `custom`) are refused.
fn request_tools(tools: &[Value]) -> Result<Vec<RequestTool>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("tools[{i}]");
            let obj = t.as_object().ok_or_else(|| bad(&at, format!("{at}: must be an object")))?;
            match obj.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "custom" => {}
                Some(other) => {
                    return Err(bad(
                        &format!("{at}.type"),
                        format!("{at}.type: {other} is not supported: only client tools (name, description, input_schema)"),
                    ));
                }
            }
            allow_keys(obj, &["name", "description", "input_schema"], &at)?;
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{at}.name"), format!("{at}.name: Field required")))?;
            let parameters = match obj.get("input_schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => {
                    return Err(bad(&format!("{at}.input_schema"), format!("{at}.input_schema: must be a JSON Schema object")));
                }
                None => return Err(bad(&format!("{at}.input_schema"), format!("{at}.input_schema: Field required"))),
            };
            let description = match obj.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(d)) => d.clone(),
                Some(_) => return Err(bad(&format!("{at}.description"), format!("{at}.description: must be a string"))),
            };
            Ok(RequestTool {
                name: name.to_owned(),
                description,
                parameters: Some(parameters),
            })
        })
        .collect()
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none"}` (with `name`
/// for `tool`), and whether parallel tool use is allowed
/// (`disable_parallel_tool_use`).
fn tool_choice(choice: &Value) -> Result<(ToolChoice, Option<bool>), ApiError> {
    let wrong = || {
        bad(
            "tool_choice",
            "tool_choice: must be {\"type\": \"auto\"}, {\"type\": \"any\"}, {\"type\": \"none\"} or {\"type\": \"tool\", \"name\": ...}",
        )
    };
    let obj = choice.as_object().ok_or_else(wrong)?;
    allow_keys(obj, &["name", "disable_parallel_tool_use"], "tool_choice")?;
    let parsed = match obj.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Tool(
            obj.get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name", "tool_choice.name: Field required for type `tool`"))?
                .to_owned(),
        ),
        _ => return Err(wrong()),
    };
    let parallel = match obj.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(disable)) => Some(!disable),
        Some(_) => {
            return Err(bad(
                "tool_choice.disable_parallel_tool_use",
                "tool_choice.disable_parallel_tool_use: must be true or false",
            ));
        }
    };
    Ok((parsed, parallel))
}

/// `POST /v1/messages`
pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, AnthropicError> {
    state.auth.check(&headers, Scope::Run)?;
    let JsonBody(body) = body?;
    let host = state.host.clone();
    let MessagesRequest {
        model: pipeline,
        stream: streaming,
        mut request,
    } = MessagesRequest::parse(body, |name| host.pipeline(name).is_some_and(|p| p.config.ignore_unknown_params))?;
    if state.host.pipeline(&pipeline).is_none() {
        return Err(ApiError::not_found(format!("model: `{pipeline}` does not exist: `model` names a Reins pipeline")).into());
    }
    request.session_id = answer::session_id(&headers, &request.metadata);
    let result = super::service::run_pipeline(&state, &pipeline, request, None).await?;

    let (status, message) = message(&result, &pipeline)?;
    // A run held for approval streams too (with its 202): a streaming
    // client reads events, whatever the status.
    let mut response = if streaming {
        (status, stream(message)).into_response()
    } else {
        (status, Json(message)).into_response()
    };
    super::service::reins_headers(response.headers_mut(), &result);
    Ok(response)
}

/// Maps a run to a Message, or to an error with the right status. A run
/// held for a human's approval is a 202 whose `stop_reason` is
/// `awaiting_approval` (the `reins` object names the approvals).
fn message(result: &RunResult, pipeline: &str) -> Result<(StatusCode, Value), ApiError> {
    let reins = answer::reins_object(result);
    match result.status {
        RunStatus::Completed | RunStatus::AwaitingApproval => {}
        RunStatus::Rejected | RunStatus::Failed | RunStatus::Running => return Err(super::openai::run_error(result, reins)),
    }
    let mut content = Vec::new();
    if let Some(text) = answer::output_text(result).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = answer::returned_calls(result, "toolu");
    let awaiting = result.status == RunStatus::AwaitingApproval;
    let stop_reason = if awaiting {
        "awaiting_approval"
    } else if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    content.extend(
        calls
            .into_iter()
            .map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})),
    );
    let body = json!({
        "id": format!("msg_{}", result.run_id),
        "type": "message",
        "role": "assistant",
        "model": pipeline,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": result.tokens.prompt, "output_tokens": result.tokens.completion},
        "reins": reins,
    });
    Ok((if awaiting { StatusCode::ACCEPTED } else { StatusCode::OK }, body))
}

/// The Messages event stream of an already validated answer:
/// `message_start`, each block's `content_block_start` / `_delta`s /
/// `_stop`, `message_delta` (stop reason, output tokens), `message_stop`.
fn stream(message: Value) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let blocks = message["content"].as_array().cloned().unwrap_or_default();
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"]["output_tokens"] = json!(0);
    let mut events = vec![("message_start", json!({"type": "message_start", "message": start}))];
    for (index, b) in blocks.iter().enumerate() {
        let (opening, deltas): (Value, Vec<Value>) = if b["type"] == "tool_use" {
            (
                json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                pieces(&b["input"].to_string())
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            )
        } else {
            (
                json!({"type": "text", "text": ""}),
                pieces(b["text"].as_str().unwrap_or_default())
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            )
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": opening}),
        ));
        events.extend(
            deltas
                .into_iter()
                .map(|d| ("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": d}))),
        );
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": index})));
    }
    events.push((
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let events = events
        .into_iter()
        .map(|(name, data)| Ok(Event::default().event(name).data(data.to_string())));
    Sse::new(futures_util::stream::iter(events))
}

/// `text` in pieces of at most 64 characters.
fn pieces(text: &str) -> impl Iterator<Item = String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(64).map(|c| c.iter().collect()).collect();
    pieces.into_iter()
}

/// An error in the Messages API's shape, `{"type": "error", "error":
/// {"type", "message", ...}}`: the status says what happened (the SDKs
/// raise by status), the type is Anthropic's name for it. Reins' details
/// (`violations`, `findings`, `reins`) are fields of `error`.
#[derive(Debug)]
pub struct AnthropicError(ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let ApiError {
            status,
            kind,
            message,
            extra,
            retry_after,
        } = self.0;
        let (status, kind) = error_type(status, kind);
        let mut error = Map::new();
        error.insert("type".into(), json!(kind));
        error.insert("message".into(), json!(message));
        error.extend(extra);
        super::error::respond(status, json!({"type": "error", "error": error}), retry_after)
    }
}

/// Anthropic's status and error type for an error. Every provider of a
/// pipeline unavailable is `529 overloaded_error`, as Anthropic answers when
/// its model is: clients built for the API treat it as "try again later".
fn error_type(status: StatusCode, kind: &str) -> (StatusCode, &'static str) {
    if kind == "model_unavailable" {
        return (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
        );
    }
    let kind = match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    (status, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<MessagesRequest, ApiError> {
        MessagesRequest::parse(body, |_| false)
    }

    fn refused(body: Value) -> String {
        match parse(body) {
            Ok(r) => panic!("expected a 400, got {r:?}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.message
            }
        }
    }

    #[test]
    fn a_whole_conversation_keeps_its_structure() {
        let r = parse(json!({
            "model": "p", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "png"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "gif"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a picture"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "no such thing"}]},
                    {"type": "text", "text": "so?"},
                ]},
            ],
            "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": true},
        }))
        .unwrap();
        assert_eq!((r.model.as_str(), r.stream), ("p", true));
        let m = &r.request.messages;
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], Message::new("system", "Be brief."));
        assert_eq!(m[1].content, "what is this?");
        assert_eq!(
            m[1].parts.as_ref().unwrap()[1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
        );
        assert_eq!(m[2].content, "Let me look.");
        assert_eq!(m[2].tool_calls[1].id, "toolu_2");
        assert_eq!(m[2].tool_calls[0].arguments, "{\"q\":\"png\"}");
        assert_eq!((m[3].role.as_str(), m[3].tool_call_id.as_deref(), m[3].is_error), ("tool", Some("toolu_1"), false));
        assert_eq!((m[4].content.as_str(), m[4].tool_call_id.as_deref(), m[4].is_error), ("no such thing", Some("toolu_2"), true));
        assert_eq!((m[5].role.as_str(), m[5].content.as_str(), m[5].parts.is_none()), ("user", "so?", true));
        let s = &r.request.sampling;
        assert_eq!((s.max_tokens, s.temperature, s.top_p), (Some(100), Some(0.2), Some(0.9)));
        assert_eq!((s.stop.clone(), s.user.as_deref()), (vec!["END".to_owned()], Some("u-1")));
        assert_eq!(s.tool_choice, Some(ToolChoice::Tool("lookup".into())));
        assert_eq!(s.parallel_tool_calls, Some(false));
        assert_eq!(r.request.metadata, json!({"user_id": "u-1", "user": "u-1"}));
        assert_eq!(r.request.tools.as_ref().unwrap()[0].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn tool_choice_types_map_to_reins_choices() {
        for (wire, choice) in [
            (json!({"type": "auto"}), ToolChoice::Auto),
            (json!({"type": "any"}), ToolChoice::Required),
            (json!({"type": "none"}), ToolChoice::None),
        ] {
            assert_eq!(tool_choice(&wire).unwrap(), (choice, None));
        }
        assert!(tool_choice(&json!({"type": "tool"})).unwrap_err().message.contains("tool_choice.name"));
        assert!(tool_choice(&json!("auto")).is_err());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let user = json!([{"role": "user", "content": "hi"}]);
        assert!(refused(json!({"model": "p", "messages": user})).contains("max_tokens"));
        assert!(refused(json!({"model": "p", "max_tokens": 5, "messages": user, "top_k": 5})).starts_with("top_k"));
        assert!(refused(json!({"model": "p", "max_tokens": 5, "messages": user, "speed": 1})).starts_with("speed"));
        assert!(refused(json!({"model": "p", "max_tokens": 5, "messages": user, "temperature": 1.5})).contains("temperature"));
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]},
        ]}));
        assert!(m.contains("messages[0].content[0].tool_use_id") && m.contains("toolu_x"), "{m}");
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "document", "source": {}}]},
        ]}));
        assert!(m.contains("`document`"), "{m}");
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": user,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
        assert!(m.starts_with("tools[0].type"), "{m}");
        // With ignore_unknown_params the pipeline lets them pass unused.
        let r = MessagesRequest::parse(json!({"model": "p", "max_tokens": 5, "messages": user, "top_k": 5, "speed": 1}), |_| true);
        assert!(r.is_ok());
    }

    #[test]
    fn errors_take_anthropics_types_and_statuses() {
        let unavailable = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "down");
        let (status, kind) = error_type(unavailable.status, unavailable.kind);
        assert_eq!((status.as_u16(), kind), (529, "overloaded_error"));
        for (code, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(error_type(status, "x"), (status, kind));
        }
    }

    #[test]
    fn text_comes_in_pieces() {
        let text = "é".repeat(130);
        let p: Vec<String> = pieces(&text).collect();
        assert_eq!(p.iter().map(|s| s.chars().count()).collect::<Vec<_>>(), vec![64, 64, 2]);
        assert_eq!(p.concat(), text);
    }
}
