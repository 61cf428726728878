//! What the chat surfaces (OpenAI `/v1/chat/completions`, Anthropic
//! `/v1/messages`) say about a run alike, each in its own wire shape: the
//! output as text, the tool calls that go back to the caller, the `reins`
//! object and the session a request belongs to.

use axum::http::HeaderMap;
use reins_core::pipeline::{ExecStatus, RunResult};
use serde_json::{Value, json};

/// A tool call the caller is to run.
#[derive(Debug)]
pub(crate) struct ReturnedCall<'a> {
    /// The model's id for the call, else `{prefix}_{run}_{index}`.
    pub id: String,
    pub name: &'a str,
    pub arguments: &'a Value,
}

/// The tool calls that go back to the client: actions a webhook already
/// carried out are not the client's to run; each keeps the id the model gave
/// it (else one made from `id_prefix` and the run id).
pub(crate) fn returned_calls<'a>(result: &'a RunResult, id_prefix: &str) -> Vec<ReturnedCall<'a>> {
    let proposed = result
        .attempts
        .last()
        .map(|a| a.tool_calls.as_slice())
        .unwrap_or_default();
    result
        .actions
        .iter()
        .enumerate()
        .filter(|(k, _)| {
            result.executions.is_empty()
                || result
                    .executions
                    .get(*k)
                    .is_some_and(|e| e.status == ExecStatus::Returned)
        })
        .map(|(k, a)| {
            let index = result.action_indices.get(k).copied().unwrap_or(k);
            let id = proposed
                .get(index)
                .and_then(|c| c.id.clone())
                .unwrap_or_else(|| format!("{id_prefix}_{}_{index}", short(&result.run_id)));
            ReturnedCall {
                id,
                name: &a.tool,
                arguments: &a.arguments,
            }
        })
        .collect()
}

/// The output as the answer's text: a text pipeline's string as it is, a
/// JSON document as compact JSON.
pub(crate) fn output_text(result: &RunResult) -> Option<String> {
    result.output.as_ref().map(|o| match o {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The `reins` object every answer carries: which run, how it went.
pub(crate) fn reins_object(result: &RunResult) -> Value {
    json!({
        "run_id": result.run_id,
        "status": result.status.as_str(),
        "attempts": result.attempts.len(),
        "skipped": result.skipped,
        "degraded": result.degraded,
        "served_by": result.served_by,
        "notice": result.notice,
        "approvals": result.approvals,
    })
}

/// Session memory: `X-Reins-Session`, or `metadata.session_id`.
pub(crate) fn session_id(headers: &HeaderMap, metadata: &Value) -> Option<String> {
    headers
        .get("x-reins-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            metadata
                .get("session_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

fn short(run_id: &str) -> &str {
    run_id.get(..8).unwrap_or(run_id)
}
