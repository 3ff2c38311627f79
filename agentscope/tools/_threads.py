"""Tool threads: where sync tools run, off the event loop, with as few threads awake as the work needs.

A sync tool may block (file or network I/O), so it cannot run on the event loop; but most tool calls are short
computations, and handing each one to a thread is then most of an agent step's cost. Two stock hand-offs were
measured in ``benchmarks/agent_overhead`` (in process, 500 agents at once, 2 cores, 2026-12-06):

- ``anyio.to_thread.run_sync``: per call a capacity-limiter token (with a checkpoint: one more loop iteration), a
  cancel scope, backend lookups and a ``queue.Queue`` with Python-level locks;
- ``loop.run_in_executor`` on a ``ThreadPoolExecutor``: a new thread for every call that finds none idle, so a
  burst of calls wakes up to 40 threads that take turns on the GIL (one thread: 1.2x the steps/s of 40).

Here a call is one item on a ``queue.SimpleQueue`` and its result one ``call_soon_threadsafe``. Threads are added
only when the running ones are **blocked**: calls wait, every thread is inside a tool, and none has taken a call
for ``stall_s`` (or the call taken last had waited ``max_wait_s``: a steady stream of slow calls). The count at
most doubles per check (every ``stall_s``), up to ``max_threads`` (40, anyio's default), so 40 blocking tools run
at once within ~60 ms, while a burst of fast calls is served by the thread or two already awake. A thread that is
idle or between calls while calls wait is waiting for the GIL, held by the event loop: another thread would only
wait with it. A thread idle for ``idle_exit_s`` exits.

Semantics kept from anyio's worker threads: the caller's context variables are copied into the call (so tracing
spans nest); a cancelled caller abandons its call (Python cannot stop a thread: it runs on, its result is
dropped), and a call cancelled before any thread took it never starts; ``anyio.from_thread.run`` works inside
a tool. Under an event loop other than asyncio's (trio), calls go to ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio.lowlevel
import anyio.to_thread

__all__ = ["ToolThreads", "tool_threads"]


@dataclass(slots=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    context: contextvars.Context
    func: Callable[[], object]
    token: object
    scope: object
    queued_at: float


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):  # a Future refuses it: it would end the awaiting coroutine
        wrapped = RuntimeError("a tool raised StopIteration")
        wrapped.__cause__ = error
        future.set_exception(wrapped)
    else:
        future.set_exception(error)


class _AnyioBridge:
    """What lets ``anyio.from_thread`` work inside a tool as in anyio's own worker threads: the caller's loop
    (``from_thread.run``) and its cancel scope (``from_thread.check_cancelled``; coroutines started from the thread
    are cancelled with the caller). anyio keeps both in private places; if a future anyio moves them, ``from_thread``
    inside a tool needs an explicit token (the tests of this module fail first)."""

    def __init__(self) -> None:
        try:
            import anyio._backends._asyncio as backend  # pyright: ignore[reportPrivateUsage]
            import anyio._core._eventloop as eventloop  # pyright: ignore[reportPrivateUsage]
        except ImportError:  # pragma: no cover - depends on anyio's internals
            self._states: Any = None
            self._locals: Any = None
        else:
            self._states = cast("Any", backend)._task_states
            self._locals = cast("Any", eventloop).threadlocals

    def caller_scope(self) -> object:
        """The calling task's innermost anyio cancel scope (None outside anyio's task groups and scopes)."""
        if self._states is None:
            return None
        state = self._states.get(asyncio.current_task())
        return None if state is None else state.cancel_scope

    def claim(self, token: object, scope: object) -> None:
        """Run in a tool thread before each call."""
        if self._locals is not None:
            self._locals.current_token = token
            self._locals.current_cancel_scope = scope


class ToolThreads:
    """A pool of daemon threads that runs sync tools for async callers; see the module docstring.

    Args:
        max_threads: most threads at once (most blocking tools running at once).
        stall_s: add threads when calls wait and no thread has taken one for this long.
        max_wait_s: add threads when the call taken last had waited this long.
        idle_exit_s: a thread with nothing to do for this long exits.
    """

    def __init__(
        self,
        max_threads: int = 40,
        *,
        stall_s: float = 0.01,
        max_wait_s: float = 0.05,
        idle_exit_s: float = 10.0,
    ) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self.stall_s = stall_s
        self.max_wait_s = max_wait_s
        self.idle_exit_s = idle_exit_s
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a call
        self._waiting = 0  # calls queued that no thread has taken
        self._inside = 0  # threads inside a tool's code
        self._last_take = 0.0
        self._last_wait = 0.0  # how long the call taken last had waited
        self._tokens: dict[int, tuple[asyncio.AbstractEventLoop, object]] = {}
        self._anyio = _AnyioBridge()
        # The loop the growth check runs on (None: no check is running).
        self._check_loop: asyncio.AbstractEventLoop | None = None

    @property
    def threads(self) -> int:
        """Threads alive now."""
        return self._threads

    async def run(self, func: Callable[[], object]) -> object:
        """``func()`` in a tool thread, with the caller's context variables; its result or its exception."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio)
            return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)
        future: asyncio.Future[Any] = loop.create_future()
        track = getattr(loop, "track_thread_work", None)  # a loop with a simulated clock waits for the thread
        if track is not None:
            track(future)
        token, scope = self._token(loop), self._anyio.caller_scope()
        call = _Call(loop, future, contextvars.copy_context(), func, token, scope, time.monotonic())
        with self._lock:
            self._waiting += 1
            backlog = self._waiting > self._idle
            # No thread at all, or a simulated clock (it stands still while threads work, so a timed check would
            # never fire): a thread now.
            start = self._threads == 0 or (track is not None and backlog and self._threads < self.max_threads)
            if start:
                self._threads += 1
        self._queue.put(call)
        if start:
            self._start_threads(1, future)
        elif backlog:
            checking = self._check_loop
            if checking is None or checking.is_closed() or not checking.is_running():  # no live check
                self._check_loop = loop
                loop.call_later(self.stall_s, self._check, loop)
        return await future

    def _token(self, loop: asyncio.AbstractEventLoop) -> object:
        entry = self._tokens.get(id(loop))
        if entry is None or entry[0] is not loop:
            if len(self._tokens) > 64:  # loops come and go (one per asyncio.run): forget the closed ones
                self._tokens = {k: v for k, v in self._tokens.items() if not v[0].is_closed()}
            entry = (loop, anyio.lowlevel.current_token())
            self._tokens[id(loop)] = entry
        return entry[1]

    # -- growth: checked on the caller's loop while calls wait -----------------------------------------------

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        with self._lock:
            backlog = self._waiting - self._idle
            # Blocked: every thread is inside a tool. An idle thread, or one between calls, is waiting for the GIL
            # (the event loop holds it), and more threads would only wait with it.
            busy = self._threads - self._idle
            blocked = busy > 0 and self._inside == busy
            stuck = now - self._last_take >= self.stall_s or self._last_wait >= self.max_wait_s
            # At most double at a time: a thread descheduled inside a tool for stall_s looks blocked too.
            room = min(backlog, self._threads, self.max_threads - self._threads)
            add = room if backlog > 0 and blocked and stuck else 0
            self._threads += add
            if add:
                self._last_wait = 0.0
            again = self._waiting > 0
        if again and not loop.is_closed():
            loop.call_later(self.stall_s, self._check, loop)
        else:
            self._check_loop = None
        self._start_threads(add)

    # -- the threads ------------------------------------------------------------------------------------------

    def _start_threads(self, count: int, future: asyncio.Future[Any] | None = None) -> None:
        """Start ``count`` threads already counted in ``_threads``; on failure uncount those not started (and
        cancel ``future``, the call that asked for them, so that no thread runs it later)."""
        for started in range(count):
            try:
                threading.Thread(target=self._work, name="agentscope tool thread", daemon=True).start()
            except BaseException:
                with self._lock:
                    self._threads -= count - started
                if future is not None:
                    future.cancel()
                raise

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                call = self._queue.get(timeout=self.idle_exit_s)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._waiting <= self._idle:  # nobody needs this thread
                        self._threads -= 1
                        return
                continue
            now = time.monotonic()
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
                self._last_take = now
                self._last_wait = now - call.queued_at
                skip = call.future.cancelled()  # abandoned before it started: do not start it
                if not skip:
                    self._inside += 1
            if skip:
                del call
                continue
            self._anyio.claim(call.token, call.scope)
            result: object = None
            error: BaseException | None = None
            try:
                result = call.context.run(call.func)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            with self._lock:  # before the hand-back below, which lets go of the GIL
                self._inside -= 1
            with contextlib.suppress(RuntimeError):  # RuntimeError: the caller's loop is closed, nobody waits
                call.loop.call_soon_threadsafe(_settle, call.future, result, error)
            del call, result, error
            self._anyio.claim(None, None)  # hold no loop or scope while idle

    def _after_fork(self) -> None:
        """In a forked child no thread of the parent runs: start from nothing."""
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = self._waiting = self._inside = 0
        self._check_loop = None
        self._tokens = {}


tool_threads = ToolThreads()
"""The process's tool threads: every sync tool of every toolkit runs here."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=tool_threads._after_fork)  # pyright: ignore[reportPrivateUsage]
