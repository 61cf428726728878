//! Every metric name Reins emits, with its labels.
//!
//! Dashboards, alerts and tests match these names byte for byte, so they are
//! spelt once, here, in the crate every other crate depends on; call sites
//! use the constants, never a literal. Renaming one is a breaking change.

// Plugins (reins-runtime).

/// Histogram `{plugin, layer, digest}`: seconds one plugin call took, instantiation included.
pub const PLUGIN_CALL_SECONDS: &str = "reins_plugin_call_seconds";
/// Counter `{plugin, digest, kind}`: plugin calls that trapped, timed out or errored.
pub const PLUGIN_FAILURES_TOTAL: &str = "reins_plugin_failures_total";
/// Counter: plugin files a reload refused (each refusal counted once, not on every rescan).
pub const PLUGIN_REFUSED_TOTAL: &str = "reins_plugin_refused_total";
/// Counter: reloads that changed the serving plugin set.
pub const PLUGIN_SWAPS_TOTAL: &str = "reins_plugin_swaps_total";
/// Gauge: reloads that changed the plugin set since start (set on each scrape).
pub const PLUGIN_RELOADS: &str = "reins_plugin_reloads";
/// Gauge: plugin files refused by reloads since start (set on each scrape).
pub const PLUGIN_REFUSED_RELOADS: &str = "reins_plugin_refused_reloads";
/// Gauge: plugins serving now (set on each scrape).
pub const PLUGINS_LOADED: &str = "reins_plugins_loaded";
/// Gauge `{plugin, key}`: a host counter a gate keeps (a budget, e.g. `spend-limit`'s
/// `spend:<tenant>` in cents) after its latest change, in the plugin's own unit: the
/// total over the counter's window (as of that change), or the running total. Set
/// on every `counter-add` and every release of a reservation. Only the first
/// [`crate::METERED_KEYS_PER_PLUGIN`] keys of each plugin become series
/// (keys are the plugin's choice). With counters shared by nodes (`[state]`), each
/// node reports the shared total as of its own latest change: read it with `max`.
pub const BUDGET_USED: &str = "reins_budget_used";

// Providers and degradation (reins-core).

/// Gauge `{provider}`: the circuit breaker, 0 closed, 1 half-open, 2 open; set on each
/// transition and refreshed by `GET /v1/providers`.
pub const BREAKER_STATE: &str = "reins_breaker_state";
/// Counter `{provider}`: times the breaker opened.
pub const BREAKER_TRIPS_TOTAL: &str = "reins_breaker_trips_total";
/// Counter `{provider}`: calls an open breaker refused without asking the provider.
pub const BREAKER_REJECTIONS_TOTAL: &str = "reins_breaker_rejections_total";
/// Counter `{provider}`: times the upstream pushed back (429, or 503 with
/// `Retry-After`) and the provider became saturated.
pub const PROVIDER_SATURATIONS_TOTAL: &str = "reins_provider_saturations_total";
/// Gauge `{provider}`: 1 while the provider is saturated (calls wait or fall back).
pub const PROVIDER_SATURATED: &str = "reins_provider_saturated";
/// Counter `{provider, reason}`: calls refused before being sent
/// (`saturated`, `queue_full`, `past_deadline`).
pub const PROVIDER_SHED_TOTAL: &str = "reins_provider_shed_total";
/// Gauge `{provider}`: calls out to the upstream now.
pub const PROVIDER_IN_FLIGHT: &str = "reins_provider_in_flight";
/// Gauge `{provider}`: calls waiting in the provider's queue.
pub const PROVIDER_QUEUED: &str = "reins_provider_queued";
/// Counter `{provider, outcome}`: model calls by outcome (`ok` or the error's kind).
pub const PROVIDER_CALLS_TOTAL: &str = "reins_provider_calls_total";
/// Counter `{provider, reason}`: model calls retried, by the error that caused the retry.
pub const PROVIDER_RETRIES_TOTAL: &str = "reins_provider_retries_total";
/// Counter `{provider, to}`: times an upstream refused a structured-output format and the
/// provider fell back to a simpler one.
pub const PROVIDER_FORMAT_DOWNGRADES_TOTAL: &str = "reins_provider_format_downgrades_total";
/// Counter `{pipeline, step}`: answers served by a fallback (a fallback provider, `cache`
/// or `static`).
pub const FALLBACK_USES_TOTAL: &str = "reins_fallback_uses_total";
/// Counter `{pipeline}`: degradation cache hits.
pub const CACHE_HITS_TOTAL: &str = "reins_cache_hits_total";
/// Counter `{pipeline}`: degradation cache misses.
pub const CACHE_MISSES_TOTAL: &str = "reins_cache_misses_total";
/// Counter `{pipeline}`: answers written to the degradation cache.
pub const CACHE_WRITES_TOTAL: &str = "reins_cache_writes_total";

// Durability (reins-core).

/// Counter `{kind, ok}`: checkpoints written (or not) to the state store.
pub const CHECKPOINTS_TOTAL: &str = "reins_checkpoints_total";
/// Counter `{pipeline, from}`: interrupted runs this node took over (`from` = `self` or `other`).
pub const RUNS_TAKEN_OVER_TOTAL: &str = "reins_runs_taken_over_total";
/// Counter: leases this node lost to another node.
pub const LEASES_LOST_TOTAL: &str = "reins_leases_lost_total";
/// Counter `{pipeline}`: runs cancelled because their client went away
/// before the answer (status `cancelled`; also in `reins_requests_total`).
pub const RUNS_CANCELLED_TOTAL: &str = "reins_runs_cancelled_total";

