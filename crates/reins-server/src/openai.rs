//! The OpenAI-compatible surface: any OpenAI client gets a harness by
//! changing its base URL. The `model` field names the pipeline; the answer is
//! the validated output, never an unvalidated token.

use super::AppState;
use super::error::{ApiError, JsonBody};
use super::settings::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use reins_core::pipeline::{Request, RequestTool, RunResult, RunStatus};
use reins_core::provider::ToolChoice;
use reins_runtime::{Message, MessageToolCall};
use serde_json::{Map, Value, json};
use std::convert::Infallible;

/// A chat completion request as Reins reads it: every field of the OpenAI
/// wire format it supports is taken over, and anything else is refused by
/// name (or ignored, with `ignore_unknown_params`): nothing is dropped
/// silently.
#[derive(Debug)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    pub request: Request,
}

/// Parameters whose mere presence (with a value) Reins cannot honour.
const UNSUPPORTED: [&str; 12] = [
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "service_tier",
    "store",
    "reasoning_effort",
    "web_search_options",
    "top_logprobs",
    "verbosity",
    "prompt_cache_key",
];

pub(super) fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with("param", json!(param))
}

impl ChatRequest {
    /// Reads a request body. `ignore_unknown` (the pipeline's
    /// `ignore_unknown_params`) lets unknown parameters pass unused.
    pub fn parse(
        body: Value,
        ignore_unknown: impl Fn(&str) -> bool,
    ) -> Result<ChatRequest, ApiError> {
        let Value::Object(mut body) = body else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        // An explicit null is the same as leaving a parameter out.
        body.retain(|_, v| !v.is_null());
        let model = match body.remove("model") {
            Some(Value::String(m)) => m,
            Some(_) => {
                return Err(bad(
                    "model",
                    "`model` must be a string naming a Reins pipeline",
                ));
            }
            None => {
                return Err(bad(
                    "model",
                    "`model` is required: it names the Reins pipeline",
                ));
            }
        };
        let ignore = ignore_unknown(&model);
        let messages = match body.remove("messages") {
            Some(Value::Array(list)) if !list.is_empty() => parse_messages(list)?,
            Some(Value::Array(_)) => return Err(bad("messages", "`messages` must not be empty")),
            Some(_) => return Err(bad("messages", "`messages` must be a list of messages")),
            None => return Err(bad("messages", "`messages` is required")),
        };
        let mut request = Request::from(messages);
        let stream = take_bool(&mut body, "stream")?.unwrap_or(false);
        let mut include_usage = false;
        if let Some(options) = body.remove("stream_options") {
            if !stream {
                return Err(bad(
                    "stream_options",
                    "`stream_options` is only allowed with `stream: true`",
                ));
            }
            let Value::Object(options) = options else {
                return Err(bad("stream_options", "`stream_options` must be an object"));
            };
            for (k, v) in options {
                match (k.as_str(), v) {
                    ("include_usage", Value::Bool(b)) => include_usage = b,
                    ("include_usage", _) => {
                        return Err(bad("stream_options.include_usage", "must be true or false"));
                    }
                    (other, _) if !ignore => {
                        return Err(bad(
                            &format!("stream_options.{other}"),
                            format!(
                                "`stream_options.{other}` is not supported (only include_usage)"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
        match body.remove("n") {
            None => {}
            Some(n) if n.as_u64() == Some(1) => {}
            Some(n) => {
                return Err(bad(
                    "n",
                    format!(
                        "`n` = {n} is not supported: Reins validates one answer per request (send n = 1 or leave it out)"
                    ),
                ));
            }
        }
        match body.remove("logprobs") {
            None | Some(Value::Bool(false)) => {}
            Some(_) if ignore => {}
            Some(_) => {
                return Err(bad(
                    "logprobs",
                    "`logprobs` is not supported: a validated answer has no token log-probabilities",
                ));
            }
        }
        let mut metadata = match body.remove("metadata") {
            None => json!({}),
            Some(m @ Value::Object(_)) => m,
            Some(_) => return Err(bad("metadata", "`metadata` must be an object")),
        };
        let sampling = &mut request.sampling;
        sampling.temperature = take_number(&mut body, "temperature", 0.0, 2.0)?;
        sampling.top_p = take_number(&mut body, "top_p", 0.0, 1.0)?;
        sampling.presence_penalty = take_number(&mut body, "presence_penalty", -2.0, 2.0)?;
        sampling.frequency_penalty = take_number(&mut body, "frequency_penalty", -2.0, 2.0)?;
        sampling.max_tokens = take_count(&mut body, "max_tokens")?;
        sampling.max_completion_tokens = take_count(&mut body, "max_completion_tokens")?;
        sampling.seed = match body.remove("seed") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| bad("seed", "`seed` must be an integer"))?,
            ),
        };
        sampling.stop = match body.remove("stop") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(list)) if list.len() <= 4 => list
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(
                        "stop",
                        "`stop` must be a string or a list of up to 4 strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(bad(
                    "stop",
                    "`stop` must be a string or a list of up to 4 strings",
                ));
            }
        };
        sampling.logit_bias = match body.remove("logit_bias") {
            None => None,
            Some(Value::Object(m)) if m.values().all(Value::is_number) => Some(m),
            Some(_) => {
                return Err(bad(
                    "logit_bias",
                    "`logit_bias` must map token ids to numbers",
                ));
            }
        };
        sampling.user = match body.remove("user") {
            None => None,
            Some(Value::String(u)) => Some(u),
            Some(_) => return Err(bad("user", "`user` must be a string")),
        };
        if let (Some(user), Some(obj)) = (&sampling.user, metadata.as_object_mut()) {
            obj.entry("user").or_insert_with(|| json!(user));
        }
        sampling.parallel_tool_calls = take_bool(&mut body, "parallel_tool_calls")?;
        if let Some(format) = body.remove("response_format") {
            if let Some(schema) = response_schema(&format)? {
                request.schema = Some(schema);
            }
            request.json = format.get("type").and_then(Value::as_str) != Some("text");
        }
        if let Some(tools) = body.remove("tools") {
            let Value::Array(tools) = tools else {
                return Err(bad("tools", "`tools` must be a list"));
            };
            request.tools = Some(request_tools(&tools)?);
        }
        if let Some(choice) = body.remove("tool_choice") {
            let choice = tool_choice(&choice)?;
            if let (ToolChoice::Tool(name), Some(tools)) = (&choice, &request.tools)
                && !tools.iter().any(|t| &t.name == name)
            {
                return Err(bad(
                    "tool_choice",
                    format!("tool_choice names `{name}`, which is not one of `tools`"),
                ));
            }
            request.sampling.tool_choice = Some(choice);
        }
        for name in UNSUPPORTED {
            if body.remove(name).is_some() && !ignore {
                return Err(bad(
                    name,
                    format!(
                        "`{name}` is not supported by Reins; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"
                    ),
                ));
            }
        }
        if let Some(unknown) = body.keys().next()
            && !ignore
        {
            return Err(bad(
                unknown,
                format!(
                    "unknown parameter `{unknown}`; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"
                ),
            ));
        }
        request.metadata = metadata;
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            request,
        })
    }
}

