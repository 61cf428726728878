//! The log format: text for people, or one JSON object a line
//! (`REINS_LOG_FORMAT=json`) for a log pipeline, carrying the `trace_id`
//! and `span_id` of the run a line belongs to at its top level, where
//! Loki, Elasticsearch and the OpenTelemetry collector look for them to
//! link a log line to its trace.
//!
//! The ids come from the fields of the enclosing `run` span (the engine
//! records them there); the span's other fields (`run_id`, `pipeline`)
//! are copied too.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `REINS_LOG_FORMAT`: `json` or `text` (the default).
    pub fn from_env() -> Result<Format, String> {
        match std::env::var("REINS_LOG_FORMAT")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "REINS_LOG_FORMAT={other} is not a log format: use `json` or `text`"
            )),
        }
    }
}

/// Sets the process's subscriber: `REINS_LOG` filters (default `warn`),
/// written to stderr in `format`.
pub fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REINS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .try_init(),
    };
}

/// One event as one JSON object.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        line.insert("timestamp".into(), Value::String(time));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        // Outermost span first, so an inner span's ids win.
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(Value::String(span.name().to_owned()));
                let ext = span.extensions();
                let Some(recorded) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                let Ok(Value::Object(map)) = serde_json::from_str::<Value>(recorded) else {
                    continue;
                };
                for (k, v) in map {
                    let empty = v.as_str().is_some_and(str::is_empty);
                    if !empty {
                        line.insert(k, v);
                    }
                }
            }
        }
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        if !fields.0.is_empty() {
            line.insert("fields".into(), Value::Object(fields.0));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields, as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}
