//! Reins: a harness that contains a language model.
//!
//! Every layer of the harness (normalizers, context builders, constraint
//! manifests, validators, gates) is a sandboxed WebAssembly component loaded
//! from a plugins directory and swapped while the host serves. See
//! `docs/ARCHITECTURE.md` for the request path and how the modules divide it.

pub mod runtime;
pub mod approvals;
pub mod limits;
pub mod server;
pub mod cases;
pub mod cli;
pub mod config;
pub mod pipeline;
pub mod provider;
pub mod state;
pub mod tokens;
mod host;
pub use host::{Host, HostBuilder, ResumeError};
