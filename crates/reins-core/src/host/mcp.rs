//! The MCP gateway's orchestration: what a pipeline offers an MCP client,
//! and one `tools/call` from the gates to the upstream and back through the
//! normalizers. Each call is recorded as a run of the pipeline (its trace,
//! gate decisions and execution), so the runs API, the audit log and the
//! approvals page show it like any other.

use super::Host;
use crate::approvals::ApprovalStatus;
use crate::mcp::{ExposedTool, McpError, Passthrough, Upstream, UpstreamTool};
use crate::pipeline::engine::{self, CallVerdict};
use crate::pipeline::execute::{self, ExecStatus, Execution};
use crate::pipeline::{Pipeline, Request, RunContext, RunError, RunResult, RunStatus};
use reins_runtime::{Caller, Reservation};
use reins_state::{RunRecord, ToolPin};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The `kind` an MCP call's stored run carries: a decision on its
/// approval wakes the waiting call instead of resuming a run.
pub(super) const CALL_KIND: &str = "mcp_call";

/// How often a call waiting for a human looks at its approval.
const APPROVAL_POLL: Duration = Duration::from_millis(100);

/// A tool result the agent reads as an error.
fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

impl Host {
    fn gateway(&self, pipeline: &str) -> Result<Arc<Pipeline>, McpError> {
        let p = self
            .pipeline(pipeline)
            .ok_or_else(|| McpError::UnknownPipeline(pipeline.to_owned()))?;
        if p.upstreams().is_empty() {
            return Err(McpError::NoServers(pipeline.to_owned()));
        }
        Ok(p)
    }

    /// The tools pipeline `pipeline` offers `caller` now (a `tools/list`:
    /// every upstream is asked again).
    pub async fn mcp_tools(
        &self,
        pipeline: &str,
        caller: &Caller,
    ) -> Result<Vec<ExposedTool>, McpError> {
        let p = self.gateway(pipeline)?;
        self.offered(&p, &request_of(caller), true).await
    }

    /// The upstream tools that pass their pins, then what the constraints
    /// plugin makes of them. An upstream that is down only takes its own
    /// tools away.
    async fn offered(
        &self,
        p: &Pipeline,
        request: &Request,
        fresh: bool,
    ) -> Result<Vec<ExposedTool>, McpError> {
        let mut all: Vec<UpstreamTool> = Vec::new();
        for u in p.upstreams() {
            let listed = if fresh {
                u.list_tools().await
            } else {
                u.tools().await
            };
            match listed {
                Ok(tools) => all.extend(self.pinned(p, u, &tools, fresh).await),
                Err(e) => {
                    tracing::warn!(pipeline = %p.name, server = u.name(), "MCP server left out of the tool list: {e}")
                }
            }
        }
        let rc = RunContext::new(self.state.clone(), None);
        engine::mcp_tools(p, self.plugins.current(), request, &all, &rc)
            .await
            .map_err(plugin_error)
    }

    /// `tools` less those whose definition changed since it was pinned
    /// (until an admin approves the new one). A store that cannot be read
    /// hides nothing new but logs it: pinning guards against a change, and
    /// without the store no change can be seen.
    async fn pinned(
        &self,
        p: &Pipeline,
        u: &Upstream,
        tools: &[UpstreamTool],
        fresh: bool,
    ) -> Vec<UpstreamTool> {
        if !p.config.mcp.pin_tools {
            return tools.to_vec();
        }
        let pins = match u
            .pins_for(tools, fresh, async || {
                // Built only when the pins are written, not on every call.
                let seen: Vec<ToolPin> = tools
                    .iter()
                    .map(|t| ToolPin {
                        server: t.server.clone(),
                        tool: t.tool.clone(),
                        hash: t.hash.clone(),
                        definition: t.definition(),
                        pending_hash: None,
                        pending_definition: None,
                        updated_ms: 0,
                    })
                    .collect();
                self.state.pin_tools(u.name(), &seen).await
            })
            .await
        {
            Ok(pins) => pins,
            Err(e) => {
                tracing::error!(server = u.name(), "cannot read the MCP tool pins: {e}");
                return tools.to_vec();
            }
        };
        tools
            .iter()
            .filter(|t| {
                let pin = pins.iter().find(|p| p.tool == t.tool);
                let same = pin.is_none_or(|p| p.hash == t.hash);
                if !same {
                    tracing::warn!(server = %t.server, tool = %t.tool, hash = %&t.hash[..12],
                        "MCP tool hidden: its definition changed since it was pinned; an admin approves the new one at POST /v1/mcp/pins/approve");
                    metrics::counter!(reins_runtime::metric_names::MCP_TOOLS_HIDDEN_TOTAL, "server" => t.server.clone()).increment(1);
                }
                same
            })
            .cloned()
            .collect()
    }

