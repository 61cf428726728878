//! {{name}}: a Reins validator. Every key in config.required must be in the
//! answer (a JSON object). Edit `validate`, then `reins plugin build` and
//! `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "validator-plugin" });

use exports::reins::policy::validator::{Guest, Verdict};
use reins::policy::types::{CallContext, Severity, Violation};
use serde_json::{Map, Value};

struct Plugin;

impl Guest for Plugin {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let required = strings(&config(&ctx)?, "required", &[])?;
        let violations = match serde_json::from_str::<Value>(&output) {
            Ok(Value::Object(doc)) => required
                .iter()
                .filter(|key| !doc.contains_key(*key))
                .map(|key| violation(format!("/{}", escape(key)), "required", format!("\"{key}\" is required")))
                .collect(),
            _ => vec![violation(String::new(), "json", "answer with a JSON object only".into())],
        };
        Ok(Verdict { violations, fixed: None })
    }
}
