//! The native run API: start a run, read it back.

use super::AppState;
use super::auth::Identity;
use super::error::{ApiError, JsonBody};
use super::settings::Scope;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use reins_core::pipeline::{Request, RunResult};
use reins_runtime::{Chunk, Message};
use serde::Deserialize;
use serde_json::Value;

/// Body of `POST /v1/pipelines/{name}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Shorthand for one user message: a string, or any JSON (sent as its text).
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    #[serde(default)]
    pub dry_run: bool,
    /// A retried request with the same key gets the first run's result.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The conversation the run belongs to (session memory).
    #[serde(default)]
    pub session_id: Option<String>,
    /// How long the caller waits, in ms: shortens the pipeline's deadline.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl RunBody {
    fn into_request(self) -> Result<(Request, Option<String>), ApiError> {
        let messages = match (self.messages, self.input) {
            (Some(m), None) if !m.is_empty() => m,
            (None, Some(Value::String(s))) => vec![Message::new("user", s)],
            (None, Some(other)) => vec![Message::new("user", other.to_string())],
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give `messages` or `input`, not both",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "the body needs `messages` (non-empty) or `input`",
                ));
            }
        };
        let metadata = self
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !metadata.is_object() {
            return Err(ApiError::bad_request("`metadata` must be a JSON object"));
        }
        let mut request = Request::from(messages)
            .with_metadata(metadata)
            .with_chunks(self.chunks);
        request.dry_run = self.dry_run;
        request.session_id = self.session_id;
        if self.timeout_ms == Some(0) {
            return Err(ApiError::bad_request("`timeout_ms` must be at least 1")
                .with("param", serde_json::json!("timeout_ms")));
        }
        request.timeout_ms = self.timeout_ms;
        Ok((request, self.idempotency_key))
    }
}

/// `POST /v1/pipelines/{name}/runs`
pub async fn create(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RunBody>,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    who.pipeline_or_404(&pipeline)?;
    if state.host.pipeline(&pipeline).is_none() {
        return Err(ApiError::not_found(format!("no pipeline `{pipeline}`")));
    }
    let (request, key) = body.into_request()?;
    let mut request = request.with_caller(who.caller.clone());
    request.trace_parent = super::service::trace_parent(&headers);
    // The shorter of the body's `timeout_ms` and the header's.
    if let Some(ms) = super::service::caller_timeout(&headers)? {
        request.timeout_ms = Some(request.timeout_ms.map_or(ms, |t| t.min(ms)));
    }
    if let Some(key) = &key
        && let Some(stored) = state.host.run_by_key(&pipeline, &who.caller, key).await
    {
        return Ok(stored_response(stored, true));
    }
    let result = super::service::run_pipeline(
        &state,
        &pipeline,
        request,
        key.as_deref(),
        reins_core::config::OnDisconnect::Finish,
    )
    .await?;
    Ok(run_response(&result, false))
}

/// `?q=…` of the context preview.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    pub q: String,
}

/// `GET /v1/pipelines/{name}/context?q=…`: what the pipeline's context
/// stage would give the model for `q` (retrieved, kept, dropped and why),
/// for debugging retrieval. Runs no model and records nothing.
pub async fn preview_context(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    who.pipeline_or_404(&pipeline)?;
    let axum::extract::Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{}: ask GET /v1/pipelines/{pipeline}/context?q=YOUR+QUESTION",
            e.body_text()
        ))
    })?;
    let preview = state
        .host
        .preview_context(&pipeline, &query.q, &who.caller)
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok(Json(preview).into_response())
}

/// `GET /v1/runs/{id}`
pub async fn get(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    match state.host.stored_run(&run_id).await {
        Some(stored) if visible(&who, &stored) => Ok(stored_response(stored, false)),
        _ => Err(no_run(&run_id)),
    }
}

/// Whether `who` may see a stored run (another tenant's answers 404, as if
/// it did not exist: run ids are not secrets).
pub(crate) fn visible(who: &Identity, stored: &Value) -> bool {
    let pipeline = stored
        .get("pipeline")
        .and_then(Value::as_str)
        .unwrap_or_default();
    who.may_see(pipeline, &reins_core::identity::owner_of(stored))
}

fn no_run(run_id: &str) -> ApiError {
    ApiError::not_found(format!("no run `{run_id}`"))
}

/// A run's stored JSON (the headers `run_response` sets, where the JSON has them).
fn stored_response(stored: Value, replayed: bool) -> Response {
    let run_id = stored
        .get("run_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let status = stored
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut response = Json(stored).into_response();
    let headers = response.headers_mut();
    for (name, value) in [("x-reins-run-id", run_id), ("x-reins-status", status)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
    if replayed {
        headers.insert(
            "x-reins-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// `GET /v1/runs/{id}/steps`: what the run checkpointed, step by step, and
/// its actions with their idempotency keys and states — the history a
/// resume starts from.
pub async fn steps(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    let store = state.host.state();
    let run = store
        .run(&run_id)
        .await?
        .filter(|r| visible(&who, &r.result))
        .ok_or_else(|| no_run(&run_id))?;
    let steps = store.steps(&run_id).await?;
    let actions = store.actions(&run_id).await?;
    // An agent's turns record their actions under `RUN.STEP`.
    let mut turn_actions = Vec::new();
    for s in steps
        .iter()
        .filter(|s| s.kind == reins_state::StepKind::Agent)
    {
        for e in s.data["executions"].as_array().into_iter().flatten() {
            if let Some(key) = e["idempotency_key"].as_str()
                && let Some(a) = store.action(key).await?
            {
                turn_actions.push(a);
            }
        }
    }
    Ok(Json(serde_json::json!({
        "run_id": run.run_id,
        "status": run.status,
        "owner": run.owner,
        "lease_until_ms": run.lease_until_ms,
        "steps": steps,
        "actions": actions.into_iter().chain(turn_actions).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `POST /v1/runs/{id}/resume`: continues an interrupted run (404 unknown,
/// 409 not interrupted).
pub async fn resume(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, Scope::Run).await?;
    match state.host.stored_run(&run_id).await {
        Some(stored) if visible(&who, &stored) => {}
        _ => return Err(no_run(&run_id)),
    }
    let result = state.host.resume(&run_id).await?;
    state.metrics.record_run(&result);
    Ok(run_response(&result, false))
}

fn run_response(result: &RunResult, replayed: bool) -> Response {
    let mut response = Json(result).into_response();
    super::service::reins_headers(response.headers_mut(), result);
    if replayed {
        response.headers_mut().insert(
            "x-reins-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    response
}
