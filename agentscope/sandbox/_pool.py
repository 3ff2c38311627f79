"""``SandboxPool``: warm sandboxes, handed out one per episode, reset or replaced after use.

Starting a sandbox costs ~0.1 s (bubblewrap) to ~0.6 s (Docker); handing out one that is already running costs
microseconds. A pool keeps ``size`` idle sandboxes running per spec. :meth:`SandboxPool.acquire` takes one (a
health check of ~1 ms first), and a background filler starts its replacement at once; when the episode ends the
sandbox is reset (every process killed, work dir and /tmp emptied) and kept if the pool is short, else closed. A
sandbox that died, failed its reset or reached ``max_uses`` is closed and replaced. ``max_concurrency`` caps how
many are handed out at once: ``acquire`` waits for a free slot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio

from agentscope.exceptions import SandboxError
from agentscope.sandbox._background import Background
from agentscope.sandbox._base import Sandbox
from agentscope.sandbox._open import as_spec, resolve_backend, start_sandbox
from agentscope.sandbox._types import BackendName, SandboxSpec

__all__ = ["PoolStats", "SandboxPool"]

logger = logging.getLogger("agentscope.sandbox")

_RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class PoolStats:
    """Counters of a :class:`SandboxPool` (all specs together)."""

    warm: int = 0
    """Idle sandboxes ready to hand out."""
    in_use: int = 0
    """Sandboxes handed out and not yet given back."""
    started: int = 0
    """Sandboxes started since the pool opened."""
    reused: int = 0
    """Sandboxes reset after an episode and kept."""
    replaced: int = 0
    """Sandboxes closed because they died, failed their reset or reached ``max_uses``."""
    failed_starts: int = 0
    """Starts that failed (the filler retries with a back-off)."""
    cold_acquires: int = 0
    """Acquires that found no warm sandbox and started one themselves."""


class _Slot:
    """The warm sandboxes of one spec, and the filler that keeps them at ``size``."""

    def __init__(self, pool: SandboxPool, spec: SandboxSpec) -> None:
        self.pool = pool
        self.spec = spec
        self.warm: deque[Sandbox] = deque()
        self.starting = 0
        self.uses: dict[int, int] = {}
        self.wake = anyio.Event()
        self.ready = anyio.Event()
        self.failures = 0
        self.last_error: str | None = None

    def poke(self) -> None:
        self.wake.set()

    async def fill_forever(self, start_one: Callable[[_Slot], Coroutine[Any, Any, None]]) -> None:
        """Keep ``size`` sandboxes warm, starting each with ``start_one(self)``."""
        while True:
            missing = self.pool.size - len(self.warm) - self.starting
            if missing <= 0:
                self.ready.set()
                self.wake = anyio.Event()
                await self.wake.wait()
                continue
            async with anyio.create_task_group() as tg:
                for _ in range(missing):
                    self.starting += 1
                    tg.start_soon(start_one, self)
            if self.failures:
                delay = _RETRY_S[min(self.failures, len(_RETRY_S)) - 1]
                logger.warning("sandbox pool: start failed (%s); retrying in %.1f s", self.last_error, delay)
                if self.failures >= 3:
                    self.ready.set()  # let wait_ready() callers see the error instead of hanging
                await anyio.sleep(delay)


class SandboxPool:
    """Warm sandboxes for many short episodes (RL environments, tool calls, evaluations).

    Example::

        async with SandboxPool(SandboxSpec(backend="bwrap", limits={"memory_mb": 256}), size=8) as pool:
            async with pool.acquire() as sb:      # ~1 ms when a warm one is there
                r = await sb.exec("python3 -c 'print(1)'")
            # the sandbox is reset (or replaced) in the background

    Args:
        spec: The default spec (a :class:`SandboxSpec`, or just its backend), as for
            :func:`~agentscope.sandbox.open_sandbox`; ``acquire(spec=...)`` may ask for another one, which gets
            its own ``size`` warm sandboxes.
        **fields: Instead of a spec, its fields (``SandboxPool(backend="bwrap", limits=..., size=8)``).
        size: idle sandboxes kept warm per spec.
        max_concurrency: most sandboxes handed out at once (all specs together); ``None``: no cap.
        max_uses: close a sandbox after this many episodes instead of resetting it; ``None``: never.
        max_idle: most idle sandboxes kept per spec when episodes end (a reset costs milliseconds, a start
            ~0.1-0.6 s, so returned sandboxes are kept up to this); default ``2 * size``.
        check_on_acquire: ping a warm sandbox before handing it out, and replace it if it is dead.
        start_concurrency: most sandboxes starting at once (starts are CPU-bound on the host).
    """

    def __init__(
        self,
        spec: SandboxSpec | BackendName = "auto",
        *,
        size: int = 4,
        max_concurrency: int | None = None,
        max_uses: int | None = None,
        max_idle: int | None = None,
        check_on_acquire: bool = True,
        start_concurrency: int = 4,
        **fields: object,
    ) -> None:
        if size < 0:
            raise SandboxError(f"pool size must be 0 or more, got {size}")
        if max_concurrency is not None and max_concurrency < 1:
            raise SandboxError(
                f"max_concurrency must be 1 or more (or None for no cap), got {max_concurrency}"
            )
        if max_uses is not None and max_uses < 1:
            raise SandboxError(f"max_uses must be 1 or more (or None), got {max_uses}")
        if start_concurrency < 1:
            raise SandboxError(f"start_concurrency must be 1 or more, got {start_concurrency}")
        self.spec = as_spec(spec, fields)
        """The default spec."""
        self.size = size
        """Idle sandboxes kept warm per spec."""
        self.max_uses = max_uses
        self.max_idle = 2 * size if max_idle is None else max_idle
        self.check_on_acquire = check_on_acquire
        self.stats = PoolStats()
        """Counters: warm, in use, started, reused, replaced..."""
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self._start_limiter = anyio.CapacityLimiter(start_concurrency)
        self._slots: dict[str, _Slot] = {}
        """Per spec (keyed by its JSON: specs hold a dict, so are not hashable)."""
        self._in_use: dict[int, tuple[Sandbox, _Slot]] = {}
        self._all: dict[int, Sandbox] = {}
        """Every sandbox of the pool not yet closed (warm, handed out, being reset or replaced)."""
        self._background = Background("SandboxPool")
        self._started = False
        self._closed = False
        self._waiters = anyio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self, *, wait: bool = True) -> None:
        """Start the filler; with ``wait``, return once the default spec's ``size`` sandboxes are warm.
        ``async with SandboxPool(...)`` calls this; :meth:`aclose` may be called from any task."""
        if self._started:
            return
        if self.spec.backend == "auto":
            concrete = await resolve_backend(self.spec)
            self.spec = self.spec.model_copy(update={"backend": concrete})
        self._started = True
        slot = self._slot(self.spec)
        if wait:
            try:
                await self.wait_ready(slot.spec)
            except BaseException:
                await self.aclose()
                raise

    async def wait_ready(self, spec: SandboxSpec | None = None) -> None:
        """Wait until ``spec``'s warm sandboxes are all started. Raises SandboxError when they keep failing."""
        slot = self._slot(spec or self.spec)
        await slot.ready.wait()
        if slot.last_error is not None and not slot.warm:
            raise SandboxError(f"the sandbox pool cannot start sandboxes: {slot.last_error}")

    async def aclose(self) -> None:
        """Close every sandbox (warm and handed out) and stop the filler. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._background.aclose()
            sandboxes = list(self._all.values())
            self._all.clear()
            for slot in self._slots.values():
                slot.warm.clear()
            self._in_use.clear()
            async with anyio.create_task_group() as tg:
                for sandbox in sandboxes:
                    tg.start_soon(sandbox.aclose)
        self.stats.warm = self.stats.in_use = 0

    # ------------------------------------------------------------------ handing out

    def _slot(self, spec: SandboxSpec) -> _Slot:
        if self._closed:
            raise SandboxError("this sandbox pool is closed")
        if not self._started:
            raise SandboxError("the sandbox pool is not started: use `async with SandboxPool(...) as pool`")
        key = spec.model_dump_json()
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(self, spec)
            self._background.start_soon(slot.fill_forever, self._start_warm)
        return slot

    async def _start_warm(self, slot: _Slot) -> None:
        """Start one sandbox for ``slot``'s warm set (its filler calls this)."""
        try:
            async with self._start_limiter:
                sandbox = await start_sandbox(slot.spec)
        except SandboxError as exc:
            slot.failures += 1
            slot.last_error = str(exc)
            self.stats.failed_starts += 1
            return
        finally:
            slot.starting -= 1
        slot.failures = 0
        slot.last_error = None
        self.stats.started += 1
        if self._closed:
            await sandbox.aclose()
            return
        self._all[id(sandbox)] = sandbox
        slot.uses[id(sandbox)] = 0
        slot.warm.append(sandbox)
        self._available(slot)

    def _available(self, slot: _Slot) -> None:
        self.stats.warm = sum(len(s.warm) for s in self._slots.values())
        self._waiters.set()
        self._waiters = anyio.Event()

    @asynccontextmanager
    async def acquire(self, spec: SandboxSpec | None = None) -> AsyncGenerator[Sandbox]:
        """Hand out a sandbox for one episode; it goes back to the pool (reset) when the block ends.

        Waits while ``max_concurrency`` sandboxes are out. With no warm sandbox of ``spec`` at hand, starts one
        (counted in ``stats.cold_acquires``). The sandbox must not be used after the block.
        """
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            slot = self._slot(spec or self.spec)
            sandbox = await self._take(slot)
            self._in_use[id(sandbox)] = (sandbox, slot)
            self.stats.in_use = len(self._in_use)
            try:
                yield sandbox
            finally:
                self._in_use.pop(id(sandbox), None)
                self.stats.in_use = len(self._in_use)
                if not self._closed:
                    self._background.start_soon(self._give_back, slot, sandbox)
                else:
                    with anyio.CancelScope(shield=True):
                        await self._close(sandbox)
        finally:
            if self._limiter is not None:
                self._limiter.release()

    async def _take(self, slot: _Slot) -> Sandbox:
        while True:
            if slot.warm:
                sandbox = slot.warm.popleft()
                self.stats.warm -= 1
                slot.poke()  # start its replacement now
                if not self.check_on_acquire or await sandbox.ping():
                    return sandbox
                self.stats.replaced += 1
                slot.uses.pop(id(sandbox), None)
                self._background.start_soon(self._close, sandbox)
                continue
            if slot.starting > 0:
                # One is on its way: waiting for it beats starting another (the host's cores are busy).
                with anyio.move_on_after(_cold_wait_s(slot)):
                    await self._waiters.wait()
                if slot.warm:
                    continue
            self.stats.cold_acquires += 1
            sandbox = await start_sandbox(slot.spec)
            self._all[id(sandbox)] = sandbox
            self.stats.started += 1
            slot.uses[id(sandbox)] = 0
            return sandbox

    async def _close(self, sandbox: Sandbox) -> None:
        self._all.pop(id(sandbox), None)
        await sandbox.aclose()

    async def _give_back(self, slot: _Slot, sandbox: Sandbox) -> None:
        uses = slot.uses.get(id(sandbox), 0) + 1
        keep = (
            sandbox.alive
            and len(slot.warm) < self.max_idle
            and (self.max_uses is None or uses < self.max_uses)
        )
        if keep:
            try:
                await sandbox.reset()
            except SandboxError as exc:
                logger.info("sandbox %s failed its reset (%s): replacing it", sandbox.id, exc)
                keep = False
        if not keep:
            if not sandbox.alive or (self.max_uses is not None and uses >= self.max_uses):
                self.stats.replaced += 1
            slot.uses.pop(id(sandbox), None)
            await self._close(sandbox)
            slot.poke()
            return
        slot.uses[id(sandbox)] = uses
        self.stats.reused += 1
        slot.warm.append(sandbox)
        self._available(slot)


def _cold_wait_s(slot: _Slot) -> float:
    """How long an acquire waits for a starting sandbox before starting its own: about one start time."""
    return 2.0 if slot.spec.backend == "docker" else 0.5
