"""A :class:`~agentscope.tools.Toolkit` served as an MCP server, over stdio or streamable HTTP.

Every tool of the toolkit's active groups is listed with its JSON schema and description. Calls go through
:meth:`Toolkit.execute`, so validation, timeouts and errors behave exactly as in-process: a bad argument, an
exception or a timeout comes back as a result with ``isError`` set and the same text the model would see.
A streaming tool reports each piece it yields as a progress notification (when the client asked for progress)
and returns the merged output, converted by :func:`~agentscope.tools._mcp_convert.tool_response_to_mcp` (text
becomes ``text`` content, base64 images ``image`` content, image URLs ``resource_link`` content, and structured
data ``structuredContent``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import mcp_types as mtypes
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import agentscope
from agentscope._net import is_loopback_host
from agentscope.exceptions import ApprovalRequired, UsageError
from agentscope.message import ImageBlock, TextBlock, ToolResultBlock, ToolUseBlock, new_id
from agentscope.tools._convert import merge_responses
from agentscope.tools._mcp_convert import tool_response_to_mcp
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from agentscope.tools._toolkit import Toolkit

__all__ = [
    "build_mcp_server",
    "check_mcp_binding",
    "mcp_http_app",
    "parse_host_entry",
    "serve_mcp",
]

logger = logging.getLogger("agentscope.mcp.server")


def build_mcp_server(
    toolkit: Toolkit, *, name: str = "agentscope", instructions: str | None = None
) -> Server[Any]:
    """An ``mcp`` low-level ``Server`` exposing ``toolkit``'s active tools.

    Run it yourself (``server.run(read, write, server.create_initialization_options())``, or mount
    :func:`mcp_http_app` in an ASGI app), connect an :class:`~agentscope.tools.MCPClient` to it in-process, or
    use :func:`serve_mcp`.

    Args:
        toolkit: The tools to serve. Groups switched on or off later change what is listed.
        name: The server name clients see.
        instructions: What the server is for, sent to clients at connection; default: the toolkit's group
            instructions, if any.
    """

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mtypes.PaginatedRequestParams | None
    ) -> mtypes.ListToolsResult:
        return mtypes.ListToolsResult(
            tools=[
                mtypes.Tool(name=s.name, description=s.description, input_schema=s.parameters)
                for s in toolkit.schemas()
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mtypes.CallToolRequestParams
    ) -> mtypes.CallToolResult:
        call = ToolUseBlock(
            id=str(ctx.request_id) if ctx.request_id is not None else new_id(),
            name=params.name,
            input=params.arguments or {},
        )
        try:
            info = toolkit.get(params.name)
            if info is not None and info.streaming:
                response = await _run_streaming(toolkit, call, ctx)
            else:
                response = await toolkit.execute(call)
        except ApprovalRequired as exc:
            response = ToolResponse.text(
                f"Tool '{params.name}' needs a human's approval ({exc.reason}), which cannot be given over MCP",
                is_error=True,
            )
        return tool_response_to_mcp(response, modern=ctx.protocol_version in MODERN_PROTOCOL_VERSIONS)

    return Server(
        name,
        version=agentscope.__version__,
        instructions=instructions if instructions is not None else (toolkit.group_instructions() or None),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _run_streaming(
    toolkit: Toolkit, call: ToolUseBlock, ctx: ServerRequestContext[Any]
) -> ToolResponse:
    """Run a streaming tool, reporting each piece as progress; the merged output (as ``execute`` returns it)."""
    pieces: list[ToolResponse] = []
    final: ToolResultBlock | None = None
    async for item in toolkit.stream(call):
        if isinstance(item, ToolResponse):
            pieces.append(item)
            await ctx.session.report_progress(float(len(pieces)), None, item.text_content or None)
        else:
            final = item
    assert final is not None, "Toolkit.stream ends with the result"
    merged = merge_responses(pieces) if pieces else None
    if merged is not None and final.is_error == merged.is_error:
        return merged
    output = final.output
    content: list[TextBlock | ImageBlock] = (
        [TextBlock(text=output)] if isinstance(output, str) else list(output)
    )
    return ToolResponse(content=content, is_error=final.is_error)


async def serve_mcp(
    toolkit: Toolkit,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    name: str = "agentscope",
    instructions: str | None = None,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    on_ready: Callable[[str], object] | None = None,
) -> None:
    """Serve ``toolkit`` as an MCP server until cancelled (or, over stdio, until the client disconnects).

    Over stdio the process's stdin and stdout carry the protocol (stray prints go to stderr while serving).
    Over HTTP it listens on ``http://{host}:{port}{path}`` (streamable HTTP; ``port=0`` picks a free port, the
    address is logged and written to stderr) and stops gracefully when cancelled.

    HTTP security: the tools run on this machine, so a ``host`` other than the loopback needs a ``token``
    (at least 16 characters), and with a token every request must carry ``Authorization: Bearer <token>``
    (else 401). Requests whose ``Host`` header is not a name of this server get 421, and browser requests from
    another ``Origin`` get 403 (DNS-rebinding protection), whatever the interface: the accepted names are the
    loopback's, the bound address, this machine's host name and addresses when bound to all interfaces, and
    ``allowed_hosts``.

    Args:
        toolkit: The tools to serve.
        transport: ``"stdio"`` or ``"http"``.
        host: Interface to listen on (HTTP); anything but the loopback needs ``token``.
        port: Port to listen on (HTTP).
        path: URL path of the endpoint (HTTP).
        name: The server name clients see.
        instructions: Sent to clients at connection; default: the toolkit's group instructions.
        token: Require ``Authorization: Bearer <token>`` on every HTTP request.
        allowed_hosts: More names clients may reach the server by (``Host`` header values: ``"mcp.internal"``
            for any port, ``"mcp.internal:8000"`` for one port only; IPv6 as ``"::1"``, ``"[::1]"`` or
            ``"[::1]:8000"``), e.g. behind a proxy. See :func:`parse_host_entry`.
        on_ready: Called with the endpoint's URL once the HTTP server listens (handy with ``port=0``).

    Raises:
        UsageError: an unknown transport, a non-loopback ``host`` without a (long enough) ``token``, or a
            malformed ``allowed_hosts`` entry.
    """
    server = build_mcp_server(toolkit, name=name, instructions=instructions)
    if transport == "stdio":
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        return
    if transport != "http":
        raise UsageError(f"unknown MCP transport {transport!r}; use 'stdio' or 'http'")
    check_mcp_binding(host, token)
    names = await anyio.to_thread.run_sync(_host_names, host, tuple(allowed_hosts))  # may resolve names
    app = mcp_http_app(server, path=path, host_names=names, token=token)
    await _serve_http(app, host=host, port=port, path=path, on_ready=on_ready)


def check_mcp_binding(host: str, token: str | None) -> None:
    """Refuse to serve tools over HTTP beyond the loopback without a token (anyone could run them).

    Raises:
        UsageError: ``host`` is not a loopback address and there is no token, or it is shorter than 16.
    """
    if token is not None and len(token) < _MIN_TOKEN:
        raise UsageError(f"the MCP server token must be at least {_MIN_TOKEN} characters long")
    if is_loopback_host(host) or token:
        return
    raise UsageError(
        f"binding the MCP server to {host} lets anyone who can reach it run its tools on this machine: pass "
        f"a token (--token {secrets.token_urlsafe(24)}; clients send Authorization: Bearer <token>) or bind "
        "127.0.0.1"
    )


def mcp_http_app(
    server: Server[Any], *, path: str = "/mcp", host_names: Sequence[str], token: str | None = None
) -> ASGIApp:
    """The streamable-HTTP ASGI app of ``server``, with explicit DNS-rebinding settings and an optional token.

    Args:
        server: The MCP server (see :func:`build_mcp_server`).
        path: URL path of the endpoint.
        host_names: The names the server may be reached by, as :func:`parse_host_entry` reads them: a name
            (``"mcp.internal"``, ``"::1"``) for any port, or ``"mcp.internal:8000"``/``"[::1]:8000"`` for that
            port only. Requests with another ``Host`` get 421, and browser requests whose ``Origin`` is not one
            of them 403.
        token: When set, every request must carry ``Authorization: Bearer <token>`` (else 401).

    Raises:
        UsageError: a malformed ``host_names`` entry.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    # The SDK matches a Host header exactly, or "name:*" as the name with any port; Origin likewise.
    hosts: list[str] = []
    origins: list[str] = []
    for entry in host_names:
        name, port = parse_host_entry(entry)
        if port is None:
            hosts += [name, f"{name}:*"]
            origins += [
                f"{scheme}://{name}{any_port}" for scheme in ("http", "https") for any_port in ("", ":*")
            ]
            continue
        hosts.append(f"{name}:{port}")
        origins += [f"http://{name}:{port}", f"https://{name}:{port}"]
        # Clients leave the scheme's default port out of Host and Origin.
        if port in (80, 443):
            hosts.append(name)
            origins.append(f"{'http' if port == 80 else 'https'}://{name}")
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )
    app: ASGIApp = server.streamable_http_app(streamable_http_path=path, transport_security=security)
    return app if token is None else _BearerToken(app, token)


