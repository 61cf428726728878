//! Write [Reins](../../README.md) policy plugins in Rust.
//!
//! A Reins plugin is a WebAssembly component that exports exactly one layer
//! interface of the `reins:policy` WIT package (`wit/reins.wit`). This crate
//! wraps the `wit-bindgen` bindings of that package so that a plugin is one
//! short file:
//!
//! ```ignore
//! use reins_sdk::{CallContext, Violation, validator::{Guest, Verdict}};
//!
//! struct NoEmpty;
//! impl Guest for NoEmpty {
//!     fn validate(_ctx: CallContext, output: String) -> Result<Verdict, String> {
//!         let doc = reins_sdk::parse_output(&output)?;
//!         Ok(if doc.is_null() {
//!             Verdict::new(vec![Violation::error("", "empty", "the answer must not be null")])
//!         } else {
//!             Verdict::ok()
//!         })
//!     }
//! }
//! reins_sdk::export_validator!(NoEmpty);
//! ```
//!
//! Enable the feature of the world the plugin implements (`normalizer`,
//! `validator`, `constraints`, `gate`, `context`, `stream-checker`); only
//! enabled worlds are compiled. A plugin that is a layer *and* a stream
//! checker (a validator that also checks answers while they stream) enables
//! both features and invokes both macros: `export_validator!(X)` and
//! `export_stream_checker!(X)`. A component's exports come only from the
//! `export_*!` macros it invokes: the bindings here are generated with
//! `pub_export_macro`, so the description of a world's *exports* is emitted
//! by that macro inside the plugin crate, and this crate carries only import
//! descriptions (which `wit-component` drops when unused). So even where
//! cargo unifies features (a workspace building many plugins at once
//! compiles this crate with every world), each plugin claims exactly its
//! own layer.
//!
//! Values that are documents (`output`, `config`, `metadata`, tool
//! `parameters`, gate `arguments`) travel as JSON text, so this crate gives
//! helpers to parse them with `serde_json` and to build JSON Pointers into
//! them ([`pointer`]).

// Lets the generated bindings and the export macros name this crate the same
// way from inside it and from a plugin crate.
extern crate self as reins_sdk;

pub mod pointer;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use serde;
pub use serde_json;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// The bindings of what every world shares: the `types` interface and the
/// `host` imports. Generated once so that `Violation`, `CallContext`, ... are
/// one Rust type whichever world a plugin implements, and so the helpers
/// below work for every layer.
#[doc(hidden)]
pub mod shared {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "host-imports",
        generate_unused_types: true,
        additional_derives: [PartialEq],
        runtime_path: "reins_sdk::__private::wit_bindgen::rt",
    });
}

pub use shared::reins::policy::host::Level;
pub use shared::reins::policy::types::{
    Access, CallContext, Caller, Json, Message, Severity, Violation,
};

/// Write `message` to the host's structured log, tagged with the plugin's name.
///
/// Plugins have no stdout the operator can see; this is the way to explain a
/// decision without putting it into a violation. Off wasm (a plugin's native
/// unit tests) it goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    shared::reins::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Add `delta` to the host-kept counter `key` (scoped to this plugin) over a
/// sliding window of `window_seconds` (0 = no window) and return the new
/// total.
///
/// Plugins keep no state between calls (every call may get a fresh
/// instance), so budgets and rate limits live in the host. Off wasm (a
/// plugin's native unit tests) this is an in-memory map without windows.
pub fn counter_add(key: &str, delta: i64, window_seconds: u32) -> i64 {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::host::counter_add(key, delta, window_seconds)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = window_seconds;
        native::counter_add(key, delta)
    }
}

/// The text of the request this call serves, after normalization (every
/// user and tool message and the caller's context chunks, joined by blank
/// lines): what an answer can be grounded in. Empty outside a run. Off wasm
/// (native unit tests) it is what [`set_request_text`] last set on this
/// thread.
pub fn request_text() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::host::request_text()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::REQUEST.with(|r| r.borrow().clone())
    }
}

