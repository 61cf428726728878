//! Typed failures of the runtime: loading (a plugin refused) and calling (a
//! call that did not produce a usable answer).

use super::types::Layer;
use std::path::PathBuf;

/// A failure to build the engine or to load a plugin file.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("engine: {message}")]
    Engine { message: String },
    #[error("cannot read plugins directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a WebAssembly component: {message}")]
    NotAComponent { message: String },
    #[error("does not compile: {message}")]
    Compile { message: String },
    #[error("exports no Reins world (expected one of {expected}); it exports: {found}")]
    UnknownWorld { expected: String, found: String },
    #[error("exports more than one layer: {found}")]
    AmbiguousWorld { found: String },
    #[error("manifest says layer {declared} but the component exports {detected}")]
    LayerMismatch { declared: Layer, detected: Layer },
    #[error("imports {import}, which the host does not provide")]
    Link { import: String },
    #[error("sha256 pin mismatch: manifest pins {pinned}, file is {actual}")]
    PinMismatch { pinned: String, actual: String },
    /// The plugin's own `init` failed at load (returned `err`, trapped, ran
    /// out of fuel or time): the plugin is refused with its message.
    #[error("{path}: init {cause}")]
    Init { path: PathBuf, cause: CallFailure },
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
}

/// Why one plugin call failed. Always wrapped in [`PluginError`], which says
/// which plugin (and which build of it) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("exceeded its deadline of {deadline_ms} ms")]
    Timeout { deadline_ms: u64 },
    #[error("ran out of fuel ({fuel} units)")]
    OutOfFuel { fuel: u64 },
    #[error("hit its memory limit of {limit_mib} MiB")]
    MemoryLimit { limit_mib: u64 },
    #[error("trapped: {message}")]
    Trap { message: String },
    #[error("returned an error: {message}")]
    Refused { message: String },
    #[error("returned a malformed result: {message}")]
    Malformed { message: String },
    #[error("could not be instantiated: {message}")]
    Instantiate { message: String },
    #[error("is a {actual} plugin, not a {expected}")]
    WrongLayer { expected: Layer, actual: Layer },
}

impl CallFailure {
    /// A stable short name for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Timeout { .. } => "timeout",
            CallFailure::OutOfFuel { .. } => "out_of_fuel",
            CallFailure::MemoryLimit { .. } => "memory_limit",
            CallFailure::Trap { .. } => "trap",
            CallFailure::Refused { .. } => "refused",
            CallFailure::Malformed { .. } => "malformed",
            CallFailure::Instantiate { .. } => "instantiate",
            CallFailure::WrongLayer { .. } => "wrong_layer",
        }
    }
}

/// A failed plugin call, naming the plugin, its digest and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} (sha256 {short}) {cause}", short = short_digest(digest))]
pub struct PluginError {
    pub plugin: String,
    pub digest: String,
    pub cause: CallFailure,
}

impl PluginError {
    /// A stable short name of the cause, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        self.cause.kind()
    }
}

/// The first 12 hex digits: enough to tell builds apart in a log line.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
