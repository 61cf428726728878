// {{name}}: a Reins normalizer. Trims every message and rejects the request
// when one contains a phrase from config.blocked. Edit the function, then
// `reins plugin build` and `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const normalizer = reins.normalizer((ctx, messages) => {
  const blocked = ctx.setting("blocked", [], "list");
  const findings = [];
  const out = messages.map((m, i) => {
    const text = m.content.trim();
    for (const phrase of blocked) {
      if (text.toLowerCase().includes(String(phrase).toLowerCase())) {
        findings.push(reins.error(`/${i}/content`, "blocked", `contains the blocked phrase "${phrase}"`));
      }
    }
    return { role: m.role, content: text };
  });
  return { messages: out, findings };
});
