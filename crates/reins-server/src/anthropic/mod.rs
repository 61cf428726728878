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
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use reins_core::pipeline::{Request, RequestTool, RunResult, RunStatus};
use reins_core::provider::ToolChoice;
use reins_runtime::{Message, MessageToolCall};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::convert::Infallible;

mod request;
pub use request::MessagesRequest;

/// `POST /v1/messages`
pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, AnthropicError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    let JsonBody(body) = body?;
    let host = state.host.clone();
    let MessagesRequest {
        model: pipeline,
        stream: streaming,
        mut request,
    } = MessagesRequest::parse(body, |name| {
        host.pipeline(name)
            .is_some_and(|p| p.config.ignore_unknown_params)
    })?;
    if state.host.pipeline(&pipeline).is_none() || !who.may_call(&pipeline) {
        return Err(ApiError::not_found(format!(
            "model: `{pipeline}` does not exist: `model` names a Reins pipeline"
        ))
        .into());
    }
    request.session_id = answer::session_id(&headers, &request.metadata);
    request.caller = who.caller;
    request.timeout_ms = super::service::caller_timeout(&headers)?;
    request.trace_parent = super::service::trace_parent(&headers);
    let result = match super::stream::answer(&state, &pipeline, request, streaming, |run_id| {
        EventShape::new(run_id, &pipeline)
    })
    .await?
    {
        super::stream::Answer::Whole(result) => result,
        super::stream::Answer::Streamed(response) => return Ok(response),
    };

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
        RunStatus::Rejected
        | RunStatus::Failed
        | RunStatus::Running
        | RunStatus::Cancelled
        | RunStatus::Partial => {
            return Err(super::openai::run_error(result, reins));
        }
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
    Ok((
        if awaiting {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        body,
    ))
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
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )];
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
        events.extend(deltas.into_iter().map(|d| {
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": d}),
            )
        }));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
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
        super::error::respond(
            status,
            json!({"type": "error", "error": error}),
            retry_after,
        )
    }
}

/// Messages events of a run streamed as it goes (see [`super::stream`]):
/// one text block whose deltas are the released pieces; at the end its
/// stop, any `tool_use` blocks, `message_delta` with the stop reason and the
/// usage, and `message_stop`. A run that did not complete ends its text
/// block, sends `message_delta` (stop reason `refusal` when a checker or
/// a validator stopped it) with the usage, then an `error` event, which the
/// Anthropic SDKs raise.
struct EventShape {
    id: String,
    model: String,
}

impl EventShape {
    fn new(run_id: &str, pipeline: &str) -> EventShape {
        EventShape {
            id: format!("msg_{run_id}"),
            model: pipeline.to_owned(),
        }
    }
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl super::stream::StreamShape for EventShape {
    fn start(&mut self) -> Vec<Event> {
        vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ]
    }

    fn piece(&mut self, text: &str) -> Vec<Event> {
        vec![event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )]
    }

    fn end(&mut self, result: &RunResult) -> Vec<Event> {
        let mut events = vec![event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        )];
        let completed = matches!(
            result.status,
            RunStatus::Completed | RunStatus::AwaitingApproval
        );
        let calls = if completed {
            answer::returned_calls(result, "toolu")
        } else {
            Vec::new()
        };
        for (i, c) in calls.iter().enumerate() {
            let index = i + 1;
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
            ));
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": c.arguments.to_string()}}),
            ));
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        let stop_reason = match (&result.error, result.status) {
            (_, RunStatus::AwaitingApproval) => json!("awaiting_approval"),
            (None, _) if !calls.is_empty() => json!("tool_use"),
            (None, _) => json!("end_turn"),
            (
                Some(
                    reins_core::pipeline::RunError::StreamCut { .. }
                    | reins_core::pipeline::RunError::ValidationFailed { .. },
                ),
                _,
            ) => json!("refusal"),
            (Some(_), _) => Value::Null,
        };
        events.push(event(
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"input_tokens": result.tokens.prompt, "output_tokens": result.tokens.completion},
            }),
        ));
        if completed {
            events.push(event("message_stop", json!({"type": "message_stop"})));
        } else {
            let err = super::openai::run_error(result, answer::reins_object(result));
            let (_, kind) = error_type(err.status, err.kind);
            events.push(event(
                "error",
                json!({"type": "error", "error": {"type": kind, "message": err.message}}),
            ));
        }
        events
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
        408 | 504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    (status, kind)
}

#[cfg(test)]
mod tests {
    use super::request::*;
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
        assert_eq!(
            (
                m[3].role.as_str(),
                m[3].tool_call_id.as_deref(),
                m[3].is_error
            ),
            ("tool", Some("toolu_1"), false)
        );
        assert_eq!(
            (
                m[4].content.as_str(),
                m[4].tool_call_id.as_deref(),
                m[4].is_error
            ),
            ("no such thing", Some("toolu_2"), true)
        );
        assert_eq!(
            (
                m[5].role.as_str(),
                m[5].content.as_str(),
                m[5].parts.is_none()
            ),
            ("user", "so?", true)
        );
        let s = &r.request.sampling;
        assert_eq!(
            (s.max_tokens, s.temperature, s.top_p),
            (Some(100), Some(0.2), Some(0.9))
        );
        assert_eq!(
            (s.stop.clone(), s.user.as_deref()),
            (vec!["END".to_owned()], Some("u-1"))
        );
        assert_eq!(s.tool_choice, Some(ToolChoice::Tool("lookup".into())));
        assert_eq!(s.parallel_tool_calls, Some(false));
        assert_eq!(r.request.metadata, json!({"user_id": "u-1", "user": "u-1"}));
        assert_eq!(
            r.request.tools.as_ref().unwrap()[0].parameters,
            Some(json!({"type": "object"}))
        );
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
        assert!(
            tool_choice(&json!({"type": "tool"}))
                .unwrap_err()
                .message
                .contains("tool_choice.name")
        );
        assert!(tool_choice(&json!("auto")).is_err());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let user = json!([{"role": "user", "content": "hi"}]);
        assert!(refused(json!({"model": "p", "messages": user})).contains("max_tokens"));
        assert!(
            refused(json!({"model": "p", "max_tokens": 5, "messages": user, "top_k": 5}))
                .starts_with("top_k")
        );
        assert!(
            refused(json!({"model": "p", "max_tokens": 5, "messages": user, "speed": 1}))
                .starts_with("speed")
        );
        assert!(
            refused(json!({"model": "p", "max_tokens": 5, "messages": user, "temperature": 1.5}))
                .contains("temperature")
        );
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]},
        ]}));
        assert!(
            m.contains("messages[0].content[0].tool_use_id") && m.contains("toolu_x"),
            "{m}"
        );
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "document", "source": {}}]},
        ]}));
        assert!(m.contains("`document`"), "{m}");
        let m = refused(json!({"model": "p", "max_tokens": 5, "messages": user,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
        assert!(m.starts_with("tools[0].type"), "{m}");
        // With ignore_unknown_params the pipeline lets them pass unused.
        let r = MessagesRequest::parse(
            json!({"model": "p", "max_tokens": 5, "messages": user, "top_k": 5, "speed": 1}),
            |_| true,
        );
        assert!(r.is_ok());
    }

    #[test]
    fn errors_take_anthropics_types_and_statuses() {
        let unavailable =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "down");
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
        assert_eq!(
            p.iter().map(|s| s.chars().count()).collect::<Vec<_>>(),
            vec![64, 64, 2]
        );
        assert_eq!(p.concat(), text);
    }
}
