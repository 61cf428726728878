//! Run ownership across nodes.
//!
//! A running run is leased to one node (`runs.owner`, `runs.lease_until`).
//! The node renews the lease while it works on the run (every third of
//! `[state] lease_ms`), and every write of the run is fenced on it: a node
//! that stalled past its lease and lost the run to another cannot overwrite
//! what the new owner records ([`reins_state::StateError::LeaseLost`]). A
//! node looks for runs whose lease has expired (its own, at start) every
//! half lease and resumes them: that is both crash recovery and takeover.
//!
//! Within one process, [`Active`] keeps a run from being run twice at once.

use super::Host;
use reins_state::now_ms;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How this node holds runs.
pub(super) struct Leases {
    /// This node's name in `runs.owner`.
    pub(super) node: String,
    /// How long a lease lasts without renewal.
    pub(super) lease_ms: i64,
    pub(super) active: Active,
}

/// The runs this process is working on.
#[derive(Default, Clone)]
pub(super) struct Active(Arc<Mutex<HashSet<String>>>);

impl Active {
    /// Marks `run_id` as worked on here; `None` if it already is.
    pub(super) fn enter(&self, run_id: &str) -> Option<ActiveGuard> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(run_id.to_owned()).then(|| ActiveGuard {
            set: self.clone(),
            run_id: run_id.to_owned(),
            heartbeat: None,
            lost: Arc::default(),
        })
    }

    pub(super) fn contains(&self, run_id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(run_id)
    }
}

/// Held while a run is worked on; dropping it stops the lease renewal and
/// frees the run for this process.
pub(super) struct ActiveGuard {
    set: Active,
    run_id: String,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<Lost>,
}

/// Raised when a renewal finds another node owns the run.
#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl ActiveGuard {
    /// Resolves when this node has lost the run's lease (never, if it keeps it).
    pub(super) async fn lost(&self) {
        let notified = self.lost.notify.notified();
        if self.lost.flag.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.run_id);
    }
}

impl Host {
    /// The lease a write made now extends to.
    pub(super) fn lease_until(&self) -> i64 {
        now_ms().saturating_add(self.leases.lease_ms)
    }

