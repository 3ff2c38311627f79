"""The MCP client: tools, resources and prompts of a Model Context Protocol server, for agents.

Lifecycle. Each connection to the server lives in one dedicated background task, which opens the transport
and the ``mcp`` SDK session, waits until it is told to stop (or the server process exits), and closes them
again: every cancel scope the SDK opens is entered and exited in that one task, so any task may connect, call
and close. Callers talk to the session directly (the SDK's session is safe to use from many tasks at once)::

    connect()/async with ──► owner task: open transport ─► initialize ─► ready ── wait ── close transport
                                                                   ▲
    call_tool()/list_tools()/... from any number of tasks ─────────┘ (requests go straight to the session)

What a tool call can end in (``call_tool`` never raises for the server's problems; the model sees an error)::

    the tool's result                       -> text, images and structured content kept (isError kept too)
    the server rejects the request          -> error naming the server, the tool and the server's message
    no answer within timeout_s              -> error; the server is sent notifications/cancelled
    a stdio reply that cannot be parsed     -> error at once (too deep, not JSON-RPC...) when its id can be read
    the connection dies during the call     -> error naming the server and that it was restarted (stdio) or
                                               reconnected (HTTP); the next call uses the new connection
    the connection died before the call     -> restarted / reconnected; error saying so (the server's state is
                                               lost) and that the tool was not called, or, with
                                               retry_on_reconnect=True, the call is sent on the new connection
    the caller is cancelled                 -> cancellation propagates; the server is sent notifications/cancelled
    the client was closed                   -> UsageError (a bug in the calling code)
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import mcp_types as mtypes
from mcp import Client as SdkClient
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import JsonValue, ValidationError

import agentscope
from agentscope.exceptions import ToolError, UsageError
from agentscope.message import Base64Source, ImageBlock, Msg, TextBlock
from agentscope.tools._convert import error_response
from agentscope.tools._mcp_stdio import UNREADABLE_REPLY, StdioServer, StdioTransport
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from mcp.client._transport import Transport

__all__ = [
    "MCPClient",
    "MCPConnectionError",
    "MCPLogMessage",
    "MCPProgress",
    "MCPRequestError",
    "MCPServerSpec",
    "MCPToolEntry",
    "mcp_content_to_blocks",
    "mcp_result_to_response",
]

logger = logging.getLogger("agentscope.mcp")

MCPServerSpec: TypeAlias = "str | StdioServer | Server[Any] | MCPServer | Callable[[], Transport]"
"""Where an :class:`MCPClient` connects: a streamable-HTTP URL, a :class:`StdioServer` to run, an in-process
``mcp`` server (``Server`` or ``MCPServer``; handy in tests), or a zero-argument callable returning a fresh
``mcp`` transport (an async context manager yielding the read and write streams) for each connection."""

LogLevel: TypeAlias = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

_T = TypeVar("_T")
_DEFAULT: Final = object()
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")
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
_STOP_TIMEOUT_S = 10.0
_STARTING_GRACE_S = 0.2


class MCPConnectionError(ToolError):
    """An MCP server could not be reached: it did not start, did not answer the handshake in time, or the
    connection was lost and could not be re-established. The message names the server and says why (with the
    end of its stderr for a stdio server that exited)."""


class MCPRequestError(ToolError):
    """An MCP server answered a request (other than a tool call) with an error."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code
        """The JSON-RPC error code."""


@dataclass(frozen=True, slots=True)
class MCPProgress:
    """A progress notification for a running tool call."""

    server: str
    """Name of the server."""
    tool: str
    """The tool's name on the server."""
    progress: float
    """Progress so far (increases with every notification)."""
    total: float | None
    """The total, when the server knows it."""
    message: str | None
    """What the server is doing, when it says."""


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


