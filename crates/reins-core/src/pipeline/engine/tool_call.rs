//! An MCP client's tool list and tool call through a pipeline's layers:
//! the constraints plugin chooses among the upstream tools, each call's
//! arguments are checked and pass the gates, and what the tool answers
//! passes the normalizers before the agent reads it. The orchestration
//! around these (approvals, the action log, the upstream) is the host's.

use super::*;
use crate::mcp::{ExposedTool, UpstreamTool, expose, upstream_json};

/// The tools `pipeline` offers the caller of `request` among `upstream`.
pub async fn mcp_tools(
    pipeline: &Pipeline,
    plugins: Arc<PluginSet>,
    request: &Request,
    upstream: &[UpstreamTool],
    rc: &RunContext,
) -> Result<Vec<ExposedTool>, RunError> {
    if pipeline.config.constraints.is_none() {
        return Ok(expose(None, upstream));
    }
    let run_id = format!("mcp-list-{}", uuid::Uuid::new_v4().simple());
    let mut run = Run::begin(pipeline, plugins, rc, run_id, request);
    run.ctx.upstream_tools = Arc::from(upstream_json(upstream));
    let tools = run.constraints().await?;
    Ok(expose(Some(tools), upstream))
}

/// What the argument check and the gates made of one call.
pub enum CallVerdict {
    /// Send it, with these (possibly rewritten) arguments.
    Allowed(Action),
    /// Not sent: why, for the agent.
    Refused(String),
    /// A human decides first.
    Escalated(PendingApproval),
}

/// One gated call: the verdict, the run record of it (trace, decisions,
/// findings) and the budget the gates reserved for it.
pub struct GatedCall {
    pub verdict: CallVerdict,
    pub result: RunResult,
    pub reservations: Vec<reins_runtime::Reservation>,
}

/// Checks `arguments` against `tool`'s schema and passes the call through
/// every gate of `pipeline`, as run `run_id`.
pub async fn gate_tool_call(
    pipeline: &Pipeline,
    plugins: Arc<PluginSet>,
    request: &Request,
    run_id: String,
    tool: &ExposedTool,
    arguments: Value,
    rc: &RunContext,
) -> GatedCall {
    let mut run = Run::begin(pipeline, plugins, rc, run_id, request);
    run.ctx.attempt = 1;
    let call = ToolCall {
        id: None,
        name: tool.name.clone(),
        arguments,
    };
    let gated = run
        .gate(std::slice::from_ref(&call), &[tool.as_tool()])
        .await;
    let mut result = run.result;
    result.actions = vec![Action {
        tool: call.name.clone(),
        arguments: call.arguments.clone(),
        access: tool.access,
    }];
    let (verdict, reservations) = match gated {
        Err(e) => {
            let verdict = CallVerdict::Refused(e.to_string());
            result.status = RunStatus::Failed;
            result.error = Some(e);
            (verdict, Vec::new())
        }
        Ok(mut g) => {
            let reservations: Vec<_> = g.reservations.drain(..).map(|(_, r)| r).collect();
            let blocking: Vec<String> = g
                .findings
                .iter()
                .filter(|f| is_blocking(f))
                .map(|f| f.violation.message.clone())
                .collect();
            result.findings.extend(g.findings);
            if !blocking.is_empty() {
                result.status = RunStatus::Rejected;
                (CallVerdict::Refused(blocking.join("; ")), reservations)
            } else if let Some(pending) = g.pending.pop() {
                result.status = RunStatus::AwaitingApproval;
                result.pending = vec![pending.clone()];
                (CallVerdict::Escalated(pending), reservations)
            } else if let Some((_, action)) = g.approved.pop() {
                (CallVerdict::Allowed(action), reservations)
            } else {
                result.status = RunStatus::Rejected;
                (
                    CallVerdict::Refused("no gate allowed the call".to_owned()),
                    reservations,
                )
            }
        }
    };
    GatedCall {
        verdict,
        result,
        reservations,
    }
}

/// What the pipeline's normalizers make of a tool's answer (`parts`: its
/// text, and its structured content as JSON text), as run `run_id`: the
/// parts they pass on, in order, or the reasons they reject them (findings
/// of severity `error`: an injection, say).
pub async fn screen_tool_result(
    pipeline: &Pipeline,
    plugins: Arc<PluginSet>,
    request: &Request,
    run_id: String,
    tool: &str,
    parts: Vec<String>,
    rc: &RunContext,
) -> (Result<Vec<String>, RunError>, RunResult) {
    let mut run = Run::begin(pipeline, plugins, rc, run_id, request);
    run.ctx.attempt = 1;
    if pipeline.config.normalizers.is_empty() || parts.is_empty() {
        return (Ok(parts), run.result);
    }
    let messages = parts
        .into_iter()
        .map(|text| Message {
            name: Some(tool.to_owned()),
            ..Message::tool_result("mcp", text)
        })
        .collect();
    let out = run
        .normalize(messages)
        .await
        .map(|messages| messages.into_iter().map(|m| m.content).collect());
    (out, run.result)
}
