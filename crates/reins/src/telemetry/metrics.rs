//! The `/metrics` metrics, also over OTLP: a `metrics` recorder that
//! forwards every counter, gauge and histogram to OpenTelemetry
//! instruments of the same name and labels. It sits beside the Prometheus
//! recorder (a fan-out installed by `reins serve`), so both see the same
//! values without a second set of call sites.

use super::{Protocol, Settings, StartError};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Starts the OTLP metric exporter the settings describe.
pub fn start(settings: &Settings) -> Result<SdkMeterProvider, StartError> {
    let failed = super::build_failed("metric", &settings.metrics_endpoint);
    let exporter = match settings.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.metrics_endpoint.clone())
            .with_timeout(settings.timeout)
            .with_http_client(super::http_client(settings)?)
            .build()
            .map_err(failed)?,
        Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(settings.metrics_endpoint.clone())
            .with_timeout(settings.timeout)
            .with_interceptor(super::metadata(settings)?)
            .build()
            .map_err(failed)?,
    };
    let reader = PeriodicReader::builder(exporter)
        .with_interval(settings.metrics_interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(settings.resource())
        .build())
}

/// Latency buckets for `*_seconds` histograms: model calls take from
/// milliseconds to a minute, plugin calls microseconds.
const SECONDS: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// A `metrics` recorder over an OpenTelemetry meter.
pub struct Bridge {
    meter: Meter,
    series: RwLock<HashMap<Key, Arc<Series>>>,
}

/// One metric with one label set, as registered: the instrument, its
/// attributes, and the value a gauge or an absolute counter last had
/// (OpenTelemetry instruments take values, `metrics` handles deltas too).
struct Series {
    instrument: Instrument,
    attributes: Vec<KeyValue>,
    last: AtomicU64,
}

enum Instrument {
    Counter(opentelemetry::metrics::Counter<u64>),
    Gauge(opentelemetry::metrics::Gauge<f64>),
    Histogram(opentelemetry::metrics::Histogram<f64>),
}

impl Bridge {
    pub fn new(provider: &SdkMeterProvider) -> Bridge {
        Bridge {
            meter: opentelemetry::metrics::MeterProvider::meter(provider, "reins"),
            series: RwLock::new(HashMap::new()),
        }
    }

    fn series(&self, key: &Key, make: impl FnOnce(&Meter, String) -> Instrument) -> Arc<Series> {
        if let Some(s) = self.series.read().ok().and_then(|m| m.get(key).cloned()) {
            return s;
        }
        let Ok(mut map) = self.series.write() else {
            // A poisoned map: record into a detached series rather than panic.
            return Arc::new(Series {
                instrument: make(&self.meter, key.name().to_owned()),
                attributes: Vec::new(),
                last: AtomicU64::new(0),
            });
        };
        map.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Series {
                    instrument: make(&self.meter, key.name().to_owned()),
                    attributes: key
                        .labels()
                        .map(|l| KeyValue::new(l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    last: AtomicU64::new(0),
                })
            })
            .clone()
    }
}

impl Recorder for Bridge {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(key, |m, name| {
            Instrument::Counter(m.u64_counter(name).build())
        }))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(key, |m, name| Instrument::Gauge(m.f64_gauge(name).build())))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.series(key, |m, name| {
            let seconds = name.ends_with("_seconds");
            let builder = m.f64_histogram(name);
            Instrument::Histogram(if seconds {
                builder.with_boundaries(SECONDS.to_vec()).build()
            } else {
                builder.build()
            })
        }))
    }
}

impl metrics::CounterFn for Series {
    fn increment(&self, value: u64) {
        if let Instrument::Counter(c) = &self.instrument {
            self.last.fetch_add(value, Ordering::Relaxed);
            c.add(value, &self.attributes);
        }
    }

    fn absolute(&self, value: u64) {
        if let Instrument::Counter(c) = &self.instrument {
            let before = self.last.fetch_max(value, Ordering::Relaxed);
            if value > before {
                c.add(value - before, &self.attributes);
            }
        }
    }
}

impl Series {
    fn gauge(&self, f: impl Fn(f64) -> f64) {
        let Instrument::Gauge(g) = &self.instrument else {
            return;
        };
        let mut now = 0.0;
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                now = f(f64::from_bits(bits));
                Some(now.to_bits())
            });
        g.record(now, &self.attributes);
    }
}

impl metrics::GaugeFn for Series {
    fn increment(&self, value: f64) {
        self.gauge(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.gauge(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.gauge(|_| value);
    }
}

impl metrics::HistogramFn for Series {
    fn record(&self, value: f64) {
        if let Instrument::Histogram(h) = &self.instrument {
            h.record(value, &self.attributes);
        }
    }
}