pub(super) fn take_bool(
    body: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<bool>, ApiError> {
    match body.remove(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(bad(key, format!("`{key}` must be true or false"))),
    }
}

pub(super) fn take_number(
    body: &mut Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match body.remove(key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(bad(
                key,
                format!("`{key}` must be a number from {min} to {max}, got {v}"),
            )),
        },
    }
}

pub(super) fn take_count(
    body: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<u64>, ApiError> {
    match body.remove(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(bad(
                key,
                format!("`{key}` must be a positive integer, got {v}"),
            )),
        },
    }
}

/// Message fields an SDK echoes back from an answer; harmless when empty.
const ECHOED: [&str; 4] = ["refusal", "annotations", "audio", "function_call"];

/// The conversation, with its whole structure; every `tool` message must
/// answer a call an earlier `assistant` message made.
fn parse_messages(list: Vec<Value>) -> Result<Vec<Message>, ApiError> {
    let mut calls_seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].{k}");
        let Value::Object(mut m) = m else {
            return Err(bad(
                &format!("messages[{i}]"),
                format!("messages[{i}] must be an object"),
            ));
        };
        m.retain(|_, v| !v.is_null());
        let role = match m.remove("role") {
            Some(Value::String(r)) => r,
            _ => {
                return Err(bad(
                    &at("role"),
                    format!(
                        "{} is required (system, developer, user, assistant or tool)",
                        at("role")
                    ),
                ));
            }
        };
        if !matches!(
            role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(bad(
                &at("role"),
                format!(
                    "{} `{role}` is not supported (system, developer, user, assistant or tool)",
                    at("role")
                ),
            ));
        }
        let (content, parts) = match m.remove("content") {
            None => (String::new(), None),
            Some(Value::String(s)) => (s, None),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for (j, part) in parts.iter().enumerate() {
                    let kind = part.get("type").and_then(Value::as_str);
                    match (kind, part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                        (Some("text"), _) => {
                            return Err(bad(
                                &at(&format!("content[{j}].text")),
                                format!("{} must be a string", at(&format!("content[{j}].text"))),
                            ));
                        }
                        (Some(_), _) if role == "user" => {}
                        (Some(other), _) => {
                            return Err(bad(
                                &at(&format!("content[{j}].type")),
                                format!(
                                    "a `{role}` message can only have text parts, not `{other}`"
                                ),
                            ));
                        }
                        (None, _) => {
                            return Err(bad(
                                &at(&format!("content[{j}].type")),
                                format!("{} is required", at(&format!("content[{j}].type"))),
                            ));
                        }
                    }
                }
                (texts.join("\n"), Some(parts))
            }
            Some(_) => {
                return Err(bad(
                    &at("content"),
                    format!("{} must be a string or a list of parts", at("content")),
                ));
            }
        };
        let mut message = Message::new(role.clone(), content);
        message.parts = parts;
        if let Some(name) = m.remove("name") {
            message.name = Some(
                name.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(&at("name"), format!("{} must be a string", at("name"))))?,
            );
        }
        if let Some(calls) = m.remove("tool_calls") {
            if role != "assistant" {
                return Err(bad(
                    &at("tool_calls"),
                    "only an `assistant` message can have tool_calls",
                ));
            }
            let Value::Array(calls) = calls else {
                return Err(bad(
                    &at("tool_calls"),
                    format!("{} must be a list", at("tool_calls")),
                ));
            };
            for (j, c) in calls.iter().enumerate() {
                let field = |k: &str| format!("messages[{i}].tool_calls[{j}].{k}");
                let id = c
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&field("id"), format!("{} is required", field("id"))))?;
                let function = c.get("function").ok_or_else(|| {
                    bad(
                        &field("function"),
                        format!("{} is required", field("function")),
                    )
                })?;
                let name = function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            &field("function.name"),
                            format!("{} is required", field("function.name")),
                        )
                    })?;
                let arguments = match function.get("arguments") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(bad(
                            &field("function.arguments"),
                            format!("{} must be a string of JSON", field("function.arguments")),
                        ));
                    }
                };
                calls_seen.insert(id.to_owned());
                message.tool_calls.push(MessageToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments,
                });
            }
        }
        if role == "tool" {
            let id = match m.remove("tool_call_id") {
                Some(Value::String(id)) => id,
                _ => {
                    return Err(bad(
                        &at("tool_call_id"),
                        format!("{} is required on a tool message", at("tool_call_id")),
                    ));
                }
            };
            if !calls_seen.contains(&id) {
                return Err(bad(
                    &at("tool_call_id"),
                    format!(
                        "{} `{id}` answers no tool call of an earlier assistant message",
                        at("tool_call_id")
                    ),
                ));
            }
            message.tool_call_id = Some(id);
        } else if m.contains_key("tool_call_id") {
            return Err(bad(
                &at("tool_call_id"),
                "only a `tool` message can have tool_call_id",
            ));
        }
        for key in ECHOED {
            if m.get(key)
                .is_some_and(|v| v.as_array().is_some_and(Vec::is_empty))
            {
                m.remove(key);
            }
        }
        if let Some(unknown) = m.keys().next() {
            return Err(bad(
                &at(unknown),
                format!("{} is not supported on a message", at(unknown)),
            ));
        }
        out.push(message);
    }
    Ok(out)
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    let host = state.host.clone();
    let ChatRequest {
        model: pipeline,
        stream: streaming,
        include_usage,
        mut request,
    } = ChatRequest::parse(body, |name| {
        host.pipeline(name)
            .is_some_and(|p| p.config.ignore_unknown_params)
    })?;
    if state.host.pipeline(&pipeline).is_none() || !who.may_call(&pipeline) {
        return Err(ApiError::not_found(format!(
            "The model `{pipeline}` does not exist: `model` names a Reins pipeline"
        ))
        .with("param", json!("model")));
    }
    request.session_id = super::answer::session_id(&headers, &request.metadata);
    request.caller = who.caller;
    request.timeout_ms = super::service::caller_timeout(&headers)?;
    request.trace_parent = super::service::trace_parent(&headers);
    let result = match super::stream::answer(&state, &pipeline, request, streaming, |run_id| {
        ChunkShape::new(run_id, &pipeline, include_usage)
    })
    .await?
    {
        super::stream::Answer::Whole(result) => result,
        super::stream::Answer::Streamed(response) => return Ok(response),
    };

    let (status, payload) = completion(&result, &pipeline)?;
    let mut response = if streaming && status == StatusCode::OK {
        stream(payload, include_usage).into_response()
    } else {
        (status, Json(payload)).into_response()
    };
    super::service::reins_headers(response.headers_mut(), &result);
    Ok(response)
}

