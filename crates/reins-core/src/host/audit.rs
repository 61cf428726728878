//! The audit log's writer: what the host records (runs, gate decisions,
//! approvals, plugin reloads) goes through one task that appends it to the
//! store in batches, off the request path. A run does not wait for its rows
//! and a store that fails does not fail the run; [`Host::audit_flush`] waits
//! for what is queued (before reading the log, or before a process exits).

use super::Host;
use crate::approvals::{Approval, ApprovalError, Verdict};
use crate::pipeline::{Request, RunResult};
use reins_state::{AuditEntry, StateStore};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Rows written in one transaction at most.
const BATCH: usize = 256;

enum Msg {
    Entry(AuditEntry),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the writer task; `None` when `[state] audit = false`.
#[derive(Clone)]
pub(super) struct AuditWriter {
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl AuditWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn start(store: Arc<dyn StateStore>, enabled: bool) -> AuditWriter {
        if !enabled {
            return AuditWriter { tx: None };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_rows(store, rx));
        AuditWriter { tx: Some(tx) }
    }

    /// Queues `entry`; never blocks, never fails the caller.
    pub fn send(&self, entry: AuditEntry) {
        if let Some(tx) = &self.tx
            && tx.send(Msg::Entry(entry)).is_err()
        {
            tracing::warn!("audit log: the writer has stopped; an entry is lost");
        }
    }

    async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The writer task: takes what is queued (up to [`BATCH`]) and appends it in
/// one transaction, so a burst of runs costs a few commits, not one each.
async fn write_rows(store: Arc<dyn StateStore>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(e) => batch.push(e),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            if let Err(e) = store.audit_append(std::mem::take(&mut batch)).await {
                tracing::warn!(rows = n, "audit log: cannot append: {e}");
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Who made `request`: the caller its credential established (the
/// effective caller: a `trust_metadata` pipeline's tenant from metadata).
pub(super) fn caller(request: &Request) -> (String, Option<String>) {
    (
        request.caller.subject.clone(),
        request.caller.tenant.clone(),
    )
}

/// `entry` by `who`, about run `run_id`.
fn about_run(entry: AuditEntry, who: &(String, Option<String>), run_id: &str) -> AuditEntry {
    entry
        .by(who.0.clone(), who.1.clone())
        .request(Some(run_id.to_owned()))
}

/// The `run.start` row (`resumed`: a run taken over or resumed after a crash).
pub(super) fn run_start(
    run_id: &str,
    pipeline: &str,
    resumed: bool,
    who: &(String, Option<String>),
) -> AuditEntry {
    let entry = AuditEntry::new("run.start", run_id, "running")
        .detail(json!({"pipeline": pipeline, "resumed": resumed}));
    about_run(entry, who, run_id)
}

/// The rows of a run that ended (or is held): `run.end`, then one per gate
/// decision, in the order the gates made them.
pub(super) fn run_end(result: &RunResult, who: &(String, Option<String>)) -> Vec<AuditEntry> {
    let by = |e: AuditEntry| about_run(e, who, &result.run_id);
    let mut rows = Vec::with_capacity(1 + result.decisions.len());
    rows.push(by(AuditEntry::new(
        "run.end",
        &result.run_id,
        result.status.as_str(),
    )
    .detail(json!({
        "pipeline": result.pipeline,
        "error": result.error.as_ref().map(|e| e.kind()),
        "tokens": result.tokens.total,
        "duration_us": result.duration_us,
    }))));
    for d in &result.decisions {
        let kind = d.decision.kind();
        let reason = match &d.decision {
            reins_runtime::Decision::Deny(r) | reins_runtime::Decision::Escalate(r) => {
                Some(r.as_str())
            }
            _ => None,
        };
        rows.push(by(AuditEntry::new(
            format!("gate.{kind}"),
            &result.run_id,
            kind,
        )
        .detail(json!({
            "gate": d.gate,
            "tool": d.tool,
            "attempt": d.attempt,
            "action": d.action,
            "reason": reason,
        }))));
    }
    rows
}

impl Host {
    /// Appends `entry` to the audit log, off the request path. A store
    /// failure is logged, never returned: auditing must not fail the caller.
    pub async fn audit(&self, entry: AuditEntry) {
        self.audit.send(entry);
    }

    /// Waits until every entry queued so far is in the store (or failed).
    pub async fn audit_flush(&self) {
        self.audit.flush().await;
    }

    pub(super) fn audit_rows(&self, rows: Vec<AuditEntry>) {
        for row in rows {
            self.audit.send(row);
        }
    }

    /// The `approval.decide` row of a decision (refused ones included).
    pub(super) fn audit_decision(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        decided: &Result<(Approval, Option<RunResult>), ApprovalError>,
    ) {
        let verdict = match verdict {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        };
        let entry = match decided {
            Ok((a, _)) => AuditEntry::new("approval.decide", id, verdict)
                .detail(json!({"run_id": a.run_id, "pipeline": a.pipeline, "tool": a.action.tool}))
                .request(Some(a.run_id.clone())),
            Err(e) => AuditEntry::new("approval.decide", id, "refused")
                .detail(json!({"verdict": verdict, "error": e.to_string()})),
        };
        self.audit.send(entry.by(approver, None));
        // A decision that continued the run ended it (or held it again).
        if let Ok((_, Some(result))) = decided {
            self.audit_rows(run_end(result, &(approver.to_owned(), None)));
        }
    }
}

/// A reload of the configuration (`ok` or `refused`), as a `config.reload` row.
pub(super) fn config_reload(source: &str, outcome: &str, detail: serde_json::Value) -> AuditEntry {
    AuditEntry::new("config.reload", source.to_owned(), outcome.to_owned())
        .by("system", None)
        .detail(detail)
}

/// What the plugin host reports after each reload, as a `plugins.reload` row.
pub(super) fn plugins_reload(report: &reins_runtime::ReloadReport) -> AuditEntry {
    let outcome = if report.error.is_some() {
        "error"
    } else {
        "ok"
    };
    AuditEntry::new("plugins.reload", report.dir.display().to_string(), outcome)
        .by("system", None)
        .detail(json!({
            "changed": report.changed,
            "removed": report.removed,
            "refused": report.refused,
            "generation": report.generation,
            "error": report.error,
        }))
}
