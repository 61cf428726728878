//! The in-flight memory budget (`[server] inflight_memory_bytes`).
//!
//! A request's body is parsed into a `Request`, copied into prompts and
//! stored results several times over while its run goes on, so a burst of
//! large bodies can take far more memory than the body limit suggests. Each
//! request reserves an estimate of that from one byte semaphore before its
//! handler reads the body and gives it back when its response has been sent
//! (a stream included). A reservation that cannot be had at once is a `429`
//! with `Retry-After`, in the shape of the surface asked: clients back off
//! instead of the process running out of memory. Probes and `/metrics`
//! never reserve, so an operator sees a saturated server as alive.

use super::AppState;
use super::anthropic::AnthropicError;
use super::error::ApiError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reins_runtime::metric_names::{INFLIGHT_REFUSED_TOTAL, INFLIGHT_RESERVED_BYTES};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many bytes of memory one byte of body is taken to cost while its
/// run goes on (the parsed JSON, the request, prompts, the stored result).
const BODY_FACTOR: usize = 4;
/// What any request costs besides its body (headers, the run's state, the
/// answer).
const OVERHEAD: usize = 64 * 1024;
/// What a refused client is told to wait: reservations are given back as
/// soon as responses are sent, so a second is usually plenty.
const RETRY_AFTER_S: u64 = 1;

/// The budget: `None` when `inflight_memory_bytes = 0` (no budget).
pub struct InflightBudget {
    permits: Option<Arc<Semaphore>>,
    total: usize,
    body_limit: usize,
}

/// Bytes held for one request; given back when dropped.
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            metrics::gauge!(INFLIGHT_RESERVED_BYTES).decrement(self.bytes as f64);
        }
    }
}

impl InflightBudget {
    pub fn new(total: usize, body_limit: usize) -> InflightBudget {
        let total = total.min(Semaphore::MAX_PERMITS);
        let budget = InflightBudget {
            permits: (total > 0).then(|| Arc::new(Semaphore::new(total))),
            total,
            body_limit,
        };
        let largest = budget.estimate(None);
        if total > 0 && total < largest {
            tracing::warn!(
                inflight_memory_bytes = total,
                body_limit_bytes = body_limit,
                "a request near the body limit needs about {largest} bytes, more than the whole in-flight budget: it will always be refused (429)"
            );
        }
        budget
    }

    /// What a request with a body of `length` bytes (unknown: the body
    /// limit, the most it can be) is taken to cost.
    pub fn estimate(&self, length: Option<usize>) -> usize {
        let body = length.unwrap_or(self.body_limit).min(self.body_limit);
        body.saturating_mul(BODY_FACTOR).saturating_add(OVERHEAD)
    }

    /// `bytes` of the budget, if they are free now (never waits: a server
    /// at its budget answers at once rather than queueing unbounded work).
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let Some(permits) = &self.permits else {
            return Some(Reservation {
                _permit: None,
                bytes: 0,
            });
        };
        let n = u32::try_from(bytes).ok().filter(|_| bytes <= self.total)?;
        let permit = permits.clone().try_acquire_many_owned(n).ok()?;
        metrics::gauge!(INFLIGHT_RESERVED_BYTES).increment(bytes as f64);
        Some(Reservation {
            _permit: Some(permit),
            bytes,
        })
    }
}

/// Middleware: reserves before the handler, holds the reservation in the
/// response body until it has been sent.
pub async fn reserve(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    // Exact when the client sent a `Content-Length`; a chunked body counts
    // as the body limit, the most it can grow to.
    let length = request
        .body()
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let bytes = state.inflight.estimate(length);
    let Some(reservation) = state.inflight.try_reserve(bytes) else {
        return refuse(path, bytes, state.inflight.total);
    };
    next.run(request).await.map(|body| {
        Body::new(Held {
            inner: body,
            _reservation: reservation,
        })
    })
}

/// The `429` of a request the budget cannot take, in its surface's shape.
fn refuse(path: &str, bytes: usize, total: usize) -> Response {
    let surface = match path {
        "/v1/chat/completions" => "openai",
        "/v1/messages" => "anthropic",
        _ => "native",
    };
    metrics::counter!(INFLIGHT_REFUSED_TOTAL, "surface" => surface).increment(1);
    tracing::warn!(
        path,
        bytes,
        total,
        "request refused: the in-flight memory budget is spent"
    );
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        format!(
            "the server is at its in-flight memory budget ({total} bytes; this request needs about {bytes}); retry in {RETRY_AFTER_S} s"
        ),
    );
    err.retry_after = Some(RETRY_AFTER_S);
    if surface == "anthropic" {
        AnthropicError::from(err).into_response()
    } else {
        err.into_response()
    }
}

/// A response body that keeps its request's reservation until it is dropped
/// (sent, or abandoned by a client that left).
struct Held {
    inner: Body,
    _reservation: Reservation,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = InflightBudget::new(1_000_000, 100_000);
        assert_eq!(budget.estimate(Some(1_000)), 4_000 + OVERHEAD);
        // An unknown or oversized length counts as the body limit.
        assert_eq!(budget.estimate(None), budget.estimate(Some(10_000_000)));
        let big = budget.estimate(Some(100_000));
        let first = budget.try_reserve(big).expect("fits");
        let second = budget.try_reserve(big).expect("fits");
        assert!(budget.try_reserve(big).is_none(), "over the budget");
        drop(first);
        assert!(budget.try_reserve(big).is_some(), "given back on drop");
        drop(second);
        assert!(
            budget.try_reserve(2_000_000).is_none(),
            "more than the whole budget never fits"
        );
        let off = InflightBudget::new(0, 100);
        assert!(off.try_reserve(usize::MAX).is_some(), "0 is no budget");
    }
}
