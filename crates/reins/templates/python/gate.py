"""{{name}}: a Reins gate. Denies config.blocked_tools and escalates amounts
over config.max_amount. Edit `check`, then `reins plugin build` and
`reins plugin test {{name}}.wasm cases.json`."""

import json

import reins_sdk as reins


def check(ctx, action):
    if action.tool in ctx.setting("blocked_tools", [], list):
        return reins.deny(f"{action.tool} is not allowed here")
    limit = ctx.setting("max_amount", 100, float)
    amount = action.arguments.get("amount") if isinstance(action.arguments, dict) else None
    if isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > limit:
        return reins.escalate(f"amount {json.dumps(amount)} is over {json.dumps(limit)}: needs approval")
    return reins.allow()


# componentize-py exports the class named after the layer's interface.
Gate = reins.gate(check)
