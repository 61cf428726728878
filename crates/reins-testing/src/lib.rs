//! Test helpers shared by the integration tests and benches of `reins`.
//!
//! Each concept the tests need has one owner here, so a fix to the fake
//! model or the webhook sink reaches every test at once instead of one of
//! five copies:
//!
//! - [`plugins`]: the guest plugins, built once per test binary, and
//!   plugin directories laid out from them;
//! - [`model`]: fake models, an OpenAI-compatible server on loopback that
//!   plays a script and records what it was sent, and an in-process agent;
//! - [`busy`]: an upstream with a capacity that answers 429 past it;
//! - [`webhook`]: a sink for webhook executors that records every delivery
//!   and counts idempotency keys;
//! - [`otlp`]: an OpenTelemetry collector stand-in (OTLP/HTTP and gRPC)
//!   that records the spans and metrics real exporters send;
//! - [`config`]: a small builder for `reins.toml` text;
//! - [`server`]: loopback listeners, `reins serve` child processes and
//!   one-shot calls to the HTTP router;
//! - [`pg`]: the test PostgreSQL cluster and fresh databases on it;
//! - [`bench`]: what the benches print in their tables.
//!
//! Helpers panic on failure: they serve tests, where a panic with a message
//! is the clearest report.

pub mod bench;
pub mod busy;
pub mod config;
pub mod model;
pub mod otlp;
pub mod pg;
pub mod plugins;
pub mod server;
pub mod webhook;
