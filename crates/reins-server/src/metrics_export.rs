//! The Prometheus recorder (installed once per process) and the run metrics
//! that matter: outcomes, validation failures, repairs, model latency.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reins_core::pipeline::{RunResult, RunStatus};
use std::sync::OnceLock;

/// The process-wide recorder's handle; installs it on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Histogram samples pile up in the recorder until an upkeep
            // drains them into their summaries; without one (nobody scraping
            // `/metrics`) memory grew by ~36 bytes a run in the soak. This is
            // what `PrometheusBuilder::install` would run, minus its HTTP listener.
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("reins-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                tracing::warn!("cannot start the metrics upkeep thread ({e}); histograms grow until /metrics is read");
            }
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only Reins' own view");
            }
            handle
        })
        .clone()
}

/// Records one finished run.
pub fn record_run(r: &RunResult) {
    let pipeline = r.pipeline.clone();
    metrics::counter!(reins_runtime::metric_names::REQUESTS_TOTAL, "pipeline" => pipeline.clone(), "status" => r.status.as_str())
        .increment(1);
    let failed_attempts = r
        .attempts
        .iter()
        .filter(|a| a.blocking().next().is_some())
        .count();
    metrics::counter!(reins_runtime::metric_names::VALIDATION_FAILURES_TOTAL, "pipeline" => pipeline.clone())
        .increment(failed_attempts as u64);
    let repairs = r.attempts.len().saturating_sub(1);
    metrics::counter!(reins_runtime::metric_names::REPAIR_ATTEMPTS_TOTAL, "pipeline" => pipeline.clone()).increment(repairs as u64);
    metrics::histogram!(reins_runtime::metric_names::REPAIR_ATTEMPTS_PER_RUN, "pipeline" => pipeline.clone()).record(repairs as f64);
    if repairs > 0 && r.status == RunStatus::Completed {
        metrics::counter!(reins_runtime::metric_names::REPAIR_SUCCESSES_TOTAL, "pipeline" => pipeline.clone()).increment(1);
    }
    for a in &r.attempts {
        metrics::histogram!(reins_runtime::metric_names::MODEL_LATENCY_SECONDS, "provider" => a.provider.clone())
            .record(a.latency_us as f64 / 1e6);
    }
    if let Some(e) = &r.error {
        metrics::counter!(reins_runtime::metric_names::RUN_ERRORS_TOTAL, "pipeline" => pipeline, "kind" => e.kind()).increment(1);
    }
    for d in &r.decisions {
        metrics::counter!(reins_runtime::metric_names::GATE_DECISIONS_TOTAL, "gate" => d.gate.clone(), "decision" => d.decision.kind())
            .increment(1);
    }
}
