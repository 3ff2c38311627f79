"""A small MCP server written with the official SDK's ``MCPServer``, for the client tests.

Run: ``python demo_server.py stdio`` or ``python demo_server.py http PORT`` (127.0.0.1 only). Tools: echo, add,
sleep (hangs, records cancellation to a file), crash (exits the process), image, weather (structured), fail
(isError), progress (reports progress), chatty (sends log messages), pid. A text resource, a template and a
prompt.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from pydantic import BaseModel

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

server = MCPServer("demo", instructions="A demo server for AgentScope's MCP tests.", log_level="CRITICAL")


@server.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return f"echo: {message}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep(seconds: float, marker: str = "") -> str:
    """Sleep; if cancelled, write 'cancelled' to the marker file."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker:
            Path(marker).write_text("cancelled")  # noqa: ASYNC240 (a test server)
        raise
    return f"slept {seconds}"


@server.tool()
def crash(code: int = 3) -> str:
    """Exit the server process at once."""
    sys.stderr.write("demo server: crashing on request\n")
    sys.stderr.flush()
    os._exit(code)


@server.tool()
def image() -> Image:
    """A 1x1 PNG."""
    return Image(data=PNG_1X1, format="png")


class Weather(BaseModel):
    city: str
    temperature_c: float


@server.tool()
def weather(city: str) -> Weather:
    """Structured weather."""
    return Weather(city=city, temperature_c=21.5)


@server.tool()
def fail(reason: str) -> str:
    """Always fails (a ToolError: the client sees the message; the server logs no traceback)."""
    raise ToolError(f"failed because {reason}")


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report progress `steps` times."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await asyncio.sleep(0.01)
    return f"done {steps} steps"


@server.tool()
async def chatty(ctx: Context) -> str:
    """Send log messages."""
    await ctx.info("hello from the server")
    await ctx.warning("careful now")
    return "logged"


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.resource("demo://readme", mime_type="text/plain")
def readme() -> str:
    """The readme."""
    return "Read me, please."


@server.resource("demo://greeting/{name}")
def greeting(name: str) -> str:
    """A greeting for someone."""
    return f"Hello, {name}!"


@server.prompt()
def review(code: str) -> str:
    """Review some code."""
    return f"Please review this code:\n{code}"


def serve_http(port: int) -> None:
    """Streamable HTTP on 127.0.0.1:port (0: a free port), announced on stderr once listening."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"LOOPBACK LISTENING 127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
    else:
        serve_http(int(sys.argv[2]))
