//! The one layer between the HTTP handlers and the [`Host`]: every surface
//! (native runs, OpenAI, Anthropic) starts its runs here, so the deadline,
//! the detached run task, the run metrics and the `X-Reins-*` headers are
//! the same for all of them. Handlers call down into this; nothing here
//! calls back into a handler.

use super::AppState;
use super::error::ApiError;
use super::metrics_export;
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
    let on_disconnect = state
        .host
        .pipeline(pipeline)
        .and_then(|p| p.config.on_disconnect)
        .unwrap_or(surface_default);
    let guard = (on_disconnect == OnDisconnect::Cancel).then(|| request.cancel.clone().drop_guard());
    let host = state.host.clone();
    let (name, key) = (pipeline.to_owned(), idempotency_key.map(str::to_owned));
    let run = tokio::spawn(async move {
        let result = host.run_keyed(&name, request, key.as_deref()).await;
        metrics_export::record_run(&result);
        result
    });
    let waited = tokio::time::timeout(state.request_timeout, run).await;
    // The client is still here: from now on nothing cancels the run (a
    // timed-out run goes on, as its 504 says).
    if let Some(guard) = guard {
        guard.disarm();
    }
    let result = waited
        .map_err(|_| {
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
        })?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", format!("the run's task failed: {e}")))?;
    if let Some(e @ (reins_core::pipeline::RunError::RateLimited { .. } | reins_core::pipeline::RunError::Forbidden { .. })) =
        &result.error
    {
        return Err(ApiError::from(e).with("run_id", serde_json::json!(result.run_id)));
    }
    Ok(Arc::new(result))
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
    if result.degraded
        && let Some(by) = &result.served_by
    {
        // Which fallback served the answer: a provider, `cache` or `static`.
        set("x-reins-degraded", by.clone());
    }
}