/// The caller's JSON Schema from `response_format` (`json_schema` type);
/// `json_object` and `text` add no schema (the pipeline's own still applies).
fn response_schema(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => format
            .pointer("/json_schema/schema")
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                bad(
                    "response_format",
                    "response_format.json_schema.schema is required",
                )
            }),
        Some("json_object" | "text") => Ok(None),
        _ => Err(bad(
            "response_format",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// `tool_choice`: `auto`, `none`, `required` or `{"type": "function", "function": {"name": ...}}`.
fn tool_choice(choice: &Value) -> Result<ToolChoice, ApiError> {
    match choice {
        Value::String(s) if s == "auto" => Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(ToolChoice::None),
        Value::String(s) if s == "required" => Ok(ToolChoice::Required),
        other => other
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_owned()))
            .ok_or_else(|| {
                bad(
                    "tool_choice",
                    "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            }),
    }
}

/// OpenAI `tools` (`{"type": "function", "function": {...}}`) as the tools
/// the caller declares; the pipeline's `caller_tools` says what they mean.
fn request_tools(tools: &[Value]) -> Result<Vec<RequestTool>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad(
                    &format!("tools[{i}].type"),
                    format!("tools[{i}]: only `function` tools are supported"),
                ));
            }
            let f = t.get("function").ok_or_else(|| {
                bad(
                    &format!("tools[{i}].function"),
                    format!("tools[{i}].function is required"),
                )
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    &format!("tools[{i}].function.name"),
                    format!("tools[{i}].function.name is required"),
                )
            })?;
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => None,
                Some(p @ Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    return Err(bad(
                        &format!("tools[{i}].function.parameters"),
                        format!("tools[{i}].function.parameters must be a JSON Schema object"),
                    ));
                }
            };
            Ok(RequestTool {
                name: name.to_string(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                parameters,
            })
        })
        .collect()
}

