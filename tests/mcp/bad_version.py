#!/usr/bin/env python3
"""A stdio "MCP server" that offers a protocol version no client speaks.

Plain Python (no mcp package): reads newline-delimited JSON-RPC from stdin,
answers `initialize` with protocolVersion "1999-01-01" (and otherwise
ordinary serverInfo/capabilities), answers every other request with a
JSON-RPC error, ignores notifications, and exits on EOF.

    python3 tests/mcp/bad_version.py
"""

import json
import sys

BAD_VERSION = "1999-01-01"


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            reply({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            continue
        if not isinstance(msg, dict) or "method" not in msg:
            continue  # a response or junk: nothing to answer
        if "id" not in msg:
            continue  # a notification (e.g. notifications/initialized)
        if msg["method"] == "initialize":
            reply(
                {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "result": {
                        "protocolVersion": BAD_VERSION,
                        "capabilities": {"tools": {"listChanged": False}},
                        "serverInfo": {"name": "bad-version", "version": "0.0.1"},
                    },
                }
            )
        else:
            reply(
                {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "error": {"code": -32601, "message": f"Method not found: {msg['method']}"},
                }
            )


if __name__ == "__main__":
    main()
