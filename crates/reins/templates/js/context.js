// {{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
// the token budget, best first, counting in the model's own tokens (the
// host's count-tokens), and tells the host why it left the others out
// (explain-drop: the run's trace shows it). Edit the function, then
// `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const contextBuilder = reins.contextBuilder((ctx, query, chunks, budgetTokens) => {
  const minScore = ctx.setting("min_score", 0, "number");
  const picked = [];
  let used = 0;
  for (const chunk of chunks.slice().sort((a, b) => b.score - a.score)) {
    // The host writes "\n\n[ID] " before each chunk: it costs tokens too.
    const cost = reins.countTokens(`\n\n[${chunk.id}] `) + reins.countTokens(chunk.text);
    if (chunk.score < minScore) {
      reins.explainDrop(chunk.id, `score ${chunk.score.toFixed(2)} under the floor ${minScore.toFixed(2)}`);
    } else if (used + cost > budgetTokens) {
      reins.explainDrop(chunk.id, `over budget: needs ${cost} tokens, ${budgetTokens - used} left`);
    } else {
      picked.push(chunk);
      used += cost;
    }
  }
  return picked;
});
