"""The connection half of the MCP client: one live connection to one server, re-established when lost.

Each connection to the server lives in one dedicated background task, which opens the transport and the ``mcp``
SDK session, waits until it is told to stop (or the server process exits), and closes them again: every cancel
scope the SDK opens is entered and exited in that one task, so any task may connect, call and close. Callers talk
to the session directly (the SDK's session is safe to use from many tasks at once)::

    connect()/async with ──► owner task: open transport ─► initialize ─► ready ── wait ── close transport
                                                                   ▲
    call_tool()/list_tools()/... from any number of tasks ─────────┘ (requests go straight to the session)

:class:`ServerConnection` holds that lifecycle; :class:`~agentscope.tools.MCPClient` adds the requests on top.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import mcp_types as mtypes
from mcp import Client as SdkClient
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

import agentscope
from agentscope._errors import unwrap_group
from agentscope.exceptions import ToolError, UsageError
from agentscope.tools._mcp_stdio import StdioServer, StdioTransport

if TYPE_CHECKING:
    from mcp.client._transport import Transport

__all__ = [
    "STOP_TIMEOUT_S",
    "Connection",
    "LogCallback",
    "LogLevel",
    "MCPConnectionError",
    "MCPLogMessage",
    "MCPServerSpec",
    "ServerConnection",
    "loss_description",
    "maybe_await",
]

MCPServerSpec: TypeAlias = "str | StdioServer | Server[Any] | MCPServer | Callable[[], Transport]"
"""Where an :class:`MCPClient` connects: a streamable-HTTP URL, a :class:`StdioServer` to run, an in-process
``mcp`` server (``Server`` or ``MCPServer``; handy in tests), or a zero-argument callable returning a fresh
``mcp`` transport (an async context manager yielding the read and write streams) for each connection."""

LogLevel: TypeAlias = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

_T = TypeVar("_T")
_PY_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}
STOP_TIMEOUT_S = 10.0
"""How long closing a connection (or a call's task) may take before it is cut off."""
_STARTING_GRACE_S = 0.2


class MCPConnectionError(ToolError):
    """An MCP server could not be reached: it did not start, did not answer the handshake in time, or the
    connection was lost and could not be re-established. The message names the server and says why (with the
    end of its stderr for a stdio server that exited)."""


@dataclass(frozen=True, slots=True)
class MCPLogMessage:
    """A log message sent by an MCP server (``notifications/message``)."""

    server: str
    """Name of the server."""
    level: str
    """MCP log level: ``debug``, ``info``, ``notice``, ``warning``, ``error``, ``critical``, ``alert``..."""
    logger: str | None
    """The server-side logger name, when given."""
    data: Any
    """The message: a string or any JSON value."""


LogCallback: TypeAlias = Callable[[MCPLogMessage], Awaitable[None] | None]


@dataclass(eq=False)
class Connection:
    """One connection: its owner task's events and cancel scope, the SDK client, the stdio transport."""

    generation: int
    ready: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    stop_requested: bool = False
    client: SdkClient | None = None
    transport: StdioTransport | None = None
    error: BaseException | None = None
    lost: bool = False

    @property
    def usable(self) -> bool:
        return self.client is not None and not self.lost and not self.wake.is_set() and not self.done.is_set()

    def request_stop(self) -> None:
        self.stop_requested = True
        self.wake.set()


class ServerConnection:
    """The lifecycle of :class:`~agentscope.tools.MCPClient`'s connection to one server: connect, hold it in an
    owner task, re-establish it when lost, close it (see the module docstring)."""

    def __init__(
        self,
        server: MCPServerSpec,
        *,
        name: str | None,
        connect_timeout_s: float,
        on_log: LogCallback | None,
        log_level: LogLevel | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        if not connect_timeout_s > 0:
            raise UsageError(
                f"connect_timeout_s must be a positive number of seconds, got {connect_timeout_s!r}"
            )
        self._server = server
        self._explicit_name = name is not None
        self.name: str = name if name is not None else _default_name(server)
        """Name used in messages, logs and tool errors."""
        self.connect_timeout_s = connect_timeout_s
        """Limit for starting the server and the handshake, in seconds."""
        self.on_log = on_log
        """Receives every log message of the server."""
        self.log_level: LogLevel | None = log_level
        """Lowest log level requested from the server."""
        self.headers: Mapping[str, str] = dict(headers or {})
        """HTTP headers sent to a streamable-HTTP server."""
        self.restarts = 0
        """How many times the connection was re-established after being lost."""
        self._conn: Connection | None = None
        self._generation = 0
        self._lock: anyio.Lock | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logging.getLogger(f"agentscope.mcp.{_logger_suffix(self.name)}")

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Start (or reach) the server and complete the MCP handshake. Does nothing when already connected.

        Raises:
            MCPConnectionError: the server did not start or did not answer in time.
            UsageError: the client was closed (a closed client cannot be reopened; make a new one).
        """
        if self._closed:
            raise UsageError(f"MCP client {self.name!r} is closed; create a new MCPClient to connect again")
        conn = self._conn
        if conn is not None and conn.usable:
            return
        await self._reconnect(conn, counting=False)

    async def aclose(self) -> None:
        """Close the connection and stop a stdio server (its whole process group). Safe to call many times,
        from any task, and while cancelled (the shutdown is shielded and bounded)."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            conn = self._conn
            if conn is not None:
                await _stop(conn)
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await asyncio.wait(pending)

    @property
    def connected(self) -> bool:
        """Whether a live connection is open (a server that exited counts as not connected)."""
        conn = self._conn
        return conn is not None and conn.usable

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def server_pid(self) -> int | None:
        """Process id of the running stdio server; ``None`` for other transports or when not running."""
        conn = self._conn
        if conn is None or conn.transport is None or conn.done.is_set():
            return None
        return conn.transport.pid

    @property
    def server_info(self) -> mtypes.Implementation | None:
        """Name and version the server reported, when connected."""
        conn = self._conn
        return conn.client.server_info if conn is not None and conn.client is not None else None

    @property
    def session(self) -> SdkClient:
        """The ``mcp`` SDK client of the current connection, for what this class does not wrap.

        It is replaced when the connection is re-established; don't keep it.

        Raises:
            UsageError: not connected.
        """
        conn = self._conn
        if conn is None or conn.client is None or not conn.usable:
            raise UsageError(f"MCP client {self.name!r} is not connected; call connect() first")
        return conn.client

    async def _reconnect(self, old: Connection | None, *, counting: bool = True) -> Connection:
        """The live connection: ``old`` is replaced by a new one unless another task already did it."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._closed:
                raise UsageError(f"MCP client {self.name!r} is closed")
            current = self._conn
            if current is not None and current is not old and current.usable:
                return current
            if current is not None:
                with anyio.CancelScope(shield=True):
                    await _stop(current)
            conn = await self._open()
            if counting:
                self.restarts += 1
                self._log.warning("reconnected to MCP server %r (restart %d)", self.name, self.restarts)
            return conn

    async def _open(self) -> Connection:
        self._generation += 1
        conn = Connection(self._generation)
        self._conn = conn
        self._spawn(self._own(conn))
        try:
            with anyio.fail_after(self.connect_timeout_s):
                await conn.ready.wait()
        except TimeoutError:
            with anyio.CancelScope(shield=True):
                await _stop(conn)
            raise MCPConnectionError(
                f"MCP server {self.name!r} did not finish connecting within {self.connect_timeout_s:g}s"
                + _stderr_note(conn)
            ) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _stop(conn)
            raise
        if self._closed:
            with anyio.CancelScope(shield=True):
                await _stop(conn)
            raise UsageError(f"MCP client {self.name!r} was closed while connecting")
        if conn.error is not None or conn.client is None:
            raise MCPConnectionError(
                f"cannot connect to MCP server {self.name!r}: {_describe_error(conn.error)}"
                + _stderr_note(conn)
            ) from conn.error
        if not self._explicit_name and conn.client.server_info is not None and conn.client.server_info.name:
            self.name = conn.client.server_info.name
            self._log = logging.getLogger(f"agentscope.mcp.{_logger_suffix(self.name)}")
        return conn

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coro`` in a task of its own that no caller's cancel scope reaches; :meth:`aclose` waits for it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            raise UsageError("MCPClient runs on the asyncio event loop (anyio's asyncio backend)") from None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _own(self, conn: Connection) -> None:
        """The owner task of one connection: open it, hold it until told to stop (or the server exits), close it."""
        try:
            with anyio.CancelScope() as scope:
                conn.scope = scope
                if conn.stop_requested:
                    scope.cancel()
                await _preload_sdk_modules()
                async with AsyncExitStack() as stack:
                    client = SdkClient(
                        await self._target(conn, stack),
                        logging_callback=self._on_log_message,
                        log_level=self.log_level,
                        client_info=mtypes.Implementation(name="agentscope", version=agentscope.__version__),
                        cache=None,
                    )
                    await stack.enter_async_context(client)
                    conn.client = client
                    await self._after_handshake(client)
                    conn.ready.set()
                    await conn.wake.wait()
        except Exception as exc:  # recorded for the caller: the owner task must not die with an error
            conn.error = exc
            if conn.ready.is_set() and not conn.stop_requested:
                self._log.warning("connection to MCP server %r ended: %s", self.name, _describe_error(exc))
        finally:
            conn.lost = True
            conn.ready.set()
            conn.done.set()

    async def _target(self, conn: Connection, stack: AsyncExitStack) -> Any:
        """What the SDK client connects to, for one connection; resources it needs go on ``stack``."""
        server = self._server
        if isinstance(server, StdioServer):
            transport = StdioTransport(server, on_stderr=self._on_stderr_line, on_exit=conn.wake.set)
            conn.transport = transport
            return transport
        if isinstance(server, str):
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            # Built in a worker thread: creating an HTTP client loads the TLS trust store from disk.
            headers = dict(self.headers) if self.headers else None
            http = await anyio.to_thread.run_sync(create_mcp_http_client, headers)
            await stack.enter_async_context(http)
            return streamable_http_client(server, http_client=http)
        if isinstance(server, Server | MCPServer):
            return cast("Any", server)
        return server()

    async def _after_handshake(self, client: SdkClient) -> None:
        """Ask a handshake-era server for log messages (newer servers get the level with every request)."""
        level = self.log_level
        caps = client.server_capabilities
        if level is None or caps.logging is None or client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        request = mtypes.SetLevelRequest(params=mtypes.SetLevelRequestParams(level=level))
        try:
            await client.session.send_request(request, mtypes.EmptyResult, request_read_timeout_seconds=5)
        except (MCPError, ValidationError) as exc:
            self._log.debug("MCP server %r refused logging/setLevel: %s", self.name, exc)

    async def _on_log_message(self, params: mtypes.LoggingMessageNotificationParams) -> None:
        message = MCPLogMessage(server=self.name, level=params.level, logger=params.logger, data=params.data)
        self._log.log(_PY_LEVELS.get(params.level, logging.INFO), "%s", params.data)
        if self.on_log is not None:
            await maybe_await(self.on_log(message))

    def _on_stderr_line(self, line: str) -> None:
        if line.strip():
            self._log.info("[stderr] %s", line)

    async def _live(self) -> Connection:
        """The connection to send a request on: the current one, or a new one when it was lost."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._closed:
            raise UsageError(f"MCP client {self.name!r} is closed")
        if conn is None:
            raise UsageError(
                f"MCP client {self.name!r} is not connected; use `async with MCPClient(...)` or call connect()"
            )
        return await self._reconnect(conn)


# ---------------------------------------------------------------------- helpers


async def _stop(conn: Connection) -> None:
    """Stop a connection's owner task and wait for it (bounded); shield the caller's cancellation yourself.

    A connection that is still starting is cut off at once (a server that has not finished the handshake gets
    a short grace period, not the usual one, before it is terminated).
    """
    conn.request_stop()
    if not conn.ready.is_set():
        if conn.transport is not None:
            conn.transport.grace_s = _STARTING_GRACE_S
        if conn.scope is not None:
            conn.scope.cancel()
    with anyio.move_on_after(STOP_TIMEOUT_S):
        await conn.done.wait()
        return
    if conn.scope is not None:
        conn.scope.cancel()
    with anyio.move_on_after(STOP_TIMEOUT_S):
        await conn.done.wait()


_preloaded = False


async def _preload_sdk_modules() -> None:
    """Import, in a worker thread, the modules the SDK imports lazily on the event loop (once per process).

    The SDK imports ``jsonschema`` (which reads its schema files from disk) the first time a tool with an
    output schema returns: a blocking pause on the event loop in the middle of a run, done here up front.
    """
    global _preloaded
    if not _preloaded:
        await anyio.to_thread.run_sync(_import_sdk_modules)
        _preloaded = True


def _import_sdk_modules() -> None:
    for name in ("jsonschema.exceptions", "jsonschema.validators", "referencing", "referencing.exceptions"):
        importlib.import_module(name)


async def maybe_await(value: Awaitable[None] | None) -> None:
    """Await what a sync-or-async callback returned, if it is awaitable."""
    if inspect.isawaitable(value):
        await value


def loss_description(conn: Connection) -> str:
    """How the connection was lost, for messages: the stdio server's exit code or signal, else a closed
    connection."""
    transport = conn.transport
    if transport is not None and transport.returncode is not None:
        code = transport.returncode
        return f"was killed by signal {-code}" if code < 0 else f"exited (exit code {code})"
    return "closed the connection"


def _stderr_note(conn: Connection) -> str:
    transport = conn.transport
    if transport is None or not transport.stderr_tail:
        return ""
    tail = "\n".join(list(transport.stderr_tail)[-10:])
    return f"\nIts stderr ended with:\n{tail}"


def _describe_error(error: BaseException | None) -> str:
    if error is None:
        return "the connection closed during the handshake"
    inner = unwrap_group(error)
    if isinstance(inner, MCPError):
        return f"{inner.message} (MCP error {inner.code})"
    text = str(inner)
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _default_name(server: object) -> str:
    if isinstance(server, StdioServer):
        return server.describe()
    if isinstance(server, str):
        parts = urlsplit(server)
        return parts.netloc or server
    if isinstance(server, MCPServer):
        return server.name
    if isinstance(server, Server):
        return cast("Server[Any]", server).name
    return "mcp"


def _logger_suffix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "mcp"