/// The tools of the MCP servers the pipeline fronts, as a JSON array of
/// `{name, description, parameters, server, tool}` (`name` is the namespaced
/// `SERVER__TOOL`); `[]` without MCP servers. Off wasm (native unit tests)
/// it is what [`set_upstream_tools`] last set on this thread.
pub fn upstream_tools() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::host::upstream_tools()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::UPSTREAM.with(|r| r.borrow().clone())
    }
}

/// Native unit tests only: what [`upstream_tools`] answers on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_upstream_tools(json: &str) {
    native::UPSTREAM.with(|r| *r.borrow_mut() = json.to_owned());
}

/// How many tokens `text` is for the pipeline's model (its BPE when the
/// host knows it, else one token per four characters). Count with this, not
/// with a guess of your own, when packing a token budget: the budget is in
/// the same tokens. Off wasm (native unit tests) it is the host's estimate,
/// ceil(characters / 4).
pub fn count_tokens(text: &str) -> u32 {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::host::count_tokens(text)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
    }
}

/// The chunks of this run's context as a JSON array of `{id, source,
/// score, kept}`: every chunk retrieved or sent by the caller, and whether
/// the context builder kept it. `[]` outside a run or without context. A
/// validator checking an answer's citations reads it. Off wasm (native
/// unit tests) it is what [`set_context_chunks`] last set on this thread.
pub fn context_chunks() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::host::context_chunks()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::CONTEXT.with(|r| r.borrow().clone())
    }
}

/// Native unit tests only: what [`context_chunks`] answers on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_context_chunks(json: &str) {
    native::CONTEXT.with(|r| *r.borrow_mut() = json.to_owned());
}

/// A context builder says why it left chunk `chunk_id` out, or trimmed it
/// ("over budget: needs 310 tokens, 45 left"); the host shows it in the
/// run's trace, so an operator can tell why an answer lacked a passage.
/// Heard only during `assemble` (at most 1,000 a call, reasons cut to 512
/// bytes). Off wasm (native unit tests) it is recorded on this thread for
/// [`take_explained_drops`].
pub fn explain_drop(chunk_id: &str, reason: &str) {
    #[cfg(target_arch = "wasm32")]
    shared::reins::policy::host::explain_drop(chunk_id, reason);
    #[cfg(not(target_arch = "wasm32"))]
    native::DROPS.with(|d| {
        d.borrow_mut()
            .push((chunk_id.to_owned(), reason.to_owned()))
    });
}

/// Native unit tests only: every `(chunk id, reason)` [`explain_drop`]
/// recorded on this thread since the last take, in order.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_explained_drops() -> Vec<(String, String)> {
    native::DROPS.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Whether `text` matches the glob `pattern`, where `*` is any run of
/// characters (none included) and everything else is literal. Only `*`:
/// tool names are plain identifiers, and `?` or `[` would make an exact
/// name that happens to contain them match more than the operator wrote.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        // No `*`: an exact name.
        return pattern == text;
    };
    // The length check keeps the prefix and suffix from overlapping
    // (`a*a` must not match `a`).
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in middle {
        match rest.find(part) {
            // Leftmost is enough: a later part only needs some match after it.
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Ask the pipeline's judge model: `system` instructs it, `question` is
/// what it answers; returns its answer text. Only for pipelines that grant
/// the judge (`judge = { provider = "…" }`): the host refuses a plugin that
/// imports it elsewhere. Off wasm (native unit tests) it answers what
/// [`set_judge_answer`] last set on this thread.
pub fn judge(system: &str, question: &str) -> Result<String, String> {
    #[cfg(target_arch = "wasm32")]
    {
        shared::reins::policy::judge::ask(system, question)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (system, question);
        native::JUDGE.with(|r| r.borrow().clone())
    }
}

/// Native unit tests only: what [`judge`] answers on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_judge_answer(answer: Result<String, String>) {
    native::JUDGE.with(|r| *r.borrow_mut() = answer);
}

/// Native unit tests only: what [`request_text`] answers on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_request_text(text: &str) {
    native::REQUEST.with(|r| *r.borrow_mut() = text.to_owned());
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static COUNTERS: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
        pub static REQUEST: RefCell<String> = const { RefCell::new(String::new()) };
        pub static UPSTREAM: RefCell<String> = RefCell::new("[]".to_owned());
        pub static JUDGE: RefCell<Result<String, String>> = RefCell::new(Err("no judge in native tests".to_owned()));
        pub static CONTEXT: RefCell<String> = RefCell::new("[]".to_owned());
        pub static DROPS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn counter_add(key: &str, delta: i64) -> i64 {
        COUNTERS.with(|c| {
            let mut c = c.borrow_mut();
            let total = c.entry(key.to_string()).or_insert(0);
            *total += delta;
            *total
        })
    }
}

