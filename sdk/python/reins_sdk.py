"""Write Reins policy plugins in Python.

A thin layer over the bindings that componentize-py generates for
`wit/reins.wit` (the `wit_world` package): you write one plain function per
layer and hand it to the layer's wrapper, which gives the class that
componentize-py exports::

    import reins_sdk as reins

    def validate(ctx, output):
        doc = reins.parse_output(output)          # raises Refuse if not JSON
        return [reins.error("/answer", "required", "answer is missing")
                for _ in [0] if "answer" not in doc]

    Validator = reins.validator(validate)

Build with `reins plugin build` (or `componentize-py -d wit -w
validator-plugin componentize app -p . -p PATH/TO/sdk/python -o NAME.wasm`).

What each wrapper passes and accepts:

- `normalizer(fn)`: `fn(ctx, messages) -> (messages, findings)`; messages
  are `Message` objects (`.role`, `.content`) or `(role, content)` tuples
  or dicts.
- `validator(fn)`: `fn(ctx, output) -> [Violation]` or `Verdict`
  (`Verdict(violations, fixed=doc)` to return a corrected document).
- `constraints(fn)`: `fn(ctx) -> [tool(...)]`.
- `gate(fn)`: `fn(ctx, action) -> allow() | deny(r) | escalate(r) |
  rewrite(args)`; `action.arguments` is already parsed JSON and
  `action.access` a string (`"read"`, `"write"`, `"irreversible"`).
- `context_builder(fn)`: `fn(ctx, query, chunks, budget_tokens) -> [Chunk]`.

`ctx` is a `Context`: `.config` and `.metadata` are parsed dicts. Raise
`Refuse("why")` (or let any exception escape) to answer `err(why)`: the host
then applies the plugin's `fail_mode`.

The module imports no generated binding at import time, so its pure helpers
(JSON Pointer, violations, Luhn...) also run under a plain CPython for unit
tests.
"""

from __future__ import annotations

import json

__all__ = [
    "Refuse", "Context", "Verdict", "Chunk",
    "violation", "error", "warning", "info", "message",
    "tool", "allow", "deny", "escalate", "rewrite",
    "parse_output", "describe_value", "log", "counter_add",
    "count_tokens", "context_chunks", "set_context_chunks", "explain_drop", "take_explained_drops",
    "escape", "unescape", "join", "split", "resolve", "matches", "strings",
    "normalizer", "validator", "constraints", "gate", "context_builder",
    "Setup", "init",
]

SEVERITIES = ("info", "warning", "error")
ACCESSES = ("read", "write", "irreversible")


class Refuse(Exception):
    """Raise to answer `err(message)`: the plugin cannot decide."""


# ---------------------------------------------------------------------------
# The call context


class Caller:
    """Who is calling, as the host verified it from the credential (never the
    request body): key tenants' budgets and roles' tools on this."""

    def __init__(self, subject="anonymous", tenant=None, roles=None, credential="none", claims=None):
        self.subject = subject
        self.tenant = tenant
        self.roles = list(roles or [])
        self.credential = credential
        self.claims = claims if claims is not None else {}

    @classmethod
    def from_wit(cls, c) -> "Caller":
        try:
            claims = _json_object(c.claims, "caller.claims", strict=False)
        except Refuse:
            claims = {}
        return cls(c.subject, c.tenant, c.roles, c.credential, claims)


