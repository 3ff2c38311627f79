"""A stdio MCP server that answers tool calls with hostile frames (for the bad-input tests).

Tools: ``unclosed`` (a reply that opens 100,000 arrays and never closes them), ``deep`` (valid JSON nested
5,000 deep), ``nested`` (structured content nested ``depth`` deep), ``scalar_result`` (a ``result`` that is not
an object), ``echo``. No dependencies; speaks the handshake-era protocol.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOOLS = [
    {"name": name, "inputSchema": {"type": "object"}}
    for name in ("unclosed", "deep", "nested", "scalar_result", "echo")
]


def send_raw(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def send(message: dict[str, Any]) -> None:
    send_raw(json.dumps({"jsonrpc": "2.0", **message}))


def call_tool(request_id: Any, name: str, args: dict[str, Any]) -> None:
    head = '{"jsonrpc": "2.0", "id": ' + json.dumps(request_id)
    if name == "unclosed":
        send_raw(head + ', "result": ' + "[" * 100_000)
    elif name == "deep":
        send_raw(
            '{"jsonrpc": "2.0", "result": {"a": '
            + "[" * 5000
            + "]" * 5000
            + "}, "
            + '"id": '
            + json.dumps(request_id)
            + "}"
        )
    elif name == "nested":
        depth = int(args.get("depth", 10))
        nested = "[" * depth + "]" * depth
        send_raw(head + ', "result": {"content": [], "structuredContent": {"a": ' + nested + "}}}")
    elif name == "scalar_result":
        send_raw(head + ', "result": 5}')
    else:
        send({"id": request_id, "result": {"content": [{"type": "text", "text": json.dumps(args)}]}})


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message: dict[str, Any] = json.loads(line)
        method = message.get("method")
        request_id = message.get("id")
        params: dict[str, Any] = message.get("params") or {}
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1.0"},
            }
            send({"id": request_id, "result": result})
        elif method == "tools/list":
            send({"id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call_tool(request_id, params["name"], params.get("arguments") or {})
        elif method == "ping":
            send({"id": request_id, "result": {}})
        elif request_id is not None:
            send({"id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})


if __name__ == "__main__":
    main()