// ---------------------------------------------------------------------------
// Violations

impl Violation {
    /// A violation of any severity. `path` is a JSON Pointer into the checked
    /// document ("" = the whole document); `code` a stable machine code.
    pub fn new(
        severity: Severity,
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Violation {
            path: path.into(),
            code: code.into(),
            message: message.into(),
            severity,
        }
    }

    /// Something that must be fixed: the host rejects (normalizer), repairs or
    /// fails (validator) on it.
    pub fn error(
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, path, code, message)
    }

    /// Something suspicious that does not block the request by itself.
    pub fn warning(
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, path, code, message)
    }

    /// A note for the trace, e.g. a value that a validator fixed.
    pub fn info(
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Info, path, code, message)
    }

    /// Whether this violation blocks (severity `error`).
    pub fn is_error(&self) -> bool {
        matches!(self.severity, Severity::Error)
    }
}

impl Access {
    /// Parse `read` / `write` / `irreversible` (as written in configs).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "irreversible" => Ok(Access::Irreversible),
            other => Err(format!(
                "unknown access {other:?}, expected one of \"read\", \"write\", \"irreversible\""
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Config and metadata

/// Parse this plugin's `config` (the `[config]` table of its sidecar
/// manifest, as JSON) into `T`.
///
/// The error names the offending field the way an operator wrote it
/// (`config.rules[1].min: invalid type: string "x", expected f64`), because
/// the host shows it verbatim when it refuses the plugin's answer. An empty
/// config is read as `{}` so that all-default configs need no table.
pub fn parse_config<T: DeserializeOwned>(ctx: &CallContext) -> Result<T, String> {
    parse_json_as(&ctx.config, "config")
}

/// The caller's own metadata (channel, locale...) as a JSON object: hints
/// the caller wrote itself. Identity (tenant, roles) is `ctx.caller`.
///
/// Metadata is the caller's, not the operator's, so it is read leniently:
/// anything that is not a JSON object counts as empty.
pub fn metadata(ctx: &CallContext) -> Map<String, Value> {
    match serde_json::from_str(&ctx.metadata) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// One metadata value as a string (numbers and booleans are rendered, so
/// `{"tenant": 42}` reads as `"42"`); `None` when absent, null or not scalar.
pub fn metadata_str(ctx: &CallContext, key: &str) -> Option<String> {
    match metadata(ctx).remove(key)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The verified caller's claims (beyond subject, tenant and roles) as a
/// JSON object; empty when the host sent none.
pub fn caller_claims(ctx: &CallContext) -> Map<String, Value> {
    match serde_json::from_str(&ctx.caller.claims) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

impl CallContext {
    /// A context for a plugin's native unit tests (the host builds the real
    /// ones), with an anonymous caller.
    pub fn for_test(config: &Value, metadata: &Value) -> Self {
        CallContext {
            run_id: "test".to_string(),
            pipeline: "test".to_string(),
            attempt: 1,
            caller: Caller {
                subject: "anonymous".to_string(),
                tenant: None,
                roles: Vec::new(),
                credential: "none".to_string(),
                claims: "{}".to_string(),
            },
            metadata: metadata.to_string(),
            config: config.to_string(),
        }
    }

    /// [`CallContext::for_test`] for a verified caller of `tenant` holding `roles`.
    pub fn for_test_as(config: &Value, tenant: &str, roles: &[&str]) -> Self {
        let mut ctx = CallContext::for_test(config, &Value::Object(Map::new()));
        ctx.caller = Caller {
            subject: "test".to_string(),
            tenant: Some(tenant.to_string()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            credential: "token:test".to_string(),
            claims: "{}".to_string(),
        };
        ctx
    }

    /// Same as [`parse_config`].
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        parse_config(self)
    }

    /// Same as [`metadata_str`].
    pub fn meta(&self, key: &str) -> Option<String> {
        metadata_str(self, key)
    }
}

/// Parse a document the model produced. The error is phrased for the model
/// ("the output is not valid JSON: ..."); validators usually turn it into a
/// violation with code `json` rather than returning it as `Err`.
pub fn parse_output(output: &str) -> Result<Value, String> {
    serde_json::from_str(output).map_err(|e| format!("the output is not valid JSON: {e}"))
}

/// Deserialize JSON `text` into `T`, naming the bad field in the error as
/// `{what}.{field path}: {problem}`.
pub fn parse_json_as<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let problem = strip_position(&e.inner().to_string());
        let base = if path == "." {
            what.to_string()
        } else {
            format!("{what}.{path}")
        };
        // serde reports a missing field at its parent; name the field itself.
        if let Some(field) = problem
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            format!("{base}.{field}: missing (required)")
        } else {
            format!("{base}: {problem}")
        }
    })?;
    de.end().map_err(|e| format!("{what}: {e}"))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42" to its messages; for a config
/// that the host serialized itself the position means nothing to anyone.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

/// Describe a JSON value for a message a model reads: `the string "$500"`,
/// `the number 3`, `null`, `an object`, `an array of 2 items`.
///
/// Long strings are cut at 60 characters so one bad value cannot blow up the
/// repair prompt.
pub fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(60).collect();
            let ellipsis = if short.len() < s.len() { "..." } else { "" };
            format!("the string {}", serde_json::Value::String(short + ellipsis))
        }
        Value::Array(a) => match a.len() {
            1 => "an array of 1 item".to_string(),
            n => format!("an array of {n} items"),
        },
        Value::Object(_) => "an object".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Set-up kept across calls

/// A plugin's set-up (its parsed config, compiled schemas and patterns,
/// tables), built once per config text and kept in a global.
///
/// With [`export_init!`] the host runs the plugin's `init` once at load and
/// snapshots the instance, so every later instance starts with this already
/// built: `init` calls [`Setup::init`], each call [`Setup::get`] with the
/// config it received, which finds the set-up made for the same config and
/// reuses it. Without `init` (an older host, `[runtime] init = "off"`), or
/// when a call carries another config, `get` builds it then and keeps it, so
/// a pooled instance builds it once and a fresh one on its first call.
///
/// ```ignore
/// static SETUP: reins_sdk::Setup<Compiled> = reins_sdk::Setup::new();
/// fn build(config: &str) -> Result<Compiled, String> { /* parse, compile */ }
///
/// impl reins_sdk::init::Guest for MyPlugin {
///     fn init(config: String) -> Result<(), String> { SETUP.init(&config, build) }
/// }
/// // in validate: let compiled = SETUP.get(&ctx.config, build)?;
/// reins_sdk::export_init!(MyPlugin);
/// ```
pub struct Setup<T> {
    slot: std::sync::Mutex<Option<(String, std::sync::Arc<T>)>>,
}

impl<T> Setup<T> {
    /// An empty slot (for a `static`).
    pub const fn new() -> Self {
        Setup {
            slot: std::sync::Mutex::new(None),
        }
    }

    /// Builds the set-up for `config` now (from `init`) and keeps it; the
    /// error is `build`'s, which the host reports when it refuses the plugin.
    pub fn init(
        &self,
        config: &str,
        build: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<(), String> {
        self.get(config, build).map(|_| ())
    }

    /// The set-up for `config`: the kept one if it was built for the same
    /// config text, else built now (and kept in place of the old one).
    pub fn get(
        &self,
        config: &str,
        build: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<std::sync::Arc<T>, String> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, built)) = slot.as_ref() {
            if text == config {
                return Ok(built.clone());
            }
        }
        let built = std::sync::Arc::new(build(config)?);
        *slot = Some((config.to_string(), built.clone()));
        Ok(built)
    }

    /// Whether a set-up is kept for exactly this config text.
    pub fn is_ready_for(&self, config: &str) -> bool {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().is_some_and(|(text, _)| text == config)
    }
}

impl<T> Default for Setup<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// [`parse_config`] for the config text `init` receives (no call context).
pub fn parse_config_text<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    parse_json_as(config, "config")
}

