"""{{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
the token budget, best first, counting in the model's own tokens (the host's
`count-tokens`), and tells the host why it left the others out
(`explain-drop`: the run's trace shows it). Edit `assemble`, then
`reins plugin build` and `reins plugin test {{name}}.wasm cases.json`."""

import reins_sdk as reins


def assemble(ctx, query, chunks, budget_tokens):
    min_score = ctx.setting("min_score", 0.0, float)
    picked, used = [], 0
    for chunk in sorted(chunks, key=lambda c: -c.score):
        # The host writes "\n\n[ID] " before each chunk: it costs tokens too.
        cost = reins.count_tokens(f"\n\n[{chunk.id}] ") + reins.count_tokens(chunk.text)
        if chunk.score < min_score:
            reins.explain_drop(chunk.id, f"score {chunk.score:.2f} under the floor {min_score:.2f}")
        elif used + cost > budget_tokens:
            reins.explain_drop(chunk.id, f"over budget: needs {cost} tokens, {budget_tokens - used} left")
        else:
            picked.append(chunk)
            used += cost
    return picked


# componentize-py exports the class named after the layer's interface.
ContextBuilder = reins.context_builder(assemble)
