//! `GET /v1/config` (which configuration serves, and how its reloads went)
//! and `POST /v1/admin/reload` (reload it now). Both take the admin scope.

use super::AppState;
use super::error::ApiError;
use super::settings::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reins_core::ConfigStatus;
use serde_json::{Value, json};

/// `GET /v1/config`
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ConfigStatus>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    Ok(Json(state.host.config_status()))
}

/// `POST /v1/admin/reload`: 200 with the version serving after it, or 422
/// with every error of the refused config (the previous one keeps serving).
pub async fn reload(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let host = state.host.clone();
    // A reload compiles schemas and may set plugins up: off the async workers.
    let outcome = tokio::task::spawn_blocking(move || host.reload())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("the reload task failed: {e}"),
            )
        })?;
    match outcome {
        Ok(o) => Ok(Json(json!({
            "reloaded": o.swapped,
            "version": o.version,
            "digest": o.digest,
            "restart_required": o.restart_required,
        }))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_refused",
            format!(
                "{}: the new configuration is refused; the previous one keeps serving",
                e.source_name
            ),
        )
        .with(
            "errors",
            json!(e.errors.iter().map(ToString::to_string).collect::<Vec<_>>()),
        )),
    }
}
