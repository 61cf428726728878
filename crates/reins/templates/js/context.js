// {{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
// the token budget (about 4 characters a token), best first. Edit the
// function, then `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const contextBuilder = reins.contextBuilder((ctx, query, chunks, budgetTokens) => {
  const minScore = ctx.setting("min_score", 0, "number");
  const picked = [];
  let used = 0;
  for (const chunk of chunks.slice().sort((a, b) => b.score - a.score)) {
    const cost = Math.ceil(chunk.text.length / 4);
    if (chunk.score >= minScore && used + cost <= budgetTokens) {
      picked.push(chunk);
      used += cost;
    }
  }
  return picked;
});