    /// Keeps renewing `guard`'s run lease in the background until the guard drops.
    pub(super) fn keep_leased(&self, guard: &mut ActiveGuard) {
        let store = self.state.clone();
        let node = self.leases.node.clone();
        let run_id = guard.run_id.clone();
        let lease_ms = self.leases.lease_ms;
        let every = Duration::from_millis((lease_ms / 3).max(10) as u64);
        let lost = guard.lost.clone();
        guard.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now = now_ms();
                match store
                    .claim_run(&run_id, &node, now, now.saturating_add(lease_ms))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        let row = store.run(&run_id).await;
                        // No row yet: the store refused the run's start and
                        // its first checkpoint will write it (with this
                        // node's lease); renewing goes on until then, or
                        // another node could claim it meanwhile.
                        if matches!(row, Ok(None)) {
                            continue;
                        }
                        // Not running any more (it ended meanwhile) or taken
                        // over; either way nothing of this node's may go on.
                        if row.is_ok_and(|r| {
                            r.is_some_and(|r| r.status == reins_state::RunStatus::Running)
                        }) {
                            metrics::counter!(reins_runtime::metric_names::LEASES_LOST_TOTAL)
                                .increment(1);
                            tracing::warn!(
                                run_id,
                                node,
                                "lease lost: another node owns the run now"
                            );
                            lost.flag.store(true, Ordering::Release);
                            lost.notify.notify_waiters();
                        }
                        return;
                    }
                    Err(e) => tracing::warn!(run_id, "state store: cannot renew the lease: {e}"),
                }
            }
        }));
    }

    /// This node's name in leases.
    pub fn node_id(&self) -> &str {
        &self.leases.node
    }

    /// Takes every run this node may resume (unleased, its own from an
    /// earlier process, or whose owner's lease expired) and resumes each in
    /// its own task. Returns the run ids taken.
    pub async fn take_over(self: &Arc<Self>) -> Result<Vec<String>, reins_state::StateError> {
        let now = now_ms();
        let runs = self
            .state
            .claimable_runs(&self.leases.node, now, 1_000)
            .await?;
        let mut taken = Vec::new();
        for r in runs {
            if !self.live.load().pipelines.contains_key(&r.pipeline) {
                continue;
            }
            let Some(guard) = self.leases.active.enter(&r.run_id) else {
                continue;
            };
            if !self
                .state
                .claim_run(&r.run_id, &self.leases.node, now, self.lease_until())
                .await?
            {
                continue; // another node was quicker
            }
            tracing::info!(run_id = %r.run_id, previous_owner = ?r.owner, "taking over an interrupted run");
            let from = if r.owner.as_deref() == Some(self.leases.node.as_str()) {
                "self"
            } else {
                "other"
            };
            metrics::counter!(reins_runtime::metric_names::RUNS_TAKEN_OVER_TOTAL, "pipeline" => r.pipeline.clone(), "from" => from).increment(1);
            taken.push(r.run_id.clone());
            let host = self.clone();
            tokio::spawn(async move {
                let mut record = r.clone();
                match host.resume_claimed(r, guard).await {
                    Ok(r) => {
                        tracing::info!(run_id = %r.run_id, status = r.status.as_str(), "resumed run ended")
                    }
                    Err(e @ super::ResumeError::NoRequest(_)) => {
                        // It can never be resumed: fail it, or every node
                        // would take it again every half lease.
                        tracing::error!(run_id = %record.run_id, "{e}; marking the run failed");
                        record.status = reins_state::RunStatus::Failed;
                        let caller = record
                            .result
                            .get("caller")
                            .cloned()
                            .unwrap_or(serde_json::Value::Null);
                        record.result = serde_json::json!({"run_id": record.run_id, "pipeline": record.pipeline,
                            "status": "failed", "error": {"kind": "not_resumable", "message": e.to_string()}, "caller": caller});
                        record.owner = Some(host.leases.node.clone());
                        record.lease_until_ms = 0;
                        record.updated_ms = now_ms();
                        if let Err(e) = host.state.put_run(&record).await {
                            tracing::warn!(run_id = %record.run_id, "state store: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("resuming failed: {e}"),
                }
            });
        }
        Ok(taken)
    }

    /// Takes over interrupted runs now and every half lease, and compacts
    /// old runs every `[state] compact_every_s`, until the host is dropped
    /// everywhere else (`reins serve` runs this).
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis((self.leases.lease_ms / 2).max(10) as u64);
        let compact_every = self.boot().state.compact_every_s.max(1) * 1_000;
        let resume = self.boot().state.resume_on_start;
        tokio::spawn(async move {
            let mut last_compact = 0i64;
            loop {
                let Some(host) = weak.upgrade() else { return };
                if resume {
                    match host.take_over().await {
                        Ok(taken) if !taken.is_empty() => {
                            eprintln!(
                                "reins: node {} took over {} interrupted run(s)",
                                host.leases.node,
                                taken.len()
                            )
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("looking for interrupted runs: {e}"),
                    }
                }
                let now = now_ms();
                if now - last_compact >= compact_every as i64 {
                    last_compact = now;
                    host.compact_now().await;
                }
                drop(host);
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Compacts finished runs past `[state] keep_steps_s` and deletes those
    /// past `retention_days` (0 turns either off). Returns the runs compacted
    /// and deleted.
    pub async fn compact_now(&self) -> (u64, u64) {
        let state = &self.boot().state;
        let now = now_ms();
        let mut done = (0, 0);
        if state.keep_steps_s > 0 {
            let before =
                now - i64::try_from(state.keep_steps_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            match self.state.compact(before).await {
                Ok(n) => done.0 = n,
                Err(e) => tracing::warn!("state store: compaction failed: {e}"),
            }
        }
        if state.retention_days > 0 {
            match self
                .state
                .expire(now - i64::from(state.retention_days) * 86_400_000)
                .await
            {
                Ok(n) => done.1 = n,
                Err(e) => tracing::warn!("state store: deleting runs past retention failed: {e}"),
            }
        }
        if done != (0, 0) {
            tracing::info!(compacted = done.0, deleted = done.1, "state housekeeping");
        }
        done
    }
}
