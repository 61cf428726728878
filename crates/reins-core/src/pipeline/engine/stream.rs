//! A streamed model call (`stream = "checked"` or `"json"`): the answer
//! goes to the client as it is generated, and no byte of it before every
//! stream checker passed it.
//!
//! Text collects in a hold-back window. Once the window holds
//! `stream_window_chars`, the text up to its last word (or sentence)
//! boundary is offered to the checkers in order: each may pass it, mask it
//! (`replace`), hold it for more text, or cut the stream. What all passed
//! goes to the [`StreamSink`]; the rest of the window waits. In `json` mode
//! only whole values are offered, and each offered prefix must not break
//! the schema (a wrong type cuts the stream; before any release, that is a
//! repair).
//!
//! Failures: an upstream that fails before anything was released is one
//! more failed provider (the chain falls back); after a release the run
//! ends `partial` with the error, which the surfaces send as the stream's
//! last event.

use super::*;
use crate::config::{ReleaseAt, StreamMode};
use crate::pipeline::stream::{JsonPrefix, StreamSink, next_piece, prefix_violation};
use crate::provider::{Breaker, ChatRequest, ChatResponse, Collected, Delta, ProviderError};
use reins_runtime::StreamVerdict;

/// A run's streaming state.
pub(super) struct Streamer {
    sink: StreamSink,
    mode: StreamMode,
    window: usize,
    at: ReleaseAt,
    checkers: Vec<Arc<Plugin>>,
    /// The text the client has (after the checkers' masks).
    released: String,
    /// Offers made and held, for the trace.
    offers: u32,
    holds: u32,
}

impl Streamer {
    /// Whether any text reached the client: from then on the answer can be
    /// neither repaired nor taken from another provider.
    pub(super) fn released_any(&self) -> bool {
        !self.released.is_empty()
    }

    pub(super) fn released(&self) -> &str {
        &self.released
    }
}

/// How one streamed call ended.
pub(super) enum Streamed {
    /// The whole answer came; its text is what the client was sent.
    Answer { response: ChatResponse, tries: u32 },
    /// The JSON answer broke the schema before anything was released: a
    /// violation to repair.
    Broke {
        response: ChatResponse,
        tries: u32,
        violation: Violation,
    },
    /// The provider failed before anything was released: try the next one.
    Failed { error: ProviderError, tries: u32 },
}

/// What the checkers made of one offer.
enum Offer {
    Released,
    Held,
    Cut { checker: String, reason: String },
}

