//! Reins: a harness that contains a language model.
//!
//! This crate is the composition root: the `reins` binary (CLI, plugin
//! scaffolding and builds, the case runner) and the one place that reads a
//! whole `reins.toml`, handing each crate its section. Nothing depends on it.
//! The layers it composes, lowest first:
//!
//! - [`runtime`] (`reins-runtime`): the wasmtime host and the plugins directory;
//! - [`state`] (`reins-state`): the durable store, SQLite or PostgreSQL;
//! - [`Host`], [`pipeline`], [`provider`], [`config`] (`reins-core`): the harness;
//! - [`server`] (`reins-server`): the HTTP surfaces.
//!
//! See `docs/ARCHITECTURE.md` for the request path through them.

pub use reins_context as context;
pub use reins_core::{
    ConfigStatus, Host, HostBuilder, Live, ReloadError, ReloadOutcome, ResumeError, approvals,
    config, limits, pipeline, provider, retrieval, tokens,
};
pub use reins_runtime as runtime;
pub use reins_server as server;
pub use reins_state as state;

pub mod cases;
pub mod cli;
pub mod profile;
pub mod telemetry;
