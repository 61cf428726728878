"""{{name}}: a Reins validator. Every key in config.required must be in the
answer (a JSON object). Edit `validate`, then `reins plugin build` and
`reins plugin test {{name}}.wasm cases.json`."""

import json

import reins_sdk as reins


def validate(ctx, output):
    required = ctx.setting("required", [], list)
    try:
        doc = json.loads(output)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return [reins.error("", "json", "answer with a JSON object only")]
    return [
        reins.error(reins.join(key), "required", f'"{key}" is required')
        for key in required
        if key not in doc
    ]


# componentize-py exports the class named after the layer's interface.
Validator = reins.validator(validate)
