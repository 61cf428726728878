"""{{name}}: a Reins context builder. Keeps the best-scoring chunks that fit
the token budget (about 4 characters a token), best first. Edit `assemble`,
then `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`."""

import reins_sdk as reins


def assemble(ctx, query, chunks, budget_tokens):
    min_score = ctx.setting("min_score", 0.0, float)
    picked, used = [], 0
    for chunk in sorted(chunks, key=lambda c: -c.score):
        cost = (len(chunk.text) + 3) // 4
        if chunk.score >= min_score and used + cost <= budget_tokens:
            picked.append(chunk)
            used += cost
    return picked


# componentize-py exports the class named after the layer's interface.
ContextBuilder = reins.context_builder(assemble)