class Context:
    """What every call is told: run id, pipeline, attempt, the verified
    `caller`, and the parsed `config` (the sidecar's `[config]` table) and
    `metadata` (the caller's own hints)."""

    def __init__(self, run_id="test", pipeline="test", attempt=1, config=None, metadata=None, caller=None,
                 config_text=None):
        self.run_id = run_id
        self.pipeline = pipeline
        self.attempt = attempt
        self.config = config if config is not None else {}
        self.metadata = metadata if metadata is not None else {}
        self.caller = caller if caller is not None else Caller()
        # The config as the host sent it: what `Setup` keys its set-up by.
        self.config_text = config_text if config_text is not None else json.dumps(self.config, sort_keys=True)

    @classmethod
    def from_wit(cls, ctx) -> "Context":
        config = _json_object(ctx.config, "config", strict=True)
        # Metadata is the caller's, not the operator's: read it leniently.
        try:
            metadata = _json_object(ctx.metadata, "metadata", strict=False)
        except Refuse:
            metadata = {}
        return cls(ctx.run_id, ctx.pipeline, ctx.attempt, config, metadata, Caller.from_wit(ctx.caller),
                   config_text=ctx.config)

    def setting(self, key, default=None, kind=None):
        """`config[key]`, or `default` when absent. With `kind` (a type or a
        tuple of types) a value of another type is refused with a message that
        names the key: `config.max: expected int, got str`."""
        value = self.config.get(key, default)
        if kind is not None and value is not None and not _is_kind(value, kind):
            raise Refuse(f"config.{key}: expected {_kind_name(kind)}, got {_type_name(value)}")
        return value

    def meta(self, key):
        """One metadata value as a string (numbers and booleans rendered),
        or None when absent, null or not a scalar."""
        value = self.metadata.get(key)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        return None


