"""Responses written by hand: what a scripted policy, an expert or a test double answers for a model call.

A :data:`ScriptItem` is plain text, one tool call, a message, a list of content blocks or a full
:class:`~agentscope.types.ChatResponse`; :func:`to_response` turns any of them into the response a model returns.
The RL task suites' experts and random baselines answer with these, and so do the test doubles of
:mod:`agentscope.testing`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentscope.message import ContentBlock, Msg, TextBlock, ToolUseBlock, new_id
from agentscope.types import ChatResponse

__all__ = ["ScriptItem", "text_response", "to_response", "tool_call"]


ScriptItem = ChatResponse | str | ToolUseBlock | Msg | Sequence[ContentBlock]
"""What a scripted step may be: a full response, plain text, one tool call, a message, or a list of blocks."""


def tool_call(name: str, /, _id: str | None = None, **arguments: object) -> ToolUseBlock:
    """A tool call for scripts: ``tool_call("add", a=1, b=2)``."""
    return ToolUseBlock(id=_id or f"call_{new_id()[:12]}", name=name, input=arguments)  # type: ignore[arg-type]


def text_response(text: str) -> ChatResponse:
    """A response that only says ``text``."""
    return ChatResponse(content=[TextBlock(text=text)], finish_reason="stop")


def to_response(item: ScriptItem) -> ChatResponse:
    """Normalise a script item into a :class:`ChatResponse`."""
    if isinstance(item, ChatResponse):
        return item
    if isinstance(item, str):
        return text_response(item)
    if isinstance(item, ToolUseBlock):
        return ChatResponse(content=[item], finish_reason="tool_calls")
    blocks = list(item.blocks) if isinstance(item, Msg) else list(item)
    finish = "tool_calls" if any(isinstance(b, ToolUseBlock) for b in blocks) else "stop"
    return ChatResponse(content=blocks, finish_reason=finish)