    /// Every pinned MCP tool definition, with changed ones waiting.
    pub async fn mcp_pins(&self) -> Result<Vec<ToolPin>, McpError> {
        self.state
            .tool_pins(None)
            .await
            .map_err(|e| McpError::Store(e.to_string()))
    }

    /// Approves the changed definition `hash` of `server`'s `tool`: it is
    /// offered again from the next listing on.
    pub async fn mcp_approve_tool(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        by: &str,
    ) -> Result<bool, McpError> {
        let done = self
            .state
            .approve_tool(server, tool, hash)
            .await
            .map_err(|e| McpError::Store(e.to_string()))?;
        if done {
            for u in self.live().upstreams.values() {
                u.forget_pins().await;
            }
            self.audit(
                reins_state::AuditEntry::new("mcp.tool.approve", format!("{server}/{tool}"), "ok")
                    .by(by.to_owned(), None)
                    .detail(json!({"hash": hash})),
            )
            .await;
        }
        Ok(done)
    }

    /// Starts (or reaches) every MCP server of the config and lists its
    /// tools, so that one that cannot start, or speaks a protocol version
    /// Reins does not, is logged when the server starts rather than at the
    /// first call. Failures are logged and shown by `mcp_servers`; each
    /// server is tried again on its next use.
    pub async fn mcp_warm_up(&self) {
        let live = self.live();
        let starts = live.upstreams.values().map(|u| async move {
            if let Err(e) = u.list_tools().await {
                tracing::warn!(server = u.name(), "MCP server not ready: {e}");
            }
        });
        futures_util::future::join_all(starts).await;
    }

    /// The state of every MCP server of the config.
    pub async fn mcp_servers(&self) -> Vec<Value> {
        let live = self.live();
        let mut out = Vec::new();
        for u in live.upstreams.values() {
            out.push(u.status().await);
        }
        out
    }

