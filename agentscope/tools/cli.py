"""``agentscope mcp``: serve a Toolkit as a Model Context Protocol server.

The command group of this package; :mod:`agentscope.cli` mounts :data:`mcp_app` as ``agentscope mcp``. The MCP
SDK loads when a command runs, not when the command line starts.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Annotated

import typer

from agentscope._commands import command_group
from agentscope._loading import LoadError, load_object

__all__ = ["mcp_app"]

mcp_app = command_group("mcp", "Model Context Protocol: serve a Toolkit as an MCP server.")


@mcp_app.command("serve")
def mcp_serve(
    toolkit_spec: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:TOOLKIT",
            help="The toolkit: MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE; a Toolkit, or a function returning one.",
        ),
    ],
    transport: Annotated[
        str, typer.Option("--transport", "-t", help="stdio (for Claude Desktop and the like) or http.")
    ] = "stdio",
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on (http); anything but loopback needs --token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (http); 0 picks a free one.")] = 8000,
    path: Annotated[str, typer.Option("--path", help="URL path of the MCP endpoint (http).")] = "/mcp",
    name: Annotated[str, typer.Option("--name", help="The server name clients see.")] = "agentscope",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="AGENTSCOPE_MCP_TOKEN",
            help="Require 'Authorization: Bearer <token>' on every request (http; 16+ characters).",
        ),
    ] = None,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help=(
                "Another name clients reach the server by (Host header: mcp.internal for any port, "
                "mcp.internal:8000 for one; repeatable). Others get 421."
            ),
        ),
    ] = None,
) -> None:
    """Serve a Toolkit's tools over MCP (stdio or streamable HTTP) until interrupted."""
    if transport not in ("stdio", "http"):
        raise typer.BadParameter(f"use stdio or http, got {transport!r}", param_hint="--transport")
    if ":" not in toolkit_spec:
        raise typer.BadParameter(
            f"expected MODULE:TOOLKIT, got {toolkit_spec!r}", param_hint="MODULE:TOOLKIT"
        )
    from contextlib import suppress

    if transport == "http":
        from agentscope.exceptions import UsageError
        from agentscope.tools._mcp_server import check_mcp_binding, parse_host_entry

        try:
            check_mcp_binding(host, token)
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint="--host") from None
        try:
            for entry in allowed_hosts or ():
                parse_host_entry(entry)
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allowed-host") from None
    with suppress(KeyboardInterrupt):
        asyncio.run(
            _mcp_serve(toolkit_spec, transport, host, port, path, name, token, tuple(allowed_hosts or ()))
        )


def _load_toolkit_spec(spec: str) -> object:
    try:
        return load_object(spec)
    except LoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="MODULE:TOOLKIT") from exc


async def _mcp_serve(
    spec: str,
    transport: str,
    host: str,
    port: int,
    path: str,
    name: str,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    from contextlib import redirect_stdout

    import anyio

    from agentscope.tools import Toolkit, serve_mcp

    # Over stdio, stdout carries the protocol: whatever user code prints while loading goes to stderr.
    with redirect_stdout(sys.stderr if transport == "stdio" else sys.stdout):
        obj = await anyio.to_thread.run_sync(_load_toolkit_spec, spec)  # importing user code reads files
    if not isinstance(obj, Toolkit) and callable(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if not isinstance(obj, Toolkit):
        raise typer.BadParameter(
            f"{spec} is {type(obj).__name__}, not a Toolkit (or a function returning one)",
            param_hint="MODULE:TOOLKIT",
        )
    await serve_mcp(
        obj,
        transport="http" if transport == "http" else "stdio",
        host=host,
        port=port,
        path=path,
        name=name,
        token=token,
        allowed_hosts=allowed_hosts,
    )
