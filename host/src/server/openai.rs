//! The OpenAI-compatible surface: any OpenAI client gets a harness by
//! changing its base URL. The `model` field names the pipeline; the answer is
//! the validated output, never an unvalidated token.

use super::AppState;
use super::error::{ApiError, JsonBody};
use super::settings::Scope;
use crate::pipeline::{Request, RequestTool, RunError, RunResult, RunStatus};
use crate::runtime::Message;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

/// The parts of a chat completion request Reins reads. Sampling parameters
/// belong to the pipeline's provider config and are accepted but not used.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub _rest: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `content` is a string or a list of typed parts; only text parts are used.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Run)?;
    let pipeline = body.model.clone();
    if state.host.pipeline(&pipeline).is_none() {
        return Err(ApiError::not_found(format!(
            "The model `{pipeline}` does not exist: `model` names a Reins pipeline"
        ))
        .with("param", json!("model")));
    }
    if body.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty").with("param", json!("messages")));
    }
    let messages: Vec<Message> = body
        .messages
        .iter()
        .map(|m| Message::new(m.role.clone(), m.content.as_ref().map(Content::text).unwrap_or_default()))
        .collect();
    let mut metadata = body.metadata.clone().filter(Value::is_object).unwrap_or_else(|| json!({}));
    if let (Some(user), Some(obj)) = (&body.user, metadata.as_object_mut()) {
        obj.entry("user").or_insert_with(|| json!(user));
    }
    let mut request = Request::from(messages).with_metadata(metadata);
    // Session memory: `X-Reins-Session`, or `metadata.session_id`.
    request.session_id = headers
        .get("x-reins-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            request.metadata.get("session_id").and_then(Value::as_str).map(str::to_owned)
        });
    if let Some(schema) = response_schema(body.response_format.as_ref())? {
        request = request.with_schema(schema);
    }
    if let Some(tools) = &body.tools {
        if !matches!(body.tool_choice.as_ref().and_then(Value::as_str), Some("none")) {
            request = request.with_tools(request_tools(tools)?);
        }
    }
    let result = super::run_pipeline(&state, &pipeline, request, None).await?;
    state.runs.insert(result.clone(), None);

    let (status, payload) = completion(&result, &pipeline)?;
    let mut response = if body.stream && status == StatusCode::OK {
        stream(payload).into_response()
    } else {
        (status, Json(payload)).into_response()
    };
    super::reins_headers(response.headers_mut(), &result);
    Ok(response)
}

/// The caller's JSON Schema from `response_format` (`json_schema` type);
/// `json_object` and `text` add no schema (the pipeline's own still applies).
fn response_schema(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = format else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => format
            .pointer("/json_schema/schema")
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("response_format.json_schema.schema is required")
                    .with("param", json!("response_format"))
            }),
        Some("json_object" | "text") => Ok(None),
        _ => Err(ApiError::bad_request("response_format.type must be text, json_object or json_schema")
            .with("param", json!("response_format"))),
    }
}

/// OpenAI `tools` (`{"type": "function", "function": {...}}`) as the tools
/// the caller declares; they can only narrow what the constraints allow.
fn request_tools(tools: &[Value]) -> Result<Vec<RequestTool>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").ok_or_else(|| {
                ApiError::bad_request(format!("tools[{i}]: only function tools are supported"))
                    .with("param", json!("tools"))
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("tools[{i}].function.name is required")).with("param", json!("tools"))
            })?;
            Ok(RequestTool {
                name: name.to_string(),
                description: f.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
                parameters: f.get("parameters").cloned(),
            })
        })
        .collect()
}

/// Maps a run to an OpenAI answer, or to an error with the right status.
fn completion(result: &RunResult, pipeline: &str) -> Result<(StatusCode, Value), ApiError> {
    let reins = json!({
        "run_id": result.run_id,
        "status": result.status.as_str(),
        "attempts": result.attempts.len(),
        "skipped": result.skipped,
        "degraded": result.degraded,
        "served_by": result.served_by,
        "notice": result.notice,
    });
    match result.status {
        RunStatus::Completed | RunStatus::AwaitingApproval => {}
        RunStatus::Rejected | RunStatus::Failed => return Err(run_error(result, reins)),
    }
    let content = result.output.as_ref().map(|o| match o {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    // Actions a webhook already carried out are not the client's to run.
    let returned: Vec<&crate::runtime::Action> = if result.executions.is_empty() {
        result.actions.iter().collect()
    } else {
        result
            .executions
            .iter()
            .zip(&result.actions)
            .filter(|(e, _)| e.status == crate::pipeline::ExecStatus::Returned)
            .map(|(_, a)| a)
            .collect()
    };
    let tool_calls: Vec<Value> = returned
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "id": format!("call_{}_{i}", short(&result.run_id)),
                "type": "function",
                "function": {"name": a.tool, "arguments": a.arguments.to_string()},
            })
        })
        .collect();
    let awaiting = result.status == RunStatus::AwaitingApproval;
    let finish_reason = if awaiting {
        "awaiting_approval"
    } else if tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    // Next to tool calls, an empty answer is no content at all.
    let content = if tool_calls.is_empty() { content } else { content.filter(|c| !c.is_empty()) };
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let body = json!({
        "id": format!("chatcmpl-{}", result.run_id),
        "object": "chat.completion",
        "created": crate::runtime::now_ms() / 1000,
        "model": pipeline,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": {
            "prompt_tokens": result.tokens.prompt,
            "completion_tokens": result.tokens.completion,
            "total_tokens": result.tokens.total,
        },
        "reins": reins,
    });
    Ok((if awaiting { StatusCode::ACCEPTED } else { StatusCode::OK }, body))
}

fn run_error(result: &RunResult, reins: Value) -> ApiError {
    let message = result
        .error
        .as_ref()
        .map_or_else(|| format!("run {}", result.status.as_str()), ToString::to_string);
    let (status, kind) = match &result.error {
        Some(RunError::ValidationFailed { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        Some(RunError::Rejected { .. } | RunError::Denied { .. }) => (StatusCode::BAD_REQUEST, "rejected"),
        Some(RunError::BadRequest(_)) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        Some(RunError::ModelUnavailable { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
        Some(RunError::UnknownPipeline(_)) => (StatusCode::NOT_FOUND, "not_found_error"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "harness_error"),
    };
    let violations = result.attempts.last().map_or_else(Vec::new, |a| a.violations.clone());
    let mut err = ApiError::new(status, kind, message).with("reins", reins);
    if !violations.is_empty() {
        err = err.with("violations", json!(violations));
    }
    if !result.findings.is_empty() {
        err = err.with("findings", json!(result.findings));
    }
    err
}

/// SSE chunks of an already validated answer, then `[DONE]`.
fn stream(completion: Value) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
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
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    if let Some(text) = message["content"].as_str() {
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(64) {
            events.push(chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null));
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
    let mut last = chunk(json!({}), choice["finish_reason"].clone());
    last["usage"] = completion["usage"].clone();
    events.push(last);
    let events = events
        .into_iter()
        .map(|v| Ok(Event::default().data(v.to_string())))
        .chain(std::iter::once(Ok(Event::default().data("[DONE]"))));
    Sse::new(futures_util::stream::iter(events))
}

/// `GET /v1/models`: one model per pipeline.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Run)?;
    let data: Vec<Value> = state
        .host
        .pipeline_names()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "reins"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

fn short(run_id: &str) -> &str {
    run_id.get(..8).unwrap_or(run_id)
}
