// Write Reins policy plugins in JavaScript (componentize-js).
//
// A thin layer over the bindings componentize-js generates for
// `wit/reins.wit`: write one plain function per layer and hand it to the
// layer's wrapper, which gives the object that the component exports.
//
//   import * as reins from "./reins.js";
//
//   export const validator = reins.validator((ctx, output) => {
//     const doc = reins.parseOutput(output); // throws Refuse if not JSON
//     return "answer" in doc ? [] : [reins.error("/answer", "required", "answer is missing")];
//   });
//
// Build with `reins plugin build` (or `componentize-js --wit wit --world-name
// validator-plugin -d http fetch-event -o NAME.wasm app.js`).
//
// What each wrapper passes and accepts (export name in brackets):
//
// - normalizer(fn) [normalizer]: fn(ctx, messages) -> {messages, findings}
//   (or [messages, findings]); messages are {role, content}.
// - validator(fn) [validator]: fn(ctx, output) -> [violation] or
//   verdict(violations, fixedDoc).
// - constraints(fn) [constraints]: fn(ctx) -> [tool(...)].
// - gate(fn) [gate]: fn(ctx, action) -> allow() | deny(r) | escalate(r) |
//   rewrite(args); action.arguments is parsed JSON, action.access a string.
// - contextBuilder(fn) [contextBuilder]: fn(ctx, query, chunks, budgetTokens)
//   -> [{id, text, score, source}].
//
// `ctx` is {runId, pipeline, attempt, caller, config, metadata, setting(), meta()}
// with config and metadata parsed. Throw `new Refuse("why")` (or let any
// error escape) to answer err(why): the host applies the plugin's fail_mode.

import {
  log as hostLog,
  counterAdd as hostCounterAdd,
  countTokens as hostCountTokens,
  contextChunks as hostContextChunks,
  explainDrop as hostExplainDrop,
} from "reins:policy/host@0.2.0";

export const SEVERITIES = ["info", "warning", "error"];
export const ACCESSES = ["read", "write", "irreversible"];

/** Throw to answer err(message): the plugin cannot decide. */
export class Refuse extends Error {}

// ---------------------------------------------------------------------------
// The call context

function typeName(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  switch (typeof v) {
    case "string": return "a string";
    case "boolean": return "a boolean";
    case "number": return Number.isInteger(v) ? "an integer" : "a number";
    case "object": return "an object";
    default: return typeof v;
  }
}

