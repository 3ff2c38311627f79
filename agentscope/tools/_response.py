"""What a tool returns."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentscope.message import ImageBlock, TextBlock

__all__ = ["ToolResponse"]


class ToolResponse(BaseModel):
    """A tool's output: content the model sees, plus optional structured data for programs.

    A tool may return a ``ToolResponse`` directly, or anything the toolkit converts to one: a string (text),
    an :class:`ImageBlock`, a pydantic model, or JSON-compatible data (shown to the model as JSON and kept in
    ``structured``). A streaming tool (a generator or async generator) yields several; each is one piece of
    the output.
    """

    model_config = ConfigDict(extra="forbid")

    content: list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = Field(
        default_factory=list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]
    )
    """Text and images shown to the model."""
    structured: JsonValue = None
    """Machine-readable result, when the tool produced one."""
    is_error: bool = False
    """True when the output describes a failure."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Extra data for hooks and traces; never shown to the model."""

    @classmethod
    def text(cls, text: str, *, is_error: bool = False) -> ToolResponse:
        """A response holding one text block."""
        return cls(content=[TextBlock(text=text)], is_error=is_error)

    @property
    def text_content(self) -> str:
        """All text blocks joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))
