//! Exemplars for the latency histograms, and the OpenMetrics rendering that
//! carries them.
//!
//! Grafana links a latency panel's point to the trace behind it through an
//! exemplar, and Prometheus reads exemplars only from OpenMetrics text. The
//! exporter (`metrics-exporter-prometheus`) has neither, so this module keeps
//! the latest traced observation of each histogram bucket itself and, for a
//! scrape that asks for OpenMetrics, converts the exporter's text 0.0.4 and
//! writes those exemplars onto the matching `_bucket` lines. A scrape that
//! does not ask still gets the exporter's text unchanged.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use reins_runtime::metric_names::{MODEL_LATENCY_SECONDS, RUN_DURATION_SECONDS};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds, in seconds, of the latency histograms' buckets: a cached or
/// scripted answer takes milliseconds, a long generation up to a minute.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The histograms rendered with [`LATENCY_BUCKETS`]: exemplars can only hang
/// on buckets, so these are the ones that get them. Every other histogram
/// stays a summary, as before.
pub const HISTOGRAMS: [&str; 2] = [RUN_DURATION_SECONDS, MODEL_LATENCY_SECONDS];

/// Series (histogram and label set) whose exemplars are kept. Label sets come
/// from configured pipelines and providers, so this is only reached by a
/// config churning through names; then the least recently updated series go.
const MAX_SERIES: usize = 1024;

/// What `GET /metrics` answers to a scrape that asked for OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exporter's builder with bucketed [`HISTOGRAMS`]. Should the exporter
/// refuse the buckets, the histograms stay summaries (and carry no
/// exemplars) rather than the server not starting.
pub fn builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for name in HISTOGRAMS {
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    "latency buckets refused ({e}); latency histograms are summaries without exemplars"
                );
                return PrometheusBuilder::new();
            }
        };
    }
    builder
}

/// Whether a scrape's `Accept` prefers OpenMetrics over text 0.0.4.
/// Prometheus lists `application/openmetrics-text` with a higher `q` than
/// `text/plain`; a client that lists neither, or prefers plain text, gets
/// what every scraper understands.
pub fn wants_openmetrics<'a>(accept: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut openmetrics, mut plain) = (0.0f64, 0.0f64);
    for range in accept.into_iter().flat_map(|v| v.split(',')) {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f64>().ok())
            .filter(|q| q.is_finite())
            .unwrap_or(0.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= plain
}

/// The latest observation of one bucket that belonged to a traced run.
#[derive(Debug, Clone, PartialEq)]
struct Exemplar {
    trace_id: String,
    value: f64,
    /// Since the Unix epoch: when it was observed.
    at: Duration,
}

/// A label set, sorted by name, so the order the exporter writes them in
/// does not matter when a bucket line is matched.
type Labels = Vec<(String, String)>;

/// One histogram series' exemplars: a slot per bucket, `+Inf` last.
#[derive(Debug, Clone)]
struct Series {
    slots: Vec<Option<Exemplar>>,
    /// The store's clock at the last update: the smallest goes first.
    touched: u64,
}

#[derive(Debug, Default)]
struct Store {
    /// Histogram name, then label set.
    series: HashMap<&'static str, HashMap<Labels, Series>>,
    count: usize,
    clock: u64,
}

/// The exemplars of every bucketed histogram; one per process, beside the
/// exporter's recorder (`metrics_export::Metrics`).
#[derive(Debug, Default)]
pub struct Exemplars {
    store: Mutex<Store>,
}

impl Exemplars {
    /// Keeps `value` of histogram `name` (one of [`HISTOGRAMS`], recorded
    /// with these labels) as its bucket's exemplar, replacing the one
    /// before. A `trace_id` that is not a W3C trace id is not kept: it
    /// would link to nothing, and it is written into the scrape verbatim.
    pub fn record(&self, name: &'static str, labels: &[(&str, &str)], value: f64, trace_id: &str) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.record_at(name, labels, value, trace_id, at);
    }

