#!/usr/bin/env python3
"""Scores structured extraction against the labelled set in tests/data/extraction/.

Runs every case of cases.jsonl once, at temperature 0, through an
OpenAI-compatible chat completions endpoint and prints:

  schema-valid   answers that parse as JSON and pass schema.json
  field-correct  fields equal to the expected value (of all expected fields)
  fully-correct  answers whose every field is right
  p50 / p99      wall latency of one request (client side, nearest-rank)
  calls/input    model calls per input, when the answer carries Reins'
                 `reins.attempts` (on success, or in the error body)

Two targets:

  --mode raw    (default) the model server itself, e.g. scripts/llama-server.sh's
                $REINS_TEST_LLAMA_URL: sends prompt.md as the system message,
                the input as the user message and schema.json as
                response_format (--response-format, default json_object+schema,
                which llama.cpp's servers turn into a grammar).
  --mode reins  a Reins server: `--model` names the pipeline, which brings its
                own system prompt and schema; only the user message is sent.

Values are compared after normalizing case and whitespace (strings) and
numbers-as-strings ("34" == 34). Standard library only.

  python3 scripts/extraction-eval.py --base-url "$REINS_TEST_LLAMA_URL"
  python3 scripts/extraction-eval.py --mode reins --base-url http://127.0.0.1:8080/v1 \
      --model extraction --api-key "$TOKEN" --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "extraction"


def load_cases(path: Path) -> list[dict]:
    cases = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                case = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: {e}")
            for key in ("id", "input", "expected"):
                if key not in case:
                    sys.exit(f"{path}:{n}: `{key}` is missing")
            cases.append(case)
    return cases


# --- a small JSON Schema check: the subset a flat extraction schema uses ----


def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    errs: list[str] = []
    where = path or "/"
    t = schema.get("type")
    types = t if isinstance(t, list) else [t] if t else []
    if types and not any(_is_type(value, ty) for ty in types):
        return [f"{where}: expected {'/'.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{where}: not {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(f"{where}: longer than {schema['maxLength']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{where}: above {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{where}: `{key}` is required")
        for key, v in value.items():
            if key in props:
                errs.extend(schema_errors(v, props[key], f"{path}/{key}"))
            elif schema.get("additionalProperties") is False:
                errs.append(f"{where}: `{key}` is not allowed")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errs.extend(schema_errors(v, schema["items"], f"{path}/{i}"))
    return errs


def _is_type(value, ty: str) -> bool:
    if ty == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer()
        )
    if ty == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(ty, True)


# --- comparison --------------------------------------------------------------


def norm(value):
    """Case- and whitespace-insensitive; "34", 34 and 34.0 are equal."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str):
        s = " ".join(value.split()).casefold()
        try:
            f = float(s)
            if math.isfinite(f):
                return str(int(f)) if f.is_integer() else str(f)
        except ValueError:
            pass
        return s
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    return value


