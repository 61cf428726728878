//! The degradation keys of `reins.toml`: an HTTP provider's timeouts,
//! retries and circuit breaker (shared by every HTTP kind), and a pipeline's
//! response cache and static degraded answer.
//!
//! ```toml
//! [providers.llm]
//! kind = "openai"
//! base_url = "http://127.0.0.1:8000/v1"
//! model = "m"
//! connect_timeout_ms = 2000
//! timeout_ms = 30000
//! max_retries = 2
//! backoff_ms = 250
//! max_backoff_ms = 10000
//! breaker = { failure_rate = 0.5, min_calls = 10, window_ms = 60000, cooldown_ms = 30000, probes = 1 }
//! max_in_flight = 64          # calls out at once (none: no limit)
//! adaptive = false            # learn the limit from 429s and timeouts
//! rpm = 3000                  # requests per minute (none: no limit)
//! tpm = 1000000               # tokens per minute (none: no limit)
//! queue_size = 256            # calls that may wait; past it, 429 at once
//! saturation_ms = 1000        # a 429 without Retry-After backs off this long
//! max_saturation_ms = 60000   # the longest Retry-After honoured
//!
//! [pipelines.p]
//! model = "llm"
//! fallbacks = ["backup"]
//! deadline_ms = 30000
//! on_saturated = "queue"      # or "fallback": skip a saturated provider
//! cache = "read-write"
//! cache_ttl_s = 3600
//! cache_max_entries = 1000
//! degraded = { answer = { risks = [] }, message = "The model is unavailable; this is a fixed answer." }
//! ```

use serde::Deserialize;
use serde_json::Value;

/// The keys every HTTP provider kind shares (`openai`, `anthropic`): how
/// one call is bounded, how failed calls are retried, and the breaker.
/// They sit in the provider's own table (flattened into it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HttpConfig {
    /// Time to establish a connection.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Total time of one request (connect, send, the whole response body).
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a retryable failure (connect error, broken connection,
    /// timeout, 408, 429, 5xx) with exponential backoff and full jitter; a
    /// `Retry-After` (or `retry-after-ms`) answer is waited for instead.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// The backoff before retry `n` is random in `[0, backoff_ms * 2^n]`.
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_ms: u64,
    /// The longest wait before a retry; a `Retry-After` longer than this is
    /// not waited for (the call fails and the pipeline falls back).
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// This provider's circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Calls out to this upstream at once; the rest wait in the queue.
    /// None (the default): no limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Learn the in-flight limit from the upstream's 429s and timeouts
    /// (AIMD: it starts at `max_in_flight`, drops by 10 % on a backpressure
    /// signal, and grows back by one per limit's worth of successes).
    #[serde(default)]
    pub adaptive: bool,
    /// Requests per minute sent upstream (none: no limit).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute: each call is counted before it goes, by its
    /// prompt's tokens plus its `max_tokens`, and corrected upward from the
    /// usage the upstream reports.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Calls that may wait for this provider (at its limits, or while it is
    /// saturated); past this a call is refused at once (HTTP 429).
    #[serde(default = "defaults::queue_size")]
    pub queue_size: u32,
    /// How long a 429 without `Retry-After` marks the provider saturated.
    #[serde(default = "defaults::saturation_ms")]
    pub saturation_ms: u64,
    /// The longest saturation a `Retry-After` can ask for.
    #[serde(default = "defaults::max_saturation_ms")]
    pub max_saturation_ms: u64,
}

/// A provider's circuit breaker: it opens when at least `failure_rate` of
/// the calls of the last `window_ms` failed (once there were `min_calls` of
/// them), refuses calls for `cooldown_ms`, then lets `probes` calls through;
/// if they all succeed it closes, if one fails it opens again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// `false`: never open (every call goes to the upstream).
    pub enabled: bool,
    /// Failed share of the window's calls that opens the breaker (0 < r ≤ 1).
    pub failure_rate: f64,
    /// Calls the window must hold before the rate counts.
    pub min_calls: u32,
    /// The sliding window, in ms.
    pub window_ms: u64,
    /// How long an open breaker refuses calls.
    pub cooldown_ms: u64,
    /// Half-open probes that must all succeed to close it again.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_rate: 0.5,
            min_calls: 10,
            window_ms: 60_000,
            cooldown_ms: 30_000,
            probes: 1,
        }
    }
}

/// What a pipeline's call does when its provider is saturated or at its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSaturated {
    /// Wait in the provider's queue, as long as the run's deadline allows.
    #[default]
    Queue,
    /// Go on to the next provider of the chain at once.
    Fallback,
}

/// What a pipeline does with the response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// No cache.
    #[default]
    Off,
    /// Serve cached answers when every provider is unavailable; store nothing.
    Read,
    /// The same, and store every validated output a provider produced.
    ReadWrite,
}

impl CacheMode {
    pub fn reads(self) -> bool {
        self != CacheMode::Off
    }

    pub fn writes(self) -> bool {
        self == CacheMode::ReadWrite
    }
}

/// The static answer served, after the providers and the cache, when
/// nothing else can answer. It is validated like any model answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradedConfig {
    /// The output document (any TOML value; a string is JSON text when it
    /// parses as a JSON object or array).
    pub answer: Value,
    /// What the caller is told about it (`RunResult::notice`).
    #[serde(default = "default_degraded_message")]
    pub message: String,
}

