"""Running a tool's callable: awaited, in a worker thread, or inline; a generator pulled one piece at a time, each
pull within what is left of the tool's time budget, its cleanup shielded from cancellation.

Sync tools run on the toolkit's own thread pool (:data:`TOOL_THREADS` workers, context variables copied), handed
over with ``loop.run_in_executor``: measured in ``benchmarks/agent_overhead``, this costs half of what
``anyio.to_thread.run_sync`` costs per call (its capacity limiter, cancel scopes and per-call worker bookkeeping),
and a tool call is half of an agent step. A sync tool registered with ``inline=True`` runs on the event loop.

The :class:`~agentscope.tools.Toolkit` decides what a call may do and what the model sees; this module only runs it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, Final, cast

import anyio

from agentscope.tools._convert import merge_responses, to_response
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from agentscope.tools._tool_info import ToolInfo

__all__ = ["TOOL_THREADS", "ToolTimeout", "invoke", "run_in_tool_thread", "stream_pieces"]

_DONE: Final = object()

TOOL_THREADS: Final = 40
"""Most sync tool calls running at once in one process (as many as anyio's default thread limiter allows); more
wait for a free worker."""

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _tool_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(TOOL_THREADS, thread_name_prefix="agentscope-tool")
    return _executor


async def run_in_tool_thread(func: Callable[[], object]) -> object:
    """Run ``func`` on the tool thread pool with the caller's context variables; cancelling the caller abandons
    it (Python cannot stop a thread: it runs on and its result is discarded)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_tool_executor(), context.run, func)


class ToolTimeout(Exception):
    """Internal signal: the tool ran out of time (never escapes the toolkit)."""


def _next_or_done(gen: GeneratorType[Any, Any, Any]) -> object:
    return next(gen, _DONE)


async def invoke(tool: ToolInfo, args: list[Any], kwargs: dict[str, Any]) -> object:
    """Run a non-streaming tool to completion: awaited, inline, or in a tool thread (abandoned if cancelled)."""
    if tool.is_async:
        result = await tool.func(*args, **kwargs)
    elif tool.inline:
        result = tool.func(*args, **kwargs)
    else:
        result = await run_in_tool_thread(partial(tool.func, *args, **kwargs))
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
            result = await result
    if isinstance(result, GeneratorType | AsyncGeneratorType):  # a plain function that returned a generator
        source = cast("GeneratorType[Any, Any, Any] | AsyncGeneratorType[Any, Any]", result)
        return merge_responses(
            [piece async for piece in stream_pieces(lambda: source, None, inline=tool.inline)]
        )
    return result


async def stream_pieces(
    start: Callable[[], AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any]],
    budget_s: float | None,
    *,
    inline: bool = False,
) -> AsyncGenerator[ToolResponse, None]:
    """Pull a streaming tool's items one by one, each converted to a :class:`ToolResponse`.

    No cancel scope spans a ``yield``: the time budget is enforced around each pull separately and counts only
    the time spent inside the tool. Raises :class:`ToolTimeout` when the budget runs out. ``start`` creates the
    tool's generator on the first pull, so that an error it raises surfaces there like any tool error. With
    ``inline``, a sync generator is pulled (and closed) on the event loop.
    """
    budget = budget_s
    source = start()
    try:
        while True:
            item: object = _DONE
            if budget is None:
                item = await _pull(source, inline)
            else:
                started = anyio.current_time()
                with anyio.move_on_after(budget) as scope:
                    item = await _pull(source, inline)
                if scope.cancelled_caught:
                    raise ToolTimeout(budget_s)
                budget -= anyio.current_time() - started
            if item is _DONE:
                return
            yield to_response(item)
    finally:
        await _close(source, inline)


async def _pull(source: AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any], inline: bool) -> object:
    if isinstance(source, AsyncGeneratorType):
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return _DONE
    if inline:
        return _next_or_done(source)
    return await run_in_tool_thread(partial(_next_or_done, source))


async def _close(source: AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any], inline: bool) -> None:
    """Run the tool's own cleanup (its ``finally`` blocks), shielded so cancellation cannot cut it short."""
    with anyio.CancelScope(shield=True):
        if isinstance(source, AsyncGeneratorType):
            await source.aclose()
        elif inline:
            source.close()
        elif not source.gi_running:
            # A generator still running in an abandoned thread cannot be closed; it is closed when collected.
            await run_in_tool_thread(source.close)
