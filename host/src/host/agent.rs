//! Agent mode and resuming runs.
//!
//! An agent run loops: the pipeline runs once on the conversation so far
//! (model → constraints → gates → executors, as any run); the tool calls it
//! executed and their results (webhook bodies) are appended as an
//! `assistant` message and `tool` messages; then the next step. A step whose
//! answer calls no tool ends the run, as does `max_steps`. After every step
//! the conversation is checkpointed (one transaction); a resumed run starts
//! after its last checkpoint, and a step redone after a crash produces the
//! same idempotency keys (`RUN.STEP:ATTEMPT:INDEX`), so a `done` action is
//! not sent again and a `sending` one is re-sent with its key.

use super::Host;
use crate::pipeline::{Pipeline, Request, RunResult, RunStatus, engine};
use crate::runtime::Message;
use crate::state::{RunRecord, StepRecord, now_ms};
use serde_json::{Value, json};

/// Why a run could not be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no run `{0}`")]
    NotFound(String),
    #[error("run `{run_id}` is {status}, not interrupted")]
    NotResumable { run_id: String, status: String },
    #[error("run `{0}` has no stored request to resume from")]
    NoRequest(String),
    #[error("state store: {0}")]
    Store(#[from] crate::state::StateError),
}

impl Host {
    pub(super) async fn run_agent(&self, p: &Pipeline, request: Request, mut record: RunRecord) -> RunResult {
        let run_id = record.run_id.clone();
        let steps = match self.state.steps(&run_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(run_id = %run_id, "state store: cannot read the checkpoints: {e}");
                Vec::new()
            }
        };
        let (mut messages, mut step) = match steps.last() {
            Some(s) => (
                serde_json::from_value::<Vec<Message>>(s.data["messages"].clone()).unwrap_or_else(|_| request.messages.clone()),
                s.step + 1,
            ),
            None => (request.messages.clone(), 1),
        };
        let max_steps = p.config.max_steps.max(1);
        let mut executions = Vec::new();
        let mut last: Option<RunResult> = None;
        while step <= max_steps {
            let mut req = request.clone();
            req.messages = messages.clone();
            req.run_id = Some(format!("{run_id}.{step}"));
            let result = crate::state::CURRENT
                .scope(self.state.clone(), engine::run(p, self.plugins.current(), req))
                .await;
            let done = result.status != RunStatus::Completed || result.executions.is_empty();
            if !done {
                let calls: Vec<Value> = result
                    .executions
                    .iter()
                    .map(|e| json!({"name": e.tool, "arguments": e.arguments}))
                    .collect();
                messages.push(Message::new("assistant", json!({"tool_calls": calls}).to_string()));
                for e in &result.executions {
                    let body = json!({"tool": e.tool, "idempotency_key": e.idempotency_key, "result": e.response});
                    messages.push(Message::new("tool", body.to_string()));
                }
                let checkpoint = StepRecord {
                    run_id: run_id.clone(),
                    step,
                    kind: "agent".into(),
                    data: json!({"messages": messages, "executions": result.executions, "tokens": result.tokens}),
                    created_ms: now_ms(),
                };
                record.result = json!({"run_id": run_id, "pipeline": p.name, "status": "running", "step": step});
                record.updated_ms = now_ms();
                if let Err(e) = self.state.checkpoint(&record, &checkpoint).await {
                    tracing::warn!(run_id = %run_id, step, "state store: checkpoint failed: {e}");
                }
                executions.extend(result.executions.iter().cloned());
            }
            last = Some(result);
            if done {
                break;
            }
            step += 1;
        }
        let mut result = last.unwrap_or_else(|| RunResult::new(run_id.clone(), p.name.clone()));
        if result.run_id != run_id {
            result.run_id = run_id;
        }
        if step > max_steps {
            tracing::debug!(run_id = %result.run_id, max_steps, "agent run stopped at max_steps");
        }
        // Every step's executions, not just the last step's.
        if result.executions.is_empty() || step > max_steps {
            result.executions = executions;
        }
        self.finish(p, result, record).await
    }

    /// Resumes an interrupted run (status `running`): an agent run from its
    /// last checkpoint, a single run from the start with the same run id
    /// (so its actions keep their idempotency keys).
    pub async fn resume(&self, run_id: &str) -> Result<RunResult, ResumeError> {
        let record = self
            .state
            .run(run_id)
            .await?
            .ok_or_else(|| ResumeError::NotFound(run_id.to_owned()))?;
        if record.status != "running" {
            return Err(ResumeError::NotResumable {
                run_id: run_id.to_owned(),
                status: record.status,
            });
        }
        let mut request: Request = serde_json::from_value(record.request["request"].clone())
            .map_err(|_| ResumeError::NoRequest(run_id.to_owned()))?;
        request.run_id = Some(run_id.to_owned());
        let key = record.idempotency_key.clone();
        Ok(self.run_keyed(&record.pipeline, request, key.as_deref()).await)
    }

    /// Resumes every interrupted run, oldest first (`reins serve` at start).
    pub async fn resume_interrupted(&self) -> Result<Vec<RunResult>, ResumeError> {
        let runs = self.state.runs_with_status("running", 10_000).await?;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            if self.pipelines.contains_key(&r.pipeline) {
                out.push(self.resume(&r.run_id).await?);
            }
        }
        Ok(out)
    }
}