impl DegradedConfig {
    /// The answer as the text a model would have sent.
    pub fn answer_text(&self) -> String {
        match &self.answer {
            Value::String(s) => {
                let t = s.trim_start();
                if (t.starts_with('{') || t.starts_with('['))
                    && serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object() || v.is_array())
                {
                    s.clone()
                } else {
                    Value::String(s.clone()).to_string()
                }
            }
            other => other.to_string(),
        }
    }
}

/// The default user-facing message of a static degraded answer.
pub fn default_degraded_message() -> String {
    "The language model is unavailable right now, so this is a fixed fallback answer configured for this \
     pipeline, not an answer to your request. Please try again later."
        .to_owned()
}

pub(super) mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn timeout_ms() -> u64 {
        60_000
    }
    pub fn max_retries() -> u32 {
        2
    }
    pub fn backoff_ms() -> u64 {
        250
    }
    pub fn max_backoff_ms() -> u64 {
        10_000
    }
    pub fn queue_size() -> u32 {
        256
    }
    pub fn saturation_ms() -> u64 {
        1_000
    }
    pub fn max_saturation_ms() -> u64 {
        60_000
    }
    /// Under `[server] request_timeout_ms` (60 s by default), so that a run
    /// whose providers hang still gets to its cache and static answer
    /// before the server gives up on the request.
    pub fn deadline_ms() -> u64 {
        50_000
    }
    pub fn cache_ttl_s() -> u64 {
        3_600
    }
    pub fn cache_max_entries() -> usize {
        1_000
    }
}

/// Checks of the degradation keys; `Err((key, message))`.
pub(super) fn check_breaker(b: &BreakerConfig) -> Result<(), (&'static str, &'static str)> {
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err(("breaker.failure_rate", "must be in (0, 1]"));
    }
    if b.min_calls == 0 {
        return Err(("breaker.min_calls", "must be at least 1"));
    }
    if b.window_ms == 0 {
        return Err(("breaker.window_ms", "must be at least 1"));
    }
    if b.probes == 0 {
        return Err(("breaker.probes", "must be at least 1"));
    }
    Ok(())
}

/// Checks of a provider's limits and queue; `Err((key, message))`.
pub(super) fn check_limits(h: &HttpConfig) -> Result<(), (&'static str, &'static str)> {
    if h.max_in_flight == Some(0) {
        return Err((
            "max_in_flight",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    if h.adaptive && h.max_in_flight.is_none() {
        return Err((
            "adaptive",
            "needs max_in_flight, the limit it starts from and never exceeds",
        ));
    }
    if h.rpm == Some(0) {
        return Err(("rpm", "must be at least 1 (leave it out for no limit)"));
    }
    if h.tpm == Some(0) {
        return Err(("tpm", "must be at least 1 (leave it out for no limit)"));
    }
    if h.saturation_ms == 0 || h.max_saturation_ms == 0 {
        return Err((
            "saturation_ms",
            "saturation_ms and max_saturation_ms must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProviderConfig};
    use serde_json::json;

    #[test]
    fn the_degradation_keys_parse_with_their_defaults() {
        let c = Config::parse(
            r#"
plugins_dir = "p"
[providers.llm]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"
connect_timeout_ms = 250
max_backoff_ms = 900
breaker = { failure_rate = 0.25, min_calls = 3, probes = 2 }
[providers.plain]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"
[pipelines.p]
model = "llm"
fallbacks = ["plain"]
deadline_ms = 1500
cache = "read-write"
cache_ttl_s = 60
degraded = { answer = { ok = false } }
[pipelines.q]
model = "plain"
"#,
            "reins.toml",
            ".",
        )
        .unwrap();
        let ProviderConfig::Openai(llm) = &c.providers["llm"] else {
            panic!("openai")
        };
        let llm = &llm.http;
        assert_eq!(
            (llm.connect_timeout_ms, llm.max_backoff_ms, llm.timeout_ms),
            (250, 900, 60_000)
        );
        assert_eq!(
            (
                llm.breaker.failure_rate,
                llm.breaker.min_calls,
                llm.breaker.probes
            ),
            (0.25, 3, 2)
        );
        assert_eq!(
            llm.breaker.cooldown_ms,
            BreakerConfig::default().cooldown_ms
        );
        let ProviderConfig::Openai(plain) = &c.providers["plain"] else {
            panic!("openai")
        };
        assert_eq!(plain.http.breaker, BreakerConfig::default());
        let p = &c.pipelines["p"];
        assert_eq!(
            (p.deadline_ms, p.cache, p.cache_ttl_s, p.cache_max_entries),
            (1500, CacheMode::ReadWrite, 60, 1000)
        );
        let degraded = p.degraded.as_ref().unwrap();
        assert_eq!(degraded.answer_text(), r#"{"ok":false}"#);
        assert_eq!(degraded.message, default_degraded_message());
        let q = &c.pipelines["q"];
        assert_eq!(
            (q.deadline_ms, q.cache, q.degraded.is_none()),
            (50_000, CacheMode::Off, true)
        );
    }

    #[test]
    fn degraded_answers_are_json_text() {
        let d = |answer: Value| DegradedConfig {
            answer,
            message: default_degraded_message(),
        };
        assert_eq!(d(json!({"a": 1})).answer_text(), r#"{"a":1}"#);
        assert_eq!(d(json!("{\"a\": 1}")).answer_text(), "{\"a\": 1}");
        assert_eq!(d(json!("sorry")).answer_text(), "\"sorry\"");
        assert_eq!(d(json!("{not json")).answer_text(), "\"{not json\"");
    }
}
