"""Streams one answer with the official OpenAI or Anthropic Python client and
reports what the application saw, as JSON on stdout.

Usage:
  python3 stream_client.py openai|anthropic BASE_URL API_KEY MODEL PROMPT
      [--max-tokens N] [--timeout SECONDS] [--n RUNS]

BASE_URL is what the SDK takes as `base_url`: for `openai` the root of the
OpenAI API (`http://HOST:PORT/v1`; the SDK appends /chat/completions), for
`anthropic` the server's root (the SDK appends /v1/messages). --max-tokens
is sent as `max_tokens` (openai: only when given; anthropic: 1024 when not
given, since the Messages API requires it).

`openai` calls `client.chat.completions.create(..., stream=True,
stream_options={"include_usage": True})`; `anthropic` calls
`client.messages.stream(...)`. Either iterates the whole stream, then prints
ONE JSON object:

  {"ttfb_ms": ms to the first non-empty text delta (null if none),
   "total_ms": ms to the end of the stream (or to the error),
   "text": the deltas joined, "deltas": [each text delta],
   "finish_reason": the last finish_reason / stop_reason seen (or null),
   "usage": the usage as the SDK reports it (OpenAI: prompt_tokens,
            completion_tokens, total_tokens; Anthropic: input_tokens,
            output_tokens, ...), or null,
   "error": null or {"type": the exception's class name, "message": str(e),
                     "status": its HTTP status or null, "body": its body or null}}

An error while creating or iterating the stream (a refused request, an error
event mid-stream, a connection cut, a timeout) is reported in "error", with
what arrived before it kept in the other fields; the exit status is 0 either
way. It never hangs: the SDK gets --timeout (30 s) as its timeout, and each
run is cut by an alarm after twice that.

With --n RUNS it streams RUNS times (one client, so connections are reused)
and prints {"ttfb_ms": [...], "total_ms": [...], "errors": [...]} instead,
a list entry per run (errors: null for a run that went well).
"""

import argparse
import json
import signal
import sys
import time


class Deadline(Exception):
    """The run took longer than the alarm allowed."""


def _on_alarm(signum, frame):
    raise Deadline("the run exceeded its overall deadline")


def _dump(model):
    if model is None:
        return None
    if hasattr(model, "model_dump"):
        return model.model_dump(exclude_none=True)
    return dict(model)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _error(e):
    return {
        "type": type(e).__name__,
        "message": str(e),
        "status": getattr(e, "status_code", None),
        "body": _jsonable(getattr(e, "body", None)),
    }


class Run:
    def __init__(self):
        self.start = time.perf_counter()
        self.ttfb_ms = None
        self.total_ms = None
        self.deltas = []
        self.finish_reason = None
        self.usage = None
        self.error = None

    def delta(self, text):
        if text:
            if self.ttfb_ms is None:
                self.ttfb_ms = (time.perf_counter() - self.start) * 1000
            self.deltas.append(text)

    def end(self):
        self.total_ms = (time.perf_counter() - self.start) * 1000

    def report(self):
        return {
            "ttfb_ms": self.ttfb_ms,
            "total_ms": self.total_ms,
            "text": "".join(self.deltas),
            "deltas": self.deltas,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
        }


def openai_run(client, args, run):
    extra = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": args.prompt}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    try:
        for chunk in stream:
            for choice in chunk.choices or []:
                if choice.delta is not None:
                    run.delta(choice.delta.content)
                if choice.finish_reason is not None:
                    run.finish_reason = choice.finish_reason
            if getattr(chunk, "usage", None) is not None:
                run.usage = _dump(chunk.usage)
    finally:
        stream.close()


def anthropic_run(client, args, run):
    with client.messages.stream(
        model=args.model,
        max_tokens=args.max_tokens if args.max_tokens is not None else 1024,
        messages=[{"role": "user", "content": args.prompt}],
    ) as stream:
        try:
            for event in stream:
                if event.type == "text":
                    run.delta(event.text)
                elif event.type == "message_delta" and event.delta.stop_reason is not None:
                    run.finish_reason = event.delta.stop_reason
        finally:
            # The SDK's own account of the usage so far (message_start's,
            # updated by message_delta's), kept even when the stream failed.
            try:
                run.usage = _dump(stream.current_message_snapshot.usage)
            except Exception:
                pass


def one(client, args, flavour):
    run = Run()
    alarm = max(1, int(args.timeout * 2))
    signal.alarm(alarm)
    try:
        (openai_run if flavour == "openai" else anthropic_run)(client, args, run)
    except BaseException as e:  # noqa: BLE001 - every failure is the report
        if isinstance(e, KeyboardInterrupt):
            raise
        run.error = _error(e)
    finally:
        signal.alarm(0)
        run.end()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("flavour", choices=["openai", "anthropic"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("model")
    parser.add_argument("prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--n", type=int, default=None, metavar="RUNS")
    args = parser.parse_args()

    signal.signal(signal.SIGALRM, _on_alarm)
    if args.flavour == "openai":
        from openai import OpenAI

        client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=args.timeout)
    else:
        from anthropic import Anthropic

        client = Anthropic(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=args.timeout)

    if args.n is None:
        out = one(client, args, args.flavour).report()
    else:
        runs = [one(client, args, args.flavour) for _ in range(args.n)]
        out = {
            "ttfb_ms": [r.ttfb_ms for r in runs],
            "total_ms": [r.total_ms for r in runs],
            "errors": [r.error for r in runs],
        }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