    /// A read-only request passed to the pipeline's upstreams: resources
    /// and prompts are listed from all of them, and read from the first
    /// that answers.
    pub async fn mcp_passthrough(
        &self,
        pipeline: &str,
        what: Passthrough,
    ) -> Result<Value, McpError> {
        let p = self.gateway(pipeline)?;
        let family = what.family();
        let allowed = if family == "resources" {
            p.config.mcp.resources
        } else {
            p.config.mcp.prompts
        };
        if allowed == crate::config::Passthrough::Deny {
            return Err(McpError::Denied {
                pipeline: p.name.clone(),
                what: family,
            });
        }
        if what.is_list() {
            let mut items = Vec::new();
            for u in p.upstreams() {
                match u.passthrough(what.clone()).await {
                    Ok(Value::Array(list)) => items.extend(list),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(server = u.name(), "{family} of an MCP server left out: {e}")
                    }
                }
            }
            return Ok(json!({ family: items }));
        }
        let mut last = None;
        for u in p.upstreams() {
            match u.passthrough(what.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| McpError::NoServers(p.name.clone())))
    }

    /// One `tools/call`: the tool must be offered to this caller; its
    /// arguments are checked, the gates decide (an escalation waits for a
    /// human up to `mcp.approval_wait_ms`), the call is recorded in the
    /// action log before it is sent, and the answer passes the normalizers.
    /// What the agent should read as a refusal is a tool error result;
    /// `Err` is for requests that cannot be served at all.
    pub async fn mcp_call(
        &self,
        pipeline: &str,
        caller: &Caller,
        name: &str,
        arguments: Option<Map<String, Value>>,
        parent: Option<&crate::telemetry::TraceParent>,
    ) -> Result<CallToolResult, McpError> {
        let p = self.gateway(pipeline)?;
        let request = request_of(caller);
        if let Some(limits) = &p.config.limits {
            let lkey = crate::limits::limit_key(limits, caller);
            if let Err(retry_after_s) = self.limits.admit(&p.name, &lkey, limits) {
                return Ok(tool_error(format!(
                    "rate limited: too many calls for `{lkey}` in the window; retry after {retry_after_s} s"
                )));
            }
        }
        let tools = self.offered(&p, &request, false).await?;
        let Some(tool) = tools.iter().find(|t| t.name == name) else {
            return Err(McpError::UnknownTool {
                name: name.to_owned(),
                allowed: tools.iter().map(|t| t.name.clone()).collect(),
            });
        };
        let Some(upstream) = p.upstream(&tool.server).cloned() else {
            return Err(McpError::NoServers(p.name.clone()));
        };
        let run_id = format!("mcp-{}", uuid::Uuid::new_v4().simple());
        let rc = RunContext::new(self.state.clone(), None).traced(self.telemetry.run(parent));
        let arguments = Value::Object(arguments.unwrap_or_default());
        let gated = engine::gate_tool_call(
            &p,
            self.plugins.current(),
            &request,
            run_id.clone(),
            tool,
            arguments,
            &rc,
        )
        .await;
        let mut result = gated.result;
        let mut reservations = gated.reservations;
        let action = match gated.verdict {
            CallVerdict::Allowed(action) => action,
            CallVerdict::Refused(reason) => {
                release(&mut reservations);
                self.record_call(&p, &request, result, &rc).await;
                return Ok(tool_error(format!("Reins refused `{name}`: {reason}")));
            }
            CallVerdict::Escalated(pending) => {
                let waiting = std::time::Instant::now();
                let decided = self.await_decision(&p, &mut result, &pending, caller).await;
                rc.trace.record(crate::telemetry::approval_wait(
                    result.approvals.first().map(String::as_str),
                    if decided.is_ok() {
                        "approved"
                    } else {
                        "rejected"
                    },
                    &pending.gate,
                    name,
                    waiting,
                    std::time::Instant::now(),
                ));
                match decided {
                    Ok(action) => action,
                    Err(reason) => {
                        release(&mut reservations);
                        result.status = RunStatus::Rejected;
                        self.record_call(&p, &request, result, &rc).await;
                        return Ok(tool_error(format!("Reins did not send `{name}`: {reason}")));
                    }
                }
            }
        };
        let started = std::time::Instant::now();
        let mut exec = Execution::new(0, &action, execute::idempotency_key(&run_id, 1, 0), "mcp");
        let span = rc.trace.child();
        let traceparent = rc.trace.traceparent(span);
        execute::send_recorded(
            &*self.state,
            &mut exec,
            &run_id,
            async |exec: &mut Execution| {
                execute::call_mcp(exec, &upstream, &tool.tool, traceparent.as_deref()).await
            },
        )
        .await;
        rc.trace
            .record(exec.span(span, started, std::time::Instant::now()));
        let sent: Option<CallToolResult> = exec
            .response
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        result.trace.push(crate::pipeline::TraceStep {
            layer: "execute",
            name: name.to_owned(),
            attempt: 1,
            result: match exec.status {
                ExecStatus::Done => "done".to_owned(),
                _ => format!("failed: {}", exec.error.as_deref().unwrap_or("")),
            },
            start_us: started.saturating_duration_since(rc.started).as_micros() as u64,
            duration_us: started.elapsed().as_micros() as u64,
        });
        let failed = exec.status != ExecStatus::Done;
        let error = exec.error.clone();
        result.executions = vec![exec];
        if failed {
            release(&mut reservations);
        }
        let Some(mut answer) = sent else {
            // No answer at all: the upstream died, timed out or refused the request.
            let message = error.unwrap_or_else(|| "the MCP server gave no answer".to_owned());
            result.status = RunStatus::Failed;
            result.error = Some(RunError::ActionFailed {
                tool: name.to_owned(),
                message: message.clone(),
            });
            self.record_call(&p, &request, result, &rc).await;
            return Ok(tool_error(message));
        };
        // What the tool says goes to the agent only through the normalizers:
        // its text and its structured content.
        let text = crate::mcp::result_text(&answer);
        let structured = answer.structured_content.as_ref().map(Value::to_string);
        let mut parts = vec![text.clone()];
        parts.extend(structured.clone());
        let (screened, screen) = engine::screen_tool_result(
            &p,
            self.plugins.current(),
            &request,
            run_id.clone(),
            name,
            parts,
            &rc,
        )
        .await;
        result.trace.extend(screen.trace);
        result.findings.extend(screen.findings);
        match screened {
            Ok(clean) => {
                // A normalizer rewrote it (a redaction): the agent gets the rewrite only.
                if clean.first().is_some_and(|c| *c != text) {
                    answer.content = vec![ContentBlock::text(clean[0].clone())];
                }
                if let (Some(before), Some(after)) = (&structured, clean.get(1))
                    && before != after
                {
                    answer.structured_content = serde_json::from_str(after).ok();
                }
                result.status = if failed {
                    RunStatus::Failed
                } else {
                    RunStatus::Completed
                };
            }
            Err(e) => {
                let why = match &e {
                    RunError::Rejected { plugin, reason } => {
                        format!(
                            "the result of `{name}` was withheld: normalizer `{plugin}` found {reason}"
                        )
                    }
                    other => format!("the result of `{name}` was withheld: {other}"),
                };
                tracing::warn!(pipeline = %p.name, tool = name, run_id = %run_id, "{why}");
                result.status = RunStatus::Rejected;
                result.error = Some(e);
                answer = tool_error(why);
            }
        }
        result.output = serde_json::to_value(&answer).ok();
        self.record_call(&p, &request, result, &rc).await;
        Ok(answer)
    }

    /// Holds the call for a human: records its approval and waits for a
    /// decision. Approved → the action as escalated; rejected, or no
    /// decision in time (the approval is then rejected in Reins' name) →
    /// why not.
    async fn await_decision(
        &self,
        p: &Pipeline,
        result: &mut RunResult,
        pending: &crate::pipeline::PendingApproval,
        caller: &Caller,
    ) -> Result<reins_runtime::Action, String> {
        let mut record = RunRecord::new(&result.run_id, &p.name, RunStatus::AwaitingApproval);
        record.result = call_record(result);
        record.owner = Some(self.leases.node.clone());
        let held = self
            .approvals
            .hold_call(result, &record, &p.config.approvers)
            .await
            .map_err(|e| format!("cannot record the approval: {e}"))?;
        let Some(approval) = held.into_iter().next() else {
            return Err("no approval was recorded".to_owned());
        };
        result.approvals = vec![approval.id.clone()];
        tracing::info!(pipeline = %p.name, approval = %approval.id, tool = %pending.action.tool, subject = %caller.subject,
            "MCP call waiting for approval");
        let wait = Duration::from_millis(p.config.mcp.approval_wait_ms);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.approvals.get(&approval.id).await {
                Ok(Some(a)) if a.status == ApprovalStatus::Approved => return Ok(a.action),
                Ok(Some(a)) if a.status == ApprovalStatus::Rejected => {
                    return Err(format!(
                        "rejected by {}: {}",
                        a.decided_by.unwrap_or_default(),
                        a.comment.unwrap_or_default()
                    ));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(approval = %approval.id, "cannot read the approval: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                let why = format!(
                    "no decision on approval {} within {} ms (mcp.approval_wait_ms)",
                    approval.id, p.config.mcp.approval_wait_ms
                );
                match self.approvals.expire(&approval.id, "reins", &why).await {
                    Ok(true) | Err(_) => return Err(why),
                    // Decided at the last moment: read it once more.
                    Ok(false) => continue,
                }
            }
            tokio::time::sleep(APPROVAL_POLL).await;
        }
    }

    /// Stores the call as a finished run of the pipeline, with its audit rows.
    async fn record_call(
        &self,
        p: &Pipeline,
        request: &Request,
        mut result: RunResult,
        rc: &RunContext,
    ) {
        if result.status == RunStatus::Running || result.status == RunStatus::AwaitingApproval {
            result.status = RunStatus::Completed;
        }
        result.trace_id = rc.trace.trace_id();
        result.span_id = rc.trace.span_id();
        rc.trace.end_run(engine::run_span(p, &result, rc.started));
        let mut record = RunRecord::new(&result.run_id, &p.name, result.status);
        record.result = call_record(&result);
        record.owner = Some(self.leases.node.clone());
        record.updated_ms = reins_state::now_ms();
        if let Err(e) = self.state.put_run(&record).await {
            tracing::warn!(run_id = %result.run_id, "state store: cannot record the MCP call: {e}");
        }
        metrics::counter!(reins_runtime::metric_names::MCP_CALLS_TOTAL,
            "pipeline" => p.name.clone(), "status" => result.status.as_str())
        .increment(1);
        let who = super::audit::caller(request);
        self.audit_rows(super::audit::run_end(&result, &who));
    }
}

/// The request an MCP client's call stands for: its caller, nothing else.
fn request_of(caller: &Caller) -> Request {
    Request {
        caller: caller.clone(),
        ..Request::default()
    }
}

/// A call's run as stored: the result, marked as an MCP call.
fn call_record(result: &RunResult) -> Value {
    let mut v = serde_json::to_value(result).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), Value::String(CALL_KIND.to_owned()));
    }
    v
}

fn release(reservations: &mut [Reservation]) {
    for r in reservations {
        r.release();
    }
}

fn plugin_error(e: RunError) -> McpError {
    match e {
        RunError::Plugin {
            layer,
            plugin,
            message,
            ..
        } => McpError::Plugin {
            layer,
            plugin,
            message,
        },
        other => McpError::Refused(other.to_string()),
    }
}