// Runs over HTTP (reins-server).

/// Counter `{pipeline, status}`: runs by final status (`cancelled` included),
/// counted by the run's own task when it ends, whether or not its client still
/// waits; and `timeout` for each answer the request deadline cut short.
pub const REQUESTS_TOTAL: &str = "reins_requests_total";
/// Counter `{pipeline, kind}`: runs that ended with an error, by the error's kind.
pub const RUN_ERRORS_TOTAL: &str = "reins_run_errors_total";
/// Counter `{pipeline}`: attempts that failed validation.
pub const VALIDATION_FAILURES_TOTAL: &str = "reins_validation_failures_total";
/// Counter `{pipeline, plugin}`: attempts that failed validation, by what failed them:
/// +1 per attempt for each source with at least one blocking (`error`) violation —
/// a validator or gate plugin's name, or the host's own checks `json`, `schema`,
/// `constraints`. Summed over `plugin` it is at least `reins_validation_failures_total`.
pub const PLUGIN_VIOLATIONS_TOTAL: &str = "reins_plugin_violations_total";
/// Counter `{pipeline}`: repair attempts (every model call after the first).
pub const REPAIR_ATTEMPTS_TOTAL: &str = "reins_repair_attempts_total";
/// Histogram `{pipeline}`: repair attempts per run.
pub const REPAIR_ATTEMPTS_PER_RUN: &str = "reins_repair_attempts_per_run";
/// Counter `{pipeline}`: runs that completed after at least one repair.
pub const REPAIR_SUCCESSES_TOTAL: &str = "reins_repair_successes_total";
/// Histogram `{provider}`: seconds one model call took.
pub const MODEL_LATENCY_SECONDS: &str = "reins_model_latency_seconds";
/// Histogram `{pipeline, status}`: seconds one run took, from start to its
/// final status; its buckets carry the runs' trace ids as exemplars.
pub const RUN_DURATION_SECONDS: &str = "reins_run_duration_seconds";
/// Counter `{gate, decision}`: gate decisions on proposed actions.
pub const GATE_DECISIONS_TOTAL: &str = "reins_gate_decisions_total";
/// Counter `{decision}`: approvals decided (`approve` or `reject`).
pub const APPROVALS_DECIDED_TOTAL: &str = "reins_approvals_decided_total";
/// Gauge `{pipeline}`: approvals waiting for a human, counted in the state store
/// (so right after a restart, and the same on every node sharing the store: read
/// it with `max`, not `sum`); recounted every few seconds by `reins serve`.
pub const APPROVALS_PENDING: &str = "reins_approvals_pending";
/// Counter: `401` answers held back because their client address failed
/// authentication too often (`x-reins-auth-slowed: true` on each).
pub const AUTH_FAILURES_SLOWED_TOTAL: &str = "reins_auth_failures_slowed_total";
/// Counter `{header}`: requests refused because `Host` or `Origin` is not allowed
/// (`host`, `origin`).
pub const REQUESTS_REFUSED_TOTAL: &str = "reins_requests_refused_total";
/// Counter `{surface}`: requests refused with `429` because the in-flight
/// memory budget (`[server] inflight_memory_bytes`) could not take their
/// reservation (`openai`, `anthropic`, `native`).
pub const INFLIGHT_REFUSED_TOTAL: &str = "reins_inflight_refused_total";
/// Gauge: bytes of the in-flight memory budget reserved by requests now being served.
pub const INFLIGHT_RESERVED_BYTES: &str = "reins_inflight_reserved_bytes";
/// Counter `{reason}`: connections closed at accept, before a byte was read
/// (`max_connections`, `max_connections_per_ip`).
pub const CONNECTIONS_REFUSED_TOTAL: &str = "reins_connections_refused_total";
/// Counter `{reason}`: connections the server closed early (`header_timeout`,
/// `body_timeout`, `idle_timeout`, `header_too_large`, `tls_handshake`,
/// `evicted`: an idle one from the busiest address, to make room at
/// `max_connections`).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "reins_connections_closed_total";
/// Gauge: connections open now.
pub const CONNECTIONS_OPEN: &str = "reins_connections_open";
/// Counter: `accept` failures (e.g. out of file descriptors), each followed by a short back-off.
pub const ACCEPT_ERRORS_TOTAL: &str = "reins_accept_errors_total";

// Configuration (reins-core).

/// Counter `{outcome}`: reloads of `reins.toml` that swapped in a new config (`ok`) or were refused (`refused`).
pub const CONFIG_RELOADS_TOTAL: &str = "reins_config_reloads_total";
/// Gauge: the serving configuration's version (1 at start, +1 per reload that changed it).
pub const CONFIG_VERSION: &str = "reins_config_version";
/// Gauge: 1 while the latest reload was refused (the previous config serves), else 0.
pub const CONFIG_RELOAD_FAILING: &str = "reins_config_reload_failing";

/// MCP `tools/call`s through the gateway, by pipeline and run status.
pub const MCP_CALLS_TOTAL: &str = "reins_mcp_calls_total";
/// Upstream MCP tools hidden because their definition changed since it was
/// pinned, by server (counted per listing that hid one).
pub const MCP_TOOLS_HIDDEN_TOTAL: &str = "reins_mcp_tools_hidden_total";
/// Streams a stream checker (or the schema's prefix check) cut, by pipeline and checker.
pub const STREAM_CUTS_TOTAL: &str = "reins_stream_cuts_total";
