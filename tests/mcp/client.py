#!/usr/bin/env python3
"""Drive an MCP server with the official Python `mcp` client (ClientSession).

    python3 tests/mcp/client.py --url http://127.0.0.1:PORT/mcp [--header 'Authorization: Bearer X']... < steps.json
    python3 tests/mcp/client.py --stdio -- CMD ARGS... < steps.json

Reads a JSON list of steps from stdin, connects (initialize handshake),
runs the steps in order on one session and prints ONE JSON document:

    {"server": {"name", "version", "protocol_version"}, "results": [one entry per step]}

Steps and their results:
  {"op":"list_tools"}                      -> {"tools":[{"name","description","inputSchema","annotations","outputSchema"}]}
  {"op":"call","name":N,"arguments":{..}}  -> {"is_error", "text":[..], "structured", "content":[..raw blocks..]}
  {"op":"concurrent","n":200,"name":N,"arguments":{..}}
                                           -> {"ok", "errors", "texts":[first text of each call]}
  {"op":"list_resources"} / {"op":"read_resource","uri":U} / {"op":"list_prompts"}
  {"op":"get_prompt","name":N,"arguments":{..}}  -> the result as plain JSON (camelCase, as on the wire)
  {"op":"sleep","seconds":X}               -> {"slept": X}

A JSON-RPC error from the server (or a read timeout, code -32001, or a
closed connection, code -32000: the SDK raises MCPError for all three)
becomes {"error": {"code": int, "message": str}} for that step; any other
exception becomes {"error": {"code": null, "message": str, "exception": class name}}.
In "concurrent", a call that ended in such an error counts in "errors" and
its "texts" entry is "error: <message>".

Note: the SDK's call_tool validates structured content against the tool's
output schema, and when the tool has not been listed on this session yet it
first sends a tools/list of its own to learn that schema. List the tools
first when a test counts requests. A tool result that breaks its output
schema (or drops structuredContent when the tool declares one) comes back as
an "exception": "RuntimeError" error.

--timeout SECONDS is each request's read timeout (default 60).
Exit code: 0 when all steps ran (whatever they returned), 2 when connecting or
the initialize handshake failed (the reason on stderr), 1 on bad usage.
The stdio server inherits this process's whole environment and its stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from contextlib import AsyncExitStack
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

import httpx2


class ConnectFailed(Exception):
    """Connecting or the initialize handshake failed (exit code 2)."""


def _leaf_exception(exc: BaseException) -> BaseException:
    """The first non-group exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _leaf_exception(exc)
    if isinstance(leaf, ConnectFailed):
        return str(leaf)
    if isinstance(leaf, MCPError):
        return f"MCPError {leaf.code}: {leaf.message}"
    return f"{type(leaf).__name__}: {leaf}"


def _error(exc: BaseException) -> dict[str, Any]:
    leaf = _leaf_exception(exc)
    if isinstance(leaf, MCPError):
        return {"error": {"code": leaf.code, "message": leaf.message}}
    return {"error": {"code": None, "message": str(leaf) or type(leaf).__name__, "exception": type(leaf).__name__}}


def _dump(model: Any) -> Any:
    # exclude_unset: only what the server sent, not model defaults of later protocol revisions.
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


def _texts(result: Any) -> list[str]:
    return [block.text for block in result.content if getattr(block, "type", None) == "text"]


async def _list_tools(session: ClientSession) -> dict[str, Any]:
    tools: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        params = None
        if cursor is not None:
            from mcp.types import PaginatedRequestParams

            params = PaginatedRequestParams(cursor=cursor)
        page = await session.list_tools(params=params)
        for tool in page.tools:
            tools.append(
                {
                    "name": tool.name,
                    "description": tool.description,
                    "inputSchema": tool.input_schema,
                    "annotations": _dump(tool.annotations) if tool.annotations is not None else None,
                    "outputSchema": tool.output_schema,
                }
            )
        cursor = page.next_cursor
        if not cursor:
            break
    return {"tools": tools}


