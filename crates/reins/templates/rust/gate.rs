//! {{name}}: a Reins gate. Denies config.blocked_tools and escalates amounts
//! over config.max_amount. Edit `check`, then `reins plugin build` and
//! `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "gate-plugin" });

use exports::reins::policy::gate::{Action, Decision, Guest};
use reins::policy::types::{CallContext, Severity, Violation};
use serde_json::{Map, Value};

struct Plugin;

impl Guest for Plugin {
    fn check(ctx: CallContext, action: Action) -> Result<Decision, String> {
        let config = config(&ctx)?;
        if strings(&config, "blocked_tools", &[])?.contains(&action.tool) {
            return Ok(Decision::Deny(format!("{} is not allowed here", action.tool)));
        }
        let limit = config.get("max_amount").cloned().unwrap_or(Value::from(100));
        let limit_n = limit.as_f64().ok_or("config.max_amount: expected a number")?;
        let arguments: Value = serde_json::from_str(&action.arguments).map_err(|e| format!("arguments: {e}"))?;
        if let Some(amount) = arguments.get("amount").filter(|a| a.is_number()) {
            if amount.as_f64().unwrap_or(0.0) > limit_n {
                return Ok(Decision::Escalate(format!("amount {amount} is over {limit}: needs approval")));
            }
        }
        Ok(Decision::Allow)
    }
}
