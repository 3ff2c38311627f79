"""Streaming events: what a model emits while it generates and what an agent emits while it replies.

Model streams (``ChatModel.stream``) yield :data:`ModelStreamEvent` items: deltas, then exactly one final
``ChatResponse`` carrying the complete result. Agent streams (``AgentBase.stream``) yield :data:`AgentEvent` items and
end with one :class:`ReplyEvent`.

Events are slotted dataclasses rather than pydantic models: they are created per token, and are never persisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.types import ChatResponse, ToolResponse

__all__ = [
    "AgentEvent",
    "ModelStreamEvent",
    "ReplyEvent",
    "TextDelta",
    "ThinkingDelta",
    "ToolCallDelta",
    "ToolCallEvent",
    "ToolResultDelta",
    "ToolResultEvent",
]


@dataclass(slots=True)
class TextDelta:
    """A piece of generated text."""

    text: str
    """The new text."""
    agent: str | None = None
    """Name of the agent that produced it, when emitted by an agent."""


@dataclass(slots=True)
class ThinkingDelta:
    """A piece of generated reasoning."""

    thinking: str
    """The new reasoning text."""
    agent: str | None = None
    """Name of the agent that produced it, when emitted by an agent."""


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call as it streams from the model."""

    index: int
    """Position of the call among this response's tool calls."""
    id: str | None
    """Call id, set on the first delta of a call."""
    name: str | None
    """Tool name, set on the first delta of a call."""
    arguments: str
    """The next fragment of the JSON arguments."""


@dataclass(slots=True)
class ToolCallEvent:
    """The agent is about to run a tool call (all arguments known)."""

    call: ToolUseBlock
    """The call."""
    agent: str
    """Name of the agent running it."""


@dataclass(slots=True)
class ToolResultDelta:
    """A partial result from a streaming tool."""

    call_id: str
    """Id of the call that produced it."""
    chunk: ToolResponse
    """The new piece of output."""
    agent: str
    """Name of the agent running the tool."""


@dataclass(slots=True)
class ToolResultEvent:
    """A tool call finished."""

    result: ToolResultBlock
    """What the model will see."""
    agent: str
    """Name of the agent that ran it."""


@dataclass(slots=True)
class ReplyEvent:
    """The agent's final reply. Always the last event of a stream."""

    msg: Msg
    """The reply, as ``await agent(...)`` would return it."""


ModelStreamEvent: TypeAlias = TextDelta | ThinkingDelta | ToolCallDelta | ChatResponse
"""What ``ChatModel.stream`` yields. The last item is always a ``ChatResponse``."""

AgentEvent: TypeAlias = (
    TextDelta | ThinkingDelta | ToolCallEvent | ToolResultDelta | ToolResultEvent | ReplyEvent
)
"""What ``AgentBase.stream`` yields. The last item is always a :class:`ReplyEvent`."""
