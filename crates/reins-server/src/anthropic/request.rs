//! Parsing a Messages API body, field by field, into Reins' request: every
//! field is either carried through or refused with the field named, never
//! dropped.

use super::*;

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
pub(super) const UNSUPPORTED: [&str; 6] = [
    "top_k",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

impl MessagesRequest {
    /// Reads a request body. `ignore_unknown` (the pipeline's
    /// `ignore_unknown_params`) lets unknown parameters pass unused.
    pub fn parse(
        body: Value,
        ignore_unknown: impl Fn(&str) -> bool,
    ) -> Result<MessagesRequest, ApiError> {
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
                    "model: must be a string naming a Reins pipeline",
                ));
            }
            None => {
                return Err(bad(
                    "model",
                    "model: Field required (it names the Reins pipeline)",
                ));
            }
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
                    _ => Err(bad(
                        "stop_sequences",
                        "stop_sequences: must be a list of strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(bad(
                    "stop_sequences",
                    "stop_sequences: must be a list of strings",
                ));
            }
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
                    format!(
                        "{name}: not supported by Reins; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"
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
                    "{unknown}: unknown parameter; leave it out (or set ignore_unknown_params = true on pipeline `{model}`)"
                ),
            ));
        }
        request.metadata = metadata;
        Ok(MessagesRequest {
            model,
            stream,
            request,
        })
    }
}

