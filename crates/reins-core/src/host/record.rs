//! The typed contents of a stored run's `request` column: what a node
//! needs to resume the run, continue it after its approvals, or carry on
//! its agent loop. Read and written only through [`StoredRequest`], so no
//! code looks keys up in the stored JSON.

use crate::pipeline::Request;
use reins_state::RunRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredRequest {
    /// The caller's request as the run started from it (`None`: the run
    /// cannot be resumed).
    #[serde(default)]
    pub request: Option<Request>,
    /// Index of each approved action among the attempt's proposed actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_indices: Option<Vec<usize>>,
    /// What the gates reserved, so a node that rejects the held run can
    /// give it back (through shared counters).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub reservations: Value,
    /// The agent turn a held run stopped at; its decision continues the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_step: Option<u32>,
}

impl StoredRequest {
    /// A new run's: just the request.
    pub fn new(request: &Request) -> StoredRequest {
        StoredRequest {
            request: Some(request.clone()),
            ..StoredRequest::default()
        }
    }

    /// What `record` stores. A column that does not read (written by a
    /// future version, or damaged) reads as empty, so the run is reported
    /// as not resumable rather than half-restored.
    pub fn of(record: &RunRecord) -> StoredRequest {
        if record.request.is_null() {
            return StoredRequest::default();
        }
        serde_json::from_value(record.request.clone()).unwrap_or_else(|e| {
            tracing::warn!(run_id = %record.run_id, "stored request does not read: {e}");
            StoredRequest::default()
        })
    }

    /// Writes this into `record`.
    pub fn write(&self, record: &mut RunRecord) {
        record.request = serde_json::to_value(self).unwrap_or(Value::Null);
    }

    /// Changes what `record` stores with `f`.
    pub fn update(record: &mut RunRecord, f: impl FnOnce(&mut StoredRequest)) {
        let mut stored = StoredRequest::of(record);
        f(&mut stored);
        stored.write(record);
    }
}
