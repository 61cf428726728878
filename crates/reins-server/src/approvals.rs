//! Approvals over HTTP, and the approvals web page.

use super::AppState;
use super::error::{ApiError, JsonBody};
use super::settings::Scope;
use reins_core::approvals::{ApprovalFilter, Verdict};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /v1/approvals?status=pending&pipeline=..&run_id=..`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<ApprovalFilter>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Approve)?;
    let approvals = state.host.approvals(&filter).await?;
    // Each approval carries its run's trace, so the approver sees why.
    let mut data: Vec<Value> = Vec::with_capacity(approvals.len());
    for a in approvals {
        let trace = state
            .host
            .stored_run(&a.run_id)
            .await
            .and_then(|r| r.get("trace").cloned())
            .unwrap_or(Value::Null);
        let mut v = json!(a);
        v["trace"] = trace;
        data.push(v);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub decision: Verdict,
    #[serde(default)]
    pub comment: Option<String>,
}

/// `POST /v1/approvals/{id}` with `{"decision": "approve"|"reject", "comment"}`.
pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let who = state.auth.check(&headers, Scope::Approve)?;
    let approver = who.unwrap_or_else(|| "anonymous".to_owned());
    let (approval, run) = state
        .host
        .decide(&id, body.decision, &approver, body.comment)
        .await?;
    if let Some(run) = &run {
        super::metrics_export::record_run(run);
    }
    metrics::counter!(reins_runtime::metric_names::APPROVALS_DECIDED_TOTAL, "decision" => match body.decision {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
    })
    .increment(1);
    Ok(Json(json!({"approval": approval, "run": run})))
}

/// `GET /ui/approvals`: a page that needs no build step. It asks for a token
/// (kept in this tab's sessionStorage) and talks to the same JSON API.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("approvals.html"))
}

/// `GET /ui/approvals.js`: the page's script, a file of its own because the
/// Content-Security-Policy (`default-src 'self'`) runs no inline script.
pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("approvals.js"))
}

/// `GET /ui/approvals.css`: the page's style, outside the page for the same reason.
pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("approvals.css"))
}
