"""Background tasks that belong to an object rather than to the task that made it.

A pool (or a browser keeping warm sessions) is often opened in one task and closed in another (a fixture's
set-up and tear-down, a service's start and stop hooks), which an anyio task group does not allow. Its refills
therefore run as tasks of the event loop itself, tracked here and cancelled on :meth:`Background.aclose`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from agentscope.exceptions import SandboxError

__all__ = ["Background"]

logger = logging.getLogger("agentscope.sandbox")


class Background:
    """A set of event-loop tasks owned by one object (asyncio only)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[asyncio.Task[Any], anyio.CancelScope] = {}
        self._closed = False

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``func(*args)`` in the background; its failure is logged, never raised."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise SandboxError(f"{self.owner} runs on asyncio only (anyio's asyncio backend)") from None

        scope = anyio.CancelScope()

        async def run() -> None:
            # Cancelled through an anyio scope, not task.cancel(): shielded clean-ups inside (a sandbox's
            # removal) then run to the end.
            with scope:
                try:
                    await func(*args)
                except Exception:
                    logger.exception("%s: a background task failed", self.owner)

        task = loop.create_task(run())
        self._tasks[task] = scope
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    async def aclose(self) -> None:
        """Cancel every task and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks.items())
        for _task, scope in tasks:
            scope.cancel()
        if tasks:
            await asyncio.gather(*(task for task, _scope in tasks), return_exceptions=True)
