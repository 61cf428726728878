//! Plugin case files: the policy author's unit tests, run through the real
//! host (`reins plugin test FILE.wasm CASES.json`).
//!
//! A case file is a JSON array of `{name, input, config?, metadata?, caller?, request?, expect}`.
//! Cases run in order on one runtime, so host counters carry over from case to
//! case (a budget can fill up). What `input` and `expect` mean depends on the
//! plugin's layer; see `docs/writing-policies.md`.

use crate::runtime::{
    Access, Action, CallContext, Chunk, Layer, Manifest, Message, Plugin, PluginError, Runtime,
    RuntimeError, Severity, Violation,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One case from a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub input: Value,
    /// Replaces the sidecar's `config` for this case.
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The verified caller the call sees (`{subject, tenant, roles,
    /// credential, claims}`); anonymous when absent.
    #[serde(default)]
    pub caller: Option<crate::runtime::Caller>,
    /// The request's text, as the `request-text` import answers it (what a
    /// grounding validator checks the answer against).
    #[serde(default)]
    pub request: Option<String>,
    /// The run's context chunks, as the `context-chunks` import answers
    /// them (`[{id, source, score, kept}]`: what a citations validator
    /// checks the answer's citations against).
    #[serde(default)]
    pub context_chunks: Option<Value>,
    /// The tokenizer `count-tokens` counts in: `o200k_base` (default),
    /// `cl100k_base` or `heuristic`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub expect: serde_json::Map<String, Value>,
}

/// How one case went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseOutcome {
    pub name: String,
    pub passed: bool,
    /// Why it failed, or a short summary of what the plugin returned.
    pub detail: String,
    pub micros: u64,
}

/// Why a case file could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid case file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("case {case:?}: config must be a JSON object of TOML-compatible values: {message}")]
    Config { case: String, message: String },
    #[error(transparent)]
    Load(#[from] RuntimeError),
}

