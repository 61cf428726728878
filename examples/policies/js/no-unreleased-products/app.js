// no-unreleased-products (JavaScript): no string anywhere in the answer may
// name a product from config.products (whole words, ASCII case-insensitive).
// With config.replacement the names are replaced instead: the validator
// returns the fixed document and info notes. Passes the same case file as the
// Rust and Python versions (../../cases/no-unreleased-products.json).

import * as reins from "../../../../sdk/js/reins.js";

// The set-up: the config checked once (by `init` at load, else by the first
// call with this config).
const SETUP = new reins.Setup((config) => {
  if (!("products" in config)) throw new reins.Refuse("config.products: missing (required)");
  const ctx = reins.context({ config });
  const products = ctx.setting("products", [], "list");
  if (!products.every((p) => typeof p === "string")) throw new reins.Refuse("config.products: expected a list of strings");
  return { products, replacement: ctx.setting("replacement", null, "string") };
});

// The optional `init` export (world validator-plugin-init).
export const init = reins.init(SETUP);

export const validator = reins.validator((ctx, output) => {
  const { products, replacement } = SETUP.get(ctx);
  let doc;
  try {
    doc = JSON.parse(output);
  } catch (_) {
    return [reins.error("", "json", "the output is not valid JSON")];
  }
  const violations = [];
  for (const [path, text] of reins.strings(doc)) {
    let fixed = text;
    for (const product of products) {
      if (findWords(text, product).length === 0) continue;
      if (replacement === null || replacement === undefined) {
        violations.push(reins.error(path, "unreleased-product",
          `mentions the unreleased product "${product}"; do not name unreleased products`));
      } else {
        violations.push(reins.info(path, "redacted", `replaced the unreleased product "${product}" with "${replacement}"`));
        fixed = replaceWords(fixed, product, replacement);
      }
    }
    if (fixed !== text) doc = setAt(doc, reins.split(path), fixed);
  }
  if (replacement !== null && replacement !== undefined && violations.length > 0) return reins.verdict(violations, doc);
  return violations;
});

const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());
const isAsciiAlnum = (c) => /^[A-Za-z0-9]$/.test(c);

// Offsets of word in text as a whole word, ASCII case-insensitive.
function findWords(text, word) {
  const hay = asciiLower(text);
  const needle = asciiLower(word);
  const hits = [];
  if (needle.length === 0) return hits;
  for (let k = hay.indexOf(needle); k >= 0; k = hay.indexOf(needle, k + 1)) {
    const before = k === 0 || !isAsciiAlnum(hay[k - 1]);
    const after = k + needle.length === hay.length || !isAsciiAlnum(hay[k + needle.length]);
    if (before && after) hits.push(k);
  }
  return hits;
}

function replaceWords(text, word, replacement) {
  let out = "";
  let last = 0;
  for (const k of findWords(text, word)) {
    if (k < last) continue;
    out += text.slice(last, k) + replacement;
    last = k + word.length;
  }
  return out + text.slice(last);
}

function setAt(doc, tokens, value) {
  if (tokens.length === 0) return value;
  const key = Array.isArray(doc) ? Number(tokens[0]) : tokens[0];
  doc[key] = setAt(doc[key], tokens.slice(1), value);
  return doc;
}
