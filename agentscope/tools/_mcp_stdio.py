"""The stdio transport of :class:`~agentscope.tools.MCPClient`: an MCP server run as a subprocess.

It speaks newline-delimited JSON-RPC over the server's stdin/stdout, like the ``mcp`` SDK's ``stdio_client``,
and adds what a long-running agent needs from it: the server's pid, its stderr forwarded line by line (to
python logging by default, and kept as a short tail for error messages), and an event that fires as soon as the
process exits so a crash is noticed before the next call is sent.

Shutdown follows the MCP lifecycle: close stdin, give the server a grace period, then SIGTERM and SIGKILL the
whole process group (the server runs in its own session, so ``npx``/``uvx`` wrappers and their children go too).
The shutdown is shielded and every wait in it is bounded, so a cancelled caller can neither leak the process nor
hang on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp.shared.message import SessionMessage

__all__ = [
    "UNREADABLE_REPLY",
    "StdioServer",
    "StdioTransport",
    "default_environment",
    "frame_id",
    "unreadable_reply",
]

_INHERITED_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR")
_STDERR_TAIL = 30
_GRACE_S = 2.0
_TERM_S = 2.0


def default_environment() -> dict[str, str]:
    """The environment a stdio server inherits by default: a few harmless variables, never secrets.

    ``PATH``, ``HOME``, the user and locale names and ``TMPDIR``; API keys and the rest of this process's
    environment are not passed on (give them explicitly with ``StdioServer(env=...)``).
    """
    return {k: v for k in _INHERITED_ENV if (v := os.environ.get(k)) is not None and not v.startswith("()")}


@dataclass(frozen=True, slots=True)
class StdioServer:
    """How to start an MCP server that speaks over its stdin and stdout.

    Example: ``StdioServer("npx", ["-y", "@modelcontextprotocol/server-everything"])``.
    """

    command: str
    """The executable (looked up on ``PATH``)."""
    args: Sequence[str] = ()
    """Its command-line arguments."""
    env: Mapping[str, str] | None = None
    """Extra environment variables, merged over :func:`default_environment`."""
    cwd: str | Path | None = None
    """Working directory; default: this process's."""
    inherit_env: bool = False
    """Pass this process's whole environment (secrets included) instead of :func:`default_environment`."""

    def environment(self) -> dict[str, str]:
        """The environment the server process gets."""
        base = dict(os.environ) if self.inherit_env else default_environment()
        return base | dict(self.env or {})

    def describe(self) -> str:
        """A short name for messages: the command's file name."""
        return Path(self.command).name


@dataclass(eq=False)
class StdioTransport:
    """One run of a :class:`StdioServer`: an ``mcp`` transport (an async context manager yielding the stream
    pair) that also reports the pid, the stderr tail and the moment the process exits.

    Single use: each connection (and each restart) makes a new one.
    """

    server: StdioServer
    """What to run."""
    on_stderr: Callable[[str], None] | None = None
    """Called with each line the server writes to stderr (without the newline)."""
    on_exit: Callable[[], None] | None = None
    """Called once the process has exited (by itself or because the transport closed)."""
    pid: int | None = field(default=None, init=False)
    """The server's process id once started."""
    returncode: int | None = field(default=None, init=False)
    """Its exit status once it has exited (negative: killed by that signal)."""
    exited: anyio.Event = field(default_factory=anyio.Event, init=False)
    """Set when the process has exited, or the transport was torn down."""
    stderr_tail: deque[str] = field(default_factory=lambda: deque[str](maxlen=_STDERR_TAIL), init=False)
    """The last lines of the server's stderr."""
    grace_s: float = field(default=_GRACE_S, init=False)
    """How long the server may take to exit by itself after its stdin is closed, before it is terminated."""

    def __post_init__(self) -> None:
        self._cm = self._run()

    async def __aenter__(
        self,
    ) -> tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]:
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: object) -> bool | None:
        return await self._cm.__aexit__(*exc_info)  # pyright: ignore[reportArgumentType]

    def stderr_text(self) -> str:
        """The stderr tail as one string."""
        return "\n".join(self.stderr_tail)

    @asynccontextmanager
    async def _run(
        self,
    ) -> AsyncGenerator[
        tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
    ]:
        from mcp.shared.message import SessionMessage
        from mcp_types import jsonrpc_message_adapter

        process = await anyio.open_process(
            [self.server.command, *self.server.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.server.cwd,
            env=self.server.environment(),
            start_new_session=True,
        )
        self.pid = process.pid
        # No awaits between the spawn and the task group: a cancellation there would leak the process.
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)

        async def read_stdout() -> None:
            assert process.stdout is not None
            buffer = b""
            async with read_send:
                try:
                    async for chunk in process.stdout:
                        lines = (buffer + chunk).split(b"\n")
                        buffer = lines.pop()
                        for line in lines:
                            if not line.strip():
                                continue
                            try:
                                item: SessionMessage | Exception = SessionMessage(
                                    jsonrpc_message_adapter.validate_json(line, by_name=False)
                                )
                            except ValueError as exc:  # pydantic's ValidationError: not JSON-RPC, too deep...
                                item = unreadable_reply(line, exc) or exc
                            await read_send.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    pass

        async def write_stdin() -> None:
            assert process.stdin is not None
            try:
                async with write_recv:
                    async for message in write_recv:
                        data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                        await process.stdin.send(data.encode() + b"\n")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                # The server stopped reading (it exited): end the read side so waiting requests fail now.
                await read_send.aclose()

        async def read_stderr() -> None:
            assert process.stderr is not None
            buffer = b""
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                async for chunk in process.stderr:
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        self._stderr_line(line)
            if buffer:
                self._stderr_line(buffer)

        async def watch_exit() -> None:
            self.returncode = await process.wait()
            self._set_exited()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdout)
            tg.start_soon(write_stdin)
            tg.start_soon(read_stderr)
            tg.start_soon(watch_exit)
            try:
                yield read_recv, write_send
            finally:
                with anyio.CancelScope(shield=True):
                    await write_send.aclose()
                    await read_recv.aclose()
                    await _stop(process, self.grace_s)
                    self.returncode = process.returncode
                    self._set_exited()
                tg.cancel_scope.cancel()

    def _set_exited(self) -> None:
        if not self.exited.is_set():
            self.exited.set()
            if self.on_exit is not None:
                self.on_exit()

    def _stderr_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self.stderr_tail.append(line)
        if self.on_stderr is not None:
            self.on_stderr(line)