/// Reads a case file.
pub fn read_cases(path: &Path) -> Result<Vec<Case>, CasesError> {
    let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CasesError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Runs every case against the plugin at `wasm` (with its sidecar).
pub fn run_cases(
    runtime: &Runtime,
    wasm: &Path,
    cases: &[Case],
) -> Result<Vec<CaseOutcome>, CasesError> {
    let manifest_path = wasm.with_extension("toml");
    let manifest_text = std::fs::read_to_string(&manifest_path).unwrap_or_default();
    let base = Manifest::parse(&manifest_text, &manifest_path).map_err(RuntimeError::from)?;
    let default_plugin = runtime.load_with_manifest(wasm, base.clone(), &manifest_text)?;
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let overridden;
        let plugin = match &case.config {
            None => &default_plugin,
            Some(cfg) => {
                let mut m = base.clone();
                m.config = serde_json::from_value::<serde_json::Map<String, Value>>(cfg.clone())
                    .map_err(|e| CasesError::Config {
                        case: case.name.clone(),
                        message: e.to_string(),
                    })?;
                match runtime.load_with_manifest(wasm, m, &format!("{manifest_text}\n{cfg}")) {
                    Ok(p) => {
                        overridden = p;
                        &overridden
                    }
                    // The plugin's `init` refused this config at load: that
                    // refusal is the case's answer (a config error).
                    Err(RuntimeError::Init { cause, .. }) => {
                        out.push(CaseOutcome::of(
                            case,
                            check_init_refusal(&case.expect, &cause),
                            0,
                        ));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let started = Instant::now();
        let result = run_case(plugin, case);
        out.push(CaseOutcome::of(
            case,
            result,
            started.elapsed().as_micros() as u64,
        ));
    }
    Ok(out)
}

impl CaseOutcome {
    /// The outcome of `case`: passed with a summary, or failed with why.
    fn of(case: &Case, result: Result<String, String>, micros: u64) -> Self {
        let (passed, detail) = match result {
            Ok(summary) => (true, summary),
            Err(why) => (false, why),
        };
        CaseOutcome {
            name: case.name.clone(),
            passed,
            detail,
            micros,
        }
    }
}

/// A case whose config the plugin's `init` refused passes only if it
/// expected an error containing `error_contains`.
fn check_init_refusal(
    expect: &serde_json::Map<String, Value>,
    cause: &crate::runtime::CallFailure,
) -> Result<String, String> {
    let text = format!("init {cause}");
    match expect.get("error_contains").and_then(Value::as_str) {
        Some(want) if text.contains(want) => Ok(format!("refused at init as expected: {cause}")),
        Some(want) => Err(format!("init error {text:?} does not contain {want:?}")),
        None => Err(format!("the plugin refused this config at load: {text}")),
    }
}

fn run_case(plugin: &Plugin, case: &Case) -> Result<String, String> {
    let ctx = CallContext {
        run_id: format!("case:{}", case.name),
        pipeline: "plugin-test".into(),
        attempt: 1,
        metadata: case.metadata.clone().unwrap_or_else(|| json!({})),
        caller: case.caller.clone().unwrap_or_default(),
        request_text: case.request.as_deref().unwrap_or_default().into(),
        judge: None,
        upstream_tools: std::sync::Arc::from(""),
        tokenizer: match case.tokenizer.as_deref() {
            None | Some("o200k_base") => crate::runtime::Tokenizer::O200k,
            Some("cl100k_base") => crate::runtime::Tokenizer::Cl100k,
            Some("heuristic") => crate::runtime::Tokenizer::Heuristic,
            Some(other) => {
                return Err(format!(
                    "tokenizer {other:?}: use \"o200k_base\", \"cl100k_base\" or \"heuristic\""
                ));
            }
        },
        context_chunks: match &case.context_chunks {
            None => std::sync::Arc::from(""),
            Some(v @ Value::Array(_)) => std::sync::Arc::from(v.to_string()),
            Some(other) => {
                return Err(format!(
                    "context_chunks must be an array of {{id, source, score, kept}}, not {other}"
                ));
            }
        },
    };
    let expect = &case.expect;
    let answer = match plugin.layer() {
        Layer::Normalizer => plugin
            .normalize(&ctx, &messages(&case.input)?)
            .map(|n| json!({"messages": n.messages, "findings": n.findings})),
        Layer::Validator => {
            let text = match &case.input {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            plugin
                .validate(&ctx, &text)
                .map(|v| json!({"violations": v.violations, "fixed": v.fixed}))
        }
        Layer::Constraints => plugin.tools(&ctx).map(|tools| json!({"tools": tools})),
        Layer::Gate => {
            let action = Action {
                tool: str_field(&case.input, "tool")?.to_string(),
                arguments: case.input.get("arguments").cloned().unwrap_or(json!({})),
                access: serde_json::from_value::<Access>(
                    case.input.get("access").cloned().unwrap_or(json!("write")),
                )
                .map_err(|e| format!("input.access: {e}"))?,
            };
            plugin.check(&ctx, &action).map(|d| json!({"decision": d}))
        }
        Layer::Context => {
            let chunks: Vec<Chunk> =
                serde_json::from_value(case.input.get("chunks").cloned().unwrap_or(json!([])))
                    .map_err(|e| format!("input.chunks: {e}"))?;
            let budget = case
                .input
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(1000) as u32;
            let query = case
                .input
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("");
            plugin
                .assemble(&ctx, query, &chunks, budget)
                .map(|a| json!({"chunks": a.chunks, "dropped": a.dropped}))
        }
        Layer::StreamChecker => {
            let text = |k: &str| case.input.get(k).and_then(Value::as_str).unwrap_or("");
            let last = case
                .input
                .get("last")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            plugin
                .check_stream(&ctx, text("released"), text("pending"), last)
                .map(|v| json!({"verdict": v}))
        }
    };
    check_expectations(plugin.layer(), expect, answer)
}

fn check_expectations(
    layer: Layer,
    expect: &serde_json::Map<String, Value>,
    answer: Result<Value, PluginError>,
) -> Result<String, String> {
    let answer = match (answer, expect.get("error_contains")) {
        (Err(e), Some(want)) => {
            let want = want.as_str().unwrap_or_default();
            return if e.to_string().contains(want) {
                Ok(format!("error as expected: {}", e.cause))
            } else {
                Err(format!(
                    "error {:?} does not contain {want:?}",
                    e.to_string()
                ))
            };
        }
        (Err(e), None) => return Err(e.to_string()),
        (Ok(a), Some(want)) => return Err(format!("expected an error containing {want}, got {a}")),
        (Ok(a), None) => a,
    };
    for (key, want) in expect {
        match (layer, key.as_str()) {
            (Layer::Normalizer, "messages") => same(&answer["messages"], want, "messages")?,
            (Layer::Normalizer, "findings") => contains_all(&answer["findings"], want, "findings")?,
            (Layer::Normalizer, "no_findings") => {
                let n = answer["findings"].as_array().map_or(0, Vec::len);
                if want.as_bool() == Some(true) && n > 0 {
                    return Err(format!("expected no findings, got {}", answer["findings"]));
                }
            }
            (Layer::Normalizer, "rejected") => {
                let rejected = has_error(&answer["findings"]);
                if Some(rejected) != want.as_bool() {
                    return Err(format!(
                        "rejected = {rejected}, expected {want}; findings {}",
                        answer["findings"]
                    ));
                }
            }
            (Layer::Validator, "valid") => {
                let valid = !has_error(&answer["violations"]);
                if Some(valid) != want.as_bool() {
                    return Err(format!(
                        "valid = {valid}, expected {want}; violations {}",
                        answer["violations"]
                    ));
                }
            }
            (Layer::Validator, "violations") => {
                contains_all(&answer["violations"], want, "violations")?
            }
            (Layer::Validator, "fixed") => same(&answer["fixed"], want, "fixed")?,
            (Layer::Constraints, "tools") => {
                let mut got: Vec<&str> = answer["tools"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
                    .unwrap_or_default();
                let mut wanted: Vec<&str> = want
                    .as_array()
                    .map(|t| t.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                got.sort_unstable();
                wanted.sort_unstable();
                if got != wanted {
                    return Err(format!("tools {got:?}, expected {wanted:?}"));
                }
            }
            (Layer::Gate, "decision") => {
                let got = answer["decision"]["kind"].as_str().unwrap_or_default();
                if Some(got) != want.as_str() {
                    return Err(format!("decision {}, expected {want}", answer["decision"]));
                }
            }
            (Layer::Gate, "reason_contains") => {
                let reason = answer["decision"]["value"].as_str().unwrap_or_default();
                let want = want.as_str().unwrap_or_default();
                if !reason.contains(want) {
                    return Err(format!("reason {reason:?} does not contain {want:?}"));
                }
            }
            (Layer::Gate, "arguments") => {
                same(&answer["decision"]["value"], want, "rewritten arguments")?
            }
            (Layer::Context, "ids") => {
                let got: Vec<Value> = answer["chunks"]
                    .as_array()
                    .map(|c| c.iter().map(|c| c["id"].clone()).collect())
                    .unwrap_or_default();
                same(&Value::Array(got), want, "chunk ids")?
            }
            (Layer::StreamChecker, "verdict") => same(&answer["verdict"], want, "verdict")?,
            (_, other) => {
                return Err(format!(
                    "unknown expectation {other:?} for a {layer} plugin"
                ));
            }
        }
    }
    Ok(summary(&answer))
}

fn summary(answer: &Value) -> String {
    let text = answer.to_string();
    if text.len() > 120 {
        let mut end = 117;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}

fn same(got: &Value, want: &Value, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got}, expected {want}"))
    }
}

/// Every expected item must match some actual item on the fields it names
/// (`message_contains` matches a substring of `message`).
fn contains_all(got: &Value, want: &Value, what: &str) -> Result<(), String> {
    let got: Vec<Violation> = serde_json::from_value(got.clone()).unwrap_or_default();
    let Some(wanted) = want.as_array() else {
        return Err(format!("expect.{what} must be an array"));
    };
    for w in wanted {
        let hit = got.iter().any(|v| {
            w.as_object().is_some_and(|w| {
                w.iter().all(|(k, val)| match (k.as_str(), val.as_str()) {
                    ("path", Some(s)) => v.path == s,
                    ("code", Some(s)) => v.code == s,
                    ("message", Some(s)) => v.message == s,
                    ("message_contains", Some(s)) => v.message.contains(s),
                    ("severity", Some(s)) => severity_name(v.severity) == s,
                    _ => false,
                })
            })
        });
        if !hit {
            return Err(format!(
                "no {what} entry matches {w}; got {}",
                serde_json::to_string(&got).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn has_error(list: &Value) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v["severity"] == "error"))
}

fn messages(input: &Value) -> Result<Vec<Message>, String> {
    match input {
        Value::String(s) => Ok(vec![Message::new("user", s.clone())]),
        other => serde_json::from_value(other.clone())
            .map_err(|e| format!("input must be a string or messages: {e}")),
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("input.{key} must be a string"))
}
