"""A tiny MCP server over stdio with no dependencies: starts in milliseconds, for the lifecycle tests.

It speaks the handshake-era protocol (``initialize``), answers ``server/discover`` with "method not found" so a
client falls back to it, and honours ``notifications/cancelled``. Tools: echo, add, sleep (writes "cancelled"
to ``marker`` when cancelled), crash (exits at once with ``code``), pid. ``--hang`` never answers anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}},
    {
        "name": "add",
        "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
    {"name": "sleep", "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "crash", "inputSchema": {"type": "object", "properties": {"code": {"type": "integer"}}}},
    {"name": "pid", "inputSchema": {"type": "object", "properties": {}}},
    {
        "name": "dotted.name",
        "description": "A name a model cannot call as is.",
        "inputSchema": {"type": "object"},
    },
]
running: dict[Any, asyncio.Task[None]] = {}


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def text(value: object) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": str(value)}], "isError": False}


async def call_tool(request_id: Any, name: str, args: dict[str, Any]) -> None:
    try:
        if name == "echo":
            result = text(f"echo: {args.get('message', '')}")
        elif name == "add":
            result = text(args["a"] + args["b"])
        elif name == "sleep":
            await asyncio.sleep(float(args.get("seconds", 1)))
            result = text("slept")
        elif name == "crash":
            sys.stderr.write("tiny server: crashing on request\n")
            sys.stderr.flush()
            os._exit(int(args.get("code", 3)))
        elif name == "pid":
            result = text(os.getpid())
        elif name == "dotted.name":
            result = text("dotted")
        else:
            send({"id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
            return
        send({"id": request_id, "result": result})
    except asyncio.CancelledError:
        marker = args.get("marker")
        if marker:
            with open(marker, "w") as f:  # noqa: ASYNC230 (a test server)
                f.write("cancelled")
    finally:
        running.pop(request_id, None)


def handle(message: dict[str, Any]) -> None:
    method = message.get("method")
    request_id = message.get("id")
    params = message.get("params") or {}
    if method == "initialize":
        send(
            {
                "id": request_id,
                "result": {
                    "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "tiny", "version": "1.0"},
                },
            }
        )
    elif method == "tools/list":
        send({"id": request_id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        task = asyncio.ensure_future(call_tool(request_id, params["name"], params.get("arguments") or {}))
        running[request_id] = task
    elif method == "ping":
        send({"id": request_id, "result": {}})
    elif method == "notifications/cancelled":
        task = running.get(params.get("requestId"))
        if task is not None:
            task.cancel()
    elif request_id is not None:
        send({"id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    hang = "--hang" in sys.argv
    while line := await reader.readline():
        if line.strip() and not hang:
            handle(json.loads(line))


if __name__ == "__main__":
    asyncio.run(main())
