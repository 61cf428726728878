//! Carrying out approved actions: webhooks with idempotency keys, MCP tool
//! calls, or handing them back to the caller. Every sent action is recorded
//! in the action log before it leaves. A failed action releases the budget
//! its gates reserved.

use super::CancellationToken;
use super::Pipeline;
use crate::config::ExecutorConfig;
use crate::provider::RetryPolicy;
use crate::telemetry::{KeyValue, RunTrace, SpanId, SpanKind, StepSpan, genai};
use reins_runtime::{Action, Reservation};
use reins_state::{ActionRecord, ActionState, StateStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What happened to one approved action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    /// Index of the action among the attempt's proposed actions.
    pub index: usize,
    pub tool: String,
    pub arguments: Value,
    /// Sent as `Idempotency-Key`; the same on every retry and every resume.
    pub idempotency_key: String,
    /// `webhook`, `mcp` or `return`.
    pub executor: String,
    pub status: ExecStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The webhook's JSON answer (or its text), e.g. a tool result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tries: u32,
}

/// Where an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Dry run: it would have been executed.
    Planned,
    /// Handed back to the caller to execute.
    Returned,
    /// The webhook accepted it.
    Done,
    /// The webhook refused it or could not be reached within the retries.
    Failed,
    /// A human rejected it: not executed (an agent is told, and goes on).
    Rejected,
}

/// The key a webhook sees for action `index` of step `step` of `run_id`:
/// stable across retries, restarts and resumes.
pub fn idempotency_key(run_id: &str, step: u32, index: usize) -> String {
    format!("{run_id}:{step}:{index}")
}

