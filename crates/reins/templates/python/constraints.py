"""{{name}}: a Reins constraints plugin. Everyone may look orders up; callers
whose metadata role is config.refund_role may also refund. Edit `tools`, then
`reins plugin build` and `reins plugin test {{name}}.wasm cases.json`."""

import reins_sdk as reins


def tools(ctx):
    out = [
        reins.tool("lookup_order", "Look an order up by id",
                   {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}},
                   access="read"),
    ]
    if ctx.meta("role") == ctx.setting("refund_role", "support", str):
        out.append(reins.tool(
            "refund_order", "Refund (part of) an order",
            {"type": "object", "required": ["order_id", "amount"],
             "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}}},
            access="write"))
    return out


# componentize-py exports the class named after the layer's interface.
Constraints = reins.constraints(tools)
