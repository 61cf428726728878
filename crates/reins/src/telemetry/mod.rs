//! `[telemetry]`: OpenTelemetry export over OTLP, composed here because
//! only the root knows both the config and the process.
//!
//! reins-core builds each run's spans ([`reins_core::telemetry`]) and hands
//! them to a [`SpanSink`]; this module owns that sink ([`sink::Batches`]:
//! a bounded queue, a batch every `schedule_delay_ms`, drops counted), the
//! OTLP exporters (gRPC or HTTP/protobuf), the OTLP copy of the `/metrics`
//! metrics ([`metrics::Bridge`]) and the log format ([`logs`]).
//!
//! Settings come from `[telemetry]` and from the standard `OTEL_*`
//! variables; where both say something, the config wins. Export is off
//! unless `enabled = true`, or an endpoint is given (`[telemetry] endpoint`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
//! `enabled = false` turns it off whatever else is set.

pub mod logs;
pub mod metrics;
pub mod sink;
mod transport;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use reins_core::config::{Config, ConfigError};
use reins_core::telemetry::{Sampler, SpanSink, Telemetry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `[telemetry]` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    enabled: Option<bool>,
    /// The collector's base URL (`http://host:4318` for HTTP; `/v1/traces`
    /// and `/v1/metrics` are appended), or its gRPC address.
    endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    protocol: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off`, `parentbased_traceidratio`.
    sampler: Option<String>,
    /// The ratio of the `*traceidratio` samplers.
    sampler_arg: Option<f64>,
    /// Record prompts and completions in model-call spans.
    capture_content: Option<bool>,
    timeout_ms: Option<u64>,
    max_queue_size: Option<usize>,
    max_export_batch_size: Option<usize>,
    schedule_delay_ms: Option<u64>,
    /// Also export the `/metrics` metrics over OTLP (`reins serve`).
    metrics: Option<bool>,
    metrics_interval_ms: Option<u64>,
}

/// Which OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        match s.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" | "http" => Some(Protocol::HttpProtobuf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// The settings in force: `[telemetry]` over `OTEL_*` over the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub protocol: Protocol,
    /// Where spans go (for HTTP, the full `/v1/traces` URL).
    pub traces_endpoint: String,
    /// Where metrics go (for HTTP, the full `/v1/metrics` URL).
    pub metrics_endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub service_name: String,
    pub sampler: String,
    pub sampler_arg: f64,
    pub capture_content: bool,
    pub timeout: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub metrics: bool,
    pub metrics_interval: Duration,
}

/// Reads the environment through one function, so tests can give their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values counted as unset (as the
/// OpenTelemetry spec asks).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(config: &Config, key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: config.origin.clone(),
        key: format!("telemetry.{key}"),
        message,
    }
}

impl Settings {
    /// The `[telemetry]` section of `config`, with the environment filled in.
    pub fn from_config(config: &Config, env: Env<'_>) -> Result<Settings, ConfigError> {
        let s =
            Section::deserialize(toml::Value::Table(config.telemetry.clone())).map_err(|e| {
                ConfigError::Invalid {
                    path: config.origin.clone(),
                    key: "telemetry".into(),
                    message: e.to_string().trim_end().to_owned(),
                }
            })?;
        let env_num = |name: &str| -> Result<Option<u64>, ConfigError> {
            env(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        invalid(
                            config,
                            "environment",
                            format!("{name}={v} is not a whole number of milliseconds"),
                        )
                    })
                })
                .transpose()
        };
        let endpoint_env = env("OTEL_EXPORTER_OTLP_ENDPOINT");
        let traces_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        // An endpoint, in the config or the environment, turns export on.
        let enabled = s.enabled.unwrap_or(
            s.endpoint.is_some()
                || (!sdk_disabled && (endpoint_env.is_some() || traces_env.is_some())),
        );
        let protocol = match &s.protocol {
            Some(p) => Protocol::parse(p).ok_or_else(|| {
                invalid(
                    config,
                    "protocol",
                    format!("`{p}` is not an OTLP protocol: use \"grpc\" or \"http/protobuf\""),
                )
            })?,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            {
                Some(p) => Protocol::parse(&p).ok_or_else(|| {
                    invalid(
                        config,
                        "protocol",
                        format!(
                            "OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported: use grpc or http/protobuf"
                        ),
                    )
                })?,
                None => Protocol::HttpProtobuf,
            },
        };
        let default_base = match protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        };
        let join = |base: &str, path: &str| match protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
        };
        let (traces_endpoint, metrics_endpoint) = match (&s.endpoint, traces_env) {
            (Some(base), _) => (join(base, "v1/traces"), join(base, "v1/metrics")),
            (None, Some(traces)) => {
                let base = endpoint_env
                    .clone()
                    .unwrap_or_else(|| default_base.to_owned());
                (traces, join(&base, "v1/metrics"))
            }
            (None, None) => {
                let base = endpoint_env.unwrap_or_else(|| default_base.to_owned());
                (join(&base, "v1/traces"), join(&base, "v1/metrics"))
            }
        };
        for (key, url) in [
            ("endpoint", &traces_endpoint),
            ("endpoint", &metrics_endpoint),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    config,
                    key,
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        // The environment's headers first, the config's over them.
        let mut headers = BTreeMap::new();
        if let Some(list) =
            env("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(invalid(
                        config,
                        "headers",
                        format!("OTEL_EXPORTER_OTLP_HEADERS has `{pair}`, not key=value"),
                    ));
                };
                headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
        }
        for (k, v) in &s.headers {
            headers.insert(k.to_lowercase(), v.clone());
        }
        let sampler = s
            .sampler
            .clone()
            .or_else(|| env("OTEL_TRACES_SAMPLER"))
            .unwrap_or_else(|| "parentbased_always_on".to_owned());
        let sampler_arg = match s.sampler_arg {
            Some(r) => r,
            None => match env("OTEL_TRACES_SAMPLER_ARG") {
                Some(v) => v.trim().parse().map_err(|_| {
                    invalid(
                        config,
                        "sampler_arg",
                        format!("OTEL_TRACES_SAMPLER_ARG={v} is not a number"),
                    )
                })?,
                None => 1.0,
            },
        };
        if !(0.0..=1.0).contains(&sampler_arg) {
            return Err(invalid(
                config,
                "sampler_arg",
                format!("{sampler_arg} is not a ratio between 0 and 1"),
            ));
        }
        let settings = Settings {
            enabled,
            protocol,
            traces_endpoint,
            metrics_endpoint,
            headers,
            service_name: s
                .service_name
                .clone()
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "reins".to_owned()),
            sampler,
            sampler_arg,
            capture_content: s.capture_content.unwrap_or(false),
            timeout: Duration::from_millis(
                s.timeout_ms
                    .or(env_num("OTEL_EXPORTER_OTLP_TIMEOUT")?)
                    .unwrap_or(10_000)
                    .max(1),
            ),
            max_queue_size: s
                .max_queue_size
                .or(env_num("OTEL_BSP_MAX_QUEUE_SIZE")?.map(|n| n as usize))
                .unwrap_or(2048),
            max_export_batch_size: s
                .max_export_batch_size
                .or(env_num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.map(|n| n as usize))
                .unwrap_or(512),
            schedule_delay: Duration::from_millis(
                s.schedule_delay_ms
                    .or(env_num("OTEL_BSP_SCHEDULE_DELAY")?)
                    .unwrap_or(5000),
            ),
            metrics: s.metrics.unwrap_or(true),
            metrics_interval: Duration::from_millis(
                s.metrics_interval_ms
                    .or(env_num("OTEL_METRIC_EXPORT_INTERVAL")?)
                    .unwrap_or(60_000)
                    .max(100),
            ),
        };
        settings
            .sampler_of()
            .map_err(|m| invalid(config, "sampler", m))?;
        if settings.max_queue_size == 0 || settings.max_export_batch_size == 0 {
            return Err(invalid(
                config,
                "max_queue_size",
                "max_queue_size and max_export_batch_size must be greater than 0".to_owned(),
            ));
        }
        Ok(settings)
    }

    /// The sampler the settings name.
    fn sampler_of(&self) -> Result<Sampler, String> {
        let ratio = self.sampler_arg;
        Ok(match self.sampler.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatioBased(ratio),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
            other => {
                return Err(format!(
                    "`{other}` is not a sampler: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        })
    }

    fn resource(&self) -> Resource {
        Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build()
    }
}

/// What the root keeps while telemetry runs: flushes on [`Exporting::shutdown`].
pub struct Exporting {
    pub telemetry: Telemetry,
    spans: Option<Arc<sink::Batches>>,
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    pub settings: Settings,
}

/// Why the exporters could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("telemetry: cannot build the OTLP {what} exporter for {endpoint}: {message}")]
    Exporter {
        what: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("telemetry: {0}")]
    Header(String),
}

impl Exporting {
    /// Nothing exported (telemetry off).
    pub fn off(settings: Settings) -> Exporting {
        Exporting {
            telemetry: Telemetry::off(),
            spans: None,
            meters: None,
            settings,
        }
    }

    /// Starts the span exporter (and, with `with_metrics`, the metric
    /// exporter) the settings describe; off settings start nothing. Call
    /// inside the tokio runtime (gRPC channels are bound to it).
    pub fn start(settings: Settings, with_metrics: bool) -> Result<Exporting, StartError> {
        if !settings.enabled {
            return Ok(Exporting::off(settings));
        }
        let sampler = settings.sampler_of().map_err(StartError::Header)?;
        let exporter = span_exporter(&settings)?;
        let batches = Arc::new(sink::Batches::start(exporter, &settings));
        let meters = if with_metrics && settings.metrics {
            Some(metrics::start(&settings)?)
        } else {
            None
        };
        tracing::info!(
            endpoint = %settings.traces_endpoint,
            protocol = settings.protocol.as_str(),
            sampler = %settings.sampler,
            "telemetry: exporting spans over OTLP"
        );
        Ok(Exporting {
            telemetry: Telemetry::new(
                batches.clone() as Arc<dyn SpanSink>,
                sampler,
                settings.capture_content,
            ),
            spans: Some(batches),
            meters,
            settings,
        })
    }

    /// Sends what is queued (within the export timeout) and stops.
    pub fn shutdown(self) {
        if let Some(spans) = self.spans {
            spans.shutdown(self.settings.timeout);
        }
        if let Some(m) = self.meters
            && let Err(e) = m.shutdown()
        {
            tracing::warn!("telemetry: the last metrics were not sent (is the collector up?): {e}");
        }
    }
}

/// Why telemetry could not be set up for a config file.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Reads `[telemetry]` of the config at `path` (with the process's
/// `OTEL_*` variables) and starts what it asks for. `with_metrics`: also
/// export the metrics (`reins serve`; one-shot commands export spans only).
pub fn for_config(path: &std::path::Path, with_metrics: bool) -> Result<Exporting, SetupError> {
    let config = Config::from_file(path)?;
    let settings = Settings::from_config(&config, &process_env)?;
    Ok(Exporting::start(settings, with_metrics)?)
}

impl Exporting {
    /// The recorder that copies the `/metrics` metrics to OTLP, when exported.
    pub fn metrics_recorder(&self) -> Option<metrics::Bridge> {
        self.meters.as_ref().map(metrics::Bridge::new)
    }
}

/// The OTLP span exporter for `settings`.
fn span_exporter(settings: &Settings) -> Result<opentelemetry_otlp::SpanExporter, StartError> {
    let failed = build_failed("span", &settings.traces_endpoint);
    let mut exporter = match settings.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.traces_endpoint.clone())
            .with_timeout(settings.timeout)
            .with_http_client(http_client(settings)?)
            .build()
            .map_err(failed)?,
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.traces_endpoint.clone())
            .with_timeout(settings.timeout)
            .with_interceptor(metadata(settings)?)
            .build()
            .map_err(failed)?,
    };
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &settings.resource());
    Ok(exporter)
}

/// How an exporter that cannot be built (`what`: span or metric) is reported.
fn build_failed(
    what: &'static str,
    endpoint: &str,
) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> StartError {
    move |e| StartError::Exporter {
        what,
        endpoint: endpoint.to_owned(),
        message: e.to_string(),
    }
}

/// The HTTP client of the exporters: the config's headers are set on
/// every request last, so they win over `OTEL_EXPORTER_OTLP_HEADERS`
/// (which the exporter applies itself).
fn http_client(settings: &Settings) -> Result<transport::HeadedClient, StartError> {
    transport::HeadedClient::new(&settings.headers, settings.timeout).map_err(StartError::Header)
}

/// The gRPC metadata interceptor: the config's headers on every call.
fn metadata(settings: &Settings) -> Result<transport::Metadata, StartError> {
    transport::Metadata::new(&settings.headers).map_err(StartError::Header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "reins.toml", ".").unwrap()
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BASE: &str = "plugins_dir = \"plugins\"\n";

    #[test]
    fn off_by_default_and_on_when_the_standard_endpoint_variable_is_set() {
        let c = config(BASE);
        assert!(!Settings::from_config(&c, &env_of(&[])).unwrap().enabled);
        let s = Settings::from_config(
            &c,
            &env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.metrics_endpoint, "http://collector:4318/v1/metrics");
    }

    #[test]
    fn the_config_wins_over_the_environment() {
        let c = config(&format!(
            "{BASE}[telemetry]\nenabled = false\nendpoint = \"http://mine:4317\"\nprotocol = \"grpc\"\nheaders = {{ authorization = \"Bearer mine\" }}\nsampler = \"traceidratio\"\nsampler_arg = 0.25\n"
        ));
        let s = Settings::from_config(
            &c,
            &env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://theirs:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer theirs,x-team=ml",
                ),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ]),
        )
        .unwrap();
        assert!(!s.enabled);
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.traces_endpoint, "http://mine:4317");
        assert_eq!(s.headers["authorization"], "Bearer mine");
        assert_eq!(s.headers["x-team"], "ml");
        assert_eq!((s.sampler.as_str(), s.sampler_arg), ("traceidratio", 0.25));
    }

    #[test]
    fn a_bad_setting_is_named_with_how_to_fix_it() {
        let bad = |section: &str| {
            Settings::from_config(
                &config(&format!("{BASE}[telemetry]\n{section}\n")),
                &env_of(&[]),
            )
            .unwrap_err()
            .to_string()
        };
        let e = bad("protocol = \"udp\"");
        assert!(
            e.contains("telemetry.protocol") && e.contains("grpc"),
            "{e}"
        );
        let e = bad("sampler = \"sometimes\"");
        assert!(
            e.contains("telemetry.sampler") && e.contains("parentbased_always_on"),
            "{e}"
        );
        let e = bad("endpoint = \"collector:4318\"");
        assert!(
            e.contains("telemetry.endpoint") && e.contains("http://"),
            "{e}"
        );
        let e = bad("capture = true");
        assert!(
            e.contains("capture") && e.contains("capture_content"),
            "{e}"
        );
        let e = Settings::from_config(
            &config(BASE),
            &env_of(&[("OTEL_BSP_SCHEDULE_DELAY", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("OTEL_BSP_SCHEDULE_DELAY=soon"), "{e}");
    }
}