def parse_json(text: str):
    """The answer's JSON object: the whole text, or the first {...} in it."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    if not isinstance(text, str):
        return None
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            return value
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


# --- the requests ------------------------------------------------------------


def response_format(kind: str, schema: dict):
    if kind == "json_object+schema":
        return {"type": "json_object", "schema": schema}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "extraction", "schema": schema, "strict": True}}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def call(url: str, body: dict, api_key: str | None, timeout: float):
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        return None, {"transport_error": str(e)}, time.perf_counter() - t0
    dt = time.perf_counter() - t0
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = {"raw_body": raw.decode(errors="replace")[:500]}
    return status, data, dt


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def run_case(case: dict, args, schema: dict, prompt: str) -> dict:
    messages = [{"role": "user", "content": case["input"]}]
    body = {"model": args.model, "temperature": 0}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    elif args.mode == "raw":
        body["max_tokens"] = 128
    if args.mode == "raw":
        messages.insert(0, {"role": "system", "content": prompt})
        rf = response_format(args.response_format, schema)
        if rf:
            body["response_format"] = rf
        if args.seed is not None:
            body["seed"] = args.seed
    body["messages"] = messages
    status, data, dt = call(args.base_url.rstrip("/") + "/chat/completions", body, args.api_key, args.timeout)

    reins = None
    if isinstance(data, dict):
        err = data.get("error")
        reins = data.get("reins") or (err.get("reins") if isinstance(err, dict) else None)
    attempts = reins.get("attempts") if isinstance(reins, dict) else None
    content, output = None, None
    if status == 200:
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        output = parse_json(content) if content is not None else None
    valid = isinstance(output, dict) and not schema_errors(output, schema)
    expected = case["expected"]
    fields = {}
    for key, want in expected.items():
        got = output.get(key) if isinstance(output, dict) else None
        fields[key] = {"ok": isinstance(output, dict) and key in output and norm(got) == norm(want), "got": got}
    return {
        "id": case["id"],
        "status": status,
        "latency_s": dt,
        "schema_valid": valid,
        "fields_ok": sum(f["ok"] for f in fields.values()),
        "fields_total": len(fields),
        "fully_correct": all(f["ok"] for f in fields.values()),
        "attempts": attempts,
        "output": output,
        "content": content[:1000] if isinstance(content, str) else content,
        "error": None if status == 200 else data,
        "fields": fields,
    }


def summarize(results: list[dict]) -> dict:
    n = len(results)
    lat = [r["latency_s"] for r in results]
    attempts = [r["attempts"] for r in results if isinstance(r["attempts"], int)]
    total_fields = sum(r["fields_total"] for r in results)
    return {
        "cases": n,
        "http_ok": sum(r["status"] == 200 for r in results) / n,
        "schema_valid": sum(r["schema_valid"] for r in results) / n,
        "field_correct": sum(r["fields_ok"] for r in results) / total_fields if total_fields else float("nan"),
        "fully_correct": sum(r["fully_correct"] for r in results) / n,
        "p50_s": percentile(lat, 50),
        "p99_s": percentile(lat, 99),
        "calls_per_input": sum(attempts) / len(attempts) if attempts else None,
        "calls_reported": len(attempts),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=os.environ.get("REINS_TEST_LLAMA_URL"),
                    help="OpenAI-compatible base URL ending in /v1 (default: $REINS_TEST_LLAMA_URL)")
    ap.add_argument("--mode", choices=["raw", "reins"], default="raw")
    ap.add_argument("--model", default=None,
                    help="the `model` field: the Reins pipeline in --mode reins (required there); "
                         "llama-cpp-python's single-model server ignores it (default: smollm2)")
    ap.add_argument("--api-key", default=os.environ.get("REINS_API_KEY"), help="bearer token (default: $REINS_API_KEY)")
    ap.add_argument("--data", type=Path, default=DATA, help="folder with cases.jsonl, schema.json, prompt.md")
    ap.add_argument("--response-format", default="json_object+schema",
                    choices=["json_object+schema", "json_schema", "json_object", "none"], help="--mode raw only")
    ap.add_argument("--seed", type=int, default=None, help="--mode raw only: the request's seed")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="the request's max_tokens (default: 128 in --mode raw, none sent in --mode reins)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    ap.add_argument("--only", action="append", default=[], help="run only this case id (repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (summary + per case) instead of tables")
    ap.add_argument("--min-fully-correct", type=float, default=None,
                    help="exit 1 when the fully-correct share is below this (0..1)")
    ap.add_argument("--max-p50", type=float, default=None, help="exit 1 when p50 latency (s) is above this")
    args = ap.parse_args()
    if not args.base_url:
        ap.error("--base-url is required (or set REINS_TEST_LLAMA_URL)")
    if args.model is None:
        if args.mode == "reins":
            ap.error("--mode reins needs --model PIPELINE")
        args.model = "smollm2"

    schema = json.loads((args.data / "schema.json").read_text(encoding="utf-8"))
    prompt = (args.data / "prompt.md").read_text(encoding="utf-8").strip()
    cases = load_cases(args.data / "cases.jsonl")
    if args.only:
        cases = [c for c in cases if c["id"] in set(args.only)]
        if not cases:
            ap.error("no case has those ids")

    results = [run_case(c, args, schema, prompt) for c in cases]
    summary = summarize(results)
    summary.update({"mode": args.mode, "model": args.model, "base_url": args.base_url,
                    "response_format": args.response_format if args.mode == "raw" else None})

    if args.json:
        print(json.dumps({"summary": summary, "cases": results}, ensure_ascii=False, indent=2))
    else:
        print_tables(results, summary)

    failed = False
    if args.min_fully_correct is not None and summary["fully_correct"] < args.min_fully_correct:
        print(f"fully-correct {summary['fully_correct']:.1%} < {args.min_fully_correct:.1%}", file=sys.stderr)
        failed = True
    if args.max_p50 is not None and summary["p50_s"] > args.max_p50:
        print(f"p50 {summary['p50_s']:.3f}s > {args.max_p50:.3f}s", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def print_tables(results: list[dict], s: dict) -> None:
    wrong = [r for r in results if not r["fully_correct"]]
    if wrong:
        print("not fully correct:")
        idw = max(len(r["id"]) for r in wrong)
        for r in wrong:
            if r["status"] != 200:
                err = r["error"].get("error", r["error"]) if isinstance(r["error"], dict) else r["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                detail = f"HTTP {r['status']}: {str(msg)[:120]}"
            elif r["output"] is None:
                detail = f"no JSON: {str(r['content'])[:100]!r}"
            else:
                bad = [f"{k}={v['got']!r}" for k, v in r["fields"].items() if not v["ok"]]
                detail = ", ".join(bad) + ("" if r["schema_valid"] else "  (schema-invalid)")
            calls = f"  [{r['attempts']} calls]" if isinstance(r["attempts"], int) else ""
            print(f"  {r['id']:<{idw}}  {detail}{calls}")
        print()
    rows = [
        ("target", f"{s['mode']} {s['model']} @ {s['base_url']}"),
        ("cases", str(s["cases"])),
        ("HTTP 200", f"{s['http_ok']:.1%}"),
        ("schema-valid", f"{s['schema_valid']:.1%}"),
        ("field-correct", f"{s['field_correct']:.1%}"),
        ("fully-correct", f"{s['fully_correct']:.1%}"),
        ("p50 latency", _ms(s["p50_s"])),
        ("p99 latency", _ms(s["p99_s"])),
        ("model calls/input",
         f"{s['calls_per_input']:.2f} ({s['calls_reported']} reported)" if s["calls_per_input"] is not None else "n/a"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


if __name__ == "__main__":
    sys.exit(main())
