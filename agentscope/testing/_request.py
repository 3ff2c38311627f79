"""What a test double sees of each model call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agentscope.message import ContentBlock, Msg, TextBlock, ToolUseBlock, new_id
from agentscope.models import ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = ["ModelRequest", "ScriptItem", "text_response", "to_response", "tool_call"]


@dataclass(slots=True)
class ModelRequest:
    """One call made to a test model, as the agent made it."""

    messages: list[Msg]
    """The conversation sent (a copy: later changes by the agent do not show here)."""
    tools: list[ToolSchema] = field(default_factory=list[ToolSchema])
    """Tools offered to the model."""
    tool_choice: ToolChoice | None = None
    """The tool choice the agent asked for."""
    response_format: ResponseFormat | None = None
    """Structured-output format requested, if any."""
    settings: ModelSettings = field(default_factory=lambda: ModelSettings())
    """Sampling settings passed."""

    @property
    def tool_names(self) -> list[str]:
        """Names of the offered tools."""
        return [t.name for t in self.tools]

    @property
    def last_message(self) -> Msg:
        """The newest message in the conversation."""
        return self.messages[-1]


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
