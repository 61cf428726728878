
// ---------------------------------------------------------------------------
// Helpers (the Reins Rust SDK, sdk/rust, has richer ones).

/// This plugin's `[config]` table (from its sidecar) as JSON.
fn config(ctx: &CallContext) -> Result<Map<String, Value>, String> {
    if ctx.config.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(&ctx.config) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("config must be a JSON object".to_string()),
    }
}

/// `config[key]` as a list of strings (`default` when absent).
#[allow(dead_code)]
fn strings(config: &Map<String, Value>, key: &str, default: &[&str]) -> Result<Vec<String>, String> {
    match config.get(key) {
        None => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("config.{key}: expected a list of strings")),
        Some(_) => Err(format!("config.{key}: expected a list of strings")),
    }
}

/// `config[key]` as a number (`default` when absent).
#[allow(dead_code)]
fn number(config: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match config.get(key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| format!("config.{key}: expected a number")),
    }
}

/// A JSON Pointer token: `a/b` -> `a~1b`, `m~n` -> `m~0n`.
#[allow(dead_code)]
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[allow(dead_code)]
fn violation(path: String, code: &str, message: String) -> Violation {
    Violation {
        path,
        code: code.to_string(),
        message,
        severity: Severity::Error,
    }
}

export!(Plugin);
