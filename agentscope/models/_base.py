"""The model seam: the one interface through which agents reach a language model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta
from agentscope.exceptions import ModelRequestsBlockedError
from agentscope.message import Msg, TextBlock, ThinkingBlock
from agentscope.types import ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = ["ChatModel", "check_model_requests_allowed"]

ALLOW_MODEL_REQUESTS = True
"""Set to False (as the test suite does) to make every real model client refuse to send requests.

Test doubles (``ScriptedModel``, ``FunctionModel``) ignore it. Read through :func:`check_model_requests_allowed`.
"""


def check_model_requests_allowed() -> None:
    """Raise :class:`ModelRequestsBlockedError` when real model requests are switched off."""
    from agentscope import models

    if not models.ALLOW_MODEL_REQUESTS:
        raise ModelRequestsBlockedError(
            "model requests are blocked (agentscope.models.ALLOW_MODEL_REQUESTS is False); "
            "in tests, use ScriptedModel/FunctionModel or the `allow_model_requests` fixture"
        )


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
