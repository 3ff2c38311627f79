"""A virtual-time asyncio event loop: real async code, simulated clock.

``loop.time()`` starts at 0 and only moves when the loop would otherwise sleep: then it jumps straight to the
next timer. ``asyncio.sleep(3600)`` returns at once in real time with the clock one hour later, so the RL scheduler
(and everything it drives: the environment cluster, the data manager) runs unchanged inside a discrete-event
simulation. Work handed to threads (``anyio.to_thread.run_sync``, ``loop.run_in_executor``, sync tools in the tool
threads) is waited for in real time and takes no virtual time; socket I/O does not mix with a virtual clock and is
not supported.

>>> run_virtual(lambda: asyncio.sleep(60))  # returns at once
"""

from __future__ import annotations

import asyncio
import selectors
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualTimeEventLoop", "run_virtual"]

_T = TypeVar("_T")

_patch_lock = threading.Lock()
_patched = False


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector, but when nothing is ready and no thread work is pending, advances the
    loop's virtual clock by the timeout instead of sleeping."""

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if self._loop._pending_threads > 0 or timeout is None:
            # Thread work (or a wake-up from another thread) is on its way: wait for it in real time, with the
            # clock standing still. With no timer at all there is nothing else that could happen anyway.
            return self._real.select(None if timeout is None else 0.05)
        self._loop._now += timeout
        return []


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is simulated (see the module docstring)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._pending_threads = 0
        super().__init__(selector=_VirtualSelector(self))
        _track_anyio_threads()

    def time(self) -> float:
        return self._now

    def run_in_executor(self, executor: Any, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self.track_thread_work(future)
        return future

    def track_thread_work(self, future: asyncio.Future[Any]) -> None:
        """Hold the clock until ``future`` (the result of work handed to a thread) is done."""
        self._thread_started()
        future.add_done_callback(lambda _: self._thread_finished())

    def _thread_started(self) -> None:
        self._pending_threads += 1

    def _thread_finished(self) -> None:
        self._pending_threads -= 1


def _track_anyio_threads() -> None:
    """Count anyio worker-thread calls on virtual loops (anyio hands work to its own threads, not the executor)."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        _patched = True
        from anyio._backends._asyncio import AsyncIOBackend

        original = AsyncIOBackend.run_sync_in_worker_thread.__func__  # type: ignore[attr-defined]

        async def run_sync_in_worker_thread(cls: Any, func: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            if not isinstance(loop, VirtualTimeEventLoop):
                return await original(cls, func, args, *rest, **kwargs)
            loop._thread_started()
            try:
                return await original(cls, func, args, *rest, **kwargs)
            finally:
                loop._thread_finished()

        AsyncIOBackend.run_sync_in_worker_thread = classmethod(run_sync_in_worker_thread)  # type: ignore[method-assign,assignment]


def run_virtual(main: Callable[[], Awaitable[_T]], *, start: float = 0.0) -> _T:
    """Run ``main()`` to completion on a fresh :class:`VirtualTimeEventLoop` and return its result."""

    async def wrapper() -> _T:
        return await main()

    with asyncio.Runner(loop_factory=lambda: VirtualTimeEventLoop(start)) as runner:
        return runner.run(wrapper())
