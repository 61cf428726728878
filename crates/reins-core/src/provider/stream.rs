//! Streamed answers: what a provider's server-sent events say, as
//! [`Delta`]s, and the answer they add up to ([`Collected`]).
//!
//! The HTTP providers read the upstream's event stream (`stream: true`);
//! a provider that cannot stream answers whole, as one delta
//! ([`whole`]). The [`super::Breaker`] opens a stream under the same
//! guards as a call and hands it on once its first delta arrived (see
//! [`super::Breaker::stream`]).

use super::{ChatResponse, ProviderError, ToolCall, Usage};
use crate::config::HttpConfig;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Answer text.
    Text(String),
    /// Part of tool call `index`: its id and name come first, its
    /// arguments (JSON text) in parts.
    ToolCall {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// Token counts, as the upstream reported them (the last one wins,
    /// field by field where it reports zero).
    Usage(Usage),
    /// The model that answers.
    Model(String),
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `end_turn`...).
    Finish(String),
}

/// The deltas of one answer, ending with the stream.
pub type DeltaStream = BoxStream<'static, Result<Delta, ProviderError>>;

/// A stream being opened.
pub type StreamFuture<'a> =
    Pin<Box<dyn Future<Output = Result<DeltaStream, ProviderError>> + Send + 'a>>;

/// A whole answer as a stream of one delta per part.
pub fn whole(response: ChatResponse) -> DeltaStream {
    let mut deltas = vec![Ok(Delta::Model(response.model))];
    if !response.content.is_empty() {
        deltas.push(Ok(Delta::Text(response.content)));
    }
    for (index, call) in response.tool_calls.into_iter().enumerate() {
        deltas.push(Ok(Delta::ToolCall {
            index,
            id: call.id,
            name: Some(call.name),
            arguments: call.arguments.to_string(),
        }));
    }
    if let Some(usage) = response.usage {
        deltas.push(Ok(Delta::Usage(usage)));
    }
    futures_util::stream::iter(deltas).boxed()
}

/// What the deltas of a stream add up to.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    pub content: String,
    calls: Vec<(Option<String>, String, String)>,
    pub usage: Option<Usage>,
    pub model: String,
    pub finish: Option<String>,
}

impl Collected {
    pub fn push(&mut self, delta: &Delta) {
        match delta {
            Delta::Text(t) => self.content.push_str(t),
            Delta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                if self.calls.len() <= *index {
                    self.calls
                        .resize(*index + 1, (None, String::new(), String::new()));
                }
                let call = &mut self.calls[*index];
                if id.is_some() {
                    call.0 = id.clone();
                }
                if let Some(name) = name {
                    call.1.push_str(name);
                }
                call.2.push_str(arguments);
            }
            Delta::Usage(u) => {
                let mut merged = self.usage.unwrap_or_default();
                if u.prompt_tokens > 0 {
                    merged.prompt_tokens = u.prompt_tokens;
                }
                if u.completion_tokens > 0 {
                    merged.completion_tokens = u.completion_tokens;
                }
                merged.total_tokens = u
                    .total_tokens
                    .max(merged.prompt_tokens + merged.completion_tokens);
                self.usage = Some(merged);
            }
            Delta::Model(m) => self.model.clone_from(m),
            Delta::Finish(f) => self.finish = Some(f.clone()),
        }
    }

    /// Whether tool calls have started (their text is not streamed).
    pub fn has_tool_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The answer, as a call would have returned it. Arguments that are not
    /// JSON stay a string (and fail the tool's schema).
    pub fn into_response(self) -> ChatResponse {
        ChatResponse {
            content: self.content,
            tool_calls: self
                .calls
                .into_iter()
                .filter(|(_, name, _)| !name.is_empty())
                .map(|(id, name, args)| ToolCall {
                    id,
                    name,
                    arguments: if args.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&args).unwrap_or(Value::String(args))
                    },
                })
                .collect(),
            usage: self.usage,
            model: self.model,
            finish_reason: self.finish,
        }
    }
}

/// How a provider reads its upstream's answers: one event of a stream
/// (`Ok(None)`: the stream is done), and a whole answer.
pub(super) struct Parsers {
    pub event: fn(&str, &str) -> Result<Option<Vec<Delta>>, String>,
    pub whole: fn(&[u8]) -> Result<ChatResponse, String>,
}

/// Sends `request` and, on a 2xx, reads its body as server-sent events,
/// each turned into deltas. A server that ignores `stream: true` and
/// answers whole (`application/json`) is read whole, as one delta.
pub(super) async fn open(
    provider: &str,
    url: &str,
    http: &HttpConfig,
    request: reqwest::RequestBuilder,
    parsers: Parsers,
) -> Result<DeltaStream, ProviderError> {
    let response = super::http::respond(provider, url, http, request).await?;
    let is_events = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/event-stream"));
    if !is_events {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| super::http::transport_error(provider, url, http, e))?;
        let answer = (parsers.whole)(&bytes).map_err(|message| ProviderError::BadResponse {
            provider: provider.to_owned(),
            message: format!("{message}; body: {}", super::http::snippet(&bytes)),
        })?;
        let mut deltas = whole(answer);
        return Ok(
            futures_util::stream::poll_fn(move |cx| deltas.poll_next_unpin(cx))
                .chain(futures_util::stream::once(async {
                    Ok(Delta::Finish("stop".to_owned()))
                }))
                .boxed(),
        );
    }
    let parse = parsers.event;
    let name = provider.to_owned();
    let events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
    let deltas = events
        .map(move |event| (event, name.clone()))
        .scan(false, move |done, (event, name)| {
            if *done {
                return std::future::ready(None);
            }
            let out = match event {
                Err(e) => {
                    *done = true;
                    vec![Err(ProviderError::Interrupted {
                        provider: name,
                        message: format!("the event stream broke: {e}"),
                    })]
                }
                Ok(sse) => {
                    let data = sse.data.unwrap_or_default();
                    match parse(sse.event.as_deref().unwrap_or(""), &data) {
                        Ok(Some(deltas)) => deltas.into_iter().map(Ok).collect(),
                        Ok(None) => {
                            *done = true;
                            vec![]
                        }
                        Err(message) => {
                            *done = true;
                            vec![Err(ProviderError::BadResponse {
                                provider: name,
                                message: format!(
                                    "{message}; event: {}",
                                    super::http::snippet(data.as_bytes())
                                ),
                            })]
                        }
                    }
                }
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten();
    Ok(ended(deltas, provider).boxed())
}

/// `deltas`, with an error at its end if it stopped without the upstream
/// saying it was done (a connection closed mid-answer).
fn ended(
    deltas: impl futures_util::Stream<Item = Result<Delta, ProviderError>> + Send + 'static,
    provider: &str,
) -> impl futures_util::Stream<Item = Result<Delta, ProviderError>> + Send + 'static {
    let name = provider.to_owned();
    let mut finished = false;
    let mut failed = false;
    deltas
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .filter_map(move |item| {
            let out = match item {
                Some(Ok(d)) => {
                    finished |= matches!(d, Delta::Finish(_));
                    Some(Ok(d))
                }
                Some(Err(e)) => {
                    failed = true;
                    Some(Err(e))
                }
                None if !finished && !failed => Some(Err(ProviderError::Interrupted {
                    provider: name.clone(),
                    message: "the event stream ended before the answer did".to_owned(),
                })),
                None => None,
            };
            std::future::ready(out)
        })
}
