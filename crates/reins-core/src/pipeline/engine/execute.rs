//! Stage 7, execution: the approved actions of a completed run go to their
//! executors, each recorded in the run's action log around its sending.

use super::*;

impl Run<'_> {
    /// Carries out the approved actions of a completed run (or plans them,
    /// in a dry run). A failed action fails the run.
    pub(super) async fn execute_actions(
        &mut self,
        step: u32,
        approved: &[(usize, Action)],
    ) -> Result<(), RunError> {
        if approved.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let executions = crate::pipeline::execute::execute_all(
            &*self.rc.actions,
            self.p,
            &self.ctx.run_id,
            step,
            approved,
            &mut self.result.reservations,
            self.result.dry_run,
            &self.cancel,
            &self.rc.trace,
        )
        .await;
        let cancelled = executions.len() < approved.len();
        for (_, a) in approved.iter().skip(executions.len()) {
            let now = Instant::now();
            self.trace_only(
                "execute",
                &a.tool,
                "not sent: the client disconnected".to_owned(),
                now,
                now,
            );
        }
        for e in &executions {
            let what = match e.status {
                crate::pipeline::ExecStatus::Done => format!("done ({} tries)", e.tries),
                other => format!("{other:?}").to_lowercase(),
            };
            self.trace_only("execute", &e.tool, what, start, Instant::now());
        }
        let failed = executions
            .iter()
            .find(|e| e.status == crate::pipeline::ExecStatus::Failed)
            .map(|e| RunError::ActionFailed {
                tool: e.tool.clone(),
                message: e.error.clone().unwrap_or_default(),
            });
        self.result.executions = executions;
        match failed {
            Some(e) => Err(e),
            None if cancelled => Err(RunError::client_gone()),
            None => Ok(()),
        }
    }
}
