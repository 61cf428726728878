//! Health, readiness, plugin state and metrics.

use super::AppState;
use super::error::ApiError;
use super::exemplars;
use super::settings::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: every plugin a pipeline names is loaded.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let set = state.host.plugins().current();
    let live = state.host.live();
    let mut missing: Vec<String> = Vec::new();
    for (name, p) in live.pipelines() {
        for (layer, plugin) in p.plugins() {
            let ok = set
                .get(p.plugin_key(layer, plugin))
                .is_some_and(|p| p.layer() == layer);
            if !ok {
                missing.push(format!("{name}: {layer} `{plugin}`"));
            }
        }
    }
    if missing.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "missing_plugins": missing})),
        )
            .into_response()
    }
}

/// `GET /v1/pipelines`: every pipeline, with its output mode and why.
pub async fn pipelines(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    let set = state.host.plugins().current();
    let live = state.host.live();
    let data: Vec<Value> = live
        .pipelines()
        .iter()
        .filter(|(name, _)| who.may_call(name))
        .map(|(_, p)| p.describe(&set))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/plugins`: every file in the plugins directory and its state.
pub async fn plugins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let plugins = state.host.plugins();
    let (reloads, refused) = plugins.reload_counts();
    Ok(Json(json!({
        "dir": plugins.dir(),
        "generation": plugins.current().generation(),
        "reloads": reloads,
        "refused_reloads": refused,
        "plugins": plugins.statuses(),
    })))
}

/// `GET /metrics`: Prometheus text 0.0.4, or OpenMetrics (which alone can
/// carry the latency histograms' exemplars) for a scrape that asks for it.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (reloads, refused) = state.host.plugins().reload_counts();
    metrics::gauge!(reins_runtime::metric_names::PLUGIN_RELOADS).set(reloads as f64);
    metrics::gauge!(reins_runtime::metric_names::PLUGIN_REFUSED_RELOADS).set(refused as f64);
    let loaded = state.host.plugins().current().plugins().count();
    metrics::gauge!(reins_runtime::metric_names::PLUGINS_LOADED).set(loaded as f64);
    let text = state.metrics.handle.render();
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if exemplars::wants_openmetrics(accept) {
        let body = state.metrics.exemplars.openmetrics(&text);
        return (
            [
                (header::CONTENT_TYPE, exemplars::OPENMETRICS_CONTENT_TYPE),
                (header::VARY, "accept"),
            ],
            body,
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::VARY, "accept"),
        ],
        text,
    )
        .into_response()
}