/// Maps a run to an OpenAI answer, or to an error with the right status.
fn completion(result: &RunResult, pipeline: &str) -> Result<(StatusCode, Value), ApiError> {
    let reins = super::answer::reins_object(result);
    match result.status {
        RunStatus::Completed | RunStatus::AwaitingApproval => {}
        RunStatus::Rejected
        | RunStatus::Failed
        | RunStatus::Running
        | RunStatus::Cancelled
        | RunStatus::Partial => {
            return Err(run_error(result, reins));
        }
    }
    let content = super::answer::output_text(result);
    let tool_calls = returned_calls(result);
    let awaiting = result.status == RunStatus::AwaitingApproval;
    let finish_reason = if awaiting {
        "awaiting_approval"
    } else if tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    // Next to tool calls, an empty answer is no content at all.
    let content = if tool_calls.is_empty() {
        content
    } else {
        content.filter(|c| !c.is_empty())
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let body = json!({
        "id": format!("chatcmpl-{}", result.run_id),
        "object": "chat.completion",
        "created": reins_runtime::now_ms() / 1000,
        "model": pipeline,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": {
            "prompt_tokens": result.tokens.prompt,
            "completion_tokens": result.tokens.completion,
            "total_tokens": result.tokens.total,
        },
        "reins": reins,
    });
    Ok((
        if awaiting {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        body,
    ))
}

/// The tool calls that go back to the client, as OpenAI `tool_calls`.
pub(super) fn returned_calls(result: &RunResult) -> Vec<Value> {
    super::answer::returned_calls(result, "call")
        .into_iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}}))
        .collect()
}

