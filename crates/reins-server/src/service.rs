//! The one layer between the HTTP handlers and the [`Host`]: every surface
//! (native runs, OpenAI, Anthropic) starts its runs here, so the deadline,
//! the detached run task, the run metrics and the `X-Reins-*` headers are
//! the same for all of them. Handlers call down into this; nothing here
//! calls back into a handler.

use super::AppState;
use super::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use reins_core::config::OnDisconnect;
use reins_core::pipeline::{Request, RunResult};
use std::sync::Arc;

/// Runs a pipeline under the request deadline. The run is its own task,
/// which records its metrics and its result whether or not anyone still
/// waits: a request that times out does not cut it short (it finishes and
/// is stored; `GET /v1/runs/{id}`). A client that disconnects cancels it
/// when the pipeline's `on_disconnect` (else `surface_default`, the
/// surface's own) says `cancel`: axum drops the handler's future, and with
/// it this future's drop guard on the run's cancellation token.
pub(crate) async fn run_pipeline(
    state: &AppState,
    pipeline: &str,
    request: Request,
    idempotency_key: Option<&str>,
    surface_default: OnDisconnect,
) -> Result<Arc<RunResult>, ApiError> {
    let (run, guard) = start_run(state, pipeline, request, idempotency_key, surface_default);
    let waited = tokio::time::timeout(state.request_timeout, run).await;
    // The client is still here: from now on nothing cancels the run (a
    // timed-out run goes on, as its 504 says).
    if let Some(guard) = guard {
        guard.disarm();
    }
    let result = waited
        .map_err(|_| timed_out(state, pipeline))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("the run's task failed: {e}"),
            )
        })?;
    finished(result)
}

/// Starts the run as its own task (it records its metrics whether or not
/// anyone still waits), with the drop guard that cancels it when the
/// pipeline's `on_disconnect` (else the surface's) says `cancel`.
pub(crate) fn start_run(
    state: &AppState,
    pipeline: &str,
    request: Request,
    idempotency_key: Option<&str>,
    surface_default: OnDisconnect,
) -> (
    tokio::task::JoinHandle<RunResult>,
    Option<tokio_util::sync::DropGuard>,
) {
    let on_disconnect = state
        .host
        .pipeline(pipeline)
        .and_then(|p| p.config.on_disconnect)
        .unwrap_or(surface_default);
    let guard =
        (on_disconnect == OnDisconnect::Cancel).then(|| request.cancel.clone().drop_guard());
    let (host, metrics) = (state.host.clone(), state.metrics.clone());
    let (name, key) = (pipeline.to_owned(), idempotency_key.map(str::to_owned));
    let run = tokio::spawn(async move {
        let result = host.run_keyed(&name, request, key.as_deref()).await;
        metrics.record_run(&result);
        result
    });
    (run, guard)
}

/// The answer to a run that outlasted the request timeout (it goes on).
pub(crate) fn timed_out(state: &AppState, pipeline: &str) -> ApiError {
    metrics::counter!(reins_runtime::metric_names::REQUESTS_TOTAL, "pipeline" => pipeline.to_string(), "status" => "timeout")
        .increment(1);
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "the run did not finish within {} ms; it goes on and its result is kept",
            state.request_timeout.as_millis()
        ),
    )
}

/// A finished run, or the error a caller gets instead of its result (a
/// run it was not let to start).
pub(crate) fn finished(result: RunResult) -> Result<Arc<RunResult>, ApiError> {
    if let Some(
        e @ (reins_core::pipeline::RunError::RateLimited { .. }
        | reins_core::pipeline::RunError::Overloaded { .. }
        | reins_core::pipeline::RunError::Forbidden { .. }),
    ) = &result.error
    {
        return Err(ApiError::from(e).with("run_id", serde_json::json!(result.run_id)));
    }
    Ok(Arc::new(result))
}

/// The caller's W3C trace context (`traceparent`, `tracestate`): the
/// run's span becomes its child. A malformed header starts a new trace.
pub(crate) fn trace_parent(headers: &HeaderMap) -> Option<reins_core::telemetry::TraceParent> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    reins_core::telemetry::TraceParent::from_headers(header("traceparent"), header("tracestate"))
}

/// The caller's own timeout, in ms: `X-Reins-Timeout` (seconds, e.g.
/// `2.5`, or milliseconds with a unit, `2500ms`), else the read timeout the
/// OpenAI and Anthropic SDKs announce (`X-Stainless-Read-Timeout`, seconds).
/// It shortens the run's deadline: a caller that gives up after 2 s is not
/// kept waiting in a queue for 30. A malformed `X-Reins-Timeout` is a 400.
pub(crate) fn caller_timeout(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("").trim());
    if let Some(v) = header("x-reins-timeout") {
        return parse_timeout(v).map(Some).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("X-Reins-Timeout `{v}` is not a timeout: give seconds (`2.5`) or milliseconds (`2500ms`), more than 0"),
            )
            .with("param", serde_json::json!("X-Reins-Timeout"))
        });
    }
    // The SDKs' own header is advisory: one that does not parse is ignored.
    Ok(header("x-stainless-read-timeout").and_then(parse_timeout))
}

fn parse_timeout(v: &str) -> Option<u64> {
    let ms = match v.strip_suffix("ms") {
        Some(ms) => ms.trim().parse::<f64>().ok()?,
        None => {
            v.strip_suffix('s')
                .unwrap_or(v)
                .trim()
                .parse::<f64>()
                .ok()?
                * 1000.0
        }
    };
    (ms.is_finite() && ms >= 1.0).then(|| ms.min(u64::MAX as f64) as u64)
}

/// `X-Reins-*` headers: enough to correlate an answer with its run.
pub(crate) fn reins_headers(headers: &mut HeaderMap, result: &RunResult) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-reins-run-id", result.run_id.clone());
    set("x-reins-status", result.status.as_str().to_string());
    set("x-reins-attempts", result.attempts.len().to_string());
    if let Some(trace) = &result.trace_id {
        // Where to find the run in the tracing backend.
        set("x-reins-trace-id", trace.clone());
    }
    if result.degraded
        && let Some(by) = &result.served_by
    {
        // Which fallback served the answer: a provider, `cache` or `static`.
        set("x-reins-degraded", by.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_in_seconds_or_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(caller_timeout(&h).unwrap(), None);
        h.insert("x-stainless-read-timeout", HeaderValue::from_static("600"));
        assert_eq!(caller_timeout(&h).unwrap(), Some(600_000));
        h.insert("x-reins-timeout", HeaderValue::from_static("2.5"));
        assert_eq!(caller_timeout(&h).unwrap(), Some(2_500));
        h.insert("x-reins-timeout", HeaderValue::from_static("250ms"));
        assert_eq!(caller_timeout(&h).unwrap(), Some(250));
        for bad in ["soon", "0", "-1", "ms"] {
            h.insert("x-reins-timeout", HeaderValue::from_static(bad));
            let e = caller_timeout(&h).unwrap_err();
            assert!(
                e.message.contains("X-Reins-Timeout"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