/// `system`: a string or a list of text blocks.
pub(super) fn system_text(system: Value) -> Result<String, ApiError> {
    match system {
        Value::String(s) => Ok(s),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let at = format!("system[{j}]");
                match content_block(b, &at)? {
                    ("text", obj) => text_of(obj, &at),
                    (other, _) => Err(bad(
                        &at,
                        format!("{at}: `{other}` blocks are not allowed in system (only text)"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err(bad(
            "system",
            "system: must be a string or a list of text blocks",
        )),
    }
}

/// The conversation, with its whole structure; every `tool_result` must
/// answer a `tool_use` of an earlier assistant message.
pub(super) fn parse_messages(list: Vec<Value>) -> Result<Vec<Message>, ApiError> {
    let mut calls_seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].{k}");
        let Value::Object(mut m) = m else {
            return Err(bad(
                &format!("messages[{i}]"),
                format!("messages[{i}]: must be an object"),
            ));
        };
        m.retain(|_, v| !v.is_null());
        let role = match m.remove("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => r,
            Some(Value::String(r)) => {
                return Err(bad(
                    &at("role"),
                    format!(
                        "{}: `{r}` is not supported (user or assistant; a system prompt goes in the top-level `system`)",
                        at("role")
                    ),
                ));
            }
            _ => {
                return Err(bad(
                    &at("role"),
                    format!("{}: Field required (user or assistant)", at("role")),
                ));
            }
        };
        let content = m
            .remove("content")
            .ok_or_else(|| bad(&at("content"), format!("{}: Field required", at("content"))))?;
        if let Some(unknown) = m.keys().next() {
            return Err(bad(
                &at(unknown),
                format!("{}: not supported on a message", at(unknown)),
            ));
        }
        match content {
            Value::String(s) => out.push(Message::new(role, s)),
            Value::Array(blocks) if role == "assistant" => {
                out.push(assistant_message(i, &blocks, &mut calls_seen)?)
            }
            Value::Array(blocks) => user_messages(i, &blocks, &calls_seen, &mut out)?,
            _ => {
                return Err(bad(
                    &at("content"),
                    format!(
                        "{}: must be a string or a list of content blocks",
                        at("content")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// An assistant turn: its text blocks are the text, its `tool_use` blocks
/// the tool calls.
pub(super) fn assistant_message(
    i: usize,
    blocks: &[Value],
    calls_seen: &mut HashSet<String>,
) -> Result<Message, ApiError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match content_block(b, &at)? {
            ("text", obj) => texts.push(text_of(obj, &at)?),
            ("tool_use", obj) => {
                allow_keys(obj, &["id", "name", "input"], &at)?;
                let field = |k: &str| {
                    obj.get(k).and_then(Value::as_str).ok_or_else(|| {
                        bad(
                            &format!("{at}.{k}"),
                            format!("{at}.{k}: Field required (a string)"),
                        )
                    })
                };
                let (id, name) = (field("id")?, field("name")?);
                let input = match obj.get("input") {
                    None | Some(Value::Null) => json!({}),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(_) => {
                        return Err(bad(
                            &format!("{at}.input"),
                            format!("{at}.input: must be an object"),
                        ));
                    }
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
                    format!(
                        "{at}.type: `{other}` blocks are not supported in an assistant message (text, tool_use)"
                    ),
                ));
            }
        }
    }
    Ok(Message::tool_calls(texts.join("\n"), calls))
}

/// A user turn: its `tool_result` blocks become `tool` messages and the
/// text and image blocks between them `user` messages, in their order.
pub(super) fn user_messages(
    i: usize,
    blocks: &[Value],
    calls_seen: &HashSet<String>,
    out: &mut Vec<Message>,
) -> Result<(), ApiError> {
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
pub(super) fn tool_message(
    obj: &Map<String, Value>,
    at: &str,
    calls_seen: &HashSet<String>,
) -> Result<Message, ApiError> {
    allow_keys(obj, &["tool_use_id", "content", "is_error"], at)?;
    let id = obj
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                &format!("{at}.tool_use_id"),
                format!("{at}.tool_use_id: Field required (a string)"),
            )
        })?;
    if !calls_seen.contains(id) {
        return Err(bad(
            &format!("{at}.tool_use_id"),
            format!(
                "{at}.tool_use_id: `{id}` answers no tool_use block of an earlier assistant message"
            ),
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
        Some(_) => {
            return Err(bad(
                &format!("{at}.is_error"),
                format!("{at}.is_error: must be true or false"),
            ));
        }
    };
    Ok(message)
}

/// A text or image block as a content part (the OpenAI part shape Reins keeps).
pub(super) fn part(kind: &str, obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    match kind {
        "text" => Ok(json!({"type": "text", "text": text_of(obj, at)?})),
        "image" => image_part(obj, at),
        other => Err(bad(
            &format!("{at}.type"),
            format!(
                "{at}.type: `{other}` blocks are not supported here (text, image, tool_result)"
            ),
        )),
    }
}

/// Text and image parts as one message: the text parts' text joined by
/// newlines, and the parts themselves kept when there is an image among them.
pub(super) fn parts_message(role: &str, parts: Vec<Value>) -> Option<Message> {
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
pub(super) fn image_part(obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    allow_keys(obj, &["source"], at)?;
    let source = obj.get("source").ok_or_else(|| {
        bad(
            &format!("{at}.source"),
            format!("{at}.source: Field required"),
        )
    })?;
    let field = |k: &str| {
        source.get(k).and_then(Value::as_str).ok_or_else(|| {
            bad(
                &format!("{at}.source.{k}"),
                format!("{at}.source.{k}: Field required (a string)"),
            )
        })
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
pub(super) fn content_block<'a>(
    b: &'a Value,
    at: &str,
) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
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
pub(super) fn text_of(obj: &Map<String, Value>, at: &str) -> Result<String, ApiError> {
    allow_keys(obj, &["text", "citations"], at)?;
    obj.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            bad(
                &format!("{at}.text"),
                format!("{at}.text: Field required (a string)"),
            )
        })
}

/// Refuses a block field that is not `type`, `cache_control` or one of `allowed`.
pub(super) fn allow_keys(
    obj: &Map<String, Value>,
    allowed: &[&str],
    at: &str,
) -> Result<(), ApiError> {
    match obj.keys().find(|k| {
        !(k.as_str() == "type" || k.as_str() == "cache_control" || allowed.contains(&k.as_str()))
    }) {
        Some(k) => Err(bad(
            &format!("{at}.{k}"),
            format!("{at}.{k}: not supported on this block"),
        )),
        None => Ok(()),
    }
}

/// Client `tools` (`{name, description, input_schema}`) as the tools the
/// caller declares; server tools (a `type` other than `custom`) are refused.
pub(super) fn request_tools(tools: &[Value]) -> Result<Vec<RequestTool>, ApiError> {
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
pub(super) fn tool_choice(choice: &Value) -> Result<(ToolChoice, Option<bool>), ApiError> {
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
                .ok_or_else(|| {
                    bad(
                        "tool_choice.name",
                        "tool_choice.name: Field required for type `tool`",
                    )
                })?
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