/// The optional `init` export: the plugin's set-up, run once by the host
/// at load with the plugin's config. Export with [`export_init!`] next to
/// the layer's `export_*!` macro.
pub mod init {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "init-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_init_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use bindings::exports::reins::policy::init::Guest;
}

/// Export a type that implements [`init::Guest`] as this component's `init`
/// (next to its layer): `reins_sdk::export_init!(MyPlugin);`
#[macro_export]
macro_rules! export_init {
    ($ty:ident) => {
        $crate::init::bindings::__reins_export_init_plugin!($ty with_types_in $crate::init::bindings);
    };
}

// ---------------------------------------------------------------------------
// One module per world. Each is compiled only with its feature.

/// The normalizer layer: clean and check the request's messages before any
/// model call. Export with [`export_normalizer!`].
#[cfg(feature = "normalizer")]
pub mod normalizer {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "normalizer-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_normalizer_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use bindings::exports::reins::policy::normalizer::{Guest, Normalized};

    impl Normalized {
        /// The cleaned messages and what was found on the way.
        pub fn new(messages: Vec<crate::Message>, findings: Vec<crate::Violation>) -> Self {
            Normalized { messages, findings }
        }
    }
}

/// The validator layer: check (and optionally fix) a model's output. Export
/// with [`export_validator!`].
#[cfg(feature = "validator")]
pub mod validator {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "validator-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_validator_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use bindings::exports::reins::policy::validator::{Guest, Verdict};

