//! {{name}}: a Reins constraints plugin. Everyone may look orders up; callers
//! whose metadata role is config.refund_role may also refund. Edit `tools`,
//! then `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "constraints-plugin" });

use exports::reins::policy::constraints::{Guest, Tool};
use reins::policy::types::{Access, CallContext, Severity, Violation};
use serde_json::{Map, Value, json};

struct Plugin;

impl Guest for Plugin {
    fn tools(ctx: CallContext) -> Result<Vec<Tool>, String> {
        let config = config(&ctx)?;
        let refund_role = match config.get("refund_role") {
            None => "support",
            Some(v) => v.as_str().ok_or("config.refund_role: expected a string")?,
        };
        let metadata: Value = serde_json::from_str(&ctx.metadata).unwrap_or(Value::Null);
        let mut tools = vec![Tool {
            name: "lookup_order".into(),
            description: "Look an order up by id".into(),
            parameters: json!({"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}})
                .to_string(),
            access: Access::Read,
        }];
        if metadata.get("role").and_then(Value::as_str) == Some(refund_role) {
            tools.push(Tool {
                name: "refund_order".into(),
                description: "Refund (part of) an order".into(),
                parameters: json!({
                    "type": "object",
                    "required": ["order_id", "amount"],
                    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}}
                })
                .to_string(),
                access: Access::Write,
            });
        }
        Ok(tools)
    }
}
