"""The MCP client: tools, resources and prompts of a Model Context Protocol server, for agents.

:class:`MCPClient` is the requests half; the connection it sends them over (an owner task per connection,
re-established when lost) is ``_mcp_connection``'s :class:`ServerConnection`, and MCP content becomes ours in
``_mcp_convert`` (next to the server's conversion the other way).

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
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, TypeVar, cast

import anyio
import mcp_types as mtypes
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, REQUEST_TIMEOUT
from pydantic import JsonValue, ValidationError

from agentscope.exceptions import ToolError, UsageError
from agentscope.message import Msg
from agentscope.tools._convert import error_response
from agentscope.tools._mcp_connection import (
    STOP_TIMEOUT_S,
    Connection,
    LogCallback,
    LogLevel,
    MCPConnectionError,
    MCPLogMessage,
    MCPServerSpec,
    ServerConnection,
    loss_description,
    maybe_await,
)
from agentscope.tools._mcp_convert import mcp_content_to_blocks, mcp_result_to_response
from agentscope.tools._mcp_stdio import UNREADABLE_REPLY, StdioServer
from agentscope.types import ToolResponse

__all__ = [
    "MCPClient",
    "MCPConnectionError",
    "MCPLogMessage",
    "MCPProgress",
    "MCPRequestError",
    "MCPServerSpec",
    "MCPToolEntry",
]

_T = TypeVar("_T")
_Page = TypeVar("_Page", bound=mtypes.PaginatedResult, covariant=True)
_DEFAULT: Final = object()
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


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


ProgressCallback: TypeAlias = Callable[[MCPProgress], Awaitable[None] | None]


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


class MCPClient(ServerConnection):
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
        super().__init__(
            server,
            name=name,
            connect_timeout_s=connect_timeout_s,
            on_log=on_log,
            log_level=log_level,
            headers=headers,
        )
        self.timeout_s = timeout_s
        """Default limit for each request, in seconds."""
        self.on_progress = on_progress
        """Receives every progress notification."""
        self.retry_on_reconnect = retry_on_reconnect
        """Send a call that found the connection lost on the re-established one instead of reporting it."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "not connected"
        return f"MCPClient(name={self.name!r}, {state})"

    # ------------------------------------------------------------------ requests

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
        return await self._request("tools/list", lambda c: _every_page(c.list_tools, lambda p: p.tools))

    async def list_resources(self) -> list[mtypes.Resource]:
        """All resources the server lists (every page)."""
        return await self._request(
            "resources/list", lambda c: _every_page(c.list_resources, lambda p: p.resources)
        )

    async def list_resource_templates(self) -> list[mtypes.ResourceTemplate]:
        """All resource templates (URI patterns) the server lists (every page)."""
        return await self._request(
            "resources/templates/list",
            lambda c: _every_page(c.list_resource_templates, lambda p: p.resource_templates),
        )

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
        return await self._request("prompts/list", lambda c: _every_page(c.list_prompts, lambda p: p.prompts))

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

    def _lost_before_call(self, old: Connection, tool: str) -> ToolResponse:
        """The error for a call that found the connection lost and re-established before it was sent."""
        if isinstance(self._server, StdioServer):
            what = f"{loss_description(old)} since the last call, so it was restarted"
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
        self, conn: Connection, tool: str, exc: MCPError, limit_s: float | None
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
        what = loss_description(conn)  # after the reconnect: the old process has been reaped by now
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
                await maybe_await(callback(event))

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
                with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_S):
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


# ---------------------------------------------------------------------- helpers


class _ListPage(Protocol[_Page]):
    """One of the SDK client's paginated list requests (``list_tools``, ``list_prompts``...)."""

    def __call__(self, *, cursor: str | None = None) -> Awaitable[_Page]: ...


async def _every_page(list_page: _ListPage[_Page], items: Callable[[_Page], Sequence[_T]]) -> list[_T]:
    """Every item of a paginated list: request page after page, following ``nextCursor`` until there is none."""
    found: list[_T] = []
    cursor: str | None = None
    while True:
        page = await list_page(cursor=cursor)
        found.extend(items(page))
        cursor = page.next_cursor
        if not cursor:
            return found


def _connection_lost(exc: MCPError) -> bool:
    # "Session terminated": a streamable-HTTP server that restarted no longer knows our session.
    return exc.code == CONNECTION_CLOSED or (
        exc.code == INVALID_REQUEST and exc.message == "Session terminated"
    )


def _selected(
    name: str,
    include: Sequence[str] | Callable[[str], bool] | None,
    exclude: Sequence[str] | Callable[[str], bool] | None,
) -> bool:
    if include is not None and not (include(name) if callable(include) else name in include):
        return False
    return not (exclude is not None and (exclude(name) if callable(exclude) else name in exclude))
