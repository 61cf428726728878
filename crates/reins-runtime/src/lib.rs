//! The plugin runtime: a wasmtime component host that runs harness layers as
//! sandboxed components and swaps them while it serves.
//!
//! - [`Runtime`]: the engine (pooling allocator, epoch deadlines, compile
//!   cache) and the linker with what plugins may import.
//! - [`Plugin`]: one loaded component and its calls, under its manifest's
//!   limits and isolation mode.
//! - [`PluginSet`] / [`PluginHost`]: a directory of plugins, hot-reloaded as
//!   an atomic snapshot.
//! - [`Tokenizer`]: token counts in the tokenizer family of a model (the
//!   `count-tokens` import, and the pipeline's own budgets).
//! - [`metric_names`]: every metric any Reins crate emits.

mod bindings;
mod counters;
mod engine;
mod error;
mod host;
mod init;
mod loader;
mod manifest;
pub mod metric_names;
mod plugin;
mod settings;
mod state;
mod tokens;
pub mod types;
mod variant;

pub use counters::{CounterStore, METERED_KEYS_PER_PLUGIN, MemoryCounters, Window};
pub use engine::{CompileStats, EngineHandle, digest};
pub use error::{CallFailure, PluginError, RuntimeError, short_digest};
pub use host::{PluginHost, ReloadReport, Unconfigured};
pub use loader::{Cold, PluginSet, PluginStatus, Runtime, plugin_name};
pub use manifest::{Accepts, FailMode, Grants, Isolation, Limits, Manifest, ManifestError};
pub use plugin::{Plugin, PluginInfo, RELEASED_TAIL, Reservation, now_ms};
pub use settings::{Allocator, InitMode, PoolSettings, RuntimeSettings};
pub use state::CounterEntry;
pub use tokens::Tokenizer;
pub use types::*;
pub use variant::Variant;
