#!/usr/bin/env python3
"""The latency a gated MCP `tools/call` gains through Reins, against the same
call straight to the upstream, measured in one run with the official client.

    python3 tests/mcp/bench.py --direct URL --gateway URL [--header 'Authorization: Bearer X'] \
        [--tool NAME] [--gateway-tool NAME] [--calls 500] [--clients 16] [--seconds 10]

For each target: `--calls` sequential calls on one session (p50, p99 of each
call's wall time, after 20 warm-up calls), then `--clients` sessions calling
as fast as they can for `--seconds` (calls per second). Prints one JSON
document. The client's own cost is in both numbers; the difference is
what Reins adds (its HTTP hop, gates, action log, normalizers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import AsyncExitStack

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import httpx2


async def session(stack: AsyncExitStack, url: str, headers: dict[str, str]) -> ClientSession:
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
    await stack.enter_async_context(http)
    read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
    s = await stack.enter_async_context(ClientSession(read, write))
    await s.initialize()
    await s.list_tools()
    return s


def pct(sorted_us: list[float], p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * p))]


async def latency(url: str, headers: dict[str, str], tool: str, args: dict, calls: int) -> dict:
    async with AsyncExitStack() as stack:
        s = await session(stack, url, headers)
        for _ in range(20):
            await s.call_tool(tool, args)
        took = []
        errors = 0
        for _ in range(calls):
            t0 = time.perf_counter()
            r = await s.call_tool(tool, args)
            took.append((time.perf_counter() - t0) * 1e6)
            errors += bool(r.is_error)
        took.sort()
        return {"p50_us": round(pct(took, 0.50)), "p99_us": round(pct(took, 0.99)), "errors": errors}


async def throughput(url: str, headers: dict[str, str], tool: str, args: dict, clients: int, seconds: float) -> dict:
    async with AsyncExitStack() as stack:
        sessions = [await session(stack, url, headers) for _ in range(clients)]
        done = 0
        errors = 0
        stop = time.perf_counter() + seconds

        async def worker(s: ClientSession) -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                r = await s.call_tool(tool, args)
                done += 1
                errors += bool(r.is_error)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in sessions))
        return {"calls_per_s": round(done / (time.perf_counter() - t0), 1), "errors": errors}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direct", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--header", action="append", default=[], help="for the gateway: 'Name: value'")
    p.add_argument("--tool", default="echo")
    p.add_argument("--gateway-tool", default="up__echo")
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    headers = {k.strip(): v.strip() for k, _, v in (h.partition(":") for h in a.header)}
    args = {"text": "hello"}
    out = {}
    for name, url, tool, hdrs in (("direct", a.direct, a.tool, {}), ("gateway", a.gateway, a.gateway_tool, headers)):
        out[name] = {
            "sequential": await latency(url, hdrs, tool, args, a.calls),
            f"concurrent_{a.clients}": await throughput(url, hdrs, tool, args, a.clients, a.seconds),
        }
    d, g = out["direct"]["sequential"], out["gateway"]["sequential"]
    out["added_us"] = {"p50": g["p50_us"] - d["p50_us"], "p99": g["p99_us"] - d["p99_us"]}
    dt = out["direct"][f"concurrent_{a.clients}"]["calls_per_s"]
    gt = out["gateway"][f"concurrent_{a.clients}"]["calls_per_s"]
    out["throughput_ratio"] = round(gt / dt, 3) if dt else None
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
