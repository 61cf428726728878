//! {{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
//! the token budget (about 4 characters a token), best first. Edit
//! `assemble`, then `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "context-plugin" });

use exports::reins::policy::context_builder::{Chunk, Guest};
use reins::policy::types::{CallContext, Severity, Violation};
use serde_json::{Map, Value};

struct Plugin;

impl Guest for Plugin {
    fn assemble(ctx: CallContext, _query: String, mut chunks: Vec<Chunk>, budget_tokens: u32) -> Result<Vec<Chunk>, String> {
        let min_score = number(&config(&ctx)?, "min_score", 0.0)?;
        chunks.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut used = 0;
        Ok(chunks
            .into_iter()
            .filter(|c| {
                let cost = (c.text.chars().count() as u32).div_ceil(4);
                let keep = f64::from(c.score) >= min_score && used + cost <= budget_tokens;
                if keep {
                    used += cost;
                }
                keep
            })
            .collect())
    }
}
