//! `GET /v1/providers`: every model provider with its state (closed, open,
//! half-open, or saturated until the upstream takes calls again), its
//! breaker's window and trips, its limits and queue, and its retry policy.

use super::AppState;
use super::error::ApiError;
use super::settings::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

/// `GET /v1/providers`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let live = state.host.live();
    let configs = &live.config().providers;
    let data: Vec<Value> = live
        .breakers()
        .iter()
        .map(|(name, b)| {
            let snapshot = b.snapshot();
            let admission = b.admission().snapshot();
            let settings = b.settings();
            // Saturation is the state a caller notices first: calls wait or fall back.
            let state = match admission.saturated_for_ms {
                Some(_) if snapshot.state == reins_core::provider::CircuitState::Closed => json!("saturated"),
                _ => json!(snapshot.state),
            };
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
                "state": state,
                "upstream": b.provider().status(),
                "admission": {
                    "in_flight": admission.in_flight,
                    "limit": admission.limit,
                    "queued": admission.queued,
                    "saturated_for_ms": admission.saturated_for_ms,
                    "saturations": admission.saturations,
                    "refused": admission.refused,
                    "settings": {
                        "max_in_flight": settings.admission.max_in_flight,
                        "adaptive": settings.admission.adaptive,
                        "rpm": settings.admission.rpm,
                        "tpm": settings.admission.tpm,
                        "queue_size": settings.admission.queue_size,
                        "saturation_ms": settings.admission.saturation.as_millis() as u64,
                        "max_saturation_ms": settings.admission.max_saturation.as_millis() as u64,
                    },
                },
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