impl Run<'_> {
    /// Sets up streaming for a caller that asked for it (a `sink`), in the
    /// pipeline's mode; `buffered` releases nothing before the end.
    pub(super) fn start_streaming(&mut self, sink: Option<StreamSink>) -> Result<(), RunError> {
        let Some(sink) = sink else { return Ok(()) };
        let config = &self.p.config;
        let mode = match (config.stream, self.mode) {
            (Some(m), OutputMode::Json) => m,
            // A prose answer has no JSON prefix to check.
            (Some(StreamMode::Json), OutputMode::Text) => StreamMode::Checked,
            (Some(m), OutputMode::Text) => m,
            (None, OutputMode::Json) => StreamMode::Buffered,
            (None, OutputMode::Text) => StreamMode::Checked,
        };
        self.result.stream = Some(mode.as_str().to_owned());
        // Buffered, the upstream still streams (its first token starts the
        // clock of its deadline, and retries happen before it), but nothing
        // is released: the validated answer is sent whole.
        let checkers = config
            .stream_checkers
            .iter()
            .map(|e| self.plugin(Layer::StreamChecker, &e.plugin))
            .collect::<Result<Vec<_>, _>>()?;
        self.stream = Some(Streamer {
            sink,
            mode,
            window: config.stream_window_chars.max(1),
            at: config.stream_release,
            checkers,
            released: String::new(),
            offers: 0,
            holds: 0,
        });
        Ok(())
    }

    /// One provider's answer, streamed to the client as it passes.
    pub(super) async fn stream_model(
        &mut self,
        breaker: &Breaker,
        request: &ChatRequest,
    ) -> Result<Streamed, RunError> {
        let called = breaker.stream(request).await;
        let tries = called.tries;
        let mut upstream = match called.result {
            Ok(s) => s,
            Err(error) => return Ok(Streamed::Failed { error, tries }),
        };
        let mut got = Collected::default();
        // Text not yet offered, and (json) how far the answer was released.
        let mut pending = String::new();
        let mut json = JsonPrefix::default();
        let mut json_released = 0;
        let cancel = self.cancel.clone();
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(RunError::client_gone()),
                next = upstream.next() => next,
            };
            let delta = match next {
                None => break,
                Some(Ok(d)) => d,
                Some(Err(error)) => {
                    upstream.finish(Err(&error));
                    return self.broken(error, tries);
                }
            };
            got.push(&delta);
            let Delta::Text(text) = delta else { continue };
            let stream = self.stream.as_ref().map(|s| (s.mode, s.window, s.at));
            match stream {
                Some((StreamMode::Buffered, ..)) | None => {}
                Some((StreamMode::Json, ..)) => {
                    json.feed(&got.content);
                    if let Some(v) = self.json_violation(&json, &got.content) {
                        upstream.finish(Ok(got.usage));
                        return self.schema_cut(got, v, tries);
                    }
                    if let Some(start) = json.start() {
                        let from = json_released.max(start);
                        let to = json.safe_end();
                        if to > from && to - from >= self.window() {
                            let piece = got.content[from..to].to_owned();
                            match self.offer(piece, false).await? {
                                Offer::Released => json_released = to,
                                Offer::Held => {}
                                Offer::Cut { checker, reason } => {
                                    upstream.finish(Ok(got.usage));
                                    return Err(self.cut(checker, reason));
                                }
                            }
                        }
                    }
                }
                Some((StreamMode::Checked, window, at)) => {
                    pending.push_str(&text);
                    loop {
                        let point = next_piece(&pending, window, at);
                        if point == 0 {
                            break;
                        }
                        match self.offer(pending[..point].to_owned(), false).await? {
                            Offer::Released => {
                                pending.drain(..point);
                            }
                            Offer::Held => break,
                            Offer::Cut { checker, reason } => {
                                upstream.finish(Ok(got.usage));
                                return Err(self.cut(checker, reason));
                            }
                        }
                    }
                }
            }
        }
        upstream.finish(Ok(got.usage));
        // The end: what is left goes out (or is cut) now.
        let mode = self.stream.as_ref().map(|s| s.mode);
        let rest = match mode {
            Some(StreamMode::Json) => {
                json.feed(&got.content);
                if let Some(v) = self.json_violation(&json, &got.content) {
                    return self.schema_cut(got, v, tries);
                }
                match (json.start(), json.is_complete()) {
                    (Some(start), true) => {
                        got.content[json_released.max(start)..json.safe_end()].to_owned()
                    }
                    // Not one whole document: the validators say why, and
                    // nothing more is released.
                    _ => String::new(),
                }
            }
            Some(StreamMode::Checked) => std::mem::take(&mut pending),
            Some(StreamMode::Buffered) | None => String::new(),
        };
        if !rest.is_empty() {
            match self.offer(rest, true).await? {
                Offer::Released => {}
                Offer::Held => unreachable!("the last offer is never held"),
                Offer::Cut { checker, reason } => return Err(self.cut(checker, reason)),
            }
        }
        self.trace_stream();
        let mut response = got.into_response();
        if mode == Some(StreamMode::Checked) {
            // The validators judge what the client was sent.
            if let Some(s) = &self.stream {
                response.content = s.released.clone();
            }
        }
        Ok(Streamed::Answer { response, tries })
    }

    fn window(&self) -> usize {
        self.stream.as_ref().map_or(1, |s| s.window)
    }

    /// Offers `piece` to every checker in order; releases it if all pass.
    async fn offer(&mut self, mut piece: String, last: bool) -> Result<Offer, RunError> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(Offer::Held);
        };
        s.offers += 1;
        let checkers = s.checkers.clone();
        for checker in checkers {
            let ctx = self.ctx.clone();
            // The checker sees the tail of what was sent, not all of it.
            let released = self
                .stream
                .as_ref()
                .map(|s| tail(&s.released, reins_runtime::RELEASED_TAIL).to_owned())
                .unwrap_or_default();
            let offered = piece.clone();
            let timed = blocking(&checker, move |p| {
                p.check_stream(&ctx, &released, &offered, last)
            })
            .await;
            let verdict = match timed.result {
                Ok(v) => v,
                Err(e) => {
                    // A checker that fails is skipped only if it fails open.
                    let failed = Timed::<StreamVerdict> {
                        result: Err(e),
                        start: timed.start,
                        end: timed.end,
                    };
                    match self.settle(Layer::StreamChecker, &checker, failed, |_| String::new())? {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            match verdict {
                StreamVerdict::Pass => {}
                StreamVerdict::Replace(text) => {
                    self.trace(
                        "stream-checker",
                        checker.name(),
                        format!("masked ({} → {} bytes)", piece.len(), text.len()),
                        timed.start,
                        timed.end,
                    );
                    piece = text;
                }
                StreamVerdict::Hold if !last => {
                    if let Some(s) = self.stream.as_mut() {
                        s.holds += 1;
                    }
                    return Ok(Offer::Held);
                }
                StreamVerdict::Hold => {
                    return Ok(Offer::Cut {
                        checker: checker.name().to_owned(),
                        reason: "it held the end of the answer back".to_owned(),
                    });
                }
                StreamVerdict::Cut(reason) => {
                    self.trace(
                        "stream-checker",
                        checker.name(),
                        format!("cut: {reason}"),
                        timed.start,
                        timed.end,
                    );
                    return Ok(Offer::Cut {
                        checker: checker.name().to_owned(),
                        reason,
                    });
                }
            }
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(Offer::Held);
        };
        if !piece.is_empty() {
            s.released.push_str(&piece);
            // A client that is gone is the cancel token's business.
            s.sink.send(piece);
        }
        Ok(Offer::Released)
    }

    /// The first thing in the JSON prefix no more text can mend.
    fn json_violation(&self, json: &JsonPrefix, answer: &str) -> Option<Violation> {
        let doc = json.closed(answer)?;
        let schemas = self
            .p
            .schema_validator
            .as_ref()
            .into_iter()
            .chain(self.request_schema.as_deref());
        for schema in schemas {
            if let Some((path, message)) = prefix_violation(schema, &doc) {
                return Some(violation(path, "schema", message));
            }
        }
        None
    }

    /// The schema broke mid-stream: a repair if nothing was released.
    fn schema_cut(
        &mut self,
        got: Collected,
        v: Violation,
        tries: u32,
    ) -> Result<Streamed, RunError> {
        self.trace_stream();
        if self.stream.as_ref().is_some_and(Streamer::released_any) {
            return Err(self.cut("schema".to_owned(), v.message));
        }
        Ok(Streamed::Broke {
            response: got.into_response(),
            tries,
            violation: v,
        })
    }

    /// The upstream failed mid-answer: another provider if nothing was
    /// released, else the end of the run.
    fn broken(&mut self, error: ProviderError, tries: u32) -> Result<Streamed, RunError> {
        self.trace_stream();
        if self.stream.as_ref().is_some_and(Streamer::released_any) {
            return Err(RunError::StreamBroken {
                message: error.to_string(),
            });
        }
        Ok(Streamed::Failed { error, tries })
    }

    fn cut(&mut self, checker: String, reason: String) -> RunError {
        metrics::counter!(reins_runtime::metric_names::STREAM_CUTS_TOTAL, "pipeline" => self.p.name.clone(), "checker" => checker.clone())
            .increment(1);
        RunError::StreamCut { checker, reason }
    }

    fn trace_stream(&mut self) {
        let Some(s) = &self.stream else { return };
        let summary = format!(
            "{}: {} bytes released in {} offers, {} held",
            s.mode.as_str(),
            s.released.len(),
            s.offers,
            s.holds
        );
        let now = Instant::now();
        self.trace("stream", "", summary, now, now);
    }
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut from = text.len().saturating_sub(max);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}
