//! `GET /v1/providers`: every model provider with its circuit breaker's
//! state (closed, open, half-open), its window, trips and retry policy.

use super::AppState;
use super::error::ApiError;
use super::settings::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

/// `GET /v1/providers`
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let configs = &state.host.config().providers;
    let data: Vec<Value> = state
        .host
        .breakers()
        .map(|(name, b)| {
            let snapshot = b.snapshot();
            let settings = b.settings();
            if settings.breaker.enabled {
                // The gauge moves on calls; an open breaker past its cool-down shows here first.
                metrics::gauge!(reins_runtime::metric_names::BREAKER_STATE, "provider" => name.to_owned()).set(snapshot.state.gauge());
            }
            let (kind, endpoint) = match configs.get(name) {
                Some(c) => (c.kind(), c.base_url().map(str::to_owned)),
                None => ("custom", None),
            };
            json!({
                "name": name,
                "kind": kind,
                "model": b.provider().model(),
                "base_url": endpoint,
                "state": snapshot.state,
                "upstream": b.provider().status(),
                "breaker": {
                    "enabled": snapshot.enabled,
                    "state": snapshot.state,
                    "calls": snapshot.calls,
                    "failures": snapshot.failures,
                    "failure_rate": snapshot.failure_rate,
                    "trips": snapshot.trips,
                    "rejected": snapshot.rejected,
                    "retry_in_ms": snapshot.retry_in_ms,
                    "probes": snapshot.probes.map(|(in_flight, succeeded)| json!({"in_flight": in_flight, "succeeded": succeeded})),
                    "settings": {
                        "failure_rate": settings.breaker.failure_rate,
                        "min_calls": settings.breaker.min_calls,
                        "window_ms": settings.breaker.window.as_millis() as u64,
                        "cooldown_ms": settings.breaker.cooldown.as_millis() as u64,
                        "probes": settings.breaker.probes,
                    },
                },
                "retry": {
                    "max_retries": settings.retry.max_retries,
                    "backoff_ms": settings.retry.base.as_millis() as u64,
                    "max_backoff_ms": settings.retry.max_wait.as_millis() as u64,
                },
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