function jsonObject(text, what, strict) {
  if (!text || !text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Refuse(`${what} is not valid JSON: ${e.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    if (strict) throw new Refuse(`${what} must be a JSON object, got ${typeName(value)}`);
    return {};
  }
  return value;
}

const KINDS = {
  string: (v) => typeof v === "string",
  number: (v) => typeof v === "number",
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === "boolean",
  list: (v) => Array.isArray(v),
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
};

/** A context from the raw WIT call-context (or for tests: {config, metadata}). */
export function context(raw = {}) {
  const config = typeof raw.config === "string" ? jsonObject(raw.config, "config", true) : raw.config || {};
  let metadata = {};
  try {
    metadata = typeof raw.metadata === "string" ? jsonObject(raw.metadata, "metadata", false) : raw.metadata || {};
  } catch (_) {
    metadata = {}; // the caller's, not the operator's: read leniently
  }
  const c = raw.caller || {};
  let claims = {};
  try {
    claims = typeof c.claims === "string" ? jsonObject(c.claims, "caller.claims", false) : c.claims || {};
  } catch (_) {
    claims = {};
  }
  // Who is calling, verified by the host from the credential (not the body).
  const caller = {
    subject: c.subject ?? "anonymous",
    tenant: c.tenant ?? undefined,
    roles: c.roles ?? [],
    credential: c.credential ?? "none",
    claims,
  };
  return {
    runId: raw.runId ?? "test",
    pipeline: raw.pipeline ?? "test",
    attempt: raw.attempt ?? 1,
    config,
    /** The config as the host sent it: what `Setup` keys its set-up by. */
    configText: typeof raw.config === "string" ? raw.config : JSON.stringify(config),
    metadata,
    caller,
    /** config[key] or fallback; with kind ("string", "number", "integer",
     * "boolean", "list", "object") another type is refused, naming the key. */
    setting(key, fallback, kind) {
      const value = key in config ? config[key] : fallback;
      if (kind && value !== undefined && value !== null && !KINDS[kind](value)) {
        throw new Refuse(`config.${key}: expected ${kind}, got ${typeName(value)}`);
      }
      return value;
    },
    /** One metadata value as a string, or undefined when absent or not scalar. */
    meta(key) {
      const v = metadata[key];
      return ["string", "number", "boolean"].includes(typeof v) ? String(v) : undefined;
    },
  };
}

// ---------------------------------------------------------------------------
// Violations and other results

/** A violation of any severity; path is a JSON Pointer ("" = the whole document). */
export function violation(severity, path, code, message) {
  if (!SEVERITIES.includes(severity)) {
    throw new Refuse(`unknown severity ${JSON.stringify(severity)}, expected one of ${SEVERITIES.join(", ")}`);
  }
  if (path && !path.startsWith("/")) throw new Refuse(`violation path ${JSON.stringify(path)} is not a JSON Pointer`);
  return { path, code, message, severity };
}
export const error = (path, code, message) => violation("error", path, code, message);
export const warning = (path, code, message) => violation("warning", path, code, message);
export const info = (path, code, message) => violation("info", path, code, message);

const VERDICT = Symbol("verdict");
/** A validator's answer with a corrected document (any JSON value). */
export function verdict(violations, fixed) {
  return { [VERDICT]: true, violations, fixed };
}

/** A tool this request may use; parameters is a JSON Schema (object or JSON text). */
export function tool(name, description, parameters = { type: "object" }, access = "read") {
  if (!ACCESSES.includes(access)) {
    throw new Refuse(`tool ${name}: unknown access ${JSON.stringify(access)}, expected one of ${ACCESSES.join(", ")}`);
  }
  return { name, description, parameters: typeof parameters === "string" ? parameters : JSON.stringify(parameters), access };
}

export const allow = () => ({ tag: "allow" });
export const deny = (reason) => ({ tag: "deny", val: String(reason) });
export const escalate = (reason) => ({ tag: "escalate", val: String(reason) });
/** Replace the action's arguments (any JSON value) and continue. */
export const rewrite = (args) => ({ tag: "rewrite", val: JSON.stringify(args) });

// ---------------------------------------------------------------------------
// Documents

/** The model's document, parsed; throws Refuse if it is not JSON. */
export function parseOutput(output) {
  try {
    return JSON.parse(output);
  } catch (e) {
    throw new Refuse(`the output is not valid JSON: ${e.message}`);
  }
}

/** Describe a JSON value for a message a model reads: `the string "$5"`. */
export function describeValue(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return `the boolean ${v}`;
  if (typeof v === "number") return `the number ${JSON.stringify(v)}`;
  if (typeof v === "string") {
    const chars = Array.from(v);
    const short = chars.slice(0, 60).join("");
    return `the string ${JSON.stringify(short + (chars.length > 60 ? "..." : ""))}`;
  }
  if (Array.isArray(v)) return v.length === 1 ? "an array of 1 item" : `an array of ${v.length} items`;
  return "an object";
}

// ---------------------------------------------------------------------------
// JSON Pointer (RFC 6901)

export const escape = (token) => String(token).replaceAll("~", "~0").replaceAll("/", "~1");
export const unescape = (token) => token.replaceAll("~1", "/").replaceAll("~0", "~");
/** A pointer from raw tokens: join("items", 0, "a/b") -> "/items/0/a~1b". */
export const join = (...tokens) => tokens.map((t) => "/" + escape(t)).join("");

/** The raw tokens of a pointer; throws Refuse if it is not a pointer. */
export function split(pointer) {
  if (pointer === "") return [];
  if (!pointer.startsWith("/")) throw new Refuse(`${JSON.stringify(pointer)} is not a JSON Pointer (must be empty or start with /)`);
  return pointer.slice(1).split("/").map(unescape);
}

/** The value at pointer, or undefined when there is none. */
export function resolve(doc, pointer) {
  let cur = doc;
  for (const token of split(pointer)) {
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token) || Number(token) >= cur.length) return undefined;
      cur = cur[Number(token)];
    } else if (cur !== null && typeof cur === "object") {
      if (!Object.prototype.hasOwnProperty.call(cur, token)) return undefined;
      cur = cur[token];
    } else {
      return undefined;
    }
  }
  return cur;
}

/** Every [pointer, value] that pattern matches; `*` matches every element or member. */
export function matches(doc, pattern) {
  let found = [["", doc]];
  for (const token of split(pattern)) {
    const next = [];
    for (const [path, value] of found) {
      if (token === "*") {
        if (Array.isArray(value)) value.forEach((v, i) => next.push([`${path}/${i}`, v]));
        else if (value !== null && typeof value === "object") {
          for (const [k, v] of Object.entries(value)) next.push([`${path}/${escape(k)}`, v]);
        }
      } else {
        const child = resolve(value, "/" + escape(token));
        if (child !== undefined) next.push([`${path}/${escape(token)}`, child]);
      }
    }
    found = next;
  }
  return found;
}

/** Every string in the document as [pointer, text], in document order. */
export function strings(doc, path = "", out = []) {
  if (typeof doc === "string") out.push([path, doc]);
  else if (Array.isArray(doc)) doc.forEach((v, i) => strings(v, `${path}/${i}`, out));
  else if (doc !== null && typeof doc === "object") {
    for (const [k, v] of Object.entries(doc)) strings(v, `${path}/${escape(k)}`, out);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Host imports

/** Write to the host's log ("trace", "debug", "info", "warn", "error"). */
export function log(level, message) {
  hostLog(level, String(message));
}

/** Add delta to the host-kept counter key over a sliding window of
 * windowSeconds (0 = none) and return the total (a Number). */
export function counterAdd(key, delta, windowSeconds = 0) {
  return Number(hostCounterAdd(key, BigInt(Math.trunc(delta)), windowSeconds));
}

/** How many tokens text is for the pipeline's model (its BPE when the host
 * knows it, else one token per four characters): count a token budget with
 * this, in the budget's own tokens. */
export function countTokens(text) {
  return hostCountTokens(String(text));
}

/** The chunks of this run's context, parsed: [{id, source, score, kept}],
 * every chunk retrieved or sent by the caller and whether the context
 * builder kept it (what a citation check compares against); [] outside a
 * run or without context. */
export function contextChunks() {
  let chunks;
  try {
    chunks = JSON.parse(hostContextChunks() || "[]");
  } catch (e) {
    throw new Refuse(`the host's context-chunks is not JSON: ${e.message}`);
  }
  return Array.isArray(chunks) ? chunks : [];
}

/** A context builder says why it left chunk chunkId out, or trimmed it
 * ("over budget: needs 310 tokens, 45 left"); the host shows it in the
 * run's trace. Heard only during `assemble`. */
export function explainDrop(chunkId, reason) {
  hostExplainDrop(String(chunkId), String(reason));
}

// ---------------------------------------------------------------------------
// Set-up kept across calls

/**
 * A plugin's set-up (parsed settings, compiled patterns, tables), built by
 * `build(config)` once per config text and kept in a module global:
 *
 *   const SETUP = new reins.Setup((config) => compile(config));
 *   export const init = reins.init(SETUP);   // the optional `init` export
 *   export const validator = reins.validator((ctx, output) => {
 *     const compiled = SETUP.get(ctx);       // built by init, or now
 *   });
 *
 * With `init` exported (the project builds against the layer's
 * `-plugin-init` world) the host calls it once at load with the config; a
 * call whose config is the same reuses the set-up. Without it (or with
 * another config) `get` builds it on the call and keeps it.
 */
export class Setup {
  constructor(build) {
    this.build = build;
    this.text = undefined;
    this.value = undefined;
  }

  /** Builds the set-up for `configText` (JSON) now; throws Refuse. */
  init(configText) {
    this.#get(configText, () => jsonObject(configText, "config", true));
  }

  /** The set-up for ctx's config: the kept one, or built now. */
  get(ctx) {
    return this.#get(ctx.configText, () => ctx.config);
  }

  readyFor(configText) {
    return this.text !== undefined && this.text === configText;
  }

  #get(text, parsed) {
    if (this.text !== undefined && this.text === text) return this.value;
    const value = this.build(parsed());
    this.text = text;
    this.value = value;
    return value;
  }
}

