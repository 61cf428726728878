//! Shared by the `degradation_*` tests and bench: providers on the flaky
//! upstream of `reins_testing::model`, the refund answers the pipelines
//! validate, and the model steps of a run's trace.
#![allow(dead_code)]

use reins::pipeline::RunResult;
use serde_json::json;

/// An `openai` provider `name` on `base_url` with `extra` lines (retries,
/// timeouts, `breaker = {...}`); backoff is 1 ms unless `extra` says otherwise.
pub fn openai(name: &str, base_url: &str, extra: &str) -> String {
    let own_backoff = extra
        .lines()
        .any(|l| l.trim_start().starts_with("backoff_ms"));
    let backoff = if own_backoff { "" } else { "backoff_ms = 1\n" };
    format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"flaky-model\"\n{backoff}{extra}\n\n"
    )
}

/// A refund answer with `amount` (the pipelines' schema is `refund_schema`).
pub fn refund(amount: f64) -> String {
    json!({"amount": amount, "currency": "EUR", "reason": "damaged parcel"}).to_string()
}

/// The model steps of a run's trace: (provider, result).
pub fn model_steps(r: &RunResult) -> Vec<(String, String)> {
    r.trace
        .iter()
        .filter(|s| s.layer == "model")
        .map(|s| (s.name.clone(), s.result.clone()))
        .collect()
}
