//! Allows every action, or with `config.rewrite = true` rewrites its
//! arguments to `{"echo": <original arguments>}`. Denies with "clock granted"
//! when the wall clock reads later than 1971: the host freezes the clock at
//! the epoch unless it grants a real one.

use reins_sdk::CallContext;
use reins_sdk::gate::{Action, Decision, Guest};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default)]
    rewrite: bool,
}

/// 1972-01-01T00:00:00Z.
const START_OF_1972: u64 = 63_072_000;

struct EchoGate;

impl Guest for EchoGate {
    fn check(ctx: CallContext, action: Action) -> Result<Decision, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= START_OF_1972 {
            return Ok(Decision::Deny("clock granted".to_string()));
        }
        if !config.rewrite {
            return Ok(Decision::Allow);
        }
        let arguments = action.arguments_value()?;
        Ok(Decision::Rewrite(serde_json::json!({ "echo": arguments }).to_string()))
    }
}

reins_sdk::export_gate!(EchoGate);
