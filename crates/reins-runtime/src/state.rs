//! What a wasmtime `Store` carries for one plugin instance, and the host
//! imports (`log`, `counter-add`, `count-tokens`, ...) plugins call.

use super::bindings::{host_iface, judge_iface, wit_types};
use super::counters::CounterStore;
use super::manifest::Grants;
use super::tokens::Tokenizer;
use super::types::{Dropped, MAX_DROP_ID, MAX_DROP_REASON, MAX_DROPPED};
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
    /// What `count-tokens` counts with during the current call.
    pub(crate) tokenizer: Tokenizer,
    /// What `context-chunks` answers during the current call (JSON text).
    pub(crate) context_chunks: Arc<str>,
    /// Whether `explain-drop` is heard: only during an `assemble` call.
    pub(crate) explaining: bool,
    /// What `explain-drop` said during the current call (cleared at its start).
    pub(crate) dropped: Vec<Dropped>,
    /// `explain-drop`s of the current call past [`MAX_DROPPED`], not kept.
    pub(crate) drops_ignored: usize,
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
            tokenizer: Tokenizer::default(),
            context_chunks: Arc::from("[]"),
            explaining: false,
            dropped: Vec::new(),
            drops_ignored: 0,
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

    fn count_tokens(&mut self, text: String) -> u32 {
        // A host call is not interrupted at the deadline: past it, the
        // count of what is left is estimated (see `Tokenizer::count_within`).
        let n = self.tokenizer.count_within(&text, self.call_deadline);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn context_chunks(&mut self) -> String {
        self.context_chunks.to_string()
    }

    fn explain_drop(&mut self, chunk_id: String, reason: String) {
        if !self.explaining {
            return;
        }
        if self.dropped.len() >= MAX_DROPPED {
            self.drops_ignored += 1;
            return;
        }
        self.dropped.push(Dropped {
            id: truncate(&chunk_id, MAX_DROP_ID).to_owned(),
            reason: truncate(&reason, MAX_DROP_REASON).to_owned(),
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::MemoryCounters;
    use host_iface::Host as _;

    fn state() -> StoreState {
        StoreState::new(
            Arc::from("p"),
            &Grants::default(),
            1 << 20,
            Arc::new(MemoryCounters::default()),
        )
    }

    #[test]
    fn count_tokens_uses_the_calls_tokenizer() {
        let mut s = state();
        let text = "internationalization considerations".to_string();
        assert_eq!(
            s.count_tokens(text.clone()) as usize,
            Tokenizer::O200k.count(&text)
        );
        s.tokenizer = Tokenizer::Heuristic;
        assert_eq!(s.count_tokens(text), 9);
        assert_eq!(s.count_tokens(String::new()), 0);
    }

    #[test]
    fn context_chunks_answers_what_the_call_was_given() {
        let mut s = state();
        assert_eq!(s.context_chunks(), "[]");
        s.context_chunks = Arc::from(r#"[{"id":"a#1","source":"a","score":1.0,"kept":true}]"#);
        assert!(s.context_chunks().contains("\"kept\":true"));
    }

    #[test]
    fn explain_drop_is_heard_only_in_assemble_and_capped() {
        let mut s = state();
        s.explain_drop("a".into(), "outside assemble".into());
        assert!(s.dropped.is_empty());
        s.explaining = true;
        s.explain_drop("é".repeat(300), "ü".repeat(400));
        assert_eq!(s.dropped[0].id.len(), 256);
        assert_eq!(s.dropped[0].reason.len(), 512);
        for i in 0..MAX_DROPPED + 5 {
            s.explain_drop(format!("c{i}"), "over budget".into());
        }
        assert_eq!(s.dropped.len(), MAX_DROPPED);
        assert_eq!(s.drops_ignored, 6);
    }
}