class _BearerToken:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse

        scheme, _, supplied = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(supplied.strip().encode(), self._token):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "this MCP server needs its token: send Authorization: Bearer <token>",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="agentscope-mcp"'},
        )
        await response(scope, receive, send)


_MIN_TOKEN = 16
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def parse_host_entry(entry: str) -> tuple[str, int | None]:
    """An allowed ``Host`` as ``(name, port)``: the name as a ``Host`` header writes it (lower case, an IPv6
    address in brackets) and the port, or ``None`` for any port.

    ``"mcp.internal"`` and ``"mcp.internal:8000"``; IPv6 as ``"::1"`` or ``"[::1]"`` (any port) and
    ``"[::1]:8000"``.

    Raises:
        UsageError: an empty entry, a URL, a port that is not a number from 1 to 65535, or an IPv6 address
            with a port but without brackets.
    """
    text = entry.strip().lower()
    port_text: str | None
    if text.startswith("["):
        address, closed, rest = text[1:].partition("]")
        if not closed or not _is_ipv6(address) or (rest and not rest.startswith(":")):
            raise UsageError(f"bad host {entry!r}: write an IPv6 address as [address] or [address]:port")
        name, port_text = f"[{address}]", (rest[1:] if rest else None)
    elif _is_ipv6(text):
        return f"[{text}]", None
    else:
        if "/" in text:
            raise UsageError(f"bad host {entry!r}: give a Host header value (name or name:port), not a URL")
        name, colon, after = text.partition(":")
        port_text = after if colon else None
        if port_text is not None and ":" in port_text:
            raise UsageError(f"bad host {entry!r}: write an IPv6 address with a port as [address]:port")
    if not name:
        raise UsageError(f"bad host {entry!r}: the name is empty")
    if port_text is None:
        return name, None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise UsageError(f"bad host {entry!r}: the port {port_text!r} is not a number from 1 to 65535")
    return name, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def _host_names(host: str, extra: Sequence[str]) -> list[str]:
    """The ``Host`` names the server answers to: loopback, the bound address (all of this machine's names and
    addresses for a wildcard bind) and ``extra`` (entries as :func:`parse_host_entry` reads them, checked
    later by :func:`mcp_http_app`). Blocking (it may resolve this machine's name)."""
    names = [*_LOOPBACK_NAMES, host.strip("[]")]
    if host in ("0.0.0.0", "::", "[::]", ""):
        machine = socket.gethostname()
        names += [machine, socket.getfqdn()]
        with contextlib.suppress(OSError):
            names += [str(info[4][0]) for info in socket.getaddrinfo(machine, None)]
    for item in extra:
        name = item.strip().lower()
        if name:
            names.append(name)
    return [n for n in dict.fromkeys(names) if n not in ("0.0.0.0", "::", "")]


async def _serve_http(
    app: ASGIApp, *, host: str, port: int, path: str, on_ready: Callable[[str], object] | None
) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    http = uvicorn.Server(config)
    # Bind first, so that the address (a free port when port=0) is known and announced before serving.
    sock = await anyio.to_thread.run_sync(_bind, host, port)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}{path}"
        logger.info("MCP server listening on %s", url)
        print(f"MCP server listening on {url}", file=sys.stderr, flush=True)
        if on_ready is not None:
            on_ready(url)
        done = anyio.Event()

        async def run() -> None:
            try:
                with anyio.CancelScope(
                    shield=True
                ):  # stopped through should_exit, so that it shuts down cleanly
                    await http.serve(sockets=[sock])
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                await done.wait()
            finally:
                http.should_exit = True
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listen now: the address is announced before uvicorn starts serving, and a client that connects in
        # between must wait in the backlog, not be refused.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
