// {{name}}: a Reins validator. Every key in config.required must be in the
// answer (a JSON object). Edit the function, then `reins plugin build` and
// `reins plugin test {{name}}.wasm cases.json`.

import * as reins from "./reins.js";

// The export is named after the layer's interface.
export const validator = reins.validator((ctx, output) => {
  const required = ctx.setting("required", [], "list");
  let doc;
  try {
    doc = JSON.parse(output);
  } catch (_) {
    doc = null;
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    return [reins.error("", "json", "answer with a JSON object only")];
  }
  return required
    .filter((key) => !(key in doc))
    .map((key) => reins.error(reins.join(key), "required", `"${key}" is required`));
});