/// The execution a rejected approval stands for: nothing was sent; its
/// result tells the model who rejected the action and why.
pub fn rejected(run_id: &str, step: u32, approval: &crate::approvals::Approval) -> Execution {
    let by = approval.decided_by.clone().unwrap_or_default();
    let comment = approval.comment.clone().unwrap_or_default();
    Execution {
        index: approval.index,
        tool: approval.action.tool.clone(),
        arguments: approval.action.arguments.clone(),
        idempotency_key: idempotency_key(run_id, step, approval.index),
        executor: "human".to_owned(),
        status: ExecStatus::Rejected,
        http_status: None,
        response: Some(
            json!({"rejected": true, "by": by, "comment": comment, "approval": approval.id}),
        ),
        error: Some(format!("rejected by {by}: {comment}")),
        tries: 0,
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// Executes `actions` in order, each recorded in the `log` around its
/// sending. `reservations` (by action index) are released for actions that
/// fail or, in a dry run, for every action. Once `cancel` fires no further
/// action starts (one being sent is finished: cutting a webhook mid-call
/// would leave it `sending`, neither applied nor refused); the executions
/// returned are those that started, and the rest give their reservations back.
#[allow(clippy::too_many_arguments)]
pub async fn execute_all(
    log: &dyn StateStore,
    pipeline: &Pipeline,
    run_id: &str,
    step: u32,
    actions: &[(usize, Action)],
    reservations: &mut [(usize, Reservation)],
    dry_run: bool,
    cancel: &CancellationToken,
    trace: &RunTrace,
) -> Vec<Execution> {
    let mut out = Vec::with_capacity(actions.len());
    for (pos, (index, action)) in actions.iter().enumerate() {
        if cancel.is_cancelled() {
            for (skipped, _) in &actions[pos..] {
                for (_, r) in reservations.iter_mut().filter(|(i, _)| i == skipped) {
                    r.release();
                }
            }
            tracing::info!(
                run_id,
                not_sent = actions.len() - pos,
                "run cancelled: its remaining actions are not sent"
            );
            break;
        }
        let key = idempotency_key(run_id, step, *index);
        let executor = pipeline.config.executors.get(&action.tool);
        let mut exec = Execution::new(
            *index,
            action,
            key,
            match executor {
                Some(ExecutorConfig::Webhook { .. }) => "webhook",
                Some(ExecutorConfig::Mcp { .. }) => "mcp",
                _ => "return",
            },
        );
        // The action's span id goes to its executor as `traceparent`.
        let span = trace.child();
        let traceparent = trace.traceparent(span);
        let traceparent = traceparent.as_deref();
        let start = Instant::now();
        if dry_run {
            exec.status = ExecStatus::Planned;
        } else {
            match executor {
                Some(ExecutorConfig::Webhook {
                    url,
                    timeout_ms,
                    retries,
                }) => {
                    let name = &pipeline.name;
                    send_recorded(log, &mut exec, run_id, async |exec: &mut Execution| {
                        send(exec, name, run_id, url, *timeout_ms, *retries, traceparent).await
                    })
                    .await
                }
                Some(ExecutorConfig::Mcp { server, tool }) => match pipeline.upstream(server) {
                    Some(upstream) => {
                        send_recorded(log, &mut exec, run_id, async |exec: &mut Execution| {
                            call_mcp(exec, upstream, tool, traceparent).await;
                        })
                        .await
                    }
                    None => {
                        exec.status = ExecStatus::Failed;
                        exec.error = Some(format!(
                            "MCP server `{server}` is not one of the pipeline's"
                        ));
                    }
                },
                Some(ExecutorConfig::Return) | None => {}
            }
        }
        if dry_run || exec.status == ExecStatus::Failed {
            for (_, r) in reservations.iter_mut().filter(|(i, _)| i == index) {
                r.release();
            }
        }
        trace.record(exec.span(span, start, Instant::now()));
        out.push(exec);
    }
    out
}

impl Execution {
    /// Its span, `execute_tool {tool}` in the GenAI conventions, with the
    /// idempotency key the executor saw.
    pub fn span(&self, id: SpanId, start: Instant, end: Instant) -> StepSpan {
        let mut attributes = vec![
            KeyValue::new(genai::OPERATION_NAME, "execute_tool"),
            KeyValue::new(genai::TOOL_NAME, self.tool.clone()),
            KeyValue::new("reins.executor", self.executor.clone()),
            KeyValue::new("reins.idempotency_key", self.idempotency_key.clone()),
            KeyValue::new(
                "reins.action.status",
                format!("{:?}", self.status).to_lowercase(),
            ),
            KeyValue::new("reins.action.tries", self.tries as i64),
        ];
        if let Some(status) = self.http_status {
            attributes.push(KeyValue::new("http.response.status_code", status as i64));
        }
        StepSpan {
            kind: SpanKind::Client,
            id: Some(id),
            attributes,
            error: self
                .error
                .clone()
                .filter(|_| self.status == ExecStatus::Failed),
            ..StepSpan::new(format!("execute_tool {}", self.tool), start, end)
        }
    }

    /// An action about to go to `executor`, not sent yet.
    pub fn new(
        index: usize,
        action: &Action,
        idempotency_key: String,
        executor: &str,
    ) -> Execution {
        Execution {
            index,
            tool: action.tool.clone(),
            arguments: action.arguments.clone(),
            idempotency_key,
            executor: executor.to_owned(),
            status: ExecStatus::Returned,
            http_status: None,
            response: None,
            error: None,
            tries: 0,
        }
    }
}

/// `send`, with the action's state recorded around it: `planned` →
/// `sending` (committed before the request leaves) → `done`/`failed`. An
/// action already `done` is not sent again (its recorded answer is used);
/// one found `sending` (a crash mid-call) is sent again with the same key.
/// If the store cannot record it, the action is not sent and fails.
pub async fn send_recorded(
    store: &dyn StateStore,
    exec: &mut Execution,
    run_id: &str,
    send: impl AsyncFnOnce(&mut Execution),
) {
    let planned = ActionRecord {
        key: exec.idempotency_key.clone(),
        run_id: run_id.to_owned(),
        tool: exec.tool.clone(),
        arguments: exec.arguments.clone(),
        state: ActionState::Planned,
        response: None,
        http_status: None,
        tries: 0,
        updated_ms: 0,
    };
    let fail = |exec: &mut Execution, e: reins_state::StateError| {
        exec.status = ExecStatus::Failed;
        exec.error = Some(format!("state store: {e}"));
    };
    let stored = match store.plan_action(&planned).await {
        Ok(r) => r,
        Err(e) => return fail(exec, e),
    };
    if stored.tool != exec.tool || stored.arguments != exec.arguments {
        // A redone step proposed something else under the same key (a model
        // that answers differently the second time): what was recorded may
        // already have happened, so this must not be sent as if it were it.
        exec.status = ExecStatus::Failed;
        exec.error = Some(format!(
            "idempotency key {} was first used for `{}` with other arguments; not sent",
            exec.idempotency_key, stored.tool
        ));
        return;
    }
    match stored.state {
        ActionState::Done | ActionState::Failed => {
            exec.status = if stored.state == ActionState::Done {
                ExecStatus::Done
            } else {
                ExecStatus::Failed
            };
            exec.response = stored.response;
            exec.http_status = stored.http_status;
            exec.tries = stored.tries;
            if exec.status == ExecStatus::Failed {
                exec.error = Some("failed before the run was resumed".into());
            }
            return;
        }
        ActionState::Planned | ActionState::Sending => {}
    }
    if let Err(e) = store
        .set_action(
            &exec.idempotency_key,
            ActionState::Sending,
            None,
            None,
            stored.tries,
        )
        .await
    {
        return fail(exec, e);
    }
    send(exec).await;
    exec.tries += stored.tries;
    let state = if exec.status == ExecStatus::Done {
        ActionState::Done
    } else {
        ActionState::Failed
    };
    if let Err(e) = store
        .set_action(
            &exec.idempotency_key,
            state,
            exec.response.as_ref(),
            exec.http_status,
            exec.tries,
        )
        .await
    {
        // The webhook has it; a resume re-sends it with the same key.
        tracing::warn!(key = %exec.idempotency_key, "state store: cannot record the action's outcome: {e}");
    }
}

/// POSTs one action, retrying 5xx, 429 and connection errors with the same key.
async fn send(
    exec: &mut Execution,
    pipeline: &str,
    run_id: &str,
    url: &str,
    timeout_ms: u64,
    retries: u32,
    traceparent: Option<&str>,
) {
    let body = json!({
        "run_id": run_id,
        "pipeline": pipeline,
        "tool": exec.tool,
        "arguments": exec.arguments,
        "idempotency_key": exec.idempotency_key,
    });
    let timeout = Duration::from_millis(timeout_ms.max(1));
    // The providers' retry policy: full jitter from 100 ms, capped at 2 s.
    let policy = RetryPolicy {
        max_retries: retries,
        base: Duration::from_millis(50),
        max_wait: Duration::from_secs(2),
    };
    loop {
        exec.tries += 1;
        let sent = crate::telemetry::traced(client().post(url), traceparent)
            .header("idempotency-key", &exec.idempotency_key)
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        let retryable = match sent {
            Ok(resp) => {
                let status = resp.status();
                exec.http_status = Some(status.as_u16());
                let text = resp.text().await.unwrap_or_default();
                let parsed = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                if status.is_success() {
                    exec.status = ExecStatus::Done;
                    exec.response = Some(parsed);
                    exec.error = None;
                    return;
                }
                exec.error = Some(format!("webhook answered {status}"));
                exec.response = Some(parsed);
                status.is_server_error() || status.as_u16() == 429
            }
            Err(e) => {
                exec.error = Some(format!("webhook unreachable: {e}"));
                true
            }
        };
        if !retryable || exec.tries > policy.max_retries {
            exec.status = ExecStatus::Failed;
            tracing::warn!(tool = %exec.tool, key = %exec.idempotency_key, tries = exec.tries, "action failed: {}", exec.error.as_deref().unwrap_or(""));
            return;
        }
        tokio::time::sleep(policy.backoff(exec.tries)).await;
    }
}

/// Calls `tool` on `upstream` with the action's arguments: done with the
/// tool's result, or failed (the tool's own error, the upstream gone or
/// past its deadline). An MCP call is not retried: a tool has no
/// idempotency key to make a second try safe.
pub async fn call_mcp(
    exec: &mut Execution,
    upstream: &crate::mcp::Upstream,
    tool: &str,
    traceparent: Option<&str>,
) {
    exec.tries += 1;
    let arguments = match &exec.arguments {
        Value::Object(o) => o.clone(),
        Value::Null => serde_json::Map::new(),
        other => {
            exec.status = ExecStatus::Failed;
            exec.error = Some(format!(
                "the arguments of `{tool}` must be a JSON object, got {other}"
            ));
            return;
        }
    };
    match upstream.call_tool(tool, arguments, traceparent).await {
        Ok(result) => {
            let failed = result.is_error == Some(true);
            exec.response = serde_json::to_value(&result).ok();
            if failed {
                exec.status = ExecStatus::Failed;
                exec.error = Some(format!(
                    "`{tool}` on MCP server `{}` reported an error: {}",
                    upstream.name(),
                    crate::mcp::result_text(&result)
                ));
            } else {
                exec.status = ExecStatus::Done;
                exec.error = None;
            }
        }
        Err(e) => {
            exec.status = ExecStatus::Failed;
            exec.error = Some(e.to_string());
        }
    }
}
