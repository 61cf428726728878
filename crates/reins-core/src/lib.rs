//! The Reins harness as a library.
//!
//! A [`Host`] composes plugins (from `reins-runtime`), model providers,
//! compiled pipelines and a durable store (from `reins-state`), and runs
//! requests through them: normalize, context, constraints, the attempt loop
//! with repair, validate, gate, execute. It has no HTTP surface and no CLI
//! (those are `reins-server` and the `reins` binary), so an embedder that only
//! wants the library compiles neither axum nor clap; with
//! `default-features = false, features = ["sqlite"]` it compiles no sqlx
//! either. See `docs/ARCHITECTURE.md` for the request path.

pub mod approvals;
pub mod config;
mod host;
pub mod identity;
pub mod limits;
pub mod mcp;
pub mod pipeline;
pub mod provider;
pub mod retrieval;
pub mod telemetry;
pub mod tokens;
pub use host::{
    ConfigStatus, Host, HostBuilder, Live, ReloadError, ReloadFailure, ReloadOutcome, ResumeError,
};
