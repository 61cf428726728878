//! Escalated actions waiting for a human, and the runs they hold.
//!
//! A run that a gate escalates stops as `awaiting_approval`; each escalated
//! action becomes an [`Approval`]. When the last approval of a run is decided
//! the run continues: all approved → its actions execute and it completes;
//! any rejected → it fails and every budget its gates reserved is released.
//! A decided approval cannot be decided again.

use crate::pipeline::{PendingApproval, RunResult};
use crate::runtime::Action;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
}

/// What a human decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
}

/// One escalated action and its decision.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: String,
    pub run_id: String,
    pub pipeline: String,
    /// Index of the action among the run's proposed actions.
    pub index: usize,
    pub action: Action,
    pub gate: String,
    pub reason: String,
    /// Token names that may decide (empty: any token with the `approve` scope).
    pub approvers: Vec<String>,
    pub status: ApprovalStatus,
    pub created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval `{0}`")]
    NotFound(String),
    #[error("approval `{id}` was already {status:?} by {by}")]
    AlreadyDecided {
        id: String,
        status: ApprovalStatus,
        by: String,
    },
    #[error("`{approver}` may not decide approvals of pipeline `{pipeline}`")]
    NotAllowed { approver: String, pipeline: String },
}

/// Filters for [`ApprovalStore::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

/// In-memory approvals and the runs they hold.
#[derive(Default)]
pub struct ApprovalStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    approvals: BTreeMap<String, Approval>,
    /// Runs waiting on approvals, by run id.
    held: HashMap<String, RunResult>,
}

/// What deciding an approval led to.
pub enum Decided {
    /// Other approvals of the run are still pending.
    Waiting(Approval),
    /// The run can continue: every approval of it is decided.
    Ready(Approval, Box<RunResult>, Vec<Approval>),
}

impl ApprovalStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the approvals of a run that stopped as `awaiting_approval`.
    pub fn hold(&self, result: &RunResult, approvers: &[String]) -> Vec<Approval> {
        let now = now_ms();
        let mut inner = self.lock();
        let created: Vec<Approval> = result
            .pending
            .iter()
            .map(|p: &PendingApproval| Approval {
                id: format!("apr-{}", uuid::Uuid::new_v4().simple()),
                run_id: result.run_id.clone(),
                pipeline: result.pipeline.clone(),
                index: p.index,
                action: p.action.clone(),
                gate: p.gate.clone(),
                reason: p.reason.clone(),
                approvers: approvers.to_vec(),
                status: ApprovalStatus::Pending,
                created_at_ms: now,
                decided_by: None,
                decided_at_ms: None,
                comment: None,
            })
            .collect();
        for a in &created {
            inner.approvals.insert(a.id.clone(), a.clone());
        }
        inner.held.insert(result.run_id.clone(), result.clone());
        created
    }

    pub fn list(&self, filter: &ApprovalFilter) -> Vec<Approval> {
        let mut out: Vec<Approval> = self
            .lock()
            .approvals
            .values()
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .filter(|a| filter.pipeline.as_ref().is_none_or(|p| &a.pipeline == p))
            .filter(|a| filter.run_id.as_ref().is_none_or(|r| &a.run_id == r))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub fn get(&self, id: &str) -> Option<Approval> {
        self.lock().approvals.get(id).cloned()
    }

    /// Records a decision. Atomic: of two concurrent decisions, one wins and
    /// the other gets [`ApprovalError::AlreadyDecided`].
    pub fn decide(&self, id: &str, verdict: Verdict, approver: &str, comment: Option<String>) -> Result<Decided, ApprovalError> {
        let mut inner = self.lock();
        let approval = inner
            .approvals
            .get_mut(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        if approval.status != ApprovalStatus::Pending {
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                status: approval.status,
                by: approval.decided_by.clone().unwrap_or_default(),
            });
        }
        if !approval.approvers.is_empty() && !approval.approvers.iter().any(|a| a == approver) {
            return Err(ApprovalError::NotAllowed {
                approver: approver.to_owned(),
                pipeline: approval.pipeline.clone(),
            });
        }
        approval.status = match verdict {
            Verdict::Approve => ApprovalStatus::Approved,
            Verdict::Reject => ApprovalStatus::Rejected,
        };
        approval.decided_by = Some(approver.to_owned());
        approval.decided_at_ms = Some(now_ms());
        approval.comment = comment;
        let decided = approval.clone();
        let siblings: Vec<Approval> = inner
            .approvals
            .values()
            .filter(|a| a.run_id == decided.run_id)
            .cloned()
            .collect();
        if siblings.iter().any(|a| a.status == ApprovalStatus::Pending) {
            return Ok(Decided::Waiting(decided));
        }
        match inner.held.remove(&decided.run_id) {
            Some(run) => Ok(Decided::Ready(decided, Box::new(run), siblings)),
            None => Ok(Decided::Waiting(decided)),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
