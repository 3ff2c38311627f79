"""Running a tool's callable: awaited, or in a worker thread; a generator pulled one piece at a time, each pull
within what is left of the tool's time budget, its cleanup shielded from cancellation.

The :class:`~agentscope.tools.Toolkit` decides what a call may do and what the model sees; this module only runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable
from functools import partial
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import anyio.to_thread

from agentscope.tools._convert import merge_responses, to_response
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from agentscope.tools._tool_info import ToolInfo

__all__ = ["ToolTimeout", "invoke", "stream_pieces"]

_DONE: Final = object()


class ToolTimeout(Exception):
    """Internal signal: the tool ran out of time (never escapes the toolkit)."""


def _next_or_done(gen: GeneratorType[Any, Any, Any]) -> object:
    return next(gen, _DONE)


async def invoke(tool: ToolInfo, args: list[Any], kwargs: dict[str, Any]) -> object:
    """Run a non-streaming tool to completion: awaited, or in a worker thread (abandoned if cancelled)."""
    if tool.is_async:
        result = await tool.func(*args, **kwargs)
    else:
        result = await anyio.to_thread.run_sync(partial(tool.func, *args, **kwargs), abandon_on_cancel=True)
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
            result = await result
    if isinstance(result, GeneratorType | AsyncGeneratorType):  # a plain function that returned a generator
        source = cast("GeneratorType[Any, Any, Any] | AsyncGeneratorType[Any, Any]", result)
        return merge_responses([piece async for piece in stream_pieces(lambda: source, None)])
    return result


async def stream_pieces(
    start: Callable[[], AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any]], budget_s: float | None
) -> AsyncGenerator[ToolResponse, None]:
    """Pull a streaming tool's items one by one, each converted to a :class:`ToolResponse`.

    No cancel scope spans a ``yield``: the time budget is enforced around each pull separately and counts only
    the time spent inside the tool. Raises :class:`ToolTimeout` when the budget runs out. ``start`` creates the
    tool's generator on the first pull, so that an error it raises surfaces there like any tool error.
    """
    budget = budget_s
    source = start()
    try:
        while True:
            item: object = _DONE
            if budget is None:
                item = await _pull(source)
            else:
                started = anyio.current_time()
                with anyio.move_on_after(budget) as scope:
                    item = await _pull(source)
                if scope.cancelled_caught:
                    raise ToolTimeout(budget_s)
                budget -= anyio.current_time() - started
            if item is _DONE:
                return
            yield to_response(item)
    finally:
        await _close(source)


async def _pull(source: AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any]) -> object:
    if isinstance(source, AsyncGeneratorType):
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return _DONE
    return await anyio.to_thread.run_sync(_next_or_done, source, abandon_on_cancel=True)


async def _close(source: AsyncGeneratorType[Any, Any] | GeneratorType[Any, Any, Any]) -> None:
    """Run the tool's own cleanup (its ``finally`` blocks), shielded so cancellation cannot cut it short."""
    with anyio.CancelScope(shield=True):
        if isinstance(source, AsyncGeneratorType):
            await source.aclose()
        elif not source.gi_running:
            # A generator still running in an abandoned thread cannot be closed; it is closed when collected.
            await anyio.to_thread.run_sync(source.close)
