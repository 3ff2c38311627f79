"""The model seam: the one interface through which agents reach a language model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta
from agentscope.exceptions import ModelRequestsBlockedError
from agentscope.message import ContentBlock, Msg, TextBlock, ThinkingBlock, ToolUseBlock

__all__ = [
    "ChatModel",
    "ChatResponse",
    "ChatUsage",
    "ModelSettings",
    "ResponseFormat",
    "ToolChoice",
    "ToolSchema",
    "check_model_requests_allowed",
]

ALLOW_MODEL_REQUESTS = True
"""Set to False (as the test suite does) to make every real model client refuse to send requests.

Test doubles (``ScriptedModel``, ``FunctionModel``) ignore it. Read through :func:`check_model_requests_allowed`.
"""

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str
"""``auto`` (the model decides), ``none``, ``required`` (some tool), or the name of the one tool to call."""

ResponseFormat: TypeAlias = type[BaseModel] | dict[str, Any]
"""A pydantic model class, or a JSON schema, that the reply must match."""


def check_model_requests_allowed() -> None:
    """Raise :class:`ModelRequestsBlockedError` when real model requests are switched off."""
    from agentscope import models

    if not models.ALLOW_MODEL_REQUESTS:
        raise ModelRequestsBlockedError(
            "model requests are blocked (agentscope.models.ALLOW_MODEL_REQUESTS is False); "
            "in tests, use ScriptedModel/FunctionModel or the `allow_model_requests` fixture"
        )


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


class ChatModel(ABC):
    """A chat model: messages (and tools) in, a :class:`ChatResponse` out.

    Implement :meth:`generate`; override :meth:`stream` when the backend can stream (the default streams the whole
    answer as one delta). Both take the same arguments.
    """

    model_name: str = "unknown"
    """Name used in traces and logs."""

    @abstractmethod
    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Generate one complete answer."""

    async def stream(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        """Stream deltas as they are generated, then the complete :class:`ChatResponse` as the last item."""
        response = await self.generate(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format, settings=settings
        )
        for block in response.content:
            if isinstance(block, TextBlock):
                yield TextDelta(block.text)
            elif isinstance(block, ThinkingBlock):
                yield ThinkingDelta(block.thinking)
        yield response

    async def __call__(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Shorthand for :meth:`generate`."""
        return await self.generate(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format, settings=settings
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release connections. Safe to call more than once."""

    async def __aenter__(self) -> ChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
