"""A minimal MCP server over stdio (handshake era, JSON-RPC lines, asyncio, no dependencies) with one tool,
``echo``: it costs next to nothing per call, so a benchmark against it measures the client."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the message.",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    }
]


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    method = message.get("method")
    params = message.get("params") or {}
    if method == "tools/call":
        text = f"echo: {(params.get('arguments') or {}).get('message', '')}"
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": False}
    elif method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo", "version": "1.0"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "ping":
        result = {}
    elif "id" in message:
        return {
            "jsonrpc": "2.0",
            "id": message["id"],
            "error": {"code": -32601, "message": f"no method {method}"},
        }
    else:
        return None  # a notification
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while line := await reader.readline():
        if line.strip():
            reply = answer(json.loads(line))
            if reply is not None:
                out.write(json.dumps(reply).encode() + b"\n")
                if not reader._buffer:
                    out.flush()
    out.flush()


if __name__ == "__main__":
    asyncio.run(main())
