//! Per-step checkpoints of a single-mode run.
//!
//! A run's [`Journal`] travels in its [`RunContext`](super::RunContext);
//! the engine calls [`Journal::record`] after each step (the normalized
//! input, then every model attempt with its violations, tokens and gate
//! decisions), and each call is one transaction, fenced on the run's lease
//! (on PostgreSQL it also renews the lease; on SQLite the owner writes the
//! step alone and the lease is renewed by its own timer, `keep_leased`) —
//! the next step starts only after it is committed.
//!
//! On resume, the recorded attempts are replayed ([`Journal::replayed`]) instead of
//! calling the model again: validation and gates run again on the same
//! answers, and only model steps after the last checkpoint are redone.

use reins_state::{RunRecord, RunStatus, RunStore, StateError, StepKind, StepRecord, now_ms};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The checkpoint log of one run.
pub struct Journal {
    store: Arc<dyn RunStore>,
    record: tokio::sync::Mutex<RunRecord>,
    next: AtomicU32,
    lease_ms: i64,
    /// Recorded attempts from before a crash, by attempt number.
    replay: BTreeMap<u32, Value>,
    /// The run id the steps are written under: the run's own, or an agent
    /// turn's (`RUN.STEP`), whose attempts only are journaled.
    steps_id: String,
    attempts_only: bool,
}

impl Journal {
    /// A journal writing `record`'s steps to `store` (the stored request is
    /// left as it is), replaying `previous` steps' attempts.
    pub fn new(
        store: Arc<dyn RunStore>,
        mut record: RunRecord,
        lease_ms: i64,
        previous: &[StepRecord],
    ) -> Journal {
        record.request = Value::Null;
        let replay = previous
            .iter()
            .filter(|s| s.kind == StepKind::Attempt)
            .filter_map(|s| {
                let n = s.data["attempt"]["attempt"].as_u64()?;
                Some((u32::try_from(n).ok()?, s.data["attempt"].clone()))
            })
            .collect();
        Journal {
            store,
            steps_id: record.run_id.clone(),
            record: tokio::sync::Mutex::new(record),
            next: AtomicU32::new(1),
            lease_ms,
            replay,
            attempts_only: false,
        }
    }

    /// The journal of agent turn `turn_id` (`RUN.STEP`) of the run `record`:
    /// its model attempts, so that a turn redone after a crash replays the
    /// model's answer (and proposes the same actions) instead of asking again.
    pub fn for_turn(
        store: Arc<dyn RunStore>,
        record: RunRecord,
        lease_ms: i64,
        turn_id: &str,
        previous: &[StepRecord],
    ) -> Journal {
        let mut journal = Journal::new(store, record, lease_ms, previous);
        journal.steps_id = turn_id.to_owned();
        journal.attempts_only = true;
        journal
    }

    async fn write(&self, kind: StepKind, data: Value) -> Result<(), StateError> {
        let step = self.next.fetch_add(1, Ordering::Relaxed);
        let mut record = self.record.lock().await;
        let now = now_ms();
        record.updated_ms = now;
        record.lease_until_ms = now.saturating_add(self.lease_ms);
        // The owner stays on the record while it runs (see `identity`).
        let caller = record.result.get("caller").cloned().unwrap_or(Value::Null);
        record.result = serde_json::json!({
            "run_id": record.run_id, "pipeline": record.pipeline, "status": RunStatus::Running, "step": step, "last": kind,
            "caller": caller,
        });
        let step = StepRecord {
            run_id: self.steps_id.clone(),
            step,
            kind,
            data,
            created_ms: now,
        };
        let written = self.store.checkpoint(&record, &step).await;
        metrics::counter!(reins_runtime::metric_names::CHECKPOINTS_TOTAL, "kind" => step.kind.as_str(), "ok" => if written.is_ok() { "true" } else { "false" })
            .increment(1);
        written
    }

    /// Whether this journal keeps steps of `kind` (build a step's data
    /// only then: an agent turn journals its attempts, not its input).
    pub fn wants(&self, kind: StepKind) -> bool {
        !self.attempts_only || kind == StepKind::Attempt
    }

    /// Records a step. Only a lost lease is an error: another node owns the
    /// run now; any other failure is logged and the run goes on.
    pub async fn record(&self, kind: StepKind, data: Value) -> Result<(), StateError> {
        if !self.wants(kind) {
            return Ok(());
        }
        match self.write(kind, data).await {
            Err(e @ StateError::LeaseLost { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(
                    kind = kind.as_str(),
                    "state store: checkpoint failed (the run goes on): {e}"
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// The attempt `n` recorded before the run was interrupted, if any.
    pub fn replayed(&self, n: u32) -> Option<Value> {
        self.replay.get(&n).cloned()
    }
}
