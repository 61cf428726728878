//! What a wasmtime `Store` carries for one plugin instance, and the host
//! imports (`log`, `counter-add`) plugins call.

use super::bindings::{host_iface, judge_iface, wit_types};
use super::counters::CounterStore;
use super::manifest::Grants;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{Deterministic, FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

const SEED: [u8; 8] = *b"reins\x00\x01\x02";

/// Per-store state: a WASI context with only what the manifest grants, the
/// memory limiter, and the host services.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    plugin: Arc<str>,
    counters: Arc<dyn CounterStore>,
    /// Every `counter-add` of the current call, so the host can release a
    /// reservation whose action never happened.
    pub(crate) journal: Vec<CounterEntry>,
    /// What `request-text` answers during the current call.
    pub(crate) request_text: Arc<str>,
    /// What `upstream-tools` answers during the current call (JSON text).
    pub(crate) upstream_tools: Arc<str>,
    /// Who `judge.ask` asks during the current call (none: not granted).
    pub(crate) judge: Option<super::types::JudgeHandle>,
    /// When the current call's deadline passes (a judge must answer before).
    pub(crate) call_deadline: Option<std::time::Instant>,
}

/// One `counter-add` a plugin made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterEntry {
    pub key: String,
    pub delta: i64,
    pub window_seconds: u32,
}

impl StoreState {
    pub fn new(
        plugin: Arc<str>,
        grants: &Grants,
        memory_bytes: usize,
        counters: Arc<dyn CounterStore>,
    ) -> Self {
        Self {
            wasi: wasi_ctx(grants),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            plugin,
            counters,
            journal: Vec::new(),
            request_text: Arc::from(""),
            upstream_tools: Arc::from("[]"),
            judge: None,
            call_deadline: None,
        }
    }
}

fn wasi_ctx(grants: &Grants) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    if !grants.clock {
        b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    if !grants.random {
        // A fixed sequence: a language runtime that seeds its hash maps still
        // starts, deterministically.
        b.secure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random_seed(0);
    }
    if grants.stdio {
        b.inherit_stdout().inherit_stderr();
    }
    if grants.network {
        b.inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    } else {
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
    }
    for (k, v) in &grants.env {
        b.env(k, v);
    }
    for (guest, host) in &grants.dirs {
        if let Err(e) = b.preopened_dir(host, guest, FsPerms::ReadOnly) {
            tracing::warn!(dir = %host.display(), error = %e, "cannot grant directory");
        }
    }
    b.build()
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for StoreState {}

impl host_iface::Host for StoreState {
    fn log(&mut self, level: host_iface::Level, message: String) {
        let plugin = &*self.plugin;
        // Plugins are untrusted: cap what one log line can cost.
        let message = truncate(&message, 4096);
        match level {
            host_iface::Level::Trace => tracing::trace!(plugin, "{message}"),
            host_iface::Level::Debug => tracing::debug!(plugin, "{message}"),
            host_iface::Level::Info => tracing::info!(plugin, "{message}"),
            host_iface::Level::Warn => tracing::warn!(plugin, "{message}"),
            host_iface::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, key: String, delta: i64, window_seconds: u32) -> i64 {
        let window = (window_seconds > 0).then(|| Duration::from_secs(u64::from(window_seconds)));
        let total = self.counters.add(&self.plugin, &key, delta, window);
        self.journal.push(CounterEntry {
            key,
            delta,
            window_seconds,
        });
        total
    }

    fn request_text(&mut self) -> String {
        self.request_text.to_string()
    }

    fn upstream_tools(&mut self) -> String {
        self.upstream_tools.to_string()
    }
}

impl judge_iface::Host for StoreState {
    fn ask(&mut self, system: String, question: String) -> Result<String, String> {
        match &self.judge {
            Some(judge) => {
                let within = self.call_deadline.map_or(Duration::from_secs(60), |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                });
                judge.0.ask(&system, &question, within)
            }
            None => Err(format!(
                "plugin `{}` asked the judge, but this pipeline grants none: set judge = {{ provider = \"…\" }} on the pipeline",
                self.plugin
            )),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A clock stopped at the Unix epoch: plugins without the `clock` grant are
/// deterministic and cannot time side channels.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
