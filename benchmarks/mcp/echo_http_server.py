"""An MCP server over streamable HTTP on 127.0.0.1 (the official SDK's ``MCPServer`` under uvicorn) with one
tool, ``echo``. Prints ``LISTENING <port>`` on stderr once it accepts connections."""

from __future__ import annotations

import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo", log_level="WARNING")


@server.tool()
def echo(message: str) -> str:
    """Echo the message."""
    return f"echo: {message}"


def main() -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    sock.listen(1024)
    print(f"LISTENING {sock.getsockname()[1]}", file=sys.stderr, flush=True)
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
