"""The official `openai` and `anthropic` Python clients against a `reins
serve` whose provider is saturated (its upstream answered 429 with
`Retry-After: 30`): what an application sees is the SDK's own rate-limit
error, at once, with `Retry-After`, and the client's own timeout (sent as
`X-Stainless-Read-Timeout`) is what decides that waiting 30 s is no use.

Usage: python3 overload_clients.py BASE_URL
Pipelines: `wait` (queues while saturated); the provider is already saturated.
"""

import sys
import time

import anthropic
import openai
from checks import check, run

BASE = sys.argv[1]
MESSAGES = [{"role": "user", "content": "hi"}]


@check
def openai_gets_a_rate_limit_error_at_once_with_retry_after():
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="none", max_retries=0, timeout=5)
    started = time.monotonic()
    try:
        client.chat.completions.create(model="wait", messages=MESSAGES)
    except openai.RateLimitError as e:
        took = time.monotonic() - started
        assert int(e.response.headers["retry-after"]) >= 20, e.response.headers
        assert e.body["type"] == "overloaded", e.body
        assert "provider `primary`" in e.body["message"], e.body
        # Refused, not left to wait out the 5 s it would have given up after.
        assert took < 5, took
        return
    raise AssertionError("expected openai.RateLimitError")


@check
def anthropic_gets_a_rate_limit_error_with_retry_after():
    client = anthropic.Anthropic(base_url=BASE, api_key="none", max_retries=0, timeout=5)
    try:
        client.messages.create(model="wait", max_tokens=64, messages=MESSAGES)
    except anthropic.RateLimitError as e:
        assert int(e.response.headers["retry-after"]) >= 20, e.response.headers
        assert e.body["error"]["type"] == "rate_limit_error", e.body
        return
    raise AssertionError("expected anthropic.RateLimitError")


run()
