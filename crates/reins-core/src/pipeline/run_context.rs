//! [`RunContext`]: everything a run writes outside itself, passed in.
//!
//! The engine never reaches the store through ambient state: its checkpoint
//! journal, the action log its executors record side effects in, and the
//! cache index behind the response cache all arrive here, from the
//! [`Host`](crate::Host) that starts the run. A side effect therefore cannot
//! be sent unrecorded, and every store write shows in a signature.

use super::journal::Journal;
use reins_state::{StateStore, StepKind};
use std::sync::Arc;
use std::time::Instant;

/// What one run records into, and the clock it is timed by.
pub struct RunContext {
    /// Per-step checkpoints; `None` when `[state] checkpoints = false`.
    pub journal: Option<Journal>,
    /// Where executors record each action (planned → sending → done) under
    /// its idempotency key before and after sending it.
    pub actions: Arc<dyn StateStore>,
    /// Where validated answers are indexed for the response cache, so other
    /// nodes and restarts find them.
    pub cache_index: Arc<dyn StateStore>,
    /// When the run started: its deadline and durations count from here.
    pub started: Instant,
    /// The run's trace: its spans, and the `traceparent` it passes upstream.
    pub trace: crate::telemetry::RunTrace,
}

impl RunContext {
    /// A context recording into `store`, with an optional journal.
    pub fn new(store: Arc<dyn StateStore>, journal: Option<Journal>) -> RunContext {
        RunContext {
            journal,
            actions: store.clone(),
            cache_index: store,
            started: Instant::now(),
            trace: Default::default(),
        }
    }

    /// The same context, traced as `trace`.
    pub fn traced(self, trace: crate::telemetry::RunTrace) -> RunContext {
        RunContext { trace, ..self }
    }

    /// Whether the journal keeps steps of `kind`.
    pub fn journals(&self, kind: StepKind) -> bool {
        self.journal.as_ref().is_some_and(|j| j.wants(kind))
    }

    /// Records a step in the journal, if the run keeps one.
    pub async fn checkpoint(
        &self,
        kind: StepKind,
        data: serde_json::Value,
    ) -> Result<(), reins_state::StateError> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let start = Instant::now();
        let written = j.record(kind, data).await;
        self.trace.record(crate::telemetry::StepSpan {
            attributes: vec![crate::telemetry::KeyValue::new(
                "reins.checkpoint.kind",
                kind.as_str(),
            )],
            error: written.as_ref().err().map(ToString::to_string),
            ..crate::telemetry::StepSpan::new("reins.checkpoint", start, Instant::now())
        });
        written
    }

    /// The model attempt `n` recorded before a crash, if any.
    pub fn replayed(&self, n: u32) -> Option<serde_json::Value> {
        self.journal.as_ref().and_then(|j| j.replayed(n))
    }
}