    fn record_at(
        &self,
        name: &'static str,
        labels: &[(&str, &str)],
        value: f64,
        trace_id: &str,
        at: Duration,
    ) {
        if !is_trace_id(trace_id) || !value.is_finite() || value < 0.0 {
            tracing::debug!(name, trace_id, value, "exemplar not kept");
            return;
        }
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        let exemplar = Exemplar {
            trace_id: trace_id.to_owned(),
            value,
            at,
        };
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.clock += 1;
        let clock = store.clock;
        let known = store
            .series
            .get(name)
            .is_some_and(|by_labels| by_labels.contains_key(&labels));
        if !known {
            if store.count >= MAX_SERIES {
                store.evict_oldest();
            }
            store.count += 1;
        }
        let series = store
            .series
            .entry(name)
            .or_default()
            .entry(labels)
            .or_insert_with(|| Series {
                slots: vec![None; LATENCY_BUCKETS.len() + 1],
                touched: clock,
            });
        series.touched = clock;
        if let Some(s) = series.slots.get_mut(slot) {
            *s = Some(exemplar);
        }
    }

    fn snapshot(&self) -> HashMap<&'static str, HashMap<Labels, Series>> {
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .series
            .clone()
    }

    /// The exporter's text 0.0.4 as OpenMetrics 1.0.0, with the exemplars.
    ///
    /// Only what differs is changed: a counter's family is named without
    /// its `_total` (its samples keep it), one not ending in `_total` is
    /// declared `unknown` (its series keep their name), blank lines and
    /// other comments go, infinities are spelt `+Inf`/`-Inf`, and `# EOF`
    /// ends the document.
    pub fn openmetrics(&self, text: &str) -> String {
        let exemplars = self.snapshot();
        let counters: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .filter(|(_, kind)| kind.trim() == "counter")
            .map(|(name, _)| name)
            .collect();
        let mut out = String::with_capacity(text.len() + text.len() / 4 + 8);
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                let family = if counters.contains(name) {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                // The exporter escapes `\` and newlines in descriptions but
                // not `"`, which OpenMetrics wants escaped too.
                let _ = writeln!(out, "# HELP {family} {}", help.replace('"', "\\\""));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
                let (family, kind) = match kind.trim() {
                    "counter" => match name.strip_suffix("_total") {
                        Some(family) => (family, "counter"),
                        None => (name, "unknown"),
                    },
                    "untyped" => (name, "unknown"),
                    kind => (name, kind),
                };
                let _ = writeln!(out, "# TYPE {family} {kind}");
            } else if line.starts_with('#') {
                continue;
            } else {
                write_sample(&mut out, line, &exemplars);
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

impl Store {
    fn evict_oldest(&mut self) {
        let oldest = self
            .series
            .iter()
            .flat_map(|(name, by_labels)| by_labels.iter().map(move |(l, s)| (*name, l, s.touched)))
            .min_by_key(|(_, _, touched)| *touched)
            .map(|(name, labels, _)| (name, labels.clone()));
        if let Some((name, labels)) = oldest
            && let Some(by_labels) = self.series.get_mut(name)
            && by_labels.remove(&labels).is_some()
        {
            self.count -= 1;
            if by_labels.is_empty() {
                self.series.remove(name);
            }
        }
    }
}

/// A 32-hex W3C trace id (lower case, as `traceparent` spells it; all
/// zeros is invalid there).
fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

/// One sample line (`name{labels} value`; the exporter writes no
/// timestamps), with a bucket's exemplar appended when one is kept.
fn write_sample(
    out: &mut String,
    line: &str,
    exemplars: &HashMap<&'static str, HashMap<Labels, Series>>,
) {
    let Some((series, value)) = line.rsplit_once(' ') else {
        out.push_str(line);
        out.push('\n');
        return;
    };
    // Rust spells infinity `inf`, which neither format knows.
    let value = match value {
        "inf" | "+inf" => "+Inf",
        "-inf" => "-Inf",
        v => v,
    };
    let _ = write!(out, "{series} {value}");
    if let Some(e) = bucket_exemplar(series, exemplars) {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\"}} {} {}.{:03}",
            e.trace_id,
            e.value,
            e.at.as_secs(),
            e.at.subsec_millis()
        );
    }
    out.push('\n');
}

/// The exemplar kept for the bucket `series` names, if it is a `_bucket`
/// of a histogram with exemplars. The `le` the exporter wrote is one of
/// [`LATENCY_BUCKETS`] (or `+Inf`), so it picks the slot the value was
/// filed under: the smallest bucket whose bound is at least the value.
fn bucket_exemplar<'a>(
    series: &str,
    exemplars: &'a HashMap<&'static str, HashMap<Labels, Series>>,
) -> Option<&'a Exemplar> {
    let (name, labels) = series.split_once('{')?;
    let by_labels = exemplars.get(name.strip_suffix("_bucket")?)?;
    let mut labels = parse_labels(labels.strip_suffix('}')?)?;
    let le_at = labels.iter().position(|(k, _)| k == "le")?;
    let (_, le) = labels.remove(le_at);
    let slot = if le == "+Inf" {
        LATENCY_BUCKETS.len()
    } else {
        let le: f64 = le.parse().ok()?;
        LATENCY_BUCKETS.iter().position(|b| *b == le)?
    };
    labels.sort();
    by_labels.get(&labels)?.slots.get(slot)?.as_ref()
}

