"""{{name}}: a Reins normalizer. Trims every message and rejects the request
when one contains a phrase from config.blocked. Edit `normalize`, then
`reins plugin build` and `reins plugin test {{name}}.wasm cases.json`."""

import reins_sdk as reins


def normalize(ctx, messages):
    blocked = ctx.setting("blocked", [], list)
    out, findings = [], []
    for i, m in enumerate(messages):
        text = m.content.strip()
        for phrase in blocked:
            if str(phrase).lower() in text.lower():
                findings.append(reins.error(f"/{i}/content", "blocked", f'contains the blocked phrase "{phrase}"'))
        out.append(reins.message(m.role, text))
    return out, findings


# componentize-py exports the class named after the layer's interface.
Normalizer = reins.normalizer(normalize)
