//! {{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
//! the token budget, best first, counting in the model's own tokens (the
//! host's `count-tokens`), and tells the host why it left the others out
//! (`explain-drop`: the run's trace shows it). Edit `assemble`, then
//! `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

wit_bindgen::generate!({ path: "wit", world: "context-plugin" });

use exports::reins::policy::context_builder::{Chunk, Guest};
use reins::policy::host::{count_tokens, explain_drop};
use reins::policy::types::{CallContext, Severity, Violation};
use serde_json::{Map, Value};

struct Plugin;

impl Guest for Plugin {
    fn assemble(ctx: CallContext, _query: String, mut chunks: Vec<Chunk>, budget_tokens: u32) -> Result<Vec<Chunk>, String> {
        let min_score = number(&config(&ctx)?, "min_score", 0.0)?;
        chunks.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut used = 0u32;
        let mut kept = Vec::new();
        for c in chunks {
            // The host writes "\n\n[ID] " before each chunk: it costs tokens too.
            let cost = count_tokens(&format!("\n\n[{}] ", c.id)).saturating_add(count_tokens(&c.text));
            if f64::from(c.score) < min_score {
                explain_drop(&c.id, &format!("score {:.2} under the floor {min_score:.2}", c.score));
            } else if used.saturating_add(cost) > budget_tokens {
                explain_drop(&c.id, &format!("over budget: needs {cost} tokens, {} left", budget_tokens - used));
            } else {
                used += cost;
                kept.push(c);
            }
        }
        Ok(kept)
    }
}