/** The `init` export (world `<layer>-plugin-init`): runs setup.init(config)
 * once at load; a failure refuses the plugin with its message. */
export function init(setup) {
  return {
    init(config) {
      guard(() => setup.init(config));
    },
  };
}

// ---------------------------------------------------------------------------
// Layer wrappers: plain functions in, export objects out.

function guard(run) {
  try {
    return run();
  } catch (e) {
    // Only a string crosses as err(..); anything else would trap.
    if (e instanceof Refuse) throw e.message;
    if (e instanceof Error) throw `${e.name}: ${e.message}`;
    throw String(e);
  }
}

function checkViolations(list, what) {
  return (list || []).map((v) => {
    if (!v || typeof v !== "object" || !SEVERITIES.includes(v.severity)) {
      throw new Refuse(`${what} must be built with reins.error/warning/info, got ${JSON.stringify(v)}`);
    }
    return { path: v.path, code: v.code, message: v.message, severity: v.severity };
  });
}

/** fn(ctx, messages) -> {messages, findings} as the `normalizer` export. */
export function normalizer(fn) {
  return {
    normalize(ctx, messages) {
      return guard(() => {
        const got = fn(context(ctx), messages.map((m) => ({ role: m.role, content: m.content })));
        const [msgs, findings] = Array.isArray(got) ? got : [got.messages, got.findings];
        return {
          messages: (msgs || []).map((m) => ({ role: String(m.role), content: String(m.content) })),
          findings: checkViolations(findings, "findings"),
        };
      });
    },
  };
}

