"""Running a tool's callable: awaited, in a worker thread, or inline; a generator pulled one piece at a time, each
pull within what is left of the tool's time budget, its cleanup shielded from cancellation.

Sync tools run in the process's tool threads (:mod:`agentscope.tools._threads`: context variables copied, at
most 40 at once, threads added only while the running ones are blocked), a cheaper hand-off than
``anyio.to_thread.run_sync`` (the reasons and numbers are in that module); a sync tool registered with
``inline=True`` runs on the event loop and skips the hand-off altogether.

The :class:`~agentscope.tools.Toolkit` decides what a call may do and what the model sees; this module only runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable
from functools import partial
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, Final, cast

import anyio

from agentscope.tools._convert import merge_responses, to_response
from agentscope.tools._threads import tool_threads
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from agentscope.tools._tool_info import ToolInfo

__all__ = ["ToolTimeout", "invoke", "run_in_tool_thread", "stream_pieces"]

_DONE: Final = object()


class ToolTimeout(Exception):
    """Internal signal: the tool ran out of time (never escapes the toolkit)."""


def _next_or_done(gen: GeneratorType[Any, Any, Any]) -> object:
    return next(gen, _DONE)


async def run_in_tool_thread(func: Callable[[], object]) -> object:
    """Run ``func`` in a worker thread with the caller's context variables; cancelling the caller abandons it
    (Python cannot stop a thread: it runs on and its result is discarded)."""
    return await tool_threads.run(func)


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
