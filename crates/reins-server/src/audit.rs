//! The server's part of the audit log: failed logins and admin calls are
//! recorded by one middleware around every route (so no handler, and no
//! rewrite of `auth.rs`, has to remember to), and `GET /v1/audit` reads the
//! log. A row names a credential only by its configured name, or by the
//! kind of header that carried an unknown one: never the secret itself.

use super::AppState;
use super::error::ApiError;
use super::settings::Scope;
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use reins_state::{AuditEntry, AuditFilter, audit::parse_time};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Admin endpoints and the action their calls are recorded as.
const ADMIN: &[(&str, &str)] = &[
    ("/v1/audit", "admin.audit"),
    ("/v1/plugins", "admin.plugins"),
    ("/v1/providers", "admin.providers"),
];

/// The longest `X-Request-Id` kept (it is the caller's text).
const MAX_REQUEST_ID: usize = 128;

/// Records a request refused for its credentials (401, 403) and every
/// answered admin call, after the handler has answered.
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let admin = ADMIN
        .iter()
        .find(|(path, _)| *path == req.uri().path())
        .map(|(_, action)| *action);
    let target = format!("{} {}", req.method(), req.uri().path());
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        auth_failed(&state, &headers, &target, "missing or unknown credential").await;
    } else if status == StatusCode::FORBIDDEN {
        // A known caller refused (a scope it lacks, a body that contradicts
        // its credential), or a foreign Host/Origin.
        let entry = AuditEntry::new("access.denied", &target, "denied");
        state
            .host
            .audit(caller(&state, &headers, entry).await)
            .await;
    } else if let Some(action) = admin.filter(|_| status.is_success()) {
        let entry = AuditEntry::new(action, &target, "ok").detail(json!({"query": query}));
        state
            .host
            .audit(caller(&state, &headers, entry).await)
            .await;
    }
    resp
}

/// Appends an `auth.failed` row for a request to `target` whose credentials
/// were refused for `reason`. Never fails the request.
pub(crate) async fn auth_failed(state: &AppState, headers: &HeaderMap, target: &str, reason: &str) {
    let presented: Vec<&str> = [header::AUTHORIZATION.as_str(), "x-api-key"]
        .into_iter()
        .filter(|h| headers.contains_key(*h))
        .collect();
    let entry = AuditEntry::new("auth.failed", target, "denied").detail(json!({
        "reason": reason,
        // Which headers carried a credential, not what they carried.
        "credential": if presented.is_empty() { "none".to_owned() } else { presented.join(",") },
    }));
    state.host.audit(caller(state, headers, entry).await).await;
}

/// `entry` by the caller the request's credential resolves to (its
/// subject and tenant; `anonymous` when none), with the caller's request id.
async fn caller(state: &AppState, headers: &HeaderMap, entry: AuditEntry) -> AuditEntry {
    let (name, tenant) = match state.auth.identify(headers).await {
        Ok(who) => (who.caller.subject, who.caller.tenant),
        Err(_) => ("anonymous".to_owned(), None),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(MAX_REQUEST_ID).collect());
    entry.by(name, tenant).request(request_id)
}

/// `GET /v1/audit?since=&until=&tenant=&action=&after=&limit=`: rows oldest
/// first, a page at a time; `next` is the `after` of the next page.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let filter = filter(&q)?;
    // What this process queued (the run that just answered) is readable now.
    state.host.audit_flush().await;
    let rows = state.host.state().audit_list(&filter).await?;
    let next = (rows.len() == filter.page_size() as usize)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(json!({"object": "list", "data": rows, "next": next})))
}

fn filter(q: &HashMap<String, String>) -> Result<AuditFilter, ApiError> {
    let now = reins_state::now_ms();
    let time = |k: &str| {
        q.get(k)
            .map(|v| {
                parse_time(v, now).ok_or_else(|| {
                    ApiError::bad_request(format!("`{k}`: milliseconds or an age like 15m, 2h, 7d"))
                })
            })
            .transpose()
    };
    let number = |k: &str| {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("`{k}` must be a number")))
            })
            .transpose()
    };
    if let Some(k) = q
        .keys()
        .find(|k| !["since", "until", "tenant", "action", "after", "limit"].contains(&k.as_str()))
    {
        return Err(
            ApiError::bad_request(format!("unknown parameter `{k}`")).with("param", json!(k))
        );
    }
    let limit = number("limit")?.unwrap_or(i64::from(AuditFilter::DEFAULT_LIMIT));
    if !(1..=i64::from(AuditFilter::MAX_LIMIT)).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be 1 to {}",
            AuditFilter::MAX_LIMIT
        )));
    }
    Ok(AuditFilter {
        since_ms: time("since")?,
        until_ms: time("until")?,
        tenant: q.get("tenant").cloned(),
        action: q.get("action").cloned(),
        after: number("after")?,
        limit: u32::try_from(limit).unwrap_or(AuditFilter::DEFAULT_LIMIT),
    })
}
