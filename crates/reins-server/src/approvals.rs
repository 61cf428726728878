//! Approvals over HTTP, and the approvals web page.

use super::AppState;
use super::auth::Identity;
use super::error::{ApiError, JsonBody};
use super::settings::Scope;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use reins_core::approvals::{ApprovalFilter, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /v1/approvals?status=pending&pipeline=..&run_id=..`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<ApprovalFilter>,
) -> Result<Json<Value>, ApiError> {
    let who = state.auth.check(&headers, Scope::Approve).await?;
    let approvals = state.host.approvals(&filter).await?;
    // Each approval carries its run's trace, so the approver sees why.
    let mut data: Vec<Value> = Vec::with_capacity(approvals.len());
    for a in approvals {
        let run = state
            .host
            .stored_run(&a.run_id)
            .await
            .unwrap_or(Value::Null);
        if !may_decide(&state, &who, &a.pipeline, &run) {
            continue;
        }
        let mut v = json!(a);
        v["trace"] = run.get("trace").cloned().unwrap_or(Value::Null);
        v["requested_by"] = json!(reins_core::identity::owner_of(&run));
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
    let who = state.auth.check(&headers, Scope::Approve).await?;
    let not_found = || ApiError::not_found(format!("no approval `{id}`"));
    let pending = state.host.approval(&id).await?.ok_or_else(not_found)?;
    let run = state
        .host
        .stored_run(&pending.run_id)
        .await
        .unwrap_or(Value::Null);
    if !may_decide(&state, &who, &pending.pipeline, &run) {
        return Err(not_found());
    }
    let owner = reins_core::identity::owner_of(&run);
    let self_approval = state
        .host
        .pipeline(&pending.pipeline)
        .is_some_and(|p| p.config.self_approval);
    if !self_approval
        && owner.is_verified()
        && owner.subject == who.caller.subject
        && owner.credential == who.caller.credential
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!(
                "`{}` started run `{}` and cannot approve its own escalation; another approver must decide \
                 (or set `self_approval = true` on pipeline `{}`)",
                who.caller.subject, pending.run_id, pending.pipeline
            ),
        ));
    }
    let approver = who.caller.subject.clone();
    let (approval, run) = state
        .host
        .decide(&id, body.decision, &approver, body.comment)
        .await?;
    if let Some(run) = &run {
        state.metrics.record_run(run);
    }
    metrics::counter!(reins_runtime::metric_names::APPROVALS_DECIDED_TOTAL, "decision" => match body.decision {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
    })
    .increment(1);
    Ok(Json(json!({"approval": approval, "run": run})))
}

/// Whether `who` may see and decide an approval of `pipeline` whose run
/// is `run`: by default only its own tenant's (`approval_scope = "any"`
/// opens a pipeline's approvals to every approver); an admin decides all.
fn may_decide(state: &AppState, who: &Identity, pipeline: &str, run: &Value) -> bool {
    let any = state
        .host
        .pipeline(pipeline)
        .is_some_and(|p| p.config.approval_scope == reins_core::config::ApprovalScope::Any);
    if any {
        return who.is_admin() || who.may_call(pipeline);
    }
    super::runs::visible(who, run)
}

/// `GET /ui/approvals`: a page that needs no build step. It asks for a token
/// (kept in this tab's sessionStorage) and talks to the same JSON API.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("approvals.html"))
}

/// `GET /ui/approvals.js`: the page's script, a file of its own because the
/// Content-Security-Policy (`default-src 'self'`) runs no inline script.
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("approvals.js"),
    )
}

/// `GET /ui/approvals.css`: the page's style, outside the page for the same reason.
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("approvals.css"),
    )
}

/// How often `reins serve` recounts the pending approvals for `/metrics`.
const PENDING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `reins_approvals_pending{pipeline}` equal to the approvals pending
/// in the state store, recounted every [`PENDING_EVERY`] (until aborted).
/// Counting the store, not holds minus decisions on this node, keeps the
/// gauge right after a restart and when another node (or the expiry of
/// an MCP call's approval) decides one; every node on a shared store
/// reports the same count. Every configured pipeline gets a series (0
/// when none wait), and one whose approvals are all decided goes back to 0.
pub(crate) async fn gauge_pending(host: std::sync::Arc<reins_core::Host>) {
    let mut pipelines = std::collections::BTreeSet::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(PENDING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counted = tokio::time::timeout(
            PENDING_EVERY,
            reins_core::approvals::pending_by_pipeline(host.state().as_ref()),
        )
        .await;
        let counts = match counted {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot count pending approvals for /metrics: {e}");
                }
                continue;
            }
            Err(_) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("counting pending approvals for /metrics timed out");
                }
                continue;
            }
        };
        failing = false;
        pipelines.extend(host.live().pipelines().keys().cloned());
        pipelines.extend(counts.keys().cloned());
        for pipeline in &pipelines {
            let n = counts.get(pipeline).copied().unwrap_or(0);
            metrics::gauge!(reins_runtime::metric_names::APPROVALS_PENDING, "pipeline" => pipeline.clone())
                .set(n as f64);
        }
    }
}
