// {{name}}: a Reins constraints plugin. Everyone may look orders up; callers
// whose metadata role is config.refund_role may also refund. Edit the
// function, then `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const constraints = reins.constraints((ctx) => {
  const tools = [
    reins.tool("lookup_order", "Look an order up by id",
      { type: "object", required: ["order_id"], properties: { order_id: { type: "string" } } }, "read"),
  ];
  if (ctx.meta("role") === ctx.setting("refund_role", "support", "string")) {
    tools.push(reins.tool("refund_order", "Refund (part of) an order", {
      type: "object",
      required: ["order_id", "amount"],
      properties: { order_id: { type: "string" }, amount: { type: "number", minimum: 0 } },
    }, "write"));
  }
  return tools;
});