/// `k="v",k2="v2"` as the exporter writes it, values unescaped; `None` for
/// anything else.
fn parse_labels(text: &str) -> Option<Labels> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        let after = &after[1 + end + 1..];
        rest = after.strip_prefix(',').unwrap_or(after);
        if !after.is_empty() && !after.starts_with(',') {
            return None;
        }
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn at(secs: u64) -> Duration {
        Duration::from_millis(secs * 1000 + 123)
    }

    #[test]
    fn prometheus_accept_header_asks_for_openmetrics() {
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics([prometheus]));
        assert!(wants_openmetrics([
            "application/openmetrics-text; version=1.0.0"
        ]));
        assert!(!wants_openmetrics(std::iter::empty::<&str>()));
        assert!(!wants_openmetrics(["*/*"]));
        assert!(!wants_openmetrics(["text/plain;version=0.0.4"]));
        assert!(!wants_openmetrics([
            "application/openmetrics-text;q=0.2,text/plain;q=0.9"
        ]));
        assert!(!wants_openmetrics(["application/openmetrics-text;q=0"]));
    }

    #[test]
    fn counters_lose_total_in_metadata_and_the_document_ends_with_eof() {
        let text = "# HELP reins_requests_total Runs \"by\" status.\n# TYPE reins_requests_total counter\nreins_requests_total{pipeline=\"p\",status=\"completed\"} 3\n\n# TYPE odd counter\nodd 1\n\n# TYPE g gauge\ng inf\n\n";
        let om = Exemplars::default().openmetrics(text);
        assert_eq!(
            om,
            "# HELP reins_requests Runs \\\"by\\\" status.\n# TYPE reins_requests counter\nreins_requests_total{pipeline=\"p\",status=\"completed\"} 3\n# TYPE odd unknown\nodd 1\n# TYPE g gauge\ng +Inf\n# EOF\n"
        );
    }

    #[test]
    fn exemplar_goes_on_the_smallest_bucket_that_holds_it() {
        let ex = Exemplars::default();
        ex.record_at(
            RUN_DURATION_SECONDS,
            &[("status", "completed"), ("pipeline", "p \"q\"")],
            0.42,
            TRACE,
            at(1_733_400_000),
        );
        ex.record_at(
            RUN_DURATION_SECONDS,
            &[("pipeline", "p"), ("status", "completed")],
            99.0,
            TRACE,
            at(1),
        );
        let text = "# TYPE reins_run_duration_seconds histogram\n\
reins_run_duration_seconds_bucket{pipeline=\"p \\\"q\\\"\",status=\"completed\",le=\"0.25\"} 0\n\
reins_run_duration_seconds_bucket{pipeline=\"p \\\"q\\\"\",status=\"completed\",le=\"0.5\"} 1\n\
reins_run_duration_seconds_bucket{pipeline=\"p \\\"q\\\"\",status=\"completed\",le=\"1\"} 1\n\
reins_run_duration_seconds_bucket{pipeline=\"p \\\"q\\\"\",status=\"completed\",le=\"+Inf\"} 1\n\
reins_run_duration_seconds_sum{pipeline=\"p \\\"q\\\"\",status=\"completed\"} 0.42\n\
reins_run_duration_seconds_count{pipeline=\"p \\\"q\\\"\",status=\"completed\"} 1\n\
reins_run_duration_seconds_bucket{pipeline=\"p\",status=\"completed\",le=\"60\"} 0\n\
reins_run_duration_seconds_bucket{pipeline=\"p\",status=\"completed\",le=\"+Inf\"} 1\n";
        let om = ex.openmetrics(text);
        let with: Vec<&str> = om.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(
            with,
            [
                "reins_run_duration_seconds_bucket{pipeline=\"p \\\"q\\\"\",status=\"completed\",le=\"0.5\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.42 1733400000.123",
                "reins_run_duration_seconds_bucket{pipeline=\"p\",status=\"completed\",le=\"+Inf\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 99 1.123",
            ]
        );
    }

    #[test]
    fn the_latest_exemplar_of_a_bucket_wins_and_bad_trace_ids_are_not_kept() {
        let ex = Exemplars::default();
        let labels = [("provider", "m")];
        ex.record_at(MODEL_LATENCY_SECONDS, &labels, 0.3, TRACE, at(1));
        ex.record_at(
            MODEL_LATENCY_SECONDS,
            &labels,
            0.4,
            "0af7651916cd43dd8448eb211c80319c",
            at(2),
        );
        ex.record_at(
            MODEL_LATENCY_SECONDS,
            &labels,
            0.45,
            "not-a-trace\"} 1",
            at(3),
        );
        ex.record_at(MODEL_LATENCY_SECONDS, &labels, 0.45, &"0".repeat(32), at(3));
        let snap = ex.snapshot();
        let slots =
            &snap[MODEL_LATENCY_SECONDS][&vec![("provider".to_owned(), "m".to_owned())]].slots;
        assert_eq!(slots.iter().flatten().count(), 1);
        assert_eq!(slots[6].as_ref().map(|e| e.value), Some(0.4));
    }

    #[test]
    fn series_are_capped_dropping_the_least_recently_updated() {
        let ex = Exemplars::default();
        for i in 0..MAX_SERIES + 10 {
            let p = format!("p{i}");
            ex.record_at(RUN_DURATION_SECONDS, &[("pipeline", &p)], 0.1, TRACE, at(1));
            if i == 0 {
                continue;
            }
            // p0 stays the most recently updated: it is never dropped.
            ex.record_at(
                RUN_DURATION_SECONDS,
                &[("pipeline", "p0")],
                0.1,
                TRACE,
                at(1),
            );
        }
        let store = ex.store.lock().unwrap_or_else(PoisonError::into_inner);
        let by_labels = &store.series[RUN_DURATION_SECONDS];
        assert_eq!(store.count, MAX_SERIES);
        assert_eq!(by_labels.len(), MAX_SERIES);
        assert!(by_labels.contains_key(&vec![("pipeline".to_owned(), "p0".to_owned())]));
        assert!(!by_labels.contains_key(&vec![("pipeline".to_owned(), "p1".to_owned())]));
    }

    #[test]
    fn labels_parse_with_escapes() {
        assert_eq!(
            parse_labels(r#"a="x\"y",b="1\\2",le="+Inf""#),
            Some(vec![
                ("a".into(), "x\"y".into()),
                ("b".into(), "1\\2".into()),
                ("le".into(), "+Inf".into())
            ])
        );
        assert_eq!(parse_labels(r#"a="x"b="y""#), None);
        assert_eq!(parse_labels(r#"a="x"#), None);
    }
}
