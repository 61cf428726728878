//! {{name}}: a Reins normalizer. Trims every message and rejects the request
//! when one contains a phrase from config.blocked. Edit `normalize`, then
//! `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "normalizer-plugin" });

use exports::reins::policy::normalizer::{Guest, Normalized};
use reins::policy::types::{CallContext, Message, Severity, Violation};
use serde_json::{Map, Value};

struct Plugin;

impl Guest for Plugin {
    fn normalize(ctx: CallContext, messages: Vec<Message>) -> Result<Normalized, String> {
        let blocked = strings(&config(&ctx)?, "blocked", &[])?;
        let mut findings = Vec::new();
        let messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let content = m.content.trim().to_string();
                for phrase in &blocked {
                    if content.to_lowercase().contains(&phrase.to_lowercase()) {
                        findings.push(violation(
                            format!("/{i}/content"),
                            "blocked",
                            format!("contains the blocked phrase \"{phrase}\""),
                        ));
                    }
                }
                Message { role: m.role, content }
            })
            .collect();
        Ok(Normalized { messages, findings })
    }
}
