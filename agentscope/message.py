"""Messages and content blocks: the data every part of AgentScope speaks.

A :class:`Msg` has a role, an optional speaker name and content that is either a plain string or a list of typed
content blocks. Every class here is a pydantic model whose JSON round trip is exact
(``Msg.model_validate_json(m.model_dump_json()) == m``), so messages can be stored, traced, sent over HTTP and
replayed without loss.
"""

from __future__ import annotations

import os
import random
import time
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "Base64Source",
    "ContentBlock",
    "ImageBlock",
    "Msg",
    "Role",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "new_id",
]

Role: TypeAlias = Literal["user", "assistant", "system", "tool"]


# Ids need uniqueness, not secrecy: a private generator seeded from the OS is ~50x cheaper than uuid4 (one
# getrandom syscall per id), is unaffected by user code seeding the global `random`, and is reseeded in forked
# children so that worker processes never repeat each other's ids.
_id_source = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _id_source.seed(os.urandom(32)))


def new_id() -> str:
    """Return a fresh random identifier (32 hex characters, 128 random bits)."""
    return f"{_id_source.getrandbits(128):032x}"


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBlock(_Block):
    """Plain text."""

    type: Literal["text"] = "text"
    text: str
    """The text itself."""


class ThinkingBlock(_Block):
    """A model's visible reasoning, kept so it can be sent back to providers that require it."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    """The reasoning text."""
    signature: str | None = None
    """Provider signature that must accompany the block when it is sent back (Anthropic)."""


class Base64Source(_Block):
    """Inline binary data."""

    type: Literal["base64"] = "base64"
    media_type: str
    """MIME type, for example ``image/png``."""
    data: str
    """Base64-encoded bytes."""


class URLSource(_Block):
    """Data referenced by URL (``http(s)://``, ``file://`` or ``data:``)."""

    type: Literal["url"] = "url"
    url: str
    """Where the data lives."""


class ImageBlock(_Block):
    """An image, inline or by URL."""

    type: Literal["image"] = "image"
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    """The image data."""


class ToolUseBlock(_Block):
    """A model's request to call a tool."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    """Call id, echoed by the matching :class:`ToolResultBlock`."""
    name: str
    """Name of the tool to call."""
    input: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Parsed arguments."""
    raw_input: str | None = None
    """The arguments exactly as the model produced them, when they could not be parsed as a JSON object.

    The toolkit then reports the parse error to the model as a tool error instead of calling the tool."""


class ToolResultBlock(_Block):
    """The outcome of a tool call, sent back to the model."""

    type: Literal["tool_result"] = "tool_result"
    id: str
    """Id of the :class:`ToolUseBlock` this answers."""
    name: str
    """Name of the tool that ran."""
    output: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]
    """What the model sees."""
    is_error: bool = False
    """True when the call failed; ``output`` then says why."""


ContentBlock: TypeAlias = Annotated[
    TextBlock | ThinkingBlock | ImageBlock | ToolUseBlock | ToolResultBlock,
    Field(discriminator="type"),
]
"""Any content block, discriminated by its ``type`` field."""

_BlockT = TypeVar("_BlockT", TextBlock, ThinkingBlock, ImageBlock, ToolUseBlock, ToolResultBlock)


class Msg(BaseModel):
    """One message in a conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    """Who speaks: ``user``, ``assistant``, ``system`` or ``tool``."""
    content: str | list[ContentBlock]
    """A plain string, or a list of content blocks."""
    name: str | None = None
    """Speaker name; in multi-agent conversations this tells agents apart."""
    id: str = Field(default_factory=new_id)
    """Unique message id."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Free-form JSON data, for example a structured output under ``"structured_output"``."""
    timestamp: float = Field(default_factory=time.time)
    """Creation time, seconds since the epoch."""

    @property
    def blocks(self) -> list[ContentBlock]:
        """The content as a list of blocks (a string becomes one :class:`TextBlock`)."""
        if isinstance(self.content, str):
            return [TextBlock(text=self.content)] if self.content else []
        return self.content

    def blocks_of(self, block_type: type[_BlockT]) -> list[_BlockT]:
        """Return the content blocks of one type, in order."""
        return [b for b in self.blocks if isinstance(b, block_type)]

    @property
    def text(self) -> str:
        """All text content joined with newlines (thinking, tool and image blocks left out)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tool calls this message requests."""
        return self.blocks_of(ToolUseBlock)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary form."""
        return self.model_dump(mode="json")
