"""The agent core's spans: ``invoke_agent``, ``chat`` and ``execute_tool`` (OpenTelemetry GenAI conventions).

Called only while ``switch.ON`` is true; the seams (``AgentBase.__call__``, ``ReActAgent._call_model``,
``Toolkit.execute`` and ``Toolkit.stream``) check it themselves and call straight through otherwise::

    if switch.ON:
        return await tracing.tool_execute(call, self._execute)
    return await self._execute(call)

On the event loop these wrappers only time the call and keep the objects involved, in the named fields of one span
class per kind (:class:`AgentSpan`, :class:`ModelSpan`, :class:`ToolSpan`): no object beyond the span itself, as
this runs for every call. The writer thread turns those fields into the span's name and attributes (``_expand``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentscope.exceptions import ApprovalRequired
from agentscope.tracing._spans import CURRENT, UNSAMPLED, Span, new_span, restore

if TYPE_CHECKING:
    from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
    from agentscope.types import ChatResponse, ToolResponse

__all__ = [
    "AgentSpan",
    "ModelSpan",
    "ToolSpan",
    "agent_call",
    "first_chunk",
    "model_call",
    "tool_execute",
    "tool_stream",
]

_R = TypeVar("_R")
_get_current, _set_current, _reset_current = CURRENT.get, CURRENT.set, CURRENT.reset
"""Bound once: the compiler reads ``CURRENT.set(...)`` on a name imported from another module as an attribute load
(a bound method made and freed on every call), not as a method call."""


class AgentSpan(Span):
    """An ``invoke_agent`` span: the agent's reply to what it was given (see :func:`agent_call`)."""

    __slots__ = ("agent", "msg", "reply")

    agent: Any
    """The agent (its ``name``, ``id`` and ``description`` are read when the span is written)."""
    msg: Msg | Sequence[Msg] | None
    """What the agent was given."""
    reply: Msg | None
    """Its reply; None while running and when the call failed."""


class ModelSpan(Span):
    """A ``chat`` span: one model call (see :func:`model_call`)."""

    __slots__ = ("messages", "model", "response", "settings", "streaming", "tool_choice", "tools")

    model: Any
    """The chat model (anything with a ``model_name``)."""
    messages: tuple[Msg, ...]
    """The messages sent, as they were when the call started."""
    tools: Sequence[Any]
    """The tool schemas offered (immutable ``ToolSchema``s)."""
    tool_choice: str | None
    """The tool choice asked for, if any."""
    settings: Mapping[str, Any] | None
    """The generation settings (temperature, max_tokens...), if any."""
    streaming: bool
    """Whether the response is streamed."""
    response: ChatResponse | None
    """The response; None while running and when the call failed."""


class ToolSpan(Span):
    """An ``execute_tool`` span: one tool call (see :func:`tool_execute` and :func:`tool_stream`)."""

    __slots__ = ("result", "tool_use")

    tool_use: ToolUseBlock
    """The call the model asked for."""
    result: ToolResponse | ToolResultBlock | None
    """A ToolResponse (``execute``) or a ToolResultBlock (``stream``); None while running, when the call failed
    and when its stream was closed early."""

    def record_exception(self, exc: BaseException) -> None:
        """Mark the call failed by ``exc``; a tool asking for a human's approval
        (:class:`~agentscope.exceptions.ApprovalRequired`) has not failed: that is recorded as
        ``agentscope.tool.approval_required``, with the reason."""
        if isinstance(exc, ApprovalRequired):
            self.attributes["agentscope.tool.approval_required"] = True
            self.attributes["agentscope.tool.approval_reason"] = exc.reason
        else:
            super().record_exception(exc)


async def _within(span: Span, awaitable: Awaitable[_R]) -> _R:
    """Await ``awaitable`` with ``span`` current (:data:`UNSAMPLED` too: nothing under it is recorded either). A
    failure ends the span with the error and propagates; on success the caller records the outcome and ends it."""
    token = _set_current(span)
    try:
        return await awaitable
    except BaseException as exc:
        span.record_exception(exc)
        span.end()
        raise
    finally:
        _reset_current(token)


