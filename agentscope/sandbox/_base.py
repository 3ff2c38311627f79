"""The sandbox every backend returns: a client of the guest process that runs inside it.

A backend only has to start the guest (see ``_guest.py``) in its isolation and hand over a byte transport to the
guest's stdin and stdout; everything a caller does (``exec``, files, ``reset``) is the same protocol on every
backend.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentscope.exceptions import SandboxError
from agentscope.sandbox._types import MAX_FILE_BYTES, MAX_OUTPUT_BYTES, ExecResult, SandboxLimits, SandboxSpec

__all__ = ["GuestTransport", "Sandbox", "guest_boot_line", "guest_command", "guest_source"]

logger = logging.getLogger("agentscope.sandbox")

_REPLY_GRACE_S = 15.0
"""How much longer than a command's own timeout the host waits for the guest's reply before declaring it dead."""
_FILE_DEADLINE_S = 120.0


def _base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


_MAX_LINE_BYTES = max(2 * _base64_size(MAX_OUTPUT_BYTES), _base64_size(MAX_FILE_BYTES)) + (16 << 20)
"""Longest reply line accepted: an exec's two streams at their largest, base64-encoded, and room for the rest
(a longer line is not the guest's: the sandbox is ended)."""


class _BadReply(Exception):
    """A line from the guest (it carries the sandbox's token) that the host cannot understand."""


class _Reply(BaseModel):
    """What every reply of the guest is checked against before use (a malformed one ends the sandbox)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class _ErrorReply(_Reply):
    error: str = Field(max_length=1 << 16)
    errno: int | None = None


class _ExecReply(_Reply):
    exit_code: int = Field(ge=0, le=65535)
    signal: int | None = Field(default=None, ge=1, le=128)
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool = False
    duration: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    killed: list[str] = Field(default_factory=list[str], max_length=1000)
    killed_count: int = Field(default=0, ge=0)


class _ReadReply(_Reply):
    data: str


class _StatReply(_Reply):
    oom_kills: int | None = Field(default=None, ge=0)


class _OkReply(_Reply):
    ok: bool


_ReplyT = TypeVar("_ReplyT", bound=_Reply)


def _summary(exc: ValidationError) -> str:
    """The first problems of a validation error, with short excerpts of the values (they may be huge)."""
    problems: list[str] = []
    for error in exc.errors()[:3]:
        field = ".".join(str(part) for part in error["loc"]) or "reply"
        problems.append(f"{field}: {error['msg']} (got {repr(error.get('input'))[:60]})")
    return "; ".join(problems)


class GuestTransport(Protocol):
    """A byte pipe to the guest: its stdin one way, its stdout the other."""

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the guest's stdin."""
        ...

    async def receive(self) -> bytes:
        """Read some of the guest's stdout; ``b""`` at end of stream."""
        ...

    async def aclose(self) -> None:
        """Close the pipe (the guest sees end of input and exits)."""
        ...


@cache
def _read_guest_source() -> str:
    return (Path(__file__).parent / "_guest.py").read_text()


async def guest_source() -> str:
    """The guest's source code, passed to ``python3 -c`` in every sandbox (read once, off the event loop)."""
    return await anyio.to_thread.run_sync(_read_guest_source)


_BOOTSTRAP = (
    "import sys,json;b=json.loads(sys.stdin.buffer.readline());g={'__name__':'agentscope_guest'};"
    "exec(compile(b['source'],'<agentscope-guest>','exec'),g);g['main'](b['config'])"
)


def guest_command(python: str) -> list[str]:
    """The argv that starts the guest inside a sandbox; send :func:`guest_boot_line` to its stdin first."""
    return [python, "-I", "-S", "-c", _BOOTSTRAP]


def guest_boot_line(source: str, config: Mapping[str, Any], token: str) -> bytes:
    """The first line the guest reads: its own source and its config, with the token that it puts in every
    reply (replies without it are forged by sandboxed code and dropped)."""
    payload = {"source": source, "config": {**config, "token": token}}
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class Sandbox(ABC):
    """An isolated place to run commands and keep files: what :func:`~agentscope.sandbox.open_sandbox` gives.

    Methods are safe to call concurrently (commands then run side by side). Relative paths are relative to the
    work dir. Use it as an async context manager, or call :meth:`aclose`.
    """

    backend: str
    """Name of the backend that runs it: ``docker`` or ``bwrap``."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        """What this sandbox was opened with."""
        self.id = ""
        """Backend identifier (container id, or a name for bubblewrap)."""
        self.limit_enforcement: dict[str, str] = {}
        """How each limit is enforced here, e.g. ``{"memory": "cgroup v1", "disk": "tmpfs"}``; ``syscalls`` says
        how the system-call filter is loaded."""
        self._transport: GuestTransport | None = None
        self._buffer = bytearray()
        self._scanned = 0
        """How much of ``_buffer`` is known to hold no line end (a long reply is searched once, not per chunk)."""
        self._ids = itertools.count(1)
        self._waiting: set[int] = set()
        self._replies: dict[int, dict[str, Any]] = {}
        self._send_lock = anyio.Lock()
        self._read_lock = anyio.Lock()
        self._dead: str | None = None
        self._closed = False
        self._oom_kills = 0
        self._token = secrets.token_hex(16)
        """Proves a reply came from the guest (see ``guest_boot_line``)."""
        self._mark = b'"k":"' + self._token.encode() + b'"'
        """How the token appears in every line the guest writes (it writes compact JSON)."""

    # ------------------------------------------------------------------ lifecycle (backends)

    @abstractmethod
    async def _start(self) -> None:
        """Start the isolation and the guest inside; set ``self._transport``."""

    @abstractmethod
    async def _stop(self) -> None:
        """Tear the isolation down (idempotent, never raises)."""

    async def _diagnostics(self) -> str:
        """Anything that may explain why the guest died (its stderr), for error messages."""
        return ""

    async def _read_oom_kills(self) -> int | None:
        """The sandbox's cumulative OOM-kill count, when the backend can tell."""
        reply = await self._request("stat", deadline_s=10.0)
        return (await self._checked(_StatReply, reply, "stat")).oom_kills

    async def start(self) -> None:
        """Start the sandbox and wait until its guest answers. :func:`open_sandbox` calls this for you."""
        # Everything up to the return is inside the try: a start cancelled at any await (a pool closing while
        # its filler starts a replacement) must remove what it created.
        try:
            await self._start()
            with anyio.fail_after(30):
                try:
                    hello = await self._read_reply()
                except _BadReply as exc:
                    raise SandboxError(
                        f"{self.backend} sandbox's guest sent a malformed greeting ({exc})"
                    ) from None
            if not hello.get("ready"):
                raise SandboxError(f"{self.backend} sandbox started but its guest said {hello!r}")
            if hello.get("seccomp_error") or hello.get("seccomp") == 0:
                raise SandboxError(
                    f"{self.backend} sandbox started without its system-call filter "
                    f"({hello.get('seccomp_error') or 'the kernel reports no seccomp filter'}); refusing to use it"
                )
            count = await self._read_oom_kills()
        except TimeoutError:
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise SandboxError(f"{self.backend} sandbox did not start within 30 s") from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise
        self._oom_kills = count or 0

    @property
    def alive(self) -> bool:
        """False once the sandbox is closed or its guest died."""
        return self._dead is None and not self._closed

    async def aclose(self) -> None:
        """Kill everything inside and remove the sandbox. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._transport is not None:
                try:
                    with anyio.move_on_after(2):
                        await self._transport.aclose()
                except Exception:
                    pass
            await self._stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the protocol

    async def _read_reply(self) -> dict[str, Any]:
        """The guest's next reply. A line without the token is dropped (sandboxed code that reaches the guest's
        stdout cannot forge one); a line with it that is not a JSON object, or a line too long to be a reply,
        raises :class:`_BadReply`."""
        assert self._transport is not None
        while True:
            newline = self._buffer.find(b"\n", self._scanned)  # the bytes before were searched already
            if newline >= 0:
                if newline + 1 == len(self._buffer):  # the usual case, a whole reply: take it without a copy
                    line, self._buffer = self._buffer, bytearray()
                else:
                    line = self._buffer[: newline + 1]
                    del self._buffer[: newline + 1]
                self._scanned = 0
                if self._mark not in line:
                    continue  # not from the guest: forged by sandboxed code, or noise
                try:
                    reply: object = json.loads(line)
                except RecursionError:
                    raise _BadReply("JSON nested too deeply") from None
                except ValueError as exc:
                    raise _BadReply(f"not JSON: {str(exc)[:100]}") from None
                if not isinstance(reply, dict) or reply.get("k") != self._token:  # pyright: ignore[reportUnknownMemberType]
                    raise _BadReply("not a JSON object carrying this sandbox's token")
                return reply  # pyright: ignore[reportUnknownVariableType]
            if len(self._buffer) > _MAX_LINE_BYTES:
                raise _BadReply(f"more than {_MAX_LINE_BYTES} bytes without a line end")
            self._scanned = len(self._buffer)
            chunk = await self._transport.receive()
            if not chunk:
                raise EOFError
            self._buffer += chunk

    async def _checked(self, model: type[_ReplyT], reply: Mapping[str, Any], op: str) -> _ReplyT:
        """``reply`` validated as ``model``; a malformed one ends the sandbox with a :class:`SandboxError`."""
        try:
            return model.model_validate(reply)
        except ValidationError as exc:
            raise await self._fail(f"sent a malformed reply to {op} ({_summary(exc)})") from None

    async def _decoded(self, text: str, op: str, field: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise await self._fail(f"sent a malformed reply to {op} ({field}: not base64)") from None

    async def _fail(self, why: str) -> SandboxError:
        if self._dead is None:
            self._dead = why
        details = ""
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_after(2):
                    details = (await self._diagnostics()).strip()
            except Exception:
                pass
            await self._stop()
        message = f"{self.backend} sandbox {self.id or ''} {why}".replace("  ", " ")
        if details:
            message += f"; its last output: {details[-2000:]}"
        return SandboxError(message)

    def _check_usable(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox is closed; open a new one (or use a SandboxPool)")
        if self._dead is not None:
            raise SandboxError(f"this {self.backend} sandbox is dead ({self._dead}); open a new one")

    async def _request(self, op: str, *, deadline_s: float, **fields: Any) -> dict[str, Any]:
        self._check_usable()
        assert self._transport is not None
        rid = next(self._ids)
        line = json.dumps({"id": rid, "op": op, **fields}, separators=(",", ":")).encode() + b"\n"
        self._waiting.add(rid)
        try:
            try:
                async with self._send_lock:
                    await self._transport.send(line)
                with anyio.fail_after(deadline_s):
                    while rid not in self._replies:
                        async with self._read_lock:
                            if rid in self._replies:
                                break
                            reply = await self._read_reply()
                            reply_id = reply.get("id")
                            if not isinstance(reply_id, int) or isinstance(reply_id, bool):
                                raise _BadReply(f"id {str(reply_id)[:20]!r} is not a request id")
                            if reply_id in self._waiting:  # else a late reply to a call that gave up
                                self._replies[reply_id] = reply
            except TimeoutError:
                raise await self._fail(
                    f"stopped answering ({op} got no reply within {deadline_s:.0f} s)"
                ) from None
            except (EOFError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                if self._closed:
                    raise SandboxError("this sandbox was closed while a call was running") from None
                raise await self._fail(f"died ({type(exc).__name__}: the guest's pipe closed)") from None
            except _BadReply as exc:
                raise await self._fail(f"sent a malformed reply ({exc})") from None
            except anyio.get_cancelled_exc_class():
                if op == "exec" and self.alive:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        cancel = {"id": next(self._ids), "op": "cancel", "target": rid}
                        async with self._send_lock:
                            await self._transport.send(json.dumps(cancel).encode() + b"\n")
                raise
            return self._replies.pop(rid)
        finally:
            self._waiting.discard(rid)
            self._replies.pop(rid, None)

    # ------------------------------------------------------------------ the API

    @property
    def limits(self) -> SandboxLimits:
        """The limits this sandbox runs under."""
        return self.spec.limits

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - enforced inside the sandbox, not a cancel scope
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        keep_background: bool = False,
    ) -> ExecResult:
        """Run ``command`` inside and wait for it.

        When the command exits, the processes it left running (``cmd &``, ``nohup``, ``setsid``, daemons) get
        0.2 s to finish and are then killed; the result lists them in ``killed``.

        Args:
            command: an argv list (run directly), or a string (run by ``/bin/sh -c``).
            timeout: seconds before the command and every process it started are killed; default
                ``limits.timeout_s``. The result then says ``timed_out``.
            cwd: working directory, relative to the work dir (default: the work dir).
            env: extra environment variables.
            stdin: data for the command's standard input (default: none, as from /dev/null).
            keep_background: leave what the command started in the background running after it returns (a
                server for later commands, say) until :meth:`reset` or close; they still count against the
                ``pids`` and memory limits. Redirect their output (``> log 2>&1``): the command's pipes close
                when it returns.

        A failing command is not an error: look at ``exit_code``. Raises :class:`SandboxError` only when the
        sandbox itself fails.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(part) for part in command]
        if not argv:
            raise SandboxError("exec needs a command: got an empty argv")
        limit = self.limits.timeout_s if timeout is None else timeout
        if limit <= 0:
            raise SandboxError(f"exec timeout must be positive, got {timeout}")
        merged = {**self.spec.env, **(env or {})}
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if data is not None and len(data) > MAX_FILE_BYTES:
            raise SandboxError(f"exec stdin is {len(data)} bytes; at most {MAX_FILE_BYTES} can be sent")
        started = time.perf_counter()
        reply = await self._request(
            "exec",
            deadline_s=limit + _REPLY_GRACE_S,
            argv=argv,
            cwd=cwd or "",
            env=merged,
            timeout=limit,
            max_output=self.limits.output_bytes,
            stdin=base64.b64encode(data).decode("ascii") if data is not None else None,
            keep_background=keep_background,
        )
        if "error" in reply:
            failure = await self._checked(_ErrorReply, reply, "exec")
            raise SandboxError(f"exec of {argv[0]!r} failed inside the sandbox: {failure.error}")
        done = await self._checked(_ExecReply, reply, "exec")
        out = await self._decoded(done.stdout, "exec", "stdout")
        err = await self._decoded(done.stderr, "exec", "stderr")
        oom = False
        if done.exit_code != 0 and not done.timed_out:
            count = await self._read_oom_kills()
            if count is not None and count > self._oom_kills:
                oom = True
                self._oom_kills = count
        result = ExecResult(
            exit_code=done.exit_code,
            stdout=_decode(out),
            stderr=_decode(err),
            stdout_bytes=out,
            stderr_bytes=err,
            timed_out=done.timed_out,
            duration_s=done.duration or (time.perf_counter() - started),
            oom_killed=oom,
            signal=done.signal,
            truncated=done.truncated,
            killed=tuple(done.killed),
            killed_count=max(done.killed_count, len(done.killed)),
        )
        logger.debug("%s exec %s -> %s in %.3f s", self.id, argv[:3], result.exit_code, result.duration_s)
        return result

    async def read_file(self, path: str) -> bytes:
        """The bytes of ``path`` inside the sandbox (a regular file of at most 256 MiB). Raises
        :class:`FileNotFoundError` when it does not exist."""
        reply = await self._request("read", deadline_s=_FILE_DEADLINE_S, path=path)
        if "error" in reply:
            _raise_file_error("read", path, await self._checked(_ErrorReply, reply, "read"))
        data = (await self._checked(_ReadReply, reply, "read")).data
        return await self._decoded(data, "read", "data")

    async def write_file(self, path: str, data: bytes | str, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` inside the sandbox, creating parent directories."""
        payload = data.encode() if isinstance(data, str) else data
        if len(payload) > MAX_FILE_BYTES:
            raise SandboxError(
                f"cannot write {path!r}: {len(payload)} bytes; at most {MAX_FILE_BYTES} per file"
            )
        reply = await self._request(
            "write",
            deadline_s=_FILE_DEADLINE_S,
            path=path,
            data=base64.b64encode(payload).decode("ascii"),
            mode=mode,
        )
        if "error" in reply:
            _raise_file_error("write", path, await self._checked(_ErrorReply, reply, "write"))

    async def reset(self) -> None:
        """Kill every process inside and empty the work dir and /tmp: as good as new, in milliseconds."""
        reply = await self._request("reset", deadline_s=30.0)
        if "error" in reply:
            failure = await self._checked(_ErrorReply, reply, "reset")
            raise await self._fail(f"could not be reset: {failure.error}")

    async def ping(self) -> bool:
        """True when the guest answers within 5 seconds (a dead sandbox gives False, never an exception)."""
        if not self.alive:
            return False
        try:
            reply = await self._request("ping", deadline_s=5.0)
            return (await self._checked(_OkReply, reply, "ping")).ok
        except SandboxError:
            return False

    def __repr__(self) -> str:
        state = "alive" if self.alive else "closed" if self._closed else f"dead: {self._dead}"
        return f"<{type(self).__name__} {self.id} ({state})>"


def _raise_file_error(action: str, path: str, reply: _ErrorReply) -> None:
    errno = reply.errno
    message = f"cannot {action} {path!r} in the sandbox: {reply.error}"
    if errno == 2:
        raise FileNotFoundError(errno, message, path)
    if errno == 21:
        raise IsADirectoryError(errno, message, path)
    if errno in (1, 13, 30):  # EPERM, EACCES, EROFS
        raise PermissionError(errno, message, path)
    raise SandboxError(message)
