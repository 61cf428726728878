//! The Prometheus recorder (installed once per process) and the run metrics
//! that matter: outcomes, validation failures, repairs, model latency.

use super::exemplars::Exemplars;
use metrics_exporter_prometheus::PrometheusHandle;
use reins_core::pipeline::{RunResult, RunStatus};
use std::sync::{Arc, OnceLock};

/// The process's metrics as the server serves them: the Prometheus
/// recorder's handle (what `/metrics` renders) and the exemplars of its
/// latency histograms (what an OpenMetrics scrape adds). Cheap to clone;
/// the server's state holds it.
#[derive(Clone)]
pub struct Metrics {
    pub handle: PrometheusHandle,
    pub exemplars: Arc<Exemplars>,
}

/// The process-wide recorder's metrics; installs it on first use.
pub fn handle() -> Metrics {
    install(None)
}

/// Installs the process-wide recorder (once: `metrics` has one global
/// recorder) and returns its metrics; `beside` (the root's OTLP bridge) is
/// fed every value the Prometheus recorder gets. Only the first call
/// installs: a later `beside` is unused.
pub fn install(beside: Option<Box<dyn metrics::Recorder + Send + Sync>>) -> Metrics {
    static INSTALLED: OnceLock<Metrics> = OnceLock::new();
    INSTALLED
        .get_or_init(move || {
            let recorder = super::exemplars::builder().build_recorder();
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
            let installed = match beside {
                Some(beside) => metrics::set_global_recorder(
                    metrics_util::layers::FanoutBuilder::default()
                        .add_recorder(recorder)
                        .add_recorder(beside)
                        .build(),
                )
                .is_ok(),
                None => metrics::set_global_recorder(recorder).is_ok(),
            };
            if !installed {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only Reins' own view");
            }
            Metrics {
                handle,
                exemplars: Arc::default(),
            }
        })
        .clone()
}

impl Metrics {
    /// Records one finished run.
    pub fn record_run(&self, r: &RunResult) {
        record_run(&self.exemplars, r)
    }
}

fn record_run(exemplars: &Exemplars, r: &RunResult) {
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
    record_violations(&pipeline, r);
    let repairs = r.attempts.len().saturating_sub(1);
    metrics::counter!(reins_runtime::metric_names::REPAIR_ATTEMPTS_TOTAL, "pipeline" => pipeline.clone()).increment(repairs as u64);
    metrics::histogram!(reins_runtime::metric_names::REPAIR_ATTEMPTS_PER_RUN, "pipeline" => pipeline.clone()).record(repairs as f64);
    if repairs > 0 && r.status == RunStatus::Completed {
        metrics::counter!(reins_runtime::metric_names::REPAIR_SUCCESSES_TOTAL, "pipeline" => pipeline.clone()).increment(1);
    }
    for a in &r.attempts {
        let seconds = a.latency_us as f64 / 1e6;
        metrics::histogram!(reins_runtime::metric_names::MODEL_LATENCY_SECONDS, "provider" => a.provider.clone())
            .record(seconds);
        if let Some(trace) = &r.trace_id {
            exemplars.record(
                reins_runtime::metric_names::MODEL_LATENCY_SECONDS,
                &[("provider", &a.provider)],
                seconds,
                trace,
            );
        }
    }
    let seconds = r.duration_us as f64 / 1e6;
    metrics::histogram!(reins_runtime::metric_names::RUN_DURATION_SECONDS, "pipeline" => pipeline.clone(), "status" => r.status.as_str())
        .record(seconds);
    if let Some(trace) = &r.trace_id {
        exemplars.record(
            reins_runtime::metric_names::RUN_DURATION_SECONDS,
            &[("pipeline", &pipeline), ("status", r.status.as_str())],
            seconds,
            trace,
        );
    }
    if let Some(e) = &r.error {
        metrics::counter!(reins_runtime::metric_names::RUN_ERRORS_TOTAL, "pipeline" => pipeline, "kind" => e.kind()).increment(1);
    }
    for d in &r.decisions {
        metrics::counter!(reins_runtime::metric_names::GATE_DECISIONS_TOTAL, "gate" => d.gate.clone(), "decision" => d.decision.kind())
            .increment(1);
    }
}

/// `reins_plugin_violations_total{pipeline, plugin}`: each attempt that
/// failed validation counts once for every source (a plugin, or `json`,
/// `schema`, `constraints`) that reported a blocking violation in it.
fn record_violations(pipeline: &str, r: &RunResult) {
    let mut sources: Vec<&str> = Vec::new();
    for a in &r.attempts {
        sources.clear();
        for f in a.blocking() {
            if !sources.contains(&f.source.as_str()) {
                sources.push(&f.source);
            }
        }
        for source in &sources {
            metrics::counter!(reins_runtime::metric_names::PLUGIN_VIOLATIONS_TOTAL, "pipeline" => pipeline.to_owned(), "plugin" => (*source).to_owned())
                .increment(1);
        }
    }
}