def _json_object(text, what, strict):
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Refuse(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        if strict:
            raise Refuse(f"{what} must be a JSON object, got {_type_name(value)}")
        return {}
    return value


def _is_kind(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # True is an int to Python, never to a config author
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def _kind_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _type_name(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Violations and other results


def violation(severity, path, code, message):
    """A violation of any severity (`"info"`, `"warning"`, `"error"`). `path`
    is a JSON Pointer into the checked document ("" = the whole document)."""
    if severity not in SEVERITIES:
        raise Refuse(f"unknown severity {severity!r}, expected one of {', '.join(SEVERITIES)}")
    if path and not path.startswith("/"):
        raise Refuse(f"violation path {path!r} is not a JSON Pointer")
    return _Violation(path, code, message, severity)


def error(path, code, message):
    """Something that must be fixed: blocks the request (normalizer) or the answer (validator)."""
    return violation("error", path, code, message)


def warning(path, code, message):
    """Something suspicious that does not block by itself."""
    return violation("warning", path, code, message)


def info(path, code, message):
    """A note for the trace."""
    return violation("info", path, code, message)


class _Violation:
    __slots__ = ("path", "code", "message", "severity")

    def __init__(self, path, code, message, severity):
        self.path, self.code, self.message, self.severity = path, code, message, severity

    def is_error(self):
        return self.severity == "error"

    def __repr__(self):
        return f"{self.severity}({self.path!r}, {self.code!r}, {self.message!r})"

    def __eq__(self, other):
        return isinstance(other, _Violation) and (self.path, self.code, self.message, self.severity) == (
            other.path, other.code, other.message, other.severity)


_NO_FIX = object()


class Verdict:
    """A validator's answer: violations and, optionally, a corrected document
    (any JSON value; the host re-validates it)."""

    def __init__(self, violations=(), fixed=_NO_FIX):
        self.violations = list(violations)
        self.fixed = fixed

    def has_fix(self):
        return self.fixed is not _NO_FIX


class _Message:
    __slots__ = ("role", "content")

    def __init__(self, role, content):
        self.role, self.content = role, content

    def __repr__(self):
        return f"message({self.role!r}, {self.content!r})"


def message(role, content):
    """A chat message, for normalizers that add or replace messages."""
    return _Message(role, content)


class Chunk:
    """A context chunk (`id`, `text`, `score`, `source`)."""

    __slots__ = ("id", "text", "score", "source")

    def __init__(self, id, text, score=0.0, source=""):
        self.id, self.text, self.score, self.source = id, text, score, source


def tool(name, description, parameters=None, access="read"):
    """A tool this request may use; `parameters` is a JSON Schema (dict or JSON text)."""
    if access not in ACCESSES:
        raise Refuse(f"tool {name}: unknown access {access!r}, expected one of {', '.join(ACCESSES)}")
    if parameters is None:
        parameters = {"type": "object"}
    text = parameters if isinstance(parameters, str) else json.dumps(parameters, separators=(",", ":"))
    return ("tool", name, description, text, access)


def allow():
    return ("allow", None)


def deny(reason):
    return ("deny", str(reason))


def escalate(reason):
    return ("escalate", str(reason))


def rewrite(arguments):
    """Replace the action's arguments (any JSON value) and continue."""
    return ("rewrite", json.dumps(arguments, separators=(",", ":")))


class Action:
    """A proposed tool call: `.tool`, `.arguments` (parsed JSON), `.access` (str)."""

    __slots__ = ("tool", "arguments", "access")

    def __init__(self, tool, arguments, access):
        self.tool, self.arguments, self.access = tool, arguments, access


# ---------------------------------------------------------------------------
# Documents


def parse_output(output):
    """The model's document, parsed; `Refuse` if it is not JSON. Validators
    usually catch this and answer with a `json` violation instead."""
    try:
        return json.loads(output)
    except ValueError as e:
        raise Refuse(f"the output is not valid JSON: {e}") from None


def describe_value(value):
    """Describe a JSON value for a message a model reads: `the string "$5"`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        short = value[:60]
        return f"the string {json.dumps(short + ('...' if len(short) < len(value) else ''), ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array of 1 item" if len(value) == 1 else f"an array of {len(value)} items"
    return "an object"


# ---------------------------------------------------------------------------
# JSON Pointer (RFC 6901)


def escape(token):
    """Escape one reference token: `a/b` -> `a~1b`, `m~n` -> `m~0n`."""
    return str(token).replace("~", "~0").replace("/", "~1")


def unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def join(*tokens):
    """A pointer from raw tokens: `join("items", 0, "a/b")` -> `/items/0/a~1b`."""
    return "".join("/" + escape(t) for t in tokens)


def split(pointer):
    """The raw tokens of a pointer; `Refuse` if it is not a pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise Refuse(f"{pointer!r} is not a JSON Pointer (must be empty or start with /)")
    return [unescape(t) for t in pointer[1:].split("/")]


def resolve(doc, pointer):
    """The value at `pointer`, or None when there is none."""
    cur = doc
    for token in split(pointer):
        if isinstance(cur, dict):
            if token not in cur:
                return None
            cur = cur[token]
        elif isinstance(cur, list):
            if not token.isdigit() or (len(token) > 1 and token[0] == "0") or int(token) >= len(cur):
                return None
            cur = cur[int(token)]
        else:
            return None
    return cur


def matches(doc, pattern):
    """Every `(pointer, value)` that `pattern` matches, in document order;
    `*` matches every element of an array or member of an object."""
    found = [("", doc)]
    for token in split(pattern):
        nxt = []
        for path, value in found:
            if token == "*":
                if isinstance(value, list):
                    nxt.extend((f"{path}/{i}", v) for i, v in enumerate(value))
                elif isinstance(value, dict):
                    nxt.extend((f"{path}/{escape(k)}", v) for k, v in value.items())
            else:
                child = resolve(value, "/" + escape(token))
                if child is not None:
                    nxt.append((f"{path}/{escape(token)}", child))
        found = nxt
    return found


def strings(doc, path=""):
    """Every string in the document as `(pointer, text)`, in document order."""
    if isinstance(doc, str):
        yield path, doc
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from strings(v, f"{path}/{i}")
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from strings(v, f"{path}/{escape(k)}")


# ---------------------------------------------------------------------------
# Host imports


def log(level, message):
    """Write to the host's log (`"trace"`, `"debug"`, `"info"`, `"warn"`, `"error"`)."""
    try:
        from wit_world.imports import host
    except ImportError:  # plain CPython (unit tests)
        print(f"[{level}] {message}")
        return
    host.log(getattr(host.Level, level.upper()), message)


_native_counters = {}


def counter_add(key, delta, window_seconds=0):
    """Add `delta` to the host-kept counter `key` over a sliding window of
    `window_seconds` (0 = none) and return the total. Plugins keep no state
    between calls; counters live in the host."""
    try:
        from wit_world.imports import host
    except ImportError:
        _native_counters[key] = _native_counters.get(key, 0) + delta
        return _native_counters[key]
    return host.counter_add(key, delta, window_seconds)


def count_tokens(text):
    """How many tokens `text` is for the pipeline's model (its BPE when the
    host knows it, else one token per four characters): count a token
    budget with this, in the budget's own tokens. Under plain CPython (unit
    tests) it is the host's estimate, ceil(characters / 4)."""
    try:
        from wit_world.imports import host
    except ImportError:
        return (len(text) + 3) // 4
    return host.count_tokens(text)


_native_context_chunks = []


def context_chunks():
    """The chunks of this run's context as a list of dicts `{id, source,
    score, kept}`: every chunk retrieved or sent by the caller, and whether
    the context builder kept it (what a citation check compares against).
    Empty outside a run or without context. Under plain CPython (unit tests)
    it is the list last given to `set_context_chunks`."""
    try:
        from wit_world.imports import host
    except ImportError:
        return [dict(c) for c in _native_context_chunks]
    try:
        chunks = json.loads(host.context_chunks() or "[]")
    except ValueError as e:
        raise Refuse(f"the host's context-chunks is not JSON: {e}") from None
    return chunks if isinstance(chunks, list) else []


def set_context_chunks(chunks):
    """Unit tests: what `context_chunks()` answers (a list of dicts)."""
    _native_context_chunks[:] = [dict(c) for c in chunks]

_native_drops = []


def explain_drop(chunk_id, reason):
    """A context builder says why it left chunk `chunk_id` out, or trimmed it
    ("over budget: needs 310 tokens, 45 left"); the host shows it in the
    run's trace. Heard only during `assemble`. Under plain CPython (unit
    tests) it is recorded for `take_explained_drops()`."""
    try:
        from wit_world.imports import host
    except ImportError:
        _native_drops.append((str(chunk_id), str(reason)))
        return
    host.explain_drop(str(chunk_id), str(reason))


def take_explained_drops():
    """Unit tests: every `(chunk_id, reason)` explained since the last take."""
    out = list(_native_drops)
    _native_drops.clear()
    return out


# ---------------------------------------------------------------------------
# Set-up kept across calls


class Setup:
    """A plugin's set-up (parsed settings, compiled patterns, tables), built
    by `build(config)` once per config text and kept in a module global::

        def build(config):                       # the parsed [config] table
            return [re.compile(p) for p in config.get("patterns", [])]

        SETUP = reins.Setup(build)
        Init = reins.init(SETUP)                 # the optional `init` export

        def validate(ctx, output):
            patterns = SETUP.get(ctx)            # built by init, or now

    With `Init` exported (the project builds against the layer's
    `-plugin-init` world) the host calls it once at load with the config, so
    the set-up is ready before the first call; a call whose config is the
    same reuses it. Without `init` (or with another config) `get` builds it
    on the call and keeps it, so a pooled instance builds it once."""

    def __init__(self, build):
        self._build = build
        self._text = None
        self._value = None

    def init(self, config_text):
        """Builds the set-up for `config_text` (JSON) now; raises Refuse."""
        self._get(config_text, lambda: _json_object(config_text, "config", strict=True))

    def get(self, ctx):
        """The set-up for `ctx`'s config: the kept one, or built now."""
        return self._get(ctx.config_text, lambda: ctx.config)

    def ready_for(self, config_text):
        return self._text is not None and self._text == config_text

    def _get(self, text, parsed):
        if self._text is not None and self._text == text:
            return self._value
        value = self._build(parsed())
        self._text, self._value = text, value
        return value


def init(setup):
    """The `Init` export componentize-py looks for (world
    `<layer>-plugin-init`): runs `setup.init(config)` once at load; a
    failure refuses the plugin with its message."""
    from wit_world import exports

    class Init(exports.Init):
        def init(self, config):
            return _call(setup.init, config)

    return Init


# ---------------------------------------------------------------------------
# Layer wrappers: plain functions in, componentize-py export classes out.


def _call(fn, *args):
    """Runs the author's function; any exception becomes `err(message)`."""
    from componentize_py_types import Err

    try:
        return fn(*args)
    except Err:
        raise
    except Refuse as e:
        raise Err(str(e)) from None
    except Exception as e:  # a bug in the plugin: still an answer, not a trap
        raise Err(f"{type(e).__name__}: {e}") from None


def _wit_violations(items, what):
    from wit_world.imports import types

    out = []
    for v in items or ():
        if not isinstance(v, _Violation):
            raise Refuse(f"{what} must be built with reins_sdk.error/warning/info, got {v!r}")
        out.append(types.Violation(v.path, v.code, v.message, getattr(types.Severity, v.severity.upper())))
    return out


def _wit_message(m):
    from wit_world.imports import types

    if isinstance(m, dict):
        return types.Message(str(m.get("role", "")), str(m.get("content", "")))
    if isinstance(m, tuple):
        return types.Message(str(m[0]), str(m[1]))
    return types.Message(m.role, m.content)


def normalizer(fn):
    """`fn(ctx, messages) -> (messages, findings)` as the `Normalizer` export."""
    from wit_world import exports
    from wit_world.exports import normalizer as n

    class Normalizer(exports.Normalizer):
        def normalize(self, ctx, messages):
            def run():
                got = fn(Context.from_wit(ctx), [_Message(m.role, m.content) for m in messages])
                msgs, findings = got if isinstance(got, tuple) else (got, [])
                return n.Normalized([_wit_message(m) for m in msgs], _wit_violations(findings, "findings"))

            return _call(run)

    return Normalizer


def validator(fn):
    """`fn(ctx, output) -> [Violation] | Verdict` as the `Validator` export."""
    from wit_world import exports
    from wit_world.exports import validator as v

    class Validator(exports.Validator):
        def validate(self, ctx, output):
            def run():
                got = fn(Context.from_wit(ctx), output)
                verdict = got if isinstance(got, Verdict) else Verdict(got or [])
                fixed = json.dumps(verdict.fixed, ensure_ascii=False) if verdict.has_fix() else None
                return v.Verdict(_wit_violations(verdict.violations, "violations"), fixed)

            return _call(run)

    return Validator


def constraints(fn):
    """`fn(ctx) -> [tool(...)]` as the `Constraints` export."""
    from wit_world import exports
    from wit_world.exports import constraints as c
    from wit_world.imports import types

    class Constraints(exports.Constraints):
        def tools(self, ctx):
            def run():
                out = []
                for t in fn(Context.from_wit(ctx)) or ():
                    if not (isinstance(t, tuple) and t and t[0] == "tool"):
                        raise Refuse(f"tools must be built with reins_sdk.tool, got {t!r}")
                    _, name, description, params, access = t
                    out.append(c.Tool(name, description, params, getattr(types.Access, access.upper())))
                return out

            return _call(run)

    return Constraints


def gate(fn):
    """`fn(ctx, action) -> allow() | deny(r) | escalate(r) | rewrite(args)` as the `Gate` export."""
    from wit_world import exports
    from wit_world.exports import gate as g

    kinds = {
        "allow": lambda _: g.Decision_Allow(),
        "deny": g.Decision_Deny,
        "escalate": g.Decision_Escalate,
        "rewrite": g.Decision_Rewrite,
    }

    class Gate(exports.Gate):
        def check(self, ctx, action):
            def run():
                try:
                    args = json.loads(action.arguments) if action.arguments else {}
                except ValueError as e:
                    raise Refuse(f"arguments are not valid JSON: {e}") from None
                got = fn(Context.from_wit(ctx), Action(action.tool, args, action.access.name.lower()))
                if not (isinstance(got, tuple) and len(got) == 2 and got[0] in kinds):
                    raise Refuse(f"a gate must return allow(), deny(r), escalate(r) or rewrite(args), got {got!r}")
                return kinds[got[0]](got[1])

            return _call(run)

    return Gate


def context_builder(fn):
    """`fn(ctx, query, chunks, budget_tokens) -> [Chunk]` as the `ContextBuilder` export."""
    from wit_world import exports
    from wit_world.exports import context_builder as cb

    class ContextBuilder(exports.ContextBuilder):
        def assemble(self, ctx, query, chunks, budget_tokens):
            def run():
                mine = [Chunk(c.id, c.text, c.score, c.source) for c in chunks]
                got = fn(Context.from_wit(ctx), query, mine, budget_tokens)
                return [cb.Chunk(c.id, c.text, float(c.score), c.source) for c in got or ()]

            return _call(run)

    return ContextBuilder