UNREADABLE_REPLY = "agentscope: unreadable reply"
"""``data`` of the error that stands in for a reply that could not be parsed (see :func:`unreadable_reply`)."""

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_KEY_END = re.compile(rb"\s*:")
_ID_VALUE = re.compile(rb'\s*(-?\d{1,30}|"(?:[^"\\]|\\.){0,200}")\s*[,}\]]')


def frame_id(line: bytes) -> int | str | None:
    """The ``id`` of a JSON-RPC response that cannot be parsed as a whole (too deep, truncated, invalid).

    Scans the top level of the frame only, token by token (strings and brackets, in linear time and without
    recursion). Returns ``None`` when no top-level ``id`` is found, or when the frame has a top-level
    ``method`` (a request of the server's, whose ids are not ours).
    """
    depth = 0
    found: int | str | None = None
    for token in _TOKEN.finditer(line):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
            if depth <= 0:
                break
        elif depth == 1 and (colon := _KEY_END.match(line, token.end())) is not None:
            if text == b'"method"':
                return None
            if (
                text == b'"id"'
                and found is None
                and (value := _ID_VALUE.match(line, colon.end())) is not None
            ):
                parsed: object = json.loads(value.group(1))
                found = parsed if isinstance(parsed, int | str) else None
    return found


def unreadable_reply(line: bytes, error: ValueError) -> SessionMessage | None:
    """A JSON-RPC error answering the request that ``line`` (a frame that failed to parse) was the reply to.

    A reply that cannot be parsed would otherwise be dropped, and its request wait until its timeout (or for
    ever). ``None`` when the frame's id cannot be recovered.
    """
    from mcp.shared.message import SessionMessage
    from mcp_types import PARSE_ERROR, ErrorData, JSONRPCError

    request_id = frame_id(line)
    if request_id is None:
        return None
    return SessionMessage(
        JSONRPCError(
            jsonrpc="2.0",
            id=request_id,
            error=ErrorData(code=PARSE_ERROR, message=_parse_problem(error), data=UNREADABLE_REPLY),
        )
    )


def _parse_problem(error: ValueError) -> str:
    """Why a frame failed to parse, in a few words: the JSON problem, else that it is not JSON-RPC."""
    if isinstance(error, ValidationError):
        for detail in error.errors(include_url=False):
            if detail["type"] == "json_invalid":
                return detail["msg"]
        return "valid JSON, but not a JSON-RPC message"
    return str(error).split("\n", 1)[0] or type(error).__name__


async def _stop(process: anyio.abc.Process, grace_s: float) -> None:
    """Close stdin, wait for a voluntary exit, then SIGTERM and SIGKILL the process group; reap it.

    Waits on the process itself, not on the exit watcher task, which may already be cancelled here.
    """
    if process.stdin is not None:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, _TERM_S), (None, _TERM_S)):
        with anyio.move_on_after(wait_s):
            await process.wait()
        if process.returncode is not None or sig is None:
            break
        _signal_group(process.pid, sig)
    # Children that outlived the leader (a wrapper's) still hold the group: end them too.
    _signal_group(process.pid, signal.SIGKILL)
    with anyio.move_on_after(_TERM_S):
        await process.aclose()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