ProgressCallback: TypeAlias = Callable[[MCPProgress], Awaitable[None] | None]
LogCallback: TypeAlias = Callable[[MCPLogMessage], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class MCPToolEntry:
    """One MCP tool as it is registered in a :class:`~agentscope.tools.Toolkit`."""

    name: str
    """Name in the toolkit (prefix added, characters a model cannot use replaced)."""
    remote_name: str
    """Name on the server."""
    description: str
    """Description the model sees."""
    parameters: dict[str, Any]
    """JSON schema of the arguments, as the server declared it."""
    func: Callable[..., Any]
    """Calls the tool through the client: an async generator (progress pieces, then the result) or an async
    function returning the result."""


@dataclass(eq=False)
class _Connection:
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


class MCPClient:
    """A client of one MCP server: lists and calls its tools, reads its resources and prompts.

    Use it as an async context manager, or call :meth:`connect` and :meth:`aclose` (from any tasks)::

        async with MCPClient(StdioServer("npx", ["-y", "@modelcontextprotocol/server-everything"])) as client:
            await toolkit.register_mcp(client, prefix="everything_")
            reply = await agent(Msg(role="user", content="Add 2 and 3"))

    One client may be shared by many agents and tasks at once: calls run concurrently over one connection.
    A stdio server that exits is restarted, and a dropped HTTP connection re-established, on the next call (see
    the module docstring for what the model sees). Progress notifications go to ``on_progress`` (and, for
    tools registered with ``Toolkit.register_mcp``, into the agent's event stream as ``ToolResultDelta``
    pieces); the server's log messages go to ``on_log`` and to python logging (logger
    ``agentscope.mcp.<name>``), as does a stdio server's stderr.

    Works on the asyncio event loop.
    """

    def __init__(
        self,
        server: MCPServerSpec,
        *,
        name: str | None = None,
        timeout_s: float | None = 60.0,
        connect_timeout_s: float = 30.0,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        log_level: LogLevel | None = "info",
        retry_on_reconnect: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the server to connect to; nothing starts until :meth:`connect`.

        Args:
            server: A streamable-HTTP URL (``http://127.0.0.1:8000/mcp``), a :class:`StdioServer`, an
                in-process ``mcp`` ``Server``/``MCPServer``, or a callable returning a fresh ``mcp`` transport.
            name: Name used in messages, logs and tool errors; default: the name the server reports (before
                connecting: the command or host).
            timeout_s: Seconds a tool call (or any request) may take before it fails and is cancelled on the
                server; ``None``: no limit.
            connect_timeout_s: Seconds to start the server and finish the handshake.
            on_progress: Called (sync or async) with every progress notification of every tool call.
            on_log: Called (sync or async) with every log message the server sends.
            log_level: The lowest level of log messages to ask the server for; ``None``: ask for none.
            retry_on_reconnect: When a tool call finds the connection lost before it is sent (a stdio server
                that exited since the last call, an HTTP server that forgot the session), send it on the new
                connection. Default ``False``: the call returns an error telling the model that the server
                was restarted (its state lost) and that the tool was not called. A call already running when
                the connection dies always returns an error: it may or may not have taken effect.
            headers: HTTP headers sent with every request to a streamable-HTTP server (``Authorization``...).
        """
        if timeout_s is not None and not timeout_s > 0:
            raise UsageError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        if not connect_timeout_s > 0:
            raise UsageError(
                f"connect_timeout_s must be a positive number of seconds, got {connect_timeout_s!r}"
            )
        self._server = server
        self._explicit_name = name is not None
        self.name: str = name if name is not None else _default_name(server)
        """Name used in messages, logs and tool errors."""
        self.timeout_s = timeout_s
        """Default limit for each request, in seconds."""
        self.connect_timeout_s = connect_timeout_s
        """Limit for starting the server and the handshake, in seconds."""
        self.on_progress = on_progress
        """Receives every progress notification."""
        self.on_log = on_log
        """Receives every log message of the server."""
        self.log_level: LogLevel | None = log_level
        """Lowest log level requested from the server."""
        self.headers: Mapping[str, str] = dict(headers or {})
        """HTTP headers sent to a streamable-HTTP server."""
        self.retry_on_reconnect = retry_on_reconnect
        """Send a call that found the connection lost on the re-established one instead of reporting it."""
        self.restarts = 0
        """How many times the connection was re-established after being lost."""
        self._conn: _Connection | None = None
        self._generation = 0
        self._lock: anyio.Lock | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logging.getLogger(f"agentscope.mcp.{_logger_suffix(self.name)}")

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MCPClient:
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
                with anyio.move_on_after(_STOP_TIMEOUT_S):
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

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "not connected"
        return f"MCPClient(name={self.name!r}, {state})"

    async def _reconnect(self, old: _Connection | None, *, counting: bool = True) -> _Connection:
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

    async def _open(self) -> _Connection:
        self._generation += 1
        conn = _Connection(self._generation)
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

    async def _own(self, conn: _Connection) -> None:
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

    async def _target(self, conn: _Connection, stack: AsyncExitStack) -> Any:
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
            await _maybe_await(self.on_log(message))

    def _on_stderr_line(self, line: str) -> None:
        if line.strip():
            self._log.info("[stderr] %s", line)

    # ------------------------------------------------------------------ requests

    async def _live(self) -> _Connection:
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

    async def _request(self, what: str, send: Callable[[SdkClient], Awaitable[_T]]) -> _T:
        """Send an idempotent request; re-establish a lost connection and retry once."""
        for attempt in (1, 2):
            conn = await self._live()
            client = conn.client
            assert client is not None
            try:
                with anyio.fail_after(self.timeout_s):
                    return await send(client)
            except TimeoutError:
                raise MCPRequestError(
                    f"MCP server {self.name!r} did not answer {what} within {self.timeout_s:g}s",
                    code=REQUEST_TIMEOUT,
                ) from None
            except MCPError as exc:
                if attempt == 1 and (_connection_lost(exc) or conn.done.is_set()):
                    conn.lost = True
                    continue
                raise MCPRequestError(
                    f"MCP server {self.name!r} refused {what}: {exc.message} (MCP error {exc.code})",
                    code=exc.code,
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_tools(self) -> list[mtypes.Tool]:
        """All tools the server offers (every page).

        Raises:
            MCPConnectionError: the server cannot be reached.
            MCPRequestError: the server answered with an error.
        """

        async def send(client: SdkClient) -> list[mtypes.Tool]:
            tools: list[mtypes.Tool] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools

        return await self._request("tools/list", send)

    async def list_resources(self) -> list[mtypes.Resource]:
        """All resources the server lists (every page)."""

        async def send(client: SdkClient) -> list[mtypes.Resource]:
            resources: list[mtypes.Resource] = []
            cursor: str | None = None
            while True:
                page = await client.list_resources(cursor=cursor)
                resources.extend(page.resources)
                cursor = page.next_cursor
                if not cursor:
                    return resources

        return await self._request("resources/list", send)

    async def list_resource_templates(self) -> list[mtypes.ResourceTemplate]:
        """All resource templates (URI patterns) the server lists (every page)."""

        async def send(client: SdkClient) -> list[mtypes.ResourceTemplate]:
            templates: list[mtypes.ResourceTemplate] = []
            cursor: str | None = None
            while True:
                page = await client.list_resource_templates(cursor=cursor)
                templates.extend(page.resource_templates)
                cursor = page.next_cursor
                if not cursor:
                    return templates

        return await self._request("resources/templates/list", send)

    async def read_resource(
        self, uri: str
    ) -> list[mtypes.TextResourceContents | mtypes.BlobResourceContents]:
        """The contents of a resource: text items (``.text``) and binary items (``.blob``, base64).

        Raises:
            MCPRequestError: the server answered with an error (an unknown URI, for example).
        """

        async def send(client: SdkClient) -> list[mtypes.TextResourceContents | mtypes.BlobResourceContents]:
            return list((await client.read_resource(uri)).contents)

        return await self._request(f"resources/read {uri!r}", send)

    async def list_prompts(self) -> list[mtypes.Prompt]:
        """All prompt templates the server offers (every page)."""

        async def send(client: SdkClient) -> list[mtypes.Prompt]:
            prompts: list[mtypes.Prompt] = []
            cursor: str | None = None
            while True:
                page = await client.list_prompts(cursor=cursor)
                prompts.extend(page.prompts)
                cursor = page.next_cursor
                if not cursor:
                    return prompts

        return await self._request("prompts/list", send)

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None = None) -> list[Msg]:
        """A prompt rendered by the server, as messages ready for an agent's memory or a model.

        Raises:
            MCPRequestError: the server answered with an error (an unknown prompt, a missing argument...).
        """

        async def send(client: SdkClient) -> mtypes.GetPromptResult:
            return await client.get_prompt(name, dict(arguments) if arguments else None)

        result = await self._request(f"prompts/get {name!r}", send)
        return [
            Msg(role=m.role, content=list(mcp_content_to_blocks([m.content])), name=self.name)
            for m in result.messages
        ]

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | object | None = _DEFAULT,
        on_progress: ProgressCallback | None = None,
    ) -> ToolResponse:
        """Call a tool and return its result as the model should see it.

        Never raises for the server's problems (see the module docstring): a rejected call, a timeout, a lost
        connection come back as a response with ``is_error=True`` whose text says what happened. The response's
        ``metadata`` names the server (``mcp_server``) and the tool (``mcp_tool``).

        Args:
            name: The tool's name on the server.
            arguments: Its arguments (a JSON object).
            timeout_s: Limit for this call; default: the client's ``timeout_s``.
            on_progress: Called with this call's progress notifications (besides the client's ``on_progress``).

        Raises:
            UsageError: the client is closed or was never connected.
        """
        timeout = cast("float | None", self.timeout_s if timeout_s is _DEFAULT else timeout_s)
        response = await self._call_tool(name, arguments, limit_s=timeout, on_progress=on_progress)
        if not response.metadata:  # an error of ours: name the server and tool like a result does
            response.metadata = {"mcp_server": self.name, "mcp_tool": name}
        return response

    async def _call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        limit_s: float | None,
        on_progress: ProgressCallback | None,
    ) -> ToolResponse:
        timeout = limit_s
        progress = self._progress_fn(name, on_progress)
        args = dict(arguments) if arguments else None
        for attempt in (1, 2):
            seen = self._conn
            try:
                conn = await self._live()
            except MCPConnectionError as exc:
                return error_response(f"{exc}; tool '{name}' was not called")
            if seen is not None and conn is not seen and attempt == 1 and not self.retry_on_reconnect:
                # The connection was found dead before the call was sent and has been re-established: tell
                # the model (the server's state is gone) instead of silently calling a fresh server.
                return self._lost_before_call(seen, name)
            client = conn.client
            assert client is not None
            try:
                result = await client.call_tool(
                    name, args, read_timeout_seconds=timeout, progress_callback=progress
                )
            except MCPError as exc:
                if attempt == 1 and self._session_rejected(exc):
                    # The server turned the request away at the HTTP level without running it (it restarted
                    # and forgot our session): open a new session; send the call again only if allowed.
                    self._log.info(
                        "MCP server %r rejected the session (%s); reconnecting", self.name, exc.message
                    )
                    conn.lost = True
                    if self.retry_on_reconnect:
                        continue
                    try:
                        await self._reconnect(conn)
                    except (MCPConnectionError, UsageError) as again:
                        return error_response(
                            f"MCP server '{self.name}' no longer knows this client's session (it probably "
                            f"restarted) and could not be reconnected: {again}; tool '{name}' was not called"
                        )
                    return self._lost_before_call(conn, name)
                return await self._call_failed(conn, name, exc, timeout)
            except ValidationError as exc:
                return error_response(
                    f"MCP server '{self.name}' sent an invalid result for tool '{name}' "
                    f"({exc.error_count()} validation error(s): {exc.errors(include_url=False)[0]['msg']})"
                )
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream) as exc:
                return await self._call_failed(conn, name, MCPError(CONNECTION_CLOSED, repr(exc)), timeout)
            return mcp_result_to_response(result, server=self.name, tool=name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost_before_call(self, old: _Connection, tool: str) -> ToolResponse:
        """The error for a call that found the connection lost and re-established before it was sent."""
        if isinstance(self._server, StdioServer):
            what = f"{_loss_description(old)} since the last call, so it was restarted"
        else:
            what = "dropped the connection since the last call (or restarted), so it was reconnected"
        self._log.warning("MCP server %r %s; call of tool %r not sent", self.name, what, tool)
        return error_response(
            f"MCP server '{self.name}' {what}; any state it held is lost. Tool '{tool}' was not called: "
            "call it again if it is still needed."
        )

    def _session_rejected(self, exc: MCPError) -> bool:
        """Whether a streamable-HTTP server turned the request away before running it (at the HTTP level)."""
        if not isinstance(self._server, str):
            return False
        return (exc.code == INVALID_REQUEST and exc.message == "Session terminated") or (
            exc.code == INTERNAL_ERROR and exc.message == "Server returned an error response"
        )

    async def _call_failed(
        self, conn: _Connection, tool: str, exc: MCPError, limit_s: float | None
    ) -> ToolResponse:
        server = self.name
        if exc.code == REQUEST_TIMEOUT:
            return error_response(
                f"MCP server '{server}' did not finish tool '{tool}' within {limit_s:g}s; the call was cancelled"
            )
        if exc.code == PARSE_ERROR and exc.data == UNREADABLE_REPLY:
            return error_response(
                f"MCP server '{server}' answered the call to tool '{tool}' with a reply that cannot be read "
                f"({exc.message}); the call may or may not have taken effect"
            )
        if not (exc.code == CONNECTION_CLOSED or conn.done.is_set()):
            return error_response(
                f"MCP server '{server}' rejected the call to tool '{tool}': {exc.message} (MCP error {exc.code})"
            )
        conn.lost = True
        if self._closed:
            return error_response(
                f"MCP server '{server}' stopped while running tool '{tool}': the client was closed"
            )
        action = "restarted" if isinstance(self._server, StdioServer) else "reconnected"
        failure: str | None = None
        try:
            await self._reconnect(conn)
        except MCPConnectionError as again:
            failure = str(again)
        except UsageError:
            failure = "the client was closed"
        what = _loss_description(conn)  # after the reconnect: the old process has been reaped by now
        self._log.warning("MCP server %r %s while running tool %r", server, what, tool)
        if failure is not None:
            return error_response(
                f"MCP server '{server}' {what} while running tool '{tool}', and could not be {action}: {failure}"
            )
        return error_response(
            f"MCP server '{server}' {what} while running tool '{tool}', so the call failed; the server was "
            f"{action}. The call may or may not have taken effect: check, or call the tool again."
        )

    def _progress_fn(self, tool: str, extra: ProgressCallback | None) -> Any:
        """The SDK progress callback for one call, or ``None`` when nobody listens (no progress token is sent)."""
        listeners = [cb for cb in (self.on_progress, extra) if cb is not None]
        debug = self._log.isEnabledFor(logging.DEBUG)
        if not listeners and not debug:
            return None

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            event = MCPProgress(server=self.name, tool=tool, progress=progress, total=total, message=message)
            if debug:
                self._log.debug("progress of %r: %s/%s %s", tool, progress, total, message or "")
            for callback in listeners:
                await _maybe_await(callback(event))

        return on_progress

    async def stream_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | object | None = _DEFAULT,
    ) -> AsyncIterator[ToolResponse]:
        """Call a tool; yield a piece per progress notification as it arrives, then the result.

        A progress piece has no content (nothing for the model) and ``metadata["mcp_progress"]`` holding
        ``progress``, ``total`` and ``message``; the last item is what :meth:`call_tool` returns. Closing the
        iterator early cancels the call on the server.
        """
        # Plain asyncio (this client runs on it anyway): one task, a deque and an event per call, which is as
        # cheap as running a call next to its consumer gets.
        pending: deque[ToolResponse] = deque()
        wake = asyncio.Event()

        def on_progress(event: MCPProgress) -> None:
            progress: dict[str, JsonValue] = {
                "progress": event.progress,
                "total": event.total,
                "message": event.message,
            }
            pending.append(ToolResponse(metadata={"mcp_progress": progress}))
            wake.set()

        task = self._spawn(self.call_tool(name, arguments, timeout_s=timeout_s, on_progress=on_progress))
        task.add_done_callback(lambda _: wake.set())
        try:
            while True:
                while pending:
                    yield pending.popleft()
                if task.done():
                    break
                wake.clear()
                await wake.wait()
        finally:
            if (
                not task.done()
            ):  # the consumer left early or was cancelled: cancel the call (and on the server)
                task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_TIMEOUT_S):
                    await asyncio.wait([task])
        yield task.result()

    # ------------------------------------------------------------------ toolkit registration

    async def tool_entries(
        self,
        *,
        prefix: str | None = None,
        include: Sequence[str] | Callable[[str], bool] | None = None,
        exclude: Sequence[str] | Callable[[str], bool] | None = None,
        progress: bool = True,
    ) -> list[MCPToolEntry]:
        """The server's tools as :class:`~agentscope.tools.Toolkit` entries (what ``register_mcp`` registers).

        Args:
            prefix: Prepended to each tool's name (``"fs_"``), to keep several servers' tools apart.
            include: Only these tools (names on the server, or a predicate on them).
            exclude: Not these tools (names on the server, or a predicate on them).
            progress: Register streaming tools that turn progress notifications into pieces of output (the
                agent emits them as ``ToolResultDelta`` events); ``False``: plain async tools.
        """
        entries: list[MCPToolEntry] = []
        for tool in await self.list_tools():
            if not _selected(tool.name, include, exclude):
                continue
            name = _TOOL_NAME_RE.sub("_", f"{prefix or ''}{tool.name}")[:64]
            description = (
                tool.description or tool.title or f"The tool '{tool.name}' of MCP server '{self.name}'."
            )
            parameters = {k: v for k, v in tool.input_schema.items() if k != "$schema"}
            parameters.setdefault("type", "object")
            parameters.setdefault("properties", {})
            func = self._tool_function(tool.name, name, description, progress=progress)
            entries.append(MCPToolEntry(name, tool.name, description, parameters, func))
        return entries

    def _tool_function(
        self, remote: str, name: str, description: str, *, progress: bool
    ) -> Callable[..., Any]:
        client = self
        func: Callable[..., Any]
        if progress:

            def streamed(**arguments: Any) -> AsyncIterator[ToolResponse]:
                # Hands the toolkit stream_tool's own async generator: no extra layer per piece. (Toolkit.register
                # would take this for a plain function; register_mcp declares it a streaming tool.)
                return client.stream_tool(remote, arguments)

            func = streamed
        else:

            async def plain(**arguments: Any) -> ToolResponse:
                return await client.call_tool(remote, arguments)

            func = plain
        func.__name__ = name
        func.__qualname__ = name
        func.__doc__ = description
        return func


# ---------------------------------------------------------------------- conversions


def mcp_content_to_blocks(content: Sequence[mtypes.ContentBlock]) -> list[TextBlock | ImageBlock]:
    """MCP content as blocks a model can see: text as text, images inline (base64), embedded text resources
    as their text; audio, links and binary resources as a one-line description."""
    blocks: list[TextBlock | ImageBlock] = []
    for item in content:
        if isinstance(item, mtypes.TextContent):
            blocks.append(TextBlock(text=item.text))
        elif isinstance(item, mtypes.ImageContent):
            blocks.append(ImageBlock(source=Base64Source(media_type=item.mime_type, data=item.data)))
        elif isinstance(item, mtypes.EmbeddedResource):
            resource = item.resource
            if isinstance(resource, mtypes.TextResourceContents):
                blocks.append(TextBlock(text=resource.text))
            elif (resource.mime_type or "").startswith("image/"):
                blocks.append(
                    ImageBlock(source=Base64Source(media_type=resource.mime_type or "", data=resource.blob))
                )
            else:
                size = len(resource.blob) * 3 // 4
                blocks.append(
                    TextBlock(
                        text=f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'}, ~{size} bytes)]"
                    )
                )
        elif isinstance(item, mtypes.ResourceLink):
            about = f": {item.description}" if item.description else ""
            blocks.append(TextBlock(text=f"[resource {item.name} <{item.uri}>{about}]"))
        else:
            blocks.append(TextBlock(text=f"[audio ({item.mime_type}), not shown]"))
    return blocks


def mcp_result_to_response(result: mtypes.CallToolResult, *, server: str, tool: str) -> ToolResponse:
    """An MCP tool result as a :class:`ToolResponse`: content blocks converted (see
    :func:`mcp_content_to_blocks`), ``structuredContent`` kept in ``structured`` (and shown as JSON text when
    the result has no content), ``isError`` kept."""
    blocks: list[TextBlock | ImageBlock] = mcp_content_to_blocks(result.content)
    structured = cast("JsonValue", result.structured_content)
    if not blocks and structured is not None:
        blocks = [TextBlock(text=json.dumps(structured, ensure_ascii=False))]
    return ToolResponse(
        content=blocks,
        structured=structured,
        is_error=result.is_error,
        metadata={"mcp_server": server, "mcp_tool": tool},
    )


# ---------------------------------------------------------------------- helpers


async def _stop(conn: _Connection) -> None:
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
    with anyio.move_on_after(_STOP_TIMEOUT_S):
        await conn.done.wait()
        return
    if conn.scope is not None:
        conn.scope.cancel()
    with anyio.move_on_after(_STOP_TIMEOUT_S):
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


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value


def _connection_lost(exc: MCPError) -> bool:
    # "Session terminated": a streamable-HTTP server that restarted no longer knows our session.
    return exc.code == CONNECTION_CLOSED or (
        exc.code == INVALID_REQUEST and exc.message == "Session terminated"
    )


def _loss_description(conn: _Connection) -> str:
    transport = conn.transport
    if transport is not None and transport.returncode is not None:
        code = transport.returncode
        return f"was killed by signal {-code}" if code < 0 else f"exited (exit code {code})"
    return "closed the connection"


def _stderr_note(conn: _Connection) -> str:
    transport = conn.transport
    if transport is None or not transport.stderr_tail:
        return ""
    tail = "\n".join(list(transport.stderr_tail)[-10:])
    return f"\nIts stderr ended with:\n{tail}"


def _describe_error(error: BaseException | None) -> str:
    exc: BaseException | None = error
    while isinstance(exc, BaseExceptionGroup):
        members: tuple[BaseException, ...] = cast("BaseExceptionGroup[BaseException]", exc).exceptions
        if len(members) != 1:
            break
        exc = members[0]
    if exc is None:
        return "the connection closed during the handshake"
    inner = cast(BaseException, exc)
    if isinstance(inner, MCPError):
        return f"{inner.message} (MCP error {inner.code})"
    text = str(inner)
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _selected(
    name: str,
    include: Sequence[str] | Callable[[str], bool] | None,
    exclude: Sequence[str] | Callable[[str], bool] | None,
) -> bool:
    if include is not None and not (include(name) if callable(include) else name in include):
        return False
    return not (exclude is not None and (exclude(name) if callable(exclude) else name in exclude))


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
