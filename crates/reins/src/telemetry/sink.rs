//! The span queue between the runs and the OTLP exporter.
//!
//! Why not the SDK's `BatchSpanProcessor`: it takes spans from its own
//! tracer, and it counts what it drops only in a private field. Here a run
//! hands a finished span to a bounded channel and never waits: a full
//! queue (a slow or dead collector) drops the span and counts it in
//! `reins_telemetry_spans_dropped_total{reason="queue_full"}`; a batch the
//! collector refuses or never answers is counted as `export_failed`. One
//! thread sends the batches, every `schedule_delay` or when a batch is full.

use super::Settings;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reins_core::telemetry::SpanSink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SPANS_EXPORTED_TOTAL: &str = "reins_telemetry_spans_exported_total";
pub const SPANS_DROPPED_TOTAL: &str = "reins_telemetry_spans_dropped_total";

/// The queue's sending end and the thread that empties it.
pub struct Batches {
    tx: SyncSender<SpanData>,
    /// Set at shutdown: the thread sends what is queued and stops.
    closing: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Counts into the process's recorder as it is when counted: the exporter
/// starts before `reins serve` installs its recorder, and a handle taken
/// earlier would count nowhere.
fn count(name: &'static str, reason: Option<&'static str>, n: u64) {
    match reason {
        Some(reason) => metrics::counter!(name, "reason" => reason).increment(n),
        None => metrics::counter!(name).increment(n),
    }
}

impl Batches {
    /// Starts the export thread over `exporter`.
    pub fn start<E: SpanExporter + 'static>(exporter: E, settings: &Settings) -> Batches {
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.max_queue_size);
        let batch = settings.max_export_batch_size;
        let delay = settings.schedule_delay;
        // gRPC channels live on the runtime the exporter was built in; the
        // HTTP exporter's blocking client brings its own, and a thread that
        // entered the server's runtime would outlive it at exit.
        let runtime = (settings.protocol == super::Protocol::Grpc)
            .then(tokio::runtime::Handle::try_current)
            .and_then(Result::ok);
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        let worker = std::thread::Builder::new()
            .name("reins-otlp-spans".into())
            .spawn(move || {
                let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                export_loop(exporter, rx, batch, delay, &stop)
            })
            .map_err(|e| tracing::warn!("telemetry: cannot start the span export thread: {e}"))
            .ok();
        Batches {
            tx,
            closing,
            worker: Mutex::new(worker),
        }
    }

    /// Sends what is queued and stops the thread, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        self.closing.store(true, Ordering::Release);
        let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if worker.is_finished() {
            let _ = worker.join();
        } else {
            tracing::warn!("telemetry: spans still unsent at shutdown were dropped");
        }
    }
}

impl SpanSink for Batches {
    fn record(&self, span: SpanData) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => count(SPANS_DROPPED_TOTAL, Some("queue_full"), 1),
            Err(TrySendError::Disconnected(_)) => count(SPANS_DROPPED_TOTAL, Some("shutdown"), 1),
        }
    }
}

/// How often the thread looks for a shutdown while it waits for spans.
const TICK: Duration = Duration::from_millis(50);

fn export_loop<E: SpanExporter>(
    exporter: E,
    rx: Receiver<SpanData>,
    batch: usize,
    delay: Duration,
    closing: &AtomicBool,
) {
    let mut pending = Vec::with_capacity(batch);
    let mut failures = 0u64;
    let mut closed = false;
    while !closed {
        let due = Instant::now() + delay;
        while pending.len() < batch {
            if closing.load(Ordering::Acquire) {
                // Send everything queued, then stop.
                pending.extend(rx.try_iter());
                closed = true;
                break;
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left.min(TICK)) {
                Ok(span) => pending.push(span),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        let spans = std::mem::replace(&mut pending, Vec::with_capacity(batch));
        let n = spans.len() as u64;
        match futures_executor::block_on(exporter.export(spans)) {
            Ok(()) => {
                count(SPANS_EXPORTED_TOTAL, None, n);
                if failures > 0 {
                    tracing::info!(failures, "telemetry: the collector takes spans again");
                    failures = 0;
                }
            }
            Err(e) => {
                count(SPANS_DROPPED_TOTAL, Some("export_failed"), n);
                failures += 1;
                // The first failure and then one in a hundred: a dead
                // collector must not flood the log.
                if failures % 100 == 1 {
                    tracing::warn!(failures, dropped = n, "telemetry: cannot export spans: {e}");
                }
            }
        }
    }
    let _ = exporter.shutdown();
}
