// {{name}}: a Reins gate. Denies config.blocked_tools and escalates amounts
// over config.max_amount. Edit the function, then `reins plugin build` and
// `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const gate = reins.gate((ctx, action) => {
  if (ctx.setting("blocked_tools", [], "list").includes(action.tool)) {
    return reins.deny(`${action.tool} is not allowed here`);
  }
  const limit = ctx.setting("max_amount", 100, "number");
  const amount = action.arguments?.amount;
  if (typeof amount === "number" && amount > limit) {
    return reins.escalate(`amount ${JSON.stringify(amount)} is over ${JSON.stringify(limit)}: needs approval`);
  }
  return reins.allow();
});