    impl Verdict {
        /// No violations, nothing fixed.
        pub fn ok() -> Self {
            Verdict {
                violations: Vec::new(),
                fixed: None,
            }
        }

        /// These violations, nothing fixed.
        pub fn new(violations: Vec<crate::Violation>) -> Self {
            Verdict {
                violations,
                fixed: None,
            }
        }

        /// These violations and a corrected document (serialized here so the
        /// host always receives valid JSON).
        pub fn fixed(violations: Vec<crate::Violation>, fixed: &serde_json::Value) -> Self {
            Verdict {
                violations,
                fixed: Some(fixed.to_string()),
            }
        }
    }

    impl From<Vec<crate::Violation>> for Verdict {
        fn from(violations: Vec<crate::Violation>) -> Self {
            Verdict::new(violations)
        }
    }
}

/// The constraints layer: the tools a request may use. Export with
/// [`export_constraints!`].
#[cfg(feature = "constraints")]
pub mod constraints {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "constraints-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_constraints_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use crate::Access;
    pub use bindings::exports::reins::policy::constraints::{Guest, Tool};
}

/// The gate layer: allow, deny, escalate or rewrite each proposed action.
/// Export with [`export_gate!`].
#[cfg(feature = "gate")]
pub mod gate {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "gate-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_gate_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use crate::Access;
    pub use bindings::exports::reins::policy::gate::{Action, Decision, Guest};

    impl Action {
        /// The action's arguments as JSON. The host checks what the model
        /// proposed before it gets here, so a parse error is `Err`.
        pub fn arguments_value(&self) -> Result<serde_json::Value, String> {
            serde_json::from_str(&self.arguments)
                .map_err(|e| format!("action.arguments is not valid JSON: {e}"))
        }
    }
}

/// The context layer: pick, order and trim retrieved chunks under a token
/// budget. Export with [`export_context!`].
#[cfg(feature = "context")]
pub mod context {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "context-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_context_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use bindings::exports::reins::policy::context_builder::{Chunk, Guest};
}

