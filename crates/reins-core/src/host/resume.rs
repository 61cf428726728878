//! Continuing runs: after their approvals are decided ([`Host::decide`]),
//! turn after turn in agent mode, and after a crash ([`Host::resume`]). One
//! module, because all three pick a stored run up where it stopped.
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

use super::{Host, StoredRequest};
use crate::approvals::{Approval, ApprovalError, ApprovalStatus, Decided, Verdict};
use crate::pipeline::RunError;
use crate::pipeline::journal::Journal;
use crate::pipeline::{
    Execution, Pipeline, Request, RunContext, RunResult, RunStatus, Tokens, engine,
};
use reins_runtime::Message;
use reins_state::{RunRecord, StepRecord, now_ms};
use serde_json::{Value, json};
use std::sync::Arc;

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
    Store(#[from] reins_state::StateError),
}

impl Host {
    pub(super) async fn run_agent(
        &self,
        p: &Pipeline,
        request: Request,
        mut record: RunRecord,
    ) -> RunResult {
        let run_id = record.run_id.clone();
        let steps = match self.state.steps(&run_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(run_id = %run_id, "state store: cannot read the checkpoints: {e}");
                Vec::new()
            }
        };
        // The conversation so far: the request, then each checkpointed
        // turn's messages (a checkpoint holds only its own turn); and what
        // those turns executed and spent.
        let mut messages = request.messages.clone();
        let mut executions: Vec<Execution> = Vec::new();
        let mut tokens = Tokens::default();
        for s in &steps {
            let turn = serde_json::from_value::<Vec<Message>>(s.data["messages"].clone())
                .unwrap_or_default();
            if s.data["delta"] != Value::Bool(true) {
                messages.clear(); // an older checkpoint: the whole conversation
            }
            messages.extend(turn);
            executions.extend(
                serde_json::from_value::<Vec<Execution>>(s.data["executions"].clone())
                    .unwrap_or_default(),
            );
            add_tokens(
                &mut tokens,
                &serde_json::from_value(s.data["tokens"].clone()).unwrap_or_default(),
            );
        }
        let mut step = steps.last().map_or(1, |s| s.step + 1);
        let max_steps = p.config.max_steps.max(1);
        let mut last: Option<RunResult> = None;
        let mut first_turn = true;
        while step <= max_steps {
            let turn_id = step_run_id(&run_id, step);
            let mut req = request.clone();
            req.messages = messages.clone();
            req.run_id = Some(turn_id.clone());
            let journal = if self.boot().state.checkpoints {
                // The turn's model answers are journaled; only the first turn
                // of a resumed run can have some from before the crash.
                let previous = if first_turn {
                    self.state.steps(&turn_id).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                Some(Journal::for_turn(
                    self.state.clone(),
                    record.clone(),
                    self.leases.lease_ms,
                    &turn_id,
                    &previous,
                ))
            } else {
                None
            };
            let rc = RunContext::new(self.state.clone(), journal)
                .traced(self.telemetry.run(req.trace_parent.as_ref()));
            let result = engine::run(p, self.plugins.current(), req, &rc).await;
            first_turn = false;
            add_tokens(&mut tokens, &result.tokens);
            if result.status == RunStatus::AwaitingApproval {
                // Held for a human: the decision continues the loop from here.
                StoredRequest::update(&mut record, |stored| stored.agent_step = Some(step));
            }
            let done = result.status != RunStatus::Completed || result.executions.is_empty();
            if !done {
                if let Err(lost) = self
                    .checkpoint_turn(p, &mut record, step, &result, &mut messages, false)
                    .await
                {
                    return lost;
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
        result.run_id = run_id;
        if step > max_steps {
            tracing::debug!(run_id = %result.run_id, max_steps, "agent run stopped at max_steps");
        }
        // Every turn's executions (those before a resume included) and tokens.
        if result.status != RunStatus::AwaitingApproval {
            let mut all = executions;
            if result
                .executions
                .iter()
                .any(|e| !all.iter().any(|x| x.idempotency_key == e.idempotency_key))
            {
                all.extend(result.executions.iter().cloned());
            }
            result.executions = all;
        }
        result.tokens = tokens;
        self.finish(p, result, record).await
    }

    /// Appends a finished turn (its tool calls and their results) to the
    /// conversation and checkpoints it. `Err`: the lease is lost.
    async fn checkpoint_turn(
        &self,
        p: &Pipeline,
        record: &mut RunRecord,
        step: u32,
        result: &RunResult,
        messages: &mut Vec<Message>,
        always: bool,
    ) -> Result<(), RunResult> {
        let run_id = record.run_id.clone();
        let before = messages.len();
        // Ids are positional (step, index), so a resumed run rebuilds the same conversation.
        let id = |j: usize| format!("call_{step}_{j}");
        let calls = result
            .executions
            .iter()
            .enumerate()
            .map(|(j, e)| reins_runtime::MessageToolCall {
                id: id(j),
                name: e.tool.clone(),
                arguments: e.arguments.to_string(),
            })
            .collect();
        messages.push(Message::tool_calls("", calls));
        for (j, e) in result.executions.iter().enumerate() {
            let body =
                json!({"tool": e.tool, "idempotency_key": e.idempotency_key, "result": e.response});
            messages.push(Message::tool_result(id(j), body.to_string()));
        }
        if !self.boot().state.checkpoints && !always {
            return Ok(());
        }
        let checkpoint = StepRecord {
            run_id: run_id.clone(),
            step,
            kind: reins_state::StepKind::Agent,
            data: json!({"delta": true, "messages": &messages[before..], "executions": result.executions, "tokens": result.tokens}),
            created_ms: now_ms(),
        };
        record.status = RunStatus::Running;
        record.result =
            json!({"run_id": run_id, "pipeline": p.name, "status": "running", "step": step});
        record.updated_ms = now_ms();
        record.owner = Some(self.leases.node.clone());
        record.lease_until_ms = self.lease_until();
        let written = self.state.checkpoint(record, &checkpoint).await;
        metrics::counter!(reins_runtime::metric_names::CHECKPOINTS_TOTAL, "kind" => "agent", "ok" => if written.is_ok() { "true" } else { "false" })
            .increment(1);
        match written {
            Ok(()) => Ok(()),
            Err(reins_state::StateError::LeaseLost { .. }) => Err(super::not_owned(
                &run_id,
                &p.name,
                &format!("another node took the run over after step {step}"),
            )),
            Err(e) => {
                tracing::warn!(run_id = %run_id, step, "state store: checkpoint failed: {e}");
                Ok(())
            }
        }
    }

    /// After the approvals of an agent turn held at `step` were decided and
    /// its actions executed (`turn`): checkpoints the turn and runs the loop
    /// on from the next step.
    pub(super) async fn continue_agent(
        &self,
        p: &Pipeline,
        mut record: RunRecord,
        step: u32,
        turn: RunResult,
        guard: super::lease::ActiveGuard,
    ) -> RunResult {
        let run_id = record.run_id.clone();
        StoredRequest::update(&mut record, |stored| stored.agent_step = None);
        // Written even with `checkpoints = false`: the loop goes on from it.
        let mut messages = Vec::new();
        if let Err(lost) = self
            .checkpoint_turn(p, &mut record, step, &turn, &mut messages, true)
            .await
        {
            return lost;
        }
        match self.resume_claimed(record, guard).await {
            Ok(result) => result,
            Err(e) => {
                let mut result = turn;
                result.status = RunStatus::Failed;
                result.error = Some(crate::pipeline::RunError::NotOwned {
                    run_id,
                    message: format!("the agent could not continue after the approval: {e}"),
                });
                result
            }
        }
    }

    /// Resumes an interrupted run (status `running`) that no live node
    /// holds: an agent run from its last checkpoint, a single run from the
    /// start with the same run id (so its actions keep their idempotency keys).
    pub async fn resume(&self, run_id: &str) -> Result<RunResult, ResumeError> {
        let record = self
            .state
            .run(run_id)
            .await?
            .ok_or_else(|| ResumeError::NotFound(run_id.to_owned()))?;
        if record.status != RunStatus::Running {
            return Err(ResumeError::NotResumable {
                run_id: run_id.to_owned(),
                status: record.status.to_string(),
            });
        }
        let busy = |status: String| ResumeError::NotResumable {
            run_id: run_id.to_owned(),
            status,
        };
        let guard = self
            .leases
            .active
            .enter(run_id)
            .ok_or_else(|| busy(format!("running on this node ({})", self.leases.node)))?;
        if !self
            .state
            .claim_run(run_id, &self.leases.node, now_ms(), self.lease_until())
            .await?
        {
            let owner = record.owner.unwrap_or_default();
            return Err(busy(format!(
                "running on node {owner} (its lease has not expired)"
            )));
        }
        self.resume_claimed(record, guard).await
    }

    /// Continues a run this node has just claimed.
    pub(super) async fn resume_claimed(
        &self,
        record: RunRecord,
        guard: super::lease::ActiveGuard,
    ) -> Result<RunResult, ResumeError> {
        let run_id = record.run_id.clone();
        let mut request = StoredRequest::of(&record)
            .request
            .ok_or_else(|| ResumeError::NoRequest(run_id.clone()))?;
        request.run_id = Some(run_id.clone());
        let live = self.live.load_full();
        let Some(p) = live.pipelines.get(&record.pipeline) else {
            let mut result = RunResult::new(run_id, record.pipeline.clone());
            result.error = Some(crate::pipeline::RunError::UnknownPipeline(record.pipeline));
            return Ok(result);
        };
        // What the run recorded before it was interrupted (a single run
        // replays its recorded model attempts; an agent run reads its own).
        let previous = match p.config.mode {
            crate::config::PipelineMode::Agent => Vec::new(),
            _ => self.state.steps(&run_id).await?,
        };
        // Already admitted by the rate limits when it started.
        Ok(self.start(p, request, record, guard, None, previous).await)
    }

    /// Resumes every interrupted run this node may take, concurrently, and
    /// waits for them (a library user's start-up; `reins serve` uses
    /// [`Host::spawn_background`], which also takes over other nodes' runs).
    pub async fn resume_interrupted(&self) -> Result<Vec<RunResult>, ResumeError> {
        use futures_util::StreamExt;
        let runs = self
            .state
            .claimable_runs(&self.leases.node, now_ms(), 10_000)
            .await?;
        let runs: Vec<_> = runs
            .into_iter()
            .filter(|r| {
                self.live.load().pipelines.contains_key(&r.pipeline)
                    && !self.leases.active.contains(&r.run_id)
            })
            .collect();
        let results: Vec<Result<RunResult, ResumeError>> = futures_util::stream::iter(runs)
            .map(|r| async move { self.resume(&r.run_id).await })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(r) => out.push(r),
                // Another node (or task) was quicker: it is not lost.
                Err(ResumeError::NotResumable { run_id, status }) => {
                    tracing::debug!(run_id, status, "not resumed here")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The run id of an agent turn: its actions' idempotency keys start with it.
pub(super) fn step_run_id(run_id: &str, step: u32) -> String {
    format!("{run_id}.{step}")
}

fn add_tokens(sum: &mut Tokens, t: &Tokens) {
    sum.prompt += t.prompt;
    sum.completion += t.completion;
    sum.total += t.total;
    sum.estimated |= t.estimated;
}

impl Host {
    /// Decides an approval. When it was the run's last pending one, the run
    /// continues and its new result is returned: approved actions execute
    /// (with the same idempotency keys a direct run would use) and the run
    /// completes; a rejection fails it and releases what its gates reserved.
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        comment: Option<String>,
    ) -> Result<(Approval, Option<RunResult>), ApprovalError> {
        let decided = self
            .decide_and_continue(id, verdict, approver, comment)
            .await;
        self.audit_decision(id, verdict, approver, &decided);
        decided
    }

    async fn decide_and_continue(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        comment: Option<String>,
    ) -> Result<(Approval, Option<RunResult>), ApprovalError> {
        match self
            .approvals
            .decide(id, verdict, approver, comment)
            .await?
        {
            Decided::Waiting(a) => Ok((a, None)),
            Decided::Ready(a, held, all) => {
                let record = self
                    .state
                    .run(&a.run_id)
                    .await
                    .map_err(|e| ApprovalError::Store(e.to_string()))?;
                let Some(mut record) = record else {
                    return Err(ApprovalError::Store(format!(
                        "run `{}` is not in the state store",
                        a.run_id
                    )));
                };
                // An MCP tool call's client waits for the decision itself.
                if record.result.get("kind").and_then(Value::as_str) == Some(super::mcp::CALL_KIND)
                {
                    return Ok((a, None));
                }
                // Exactly one node continues a held run: the one that moves
                // it back to `running` under its lease.
                let Some(mut guard) = self.leases.active.enter(&a.run_id) else {
                    return Ok((a, None));
                };
                let taken = self
                    .state
                    .take_held(
                        &a.run_id,
                        &self.leases.node,
                        reins_state::now_ms(),
                        self.lease_until(),
                    )
                    .await
                    .map_err(|e| ApprovalError::Store(e.to_string()))?;
                if !taken {
                    tracing::info!(run_id = %a.run_id, "another node is continuing the held run");
                    return Ok((a, None));
                }
                self.keep_leased(&mut guard);
                let mut run = match held {
                    Some(run) => *run,
                    // Reservations outlive a process only in shared counters;
                    // releasing one into fresh memory would credit the budget.
                    None => restore(
                        &record,
                        self.boot()
                            .state
                            .counters_shared()
                            .then(|| self.plugins.runtime().counters()),
                    ),
                };
                // An agent turn's actions keep the keys a direct turn would use.
                let agent_step = StoredRequest::of(&record).agent_step;
                if let Some(step) = agent_step {
                    run.run_id = step_run_id(&a.run_id, step);
                }
                let pipeline = self.pipeline(&record.pipeline);
                let tell_model = agent_step.is_some()
                    && pipeline.as_ref().is_some_and(|p| {
                        p.config.on_rejection == crate::config::OnRejection::Continue
                    });
                let mut run = self.continue_run(run, &all, tell_model).await;
                run.run_id = a.run_id.clone();
                if let (Some(step), RunStatus::Completed, Some(p)) =
                    (agent_step, run.status, pipeline.as_deref())
                {
                    // The approved turn is done: the agent goes on.
                    run.approvals = all.iter().map(|a| a.id.clone()).collect();
                    let result = self.continue_agent(p, record, step, run, guard).await;
                    return Ok((a, Some(result)));
                }
                run.approvals = all.iter().map(|a| a.id.clone()).collect();
                // Keep what the held run recorded (trace, attempts) and
                // overwrite what the continuation decided.
                let new = serde_json::to_value(&run).unwrap_or(Value::Null);
                if let (Some(old), Some(new)) = (record.result.as_object_mut(), new.as_object()) {
                    for k in ["status", "error", "executions", "actions", "approvals"] {
                        match new.get(k) {
                            Some(v) => old.insert(k.to_owned(), v.clone()),
                            None => old.remove(k),
                        };
                    }
                    old.remove("pending");
                } else {
                    record.result = new;
                }
                record.status = run.status;
                record.updated_ms = reins_state::now_ms();
                record.owner = Some(self.leases.node.clone());
                record.lease_until_ms = 0;
                if let Err(e) = self.state.put_run(&record).await {
                    tracing::warn!(run_id = %run.run_id, "state store: cannot record the continued run: {e}");
                }
                drop(guard);
                Ok((a, Some(run)))
            }
        }
    }

    /// Carries out a held run's actions once every approval is decided. A
    /// rejection fails the run and releases what its gates reserved — unless
    /// `tell_model` (an agent turn): then only the rejected actions are
    /// dropped (their reservations released), each reported as a
    /// `rejected` execution, and the rest run.
    async fn continue_run(
        &self,
        mut run: RunResult,
        approvals: &[Approval],
        tell_model: bool,
    ) -> RunResult {
        run.pending.clear();
        let is_rejected = |a: &&Approval| a.status == ApprovalStatus::Rejected;
        if let Some(rejected) = approvals.iter().find(is_rejected).filter(|_| !tell_model) {
            for (_, r) in &mut run.reservations {
                r.release();
            }
            run.status = RunStatus::Failed;
            run.error = Some(RunError::ApprovalRejected {
                approval: rejected.id.clone(),
                tool: rejected.action.tool.clone(),
                approver: rejected.decided_by.clone().unwrap_or_default(),
                comment: rejected.comment.clone().unwrap_or_default(),
            });
            return run;
        }
        let live = self.live.load_full();
        let Some(p) = live.pipelines.get(&run.pipeline) else {
            run.status = RunStatus::Failed;
            run.error = Some(RunError::UnknownPipeline(run.pipeline.clone()));
            return run;
        };
        let rejected: Vec<&Approval> = approvals.iter().filter(is_rejected).collect();
        for a in &rejected {
            for (_, r) in run.reservations.iter_mut().filter(|(i, _)| *i == a.index) {
                r.release();
            }
        }
        let mut actions: Vec<(usize, reins_runtime::Action)> = run
            .action_indices
            .iter()
            .copied()
            .zip(run.actions.iter().cloned())
            .collect();
        actions.extend(
            approvals
                .iter()
                .filter(|a| a.status != ApprovalStatus::Rejected)
                .map(|a| (a.index, a.action.clone())),
        );
        actions.sort_by_key(|(i, _)| *i);
        let step = run.attempts.last().map_or(1, |a| a.attempt);
        let trace = self
            .telemetry
            .resume(run.trace_id.as_deref(), run.span_id.as_deref());
        for a in approvals.iter().filter(|_| trace.recording()) {
            let decided = a
                .decided_at_ms
                .unwrap_or_else(|| reins_state::now_ms().max(0) as u64);
            trace.record(crate::telemetry::approval_wait(
                Some(&a.id),
                a.status.as_str(),
                &a.gate,
                &a.action.tool,
                trace.instant_of(a.created_at_ms),
                trace.instant_of(decided),
            ));
        }
        let mut executions = crate::pipeline::execute::execute_all(
            &*self.state,
            p,
            &run.run_id,
            step,
            &actions,
            &mut run.reservations,
            run.dry_run,
            // A decision's actions are not tied to the approver's connection.
            &crate::pipeline::CancellationToken::new(),
            &trace,
        )
        .await;
        executions.extend(
            rejected
                .iter()
                .map(|a| crate::pipeline::execute::rejected(&run.run_id, step, a)),
        );
        executions.sort_by_key(|e| e.index);
        run.actions = actions.iter().map(|(_, a)| a.clone()).collect();
        run.action_indices = actions.iter().map(|(i, _)| *i).collect();
        let failed = executions
            .iter()
            .find(|e| e.status == crate::pipeline::ExecStatus::Failed);
        run.error = failed.map(|e| RunError::ActionFailed {
            tool: e.tool.clone(),
            message: e.error.clone().unwrap_or_default(),
        });
        run.status = if run.error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        run.executions = executions;
        run
    }
}

/// A held run rebuilt from its stored record, for continuing it in a process
/// that did not start it: what the continuation needs (actions, their
/// indices, the attempt, dry run, and the gates' reservations, released
/// through `counters` — which reach the first process's only when shared).
fn restore(
    record: &RunRecord,
    counters: Option<&Arc<dyn reins_runtime::CounterStore>>,
) -> RunResult {
    let stored = StoredRequest::of(record);
    let mut run: RunResult = serde_json::from_value(record.result.clone()).unwrap_or_else(|e| {
        tracing::warn!(run_id = %record.run_id, "stored result does not read: {e}");
        RunResult::new(record.run_id.clone(), record.pipeline.clone())
    });
    run.action_indices = stored
        .action_indices
        .unwrap_or_else(|| (0..run.actions.len()).collect());
    run.reservations = match counters {
        Some(counters) if !stored.reservations.is_null() => {
            reins_runtime::Reservation::list_from_json(&stored.reservations, counters)
        }
        _ => Vec::new(),
    };
    run.status = RunStatus::AwaitingApproval;
    run.error = None;
    run
}