/** fn(ctx, output) -> [violation] | verdict(violations, fixed) as the `validator` export. */
export function validator(fn) {
  return {
    validate(ctx, output) {
      return guard(() => {
        const got = fn(context(ctx), output);
        if (got && got[VERDICT]) {
          return { violations: checkViolations(got.violations, "violations"), fixed: JSON.stringify(got.fixed) };
        }
        return { violations: checkViolations(got, "violations"), fixed: undefined };
      });
    },
  };
}

/** fn(ctx) -> [tool(...)] as the `constraints` export. */
export function constraints(fn) {
  return {
    tools(ctx) {
      return guard(() => fn(context(ctx)) || []);
    },
  };
}

/** fn(ctx, action) -> allow() | deny(r) | escalate(r) | rewrite(args) as the `gate` export. */
export function gate(fn) {
  return {
    check(ctx, action) {
      return guard(() => {
        let args;
        try {
          args = action.arguments ? JSON.parse(action.arguments) : {};
        } catch (e) {
          throw new Refuse(`arguments are not valid JSON: ${e.message}`);
        }
        const got = fn(context(ctx), { tool: action.tool, arguments: args, access: action.access });
        if (!got || !["allow", "deny", "escalate", "rewrite"].includes(got.tag)) {
          throw new Refuse(`a gate must return allow(), deny(r), escalate(r) or rewrite(args), got ${JSON.stringify(got)}`);
        }
        return got;
      });
    },
  };
}

/** fn(ctx, query, chunks, budgetTokens) -> [chunk] as the `contextBuilder` export. */
export function contextBuilder(fn) {
  return {
    assemble(ctx, query, chunks, budgetTokens) {
      return guard(() =>
        (fn(context(ctx), query, chunks.map((c) => ({ ...c })), budgetTokens) || []).map((c) => ({
          id: String(c.id),
          text: String(c.text),
          score: Number(c.score ?? 0),
          source: String(c.source ?? ""),
        })),
      );
    },
  };
}