async def agent_call(
    agent: Any, invoke: Callable[..., Awaitable[Msg]], msg: Msg | Sequence[Msg] | None, kwargs: dict[str, Any]
) -> Msg:
    """Run ``invoke(msg, **kwargs)`` (an agent's reply) inside an ``invoke_agent {name}`` span."""
    current = new_span("agent", AgentSpan)
    if current is None:
        return await invoke(msg, **kwargs)
    if current is UNSAMPLED:
        return await _within(current, invoke(msg, **kwargs))
    span: AgentSpan = current  # type: ignore[assignment]  (new_span made an AgentSpan)
    span.agent = agent
    span.msg = msg
    span.reply = None
    # (what _within does, inline: a coroutine less for every resumption of a traced call; the call itself is
    # inside too, so one that raises before its first await ends the span failed)
    token = _set_current(span)
    try:
        span.reply = reply = await invoke(msg, **kwargs)
    except BaseException as exc:
        span.record_exception(exc)
        span.end()
        raise
    finally:
        _reset_current(token)
    span.end()
    return reply


async def model_call(
    model: Any,
    call: Callable[[], Awaitable[ChatResponse]],
    messages: Sequence[Msg],
    tools: Sequence[Any],
    tool_choice: str | None,
    settings: Mapping[str, Any] | None,
    streaming: bool,
) -> ChatResponse:
    """Run ``call()`` (one model call returning a ChatResponse) inside a ``chat {model}`` span."""
    current = new_span("model", ModelSpan)
    if current is None:
        return await call()
    if current is UNSAMPLED:
        return await _within(current, call())
    span: ModelSpan = current  # type: ignore[assignment]  (new_span made a ModelSpan)
    span.model = model
    span.messages = tuple(messages)  # a snapshot: the caller's list grows while the model answers
    span.tools = tools
    span.tool_choice = tool_choice
    span.settings = settings
    span.streaming = streaming
    span.response = None
    token = _set_current(span)  # (_within, inline)
    try:
        span.response = response = await call()
    except BaseException as exc:
        span.record_exception(exc)
        span.end()
        raise
    finally:
        _reset_current(token)
    span.end()
    return response


async def tool_execute(
    call: ToolUseBlock, execute: Callable[[ToolUseBlock], Awaitable[ToolResponse]]
) -> ToolResponse:
    """Run ``execute(call)`` (returns a ToolResponse) inside an ``execute_tool {name}`` span."""
    current = new_span("tool", ToolSpan)
    if current is None:
        return await execute(call)
    if current is UNSAMPLED:
        return await _within(current, execute(call))
    span: ToolSpan = current  # type: ignore[assignment]  (new_span made a ToolSpan)
    span.tool_use = call
    span.result = None
    token = _set_current(span)  # (_within, inline)
    try:
        span.result = response = await execute(call)
    except BaseException as exc:
        span.record_exception(exc)
        span.end()
        raise
    finally:
        _reset_current(token)
    span.end()
    return response


async def tool_stream(
    call: ToolUseBlock, stream: AsyncIterator[Any], result_type: type[ToolResultBlock]
) -> AsyncIterator[Any]:
    """Relay ``stream`` (a toolkit's stream of pieces, then a ToolResultBlock) inside an ``execute_tool`` span.

    The span is current only while the tool runs (while the next piece is pulled), never across a ``yield``: the
    consumer's code between pieces is not the tool's.
    """
    current = (
        new_span("tool", ToolSpan) or UNSAMPLED
    )  # UNSAMPLED is made current too: nothing under it records
    span: ToolSpan | None = None
    if current is not UNSAMPLED:
        made: ToolSpan = current  # type: ignore[assignment]  (new_span made a ToolSpan)
        made.tool_use = call
        made.result = None
        span = made
    result: ToolResultBlock | None = None
    try:
        while True:
            token = _set_current(current)
            try:
                item = await stream.__anext__()
            except StopAsyncIteration:
                break
            finally:
                restore(token)
            if isinstance(item, result_type):
                result = item
            yield item
    except GeneratorExit:
        if span is not None:
            span.attributes["agentscope.tool.closed_early"] = True
            span.end()
        raise
    except BaseException as exc:
        if span is not None:
            span.record_exception(exc)
            span.end()
        raise
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    if span is not None:
        span.result = result
        span.end()


def first_chunk() -> None:
    """Record on the current model span how long its stream took to send anything
    (``gen_ai.response.time_to_first_chunk``, seconds since the span started). For streaming callers."""
    current = _get_current()
    if current is not None and current.kind == "model" and current is not UNSAMPLED:
        current.attributes["gen_ai.response.time_to_first_chunk"] = (time.time_ns() - current.start_ns) / 1e9