async def _call(session: ClientSession, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    result = await session.call_tool(name, arguments or {})
    return {
        "is_error": bool(result.is_error),
        "text": _texts(result),
        "structured": result.structured_content,
        "content": [_dump(block) for block in result.content],
    }


async def _concurrent(session: ClientSession, n: int, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    async def one() -> tuple[bool, str | None]:
        try:
            result = await session.call_tool(name, arguments or {})
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            return False, "error: " + _error(exc)["error"]["message"]
        texts = _texts(result)
        return (not result.is_error), (texts[0] if texts else None)

    outcomes = await asyncio.gather(*(one() for _ in range(n)))
    ok = sum(1 for good, _ in outcomes if good)
    return {"ok": ok, "errors": n - ok, "texts": [text for _, text in outcomes]}


async def _run_step(session: ClientSession, step: dict[str, Any]) -> dict[str, Any]:
    op = step.get("op")
    try:
        if op == "list_tools":
            return await _list_tools(session)
        if op == "call":
            return await _call(session, step["name"], step.get("arguments"))
        if op == "concurrent":
            return await _concurrent(session, int(step.get("n", 1)), step["name"], step.get("arguments"))
        if op == "list_resources":
            return _dump(await session.list_resources())
        if op == "read_resource":
            return _dump(await session.read_resource(step["uri"]))
        if op == "list_prompts":
            return _dump(await session.list_prompts())
        if op == "get_prompt":
            args = {k: str(v) for k, v in (step.get("arguments") or {}).items()}
            return _dump(await session.get_prompt(step["name"], args))
        if op == "sleep":
            await asyncio.sleep(float(step.get("seconds", 0)))
            return {"slept": step.get("seconds", 0)}
        return {"error": {"code": None, "message": f"unknown op {op!r}", "exception": "UnknownOp"}}
    except Exception as exc:  # noqa: BLE001 - reported per step
        return _error(exc)


async def run(args: argparse.Namespace, steps: list[dict[str, Any]]) -> int:
    output: dict[str, Any] | None = None
    try:
        async with AsyncExitStack() as stack:
            try:
                if args.url:
                    headers: dict[str, str] = {}
                    for header in args.header:
                        name, sep, value = header.partition(":")
                        if not sep:
                            raise ConnectFailed(f"bad --header {header!r} (want 'Name: value')")
                        headers[name.strip()] = value.strip()
                    http = create_mcp_http_client(
                        headers=headers,
                        timeout=httpx2.Timeout(30.0, read=max(300.0, args.timeout + 5)),
                    )
                    await stack.enter_async_context(http)
                    read, write = await stack.enter_async_context(streamable_http_client(args.url, http_client=http))
                else:
                    params = StdioServerParameters(command=args.command[0], args=args.command[1:], env=dict(os.environ))
                    read, write = await stack.enter_async_context(stdio_client(params))
                session = await stack.enter_async_context(
                    ClientSession(read, write, read_timeout_seconds=args.timeout)
                )
                init = await session.initialize()
            except Exception as exc:  # noqa: BLE001
                raise ConnectFailed(_describe(exc)) from exc

            output = {
                "server": {
                    "name": init.server_info.name,
                    "version": init.server_info.version,
                    "protocol_version": init.protocol_version,
                },
                "results": [],
            }
            for step in steps:
                output["results"].append(await _run_step(session, step))
    except ConnectFailed as exc:
        if output is None:
            print(f"client.py: connect/initialize failed: {exc}", file=sys.stderr, flush=True)
            return 2
    except BaseException as exc:  # noqa: BLE001
        if os.environ.get("MCP_CLIENT_DEBUG"):
            traceback.print_exception(exc)
        if output is None:
            # The connect error surfaced from the transport's task group instead.
            print(f"client.py: connect/initialize failed: {_describe(exc)}", file=sys.stderr, flush=True)
            return 2
        # The transport itself failed (e.g. the HTTP server died mid-call: the SDK's
        # streamable HTTP transport then tears the whole session down instead of
        # failing just that request). The step in flight and every later one get
        # the SDK's CONNECTION_CLOSED code.
        lost = {"error": {"code": -32000, "message": f"Connection lost: {_describe(exc)}"}}
        print(f"client.py: {lost['error']['message']}", file=sys.stderr, flush=True)
        output["results"].extend(lost for _ in range(len(steps) - len(output["results"])))
    if output is None:  # pragma: no cover - every path above returns or sets it
        return 2
    print(json.dumps(output), flush=True)
    return 0


def main() -> int:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp")
    target.add_argument("--stdio", action="store_true", help="spawn the server given after --")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (HTTP only, repeatable)")
    parser.add_argument("--timeout", type=float, default=60.0, help="read timeout of each request, seconds")
    args = parser.parse_args(argv)
    args.command = command
    if args.stdio and not command:
        parser.error("--stdio needs the server command after --")
    try:
        steps = json.load(sys.stdin)
    except ValueError as exc:
        parser.error(f"stdin is not a JSON list of steps: {exc}")
    if not isinstance(steps, list):
        parser.error("stdin must be a JSON list of steps")
    return asyncio.run(run(args, steps))


if __name__ == "__main__":
    sys.exit(main())
