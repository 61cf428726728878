//! Escalated actions waiting for a human, and the runs they hold.
//!
//! A run that a gate escalates stops as `awaiting_approval`; each escalated
//! action becomes an [`Approval`]. When the last approval of a run is decided
//! the run continues: all approved → its actions execute and it completes;
//! any rejected → it fails and every budget its gates reserved is released.
//! A decided approval cannot be decided again.

use crate::pipeline::{PendingApproval, RunResult};
use reins_runtime::{Action, now_ms};
use reins_state::{ApprovalQuery, ApprovalRecord, RunRecord, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where an approval stands (the stored status).
pub use reins_state::ApprovalStatus;

/// What a human decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
}

/// One escalated action and its decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[error("approvals store: {0}")]
    Store(String),
}

/// Filters for [`ApprovalStore::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

/// Approvals, kept in the state store (so they survive a restart and any
/// host on the same database can decide them), and the runs they hold.
pub struct ApprovalStore {
    store: Arc<dyn StateStore>,
    /// Runs held by this process, with what their gates reserved. A run
    /// held by a process that is gone is restored from its stored record.
    held: Mutex<HashMap<String, RunResult>>,
}

/// What deciding an approval led to.
pub enum Decided {
    /// Other approvals of the run are still pending.
    Waiting(Approval),
    /// The run can continue: every approval of it is decided. The run is
    /// `None` when it has to be restored from the store.
    Ready(Approval, Option<Box<RunResult>>, Vec<Approval>),
}

fn record(a: &Approval) -> Result<ApprovalRecord, ApprovalError> {
    Ok(ApprovalRecord {
        id: a.id.clone(),
        run_id: a.run_id.clone(),
        pipeline: a.pipeline.clone(),
        status: a.status,
        created_ms: i64::try_from(a.created_at_ms).unwrap_or(i64::MAX),
        data: serde_json::to_value(a).map_err(|e| ApprovalError::Store(e.to_string()))?,
    })
}

fn approval(r: ApprovalRecord) -> Result<Approval, ApprovalError> {
    serde_json::from_value(r.data)
        .map_err(|e| ApprovalError::Store(format!("approval {}: {e}", r.id)))
}

impl ApprovalStore {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        ApprovalStore {
            store,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunResult>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the approvals of a run that stopped as `awaiting_approval`,
    /// together with the run (`run`: its stored record).
    pub async fn hold(
        &self,
        result: &RunResult,
        run: &RunRecord,
        approvers: &[String],
    ) -> Result<Vec<Approval>, ApprovalError> {
        let created = self.record_pending(result, run, approvers).await?;
        self.held().insert(result.run_id.clone(), result.clone());
        Ok(created)
    }

    /// Records the approvals of an MCP tool call whose client waits for
    /// the decision itself: nothing is held to continue here.
    pub async fn hold_call(
        &self,
        result: &RunResult,
        run: &RunRecord,
        approvers: &[String],
    ) -> Result<Vec<Approval>, ApprovalError> {
        self.record_pending(result, run, approvers).await
    }

    async fn record_pending(
        &self,
        result: &RunResult,
        run: &RunRecord,
        approvers: &[String],
    ) -> Result<Vec<Approval>, ApprovalError> {
        let now = now_ms();
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
        let records = created.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let mut run = run.clone();
        if let Some(obj) = run.result.as_object_mut() {
            obj.insert(
                "approvals".into(),
                serde_json::json!(created.iter().map(|a| &a.id).collect::<Vec<_>>()),
            );
        }
        self.store.hold(&run, &records).await.map_err(store_err)?;
        Ok(created)
    }

    /// Rejects a pending approval nobody decided in time, in the name of
    /// `by`; false if someone decided it meanwhile.
    pub async fn expire(&self, id: &str, by: &str, comment: &str) -> Result<bool, ApprovalError> {
        let Some(mut approval) = self.get(id).await? else {
            return Ok(false);
        };
        if approval.status != ApprovalStatus::Pending {
            return Ok(false);
        }
        approval.status = ApprovalStatus::Rejected;
        approval.decided_by = Some(by.to_owned());
        approval.decided_at_ms = Some(now_ms());
        approval.comment = Some(comment.to_owned());
        self.store
            .decide(&record(&approval)?)
            .await
            .map_err(store_err)
    }

    pub async fn list(&self, filter: &ApprovalFilter) -> Result<Vec<Approval>, ApprovalError> {
        let q = ApprovalQuery {
            status: filter.status,
            pipeline: filter.pipeline.clone(),
            run_id: filter.run_id.clone(),
        };
        self.store
            .approvals(&q)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(approval)
            .collect()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        self.store
            .approval(id)
            .await
            .map_err(store_err)?
            .map(approval)
            .transpose()
    }

    /// Records a decision. Atomic across hosts: of two concurrent decisions,
    /// one wins and the other gets [`ApprovalError::AlreadyDecided`].
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        comment: Option<String>,
    ) -> Result<Decided, ApprovalError> {
        let mut approval = self
            .get(id)
            .await?
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
        if !self
            .store
            .decide(&record(&approval)?)
            .await
            .map_err(store_err)?
        {
            let now = self
                .get(id)
                .await?
                .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                status: now.status,
                by: now.decided_by.unwrap_or_default(),
            });
        }
        let siblings = self
            .list(&ApprovalFilter {
                run_id: Some(approval.run_id.clone()),
                ..ApprovalFilter::default()
            })
            .await?;
        if siblings.iter().any(|a| a.status == ApprovalStatus::Pending) {
            return Ok(Decided::Waiting(approval));
        }
        // Of two hosts deciding a run's last two approvals at once, both may
        // see none pending; the run's stored status decides who continues it.
        let run = self.held().remove(&approval.run_id).map(Box::new);
        Ok(Decided::Ready(approval, run, siblings))
    }
}

/// Pending approvals by pipeline, counted in `store`: what every node
/// sharing the store sees, before and after a restart.
pub async fn pending_by_pipeline(
    store: &dyn StateStore,
) -> Result<std::collections::BTreeMap<String, u64>, ApprovalError> {
    let q = ApprovalQuery {
        status: Some(ApprovalStatus::Pending),
        ..ApprovalQuery::default()
    };
    let mut counts = std::collections::BTreeMap::new();
    for r in store.approvals(&q).await.map_err(store_err)? {
        *counts.entry(r.pipeline).or_insert(0) += 1;
    }
    Ok(counts)
}

fn store_err(e: reins_state::StateError) -> ApprovalError {
    ApprovalError::Store(e.to_string())
}
