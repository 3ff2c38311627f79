"""The shared vocabulary of models, tools and codecs: what goes into a model call and what comes out of one.

These types sit on the ground floor, next to :mod:`agentscope.message`, because every layer above speaks them:
the wire codecs (:mod:`agentscope.formatters`) build :class:`ChatResponse` and :class:`ToolSchema`, the model
clients (:mod:`agentscope.models`) take and return them, the toolkit (:mod:`agentscope.tools`) describes its
tools with :class:`ToolSchema` and returns :class:`ToolResponse`, and the events (:mod:`agentscope.events`)
carry both. This module imports nothing of ours but :mod:`agentscope.message`; ``agentscope.models`` and
``agentscope.tools`` re-export each name, so ``from agentscope.models import ChatResponse`` keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentscope.message import ContentBlock, ImageBlock, Msg, TextBlock, ToolUseBlock

__all__ = [
    "ChatResponse",
    "ChatUsage",
    "ModelSettings",
    "ResponseFormat",
    "ToolChoice",
    "ToolResponse",
    "ToolSchema",
]

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str
"""``auto`` (the model decides), ``none``, ``required`` (some tool), or the name of the one tool to call."""

ResponseFormat: TypeAlias = type[BaseModel] | dict[str, Any]
"""A pydantic model class, or a JSON schema, that the reply must match."""


class ModelSettings(TypedDict, total=False):
    """Sampling and transport settings; each client maps them to its provider's names."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]
    seed: int
    timeout_s: float
    parallel_tool_calls: bool
    extra_body: dict[str, Any]
    """Merged verbatim into the request body, for provider-specific options."""


class ToolSchema(BaseModel):
    """A tool as the model sees it: provider-neutral; formatters translate it."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Tool name the model calls."""
    description: str = ""
    """What the tool does, written for the model."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema of the arguments object."""


class ChatUsage(BaseModel):
    """Token accounting for one model call."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ChatResponse(BaseModel):
    """One complete model answer.

    The token fields are filled only by backends that return them (vLLM-style servers and AgentScope's rollout
    service); they are passed through untouched, because RL training depends on exactly these ids.
    """

    content: list[ContentBlock] = Field(default_factory=list[ContentBlock])
    """Text, thinking and tool-use blocks, in the order the model produced them."""
    usage: ChatUsage | None = None
    """Token counts, when the provider reports them."""
    finish_reason: str | None = None
    """Why generation stopped: ``stop``, ``length``, ``tool_calls``, ..."""
    id: str | None = None
    """Provider's response id."""
    model: str | None = None
    """Model that answered, as the provider names it."""
    prompt_token_ids: list[int] | None = None
    """Token ids of the prompt as the backend tokenized it."""
    completion_token_ids: list[int] | None = None
    """Token ids the policy generated."""
    logprobs: list[float] | None = None
    """Log-probability of each generated token, aligned with ``completion_token_ids``."""
    policy_version: int | None = None
    """Version of the policy weights that generated the completion (rollout service)."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Backend-specific extras."""

    @property
    def text(self) -> str:
        """All text blocks joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tool calls requested, in order."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    def to_msg(self, name: str | None = None) -> Msg:
        """This response as an assistant message."""
        return Msg(role="assistant", name=name, content=list(self.content))


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