/// A run that did not complete, as an error with the status that says why.
pub(super) fn run_error(result: &RunResult, reins: Value) -> ApiError {
    let err = result.error.as_ref().map_or_else(
        || {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "harness_error",
                format!("run {}", result.status.as_str()),
            )
        },
        ApiError::from,
    );
    let violations = result
        .attempts
        .last()
        .map_or_else(Vec::new, |a| a.violations.clone());
    let mut err = err.with("reins", reins);
    if !violations.is_empty() {
        err = err.with("violations", json!(violations));
    }
    if !result.findings.is_empty() {
        err = err.with("findings", json!(result.findings));
    }
    err
}

/// SSE chunks of an already validated answer, then `[DONE]`.
fn stream(
    completion: Value,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let id = completion["id"].clone();
    let created = completion["created"].clone();
    let model = completion["model"].clone();
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(text) = message["content"].as_str() {
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(64) {
            events.push(chunk(
                json!({"content": piece.iter().collect::<String>()}),
                Value::Null,
            ));
        }
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = json!(i);
                c
            })
            .collect();
        events.push(chunk(json!({"tool_calls": calls}), Value::Null));
    }
    events.push(chunk(json!({}), choice["finish_reason"].clone()));
    if include_usage {
        // As OpenAI sends it: every chunk has `usage: null`, then one more
        // chunk with no choices carries the usage.
        for e in &mut events {
            e["usage"] = Value::Null;
        }
        events.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": completion["usage"].clone(),
        }));
    }
    let events = events
        .into_iter()
        .map(|v| Ok(Event::default().data(v.to_string())))
        .chain(std::iter::once(Ok(Event::default().data("[DONE]"))));
    Sse::new(futures_util::stream::iter(events))
}

/// Chat completion chunks of a run streamed as it goes (see
/// [`super::stream`]): each released piece is a content delta; the end
/// carries the tool calls, the finish reason and (`include_usage`) the
/// usage. A run that did not complete ends with `finish_reason`
/// `content_filter` (a checker or a validator stopped it), the usage, and an
/// error event, which the OpenAI SDKs raise as an `APIError`.
struct ChunkShape {
    id: Value,
    created: Value,
    model: Value,
    include_usage: bool,
}

impl ChunkShape {
    fn new(run_id: &str, pipeline: &str, include_usage: bool) -> ChunkShape {
        ChunkShape {
            id: json!(format!("chatcmpl-{run_id}")),
            created: json!(reins_runtime::now_ms() / 1000),
            model: json!(pipeline),
            include_usage,
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Event {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        Event::default().data(c.to_string())
    }
}

impl super::stream::StreamShape for ChunkShape {
    fn start(&mut self) -> Vec<Event> {
        vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
    }

    fn piece(&mut self, text: &str) -> Vec<Event> {
        vec![self.chunk(json!({"content": text}), Value::Null)]
    }

    fn end(&mut self, result: &RunResult) -> Vec<Event> {
        let mut events = Vec::new();
        let completed = matches!(
            result.status,
            RunStatus::Completed | RunStatus::AwaitingApproval
        );
        let calls: Vec<Value> = returned_calls(result)
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["index"] = json!(i);
                c
            })
            .collect();
        if completed && !calls.is_empty() {
            events.push(self.chunk(json!({"tool_calls": calls}), Value::Null));
        }
        let finish = match (&result.error, result.status) {
            (_, RunStatus::AwaitingApproval) => Some("awaiting_approval"),
            (None, _) if !calls.is_empty() => Some("tool_calls"),
            (None, _) => Some("stop"),
            (
                Some(
                    reins_core::pipeline::RunError::StreamCut { .. }
                    | reins_core::pipeline::RunError::ValidationFailed { .. },
                ),
                _,
            ) => Some("content_filter"),
            // The model's stream broke: the answer just stops.
            (Some(_), _) => None,
        };
        if let Some(finish) = finish {
            events.push(self.chunk(json!({}), json!(finish)));
        }
        if self.include_usage {
            events.push(
                Event::default().data(
                    json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": {
                            "prompt_tokens": result.tokens.prompt,
                            "completion_tokens": result.tokens.completion,
                            "total_tokens": result.tokens.total,
                        },
                    })
                    .to_string(),
                ),
            );
        }
        if completed {
            events.push(Event::default().data("[DONE]"));
        } else {
            let err = run_error(result, super::answer::reins_object(result));
            events.push(Event::default().data(json!({"error": err.body()}).to_string()));
        }
        events
    }
}

/// `GET /v1/models`: one model per pipeline.
pub async fn models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    let data: Vec<Value> = state
        .host
        .pipeline_names()
        .into_iter()
        .filter(|name| who.may_call(name))
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "reins"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
