"""What a test double sees of each model call."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentscope.message import Msg
from agentscope.models import ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = ["ModelRequest"]


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
