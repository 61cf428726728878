//! The `[runtime]` section of `reins.toml`: how the engine is sized.

use serde::Deserialize;
use std::path::PathBuf;

/// Engine-wide settings. Per-plugin limits live in each plugin's manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Where compiled components are cached (keyed by content hash and engine
    /// configuration). `None` uses `$XDG_CACHE_HOME/reins` or `~/.cache/reins`.
    pub cache_dir: Option<PathBuf>,
    /// Period of the epoch ticker that enforces wall deadlines. A plugin's
    /// deadline is rounded up to whole ticks.
    pub epoch_tick_ms: u64,
    /// `pooling` (default) pre-reserves instance slots so a fresh instance per
    /// call is cheap; `on-demand` maps memory per instance.
    pub allocator: Allocator,
    pub pool: PoolSettings,
    /// Debounce for the plugins-directory watcher.
    pub reload_debounce_ms: u64,
    /// What the host does with a plugin that exports `init`: `snapshot`
    /// (default) runs it once at load and serves a snapshot of the
    /// initialized instance; `per-instance` runs it on every fresh instance;
    /// `off` never calls it (the plugin sets itself up lazily per call).
    pub init: InitMode,
}

/// How plugins that export `init` are initialized (see [`RuntimeSettings::init`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitMode {
    #[default]
    Snapshot,
    PerInstance,
    Off,
}

impl InitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InitMode::Snapshot => "snapshot",
            InitMode::PerInstance => "per-instance",
            InitMode::Off => "off",
        }
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick_ms: 1,
            allocator: Allocator::Pooling,
            pool: PoolSettings::default(),
            reload_debounce_ms: 50,
            init: InitMode::Snapshot,
        }
    }
}

/// Which instance allocator backs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// Sizing of the pooling allocator. Every slot reserves address space, not
/// memory, so generous numbers are cheap; `max_memory_mib` caps what any
/// single plugin's `memory_mib` may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// Component instances alive at once (concurrent calls plus pooled idle ones).
    pub instances: u32,
    /// Largest linear memory a plugin may grow to, in MiB.
    pub max_memory_mib: u64,
    /// Bytes of each memory slot reset with `memset` (kept resident) instead
    /// of being returned to the kernel: a fresh instance then takes no page
    /// faults for its first KiBs. Costs this much RSS per warm slot.
    pub keep_resident_kib: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            instances: 256,
            max_memory_mib: 256,
            keep_resident_kib: 1024,
        }
    }
}

impl RuntimeSettings {
    /// The cache directory to use when none is configured.
    pub fn resolved_cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("reins");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".cache").join("reins");
        }
        std::env::temp_dir().join("reins-cache")
    }
}
