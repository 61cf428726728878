//! Streamed answers, for every surface: a run whose pipeline streams
//! (`checked`, `json`) sends each piece its stream checkers released as
//! soon as they released it; the surface only says how a piece, the start
//! and the end look on its wire ([`StreamShape`]).
//!
//! Until the first piece, nothing is sent: a run that ends before it (a
//! buffered pipeline, a refusal, every provider down, a cut before any
//! release) is answered whole, exactly as before streaming began. After it,
//! the HTTP status is spent, so how the run ended travels in the stream's
//! last events: a finish reason, the usage, and an error event the SDKs
//! raise when the run did not complete.

use super::AppState;
use super::error::ApiError;
use axum::response::sse::{Event, Sse};
use reins_core::config::OnDisconnect;
use reins_core::pipeline::stream::StreamSink;
use reins_core::pipeline::{Request, RunResult};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::DropGuard;

/// How one surface writes a stream.
pub(crate) trait StreamShape: Send + 'static {
    /// The events before the first piece (a role, a message start).
    fn start(&mut self) -> Vec<Event>;
    /// One released piece of the answer.
    fn piece(&mut self, text: &str) -> Vec<Event>;
    /// The events after the last piece: tool calls, the finish reason,
    /// the usage, and the error of a run that did not complete.
    fn end(&mut self, result: &RunResult) -> Vec<Event>;
}

/// A run read as a stream.
pub(crate) enum Streaming {
    /// It ended before releasing anything: answer it whole.
    Finished(Arc<RunResult>),
    /// It released its first piece.
    Started(Started),
}

pub(crate) struct Started {
    /// The run's id (the stream's id and `X-Reins-Run-Id`).
    pub run_id: String,
    first: String,
    pieces: mpsc::UnboundedReceiver<String>,
    run: JoinHandle<RunResult>,
    /// Cancels the run if the client leaves mid-stream (`on_disconnect`).
    guard: Option<DropGuard>,
}

/// Starts `request` on `pipeline` with a sink for its released text, and
/// waits for its first piece or its end, whichever comes first (bounded by
/// the server's request timeout, as [`super::service::run_pipeline`]).
pub(crate) async fn stream_pipeline(
    state: &AppState,
    pipeline: &str,
    mut request: Request,
    surface_default: OnDisconnect,
) -> Result<Streaming, ApiError> {
    let (sink, mut pieces) = StreamSink::channel();
    request.stream = Some(sink);
    let run_id = request
        .run_id
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();
    let (mut run, guard) =
        super::service::start_run(state, pipeline, request, None, surface_default);
    let first = tokio::time::timeout(state.request_timeout, async {
        tokio::select! {
            biased;
            piece = pieces.recv() => match piece {
                Some(first) => Ok(first),
                None => Err((&mut run).await),
            },
            ended = &mut run => Err(ended),
        }
    })
    .await;
    match first {
        Ok(Ok(first)) => Ok(Streaming::Started(Started {
            run_id,
            first,
            pieces,
            run,
            guard,
        })),
        Ok(Err(ended)) => {
            if let Some(guard) = guard {
                guard.disarm();
            }
            let result = ended.map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("the run's task failed: {e}"),
                )
            })?;
            super::service::finished(result).map(Streaming::Finished)
        }
        Err(_) => {
            if let Some(guard) = guard {
                guard.disarm();
            }
            Err(super::service::timed_out(state, pipeline))
        }
    }
}

/// What a chat surface answers: a run's result, or its stream.
pub(crate) enum Answer {
    Whole(Arc<RunResult>),
    Streamed(axum::response::Response),
}

/// Runs `request`: streamed in the surface's shape (`shape(run_id)`) once
/// it releases text when the caller asked for a stream, else whole.
pub(crate) async fn answer<S: StreamShape>(
    state: &AppState,
    pipeline: &str,
    request: Request,
    streaming: bool,
    shape: impl FnOnce(&str) -> S,
) -> Result<Answer, ApiError> {
    use axum::response::IntoResponse;
    if !streaming {
        return super::service::run_pipeline(state, pipeline, request, None, OnDisconnect::Cancel)
            .await
            .map(Answer::Whole);
    }
    match stream_pipeline(state, pipeline, request, OnDisconnect::Cancel).await? {
        Streaming::Finished(result) => Ok(Answer::Whole(result)),
        Streaming::Started(started) => {
            let run_id = started.run_id.clone();
            let mut response = events(started, shape(&run_id)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&run_id) {
                response.headers_mut().insert("x-reins-run-id", v);
            }
            Ok(Answer::Streamed(response))
        }
    }
}

/// The event stream of a started run, in `shape`.
pub(crate) fn events(
    started: Started,
    mut shape: impl StreamShape,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    let Started {
        run_id: _,
        first,
        mut pieces,
        mut run,
        guard,
    } = started;
    tokio::spawn(async move {
        // Dropped with this task: a client that left cancels the run.
        let _guard = guard;
        let send_all = async |tx: &mpsc::Sender<Event>, events: Vec<Event>| {
            for e in events {
                if tx.send(e).await.is_err() {
                    return false;
                }
            }
            true
        };
        let mut opening = shape.start();
        opening.extend(shape.piece(&first));
        if !send_all(&tx, opening).await {
            return;
        }
        let ended = loop {
            tokio::select! {
                biased;
                piece = pieces.recv() => match piece {
                    Some(p) => {
                        if !send_all(&tx, shape.piece(&p)).await {
                            return;
                        }
                    }
                    None => break (&mut run).await,
                },
                ended = &mut run => {
                    // What the run released before it ended goes first.
                    while let Ok(p) = pieces.try_recv() {
                        if !send_all(&tx, shape.piece(&p)).await {
                            return;
                        }
                    }
                    break ended;
                }
                () = tx.closed() => return,
            }
        };
        let events = match ended {
            Ok(result) => shape.end(&result),
            Err(e) => {
                tracing::error!(error = %e, "a streamed run's task failed");
                return;
            }
        };
        if let Some(guard) = _guard {
            // The run is over: nothing left to cancel.
            guard.disarm();
        }
        send_all(&tx, events).await;
    });
    Sse::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(e), rx))
    }))
}