/// The stream checker: check a model's answer piece by piece while it
/// streams, before the client sees it (pass, hold for more text, cut the
/// stream, or replace the piece). Exported on its own or next to a layer
/// (a validator that also checks streams) with [`export_stream_checker!`].
#[cfg(feature = "stream-checker")]
pub mod stream_checker {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "stream-checker-plugin",
            with: {
                "reins:policy/types@0.2.0": crate::shared::reins::policy::types,
                "reins:policy/host@0.2.0": crate::shared::reins::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__reins_export_stream_checker_plugin",
            runtime_path: "reins_sdk::__private::wit_bindgen::rt",
        });
    }
    pub use bindings::exports::reins::policy::stream_checker::{Guest, Verdict};
}

// ---------------------------------------------------------------------------
// Export macros. Each needs its world's feature; without it the macro says so
// instead of failing inside generated code.

/// Export a type that implements [`normalizer::Guest`] as this component's
/// `normalizer` layer: `reins_sdk::export_normalizer!(MyPlugin);`
#[cfg(feature = "normalizer")]
#[macro_export]
macro_rules! export_normalizer {
    ($ty:ident) => {
        $crate::normalizer::bindings::__reins_export_normalizer_plugin!($ty with_types_in $crate::normalizer::bindings);
    };
}

#[cfg(not(feature = "normalizer"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_normalizer {
    ($ty:ident) => {
        compile_error!("export_normalizer! needs the `normalizer` feature of reins-sdk");
    };
}

/// Export a type that implements [`validator::Guest`] as this component's
/// `validator` layer: `reins_sdk::export_validator!(MyPlugin);`
#[cfg(feature = "validator")]
#[macro_export]
macro_rules! export_validator {
    ($ty:ident) => {
        $crate::validator::bindings::__reins_export_validator_plugin!($ty with_types_in $crate::validator::bindings);
    };
}

#[cfg(not(feature = "validator"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_validator {
    ($ty:ident) => {
        compile_error!("export_validator! needs the `validator` feature of reins-sdk");
    };
}

/// Export a type that implements [`constraints::Guest`] as this component's
/// `constraints` layer: `reins_sdk::export_constraints!(MyPlugin);`
#[cfg(feature = "constraints")]
#[macro_export]
macro_rules! export_constraints {
    ($ty:ident) => {
        $crate::constraints::bindings::__reins_export_constraints_plugin!($ty with_types_in $crate::constraints::bindings);
    };
}

#[cfg(not(feature = "constraints"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_constraints {
    ($ty:ident) => {
        compile_error!("export_constraints! needs the `constraints` feature of reins-sdk");
    };
}

/// Export a type that implements [`gate::Guest`] as this component's
/// `gate` layer: `reins_sdk::export_gate!(MyPlugin);`
#[cfg(feature = "gate")]
#[macro_export]
macro_rules! export_gate {
    ($ty:ident) => {
        $crate::gate::bindings::__reins_export_gate_plugin!($ty with_types_in $crate::gate::bindings);
    };
}

#[cfg(not(feature = "gate"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_gate {
    ($ty:ident) => {
        compile_error!("export_gate! needs the `gate` feature of reins-sdk");
    };
}

/// Export a type that implements [`context::Guest`] as this component's
/// `context` layer: `reins_sdk::export_context!(MyPlugin);`
#[cfg(feature = "context")]
#[macro_export]
macro_rules! export_context {
    ($ty:ident) => {
        $crate::context::bindings::__reins_export_context_plugin!($ty with_types_in $crate::context::bindings);
    };
}

#[cfg(not(feature = "context"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_context {
    ($ty:ident) => {
        compile_error!("export_context! needs the `context` feature of reins-sdk");
    };
}

/// Export a type that implements [`stream_checker::Guest`] as this
/// component's `stream-checker` (alone, or next to its layer's macro):
/// `reins_sdk::export_stream_checker!(MyPlugin);`
#[cfg(feature = "stream-checker")]
#[macro_export]
macro_rules! export_stream_checker {
    ($ty:ident) => {
        $crate::stream_checker::bindings::__reins_export_stream_checker_plugin!($ty with_types_in $crate::stream_checker::bindings);
    };
}

#[cfg(not(feature = "stream-checker"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_stream_checker {
    ($ty:ident) => {
        compile_error!("export_stream_checker! needs the `stream-checker` feature of reins-sdk");
    };
}
