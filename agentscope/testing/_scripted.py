"""Test doubles for :class:`~agentscope.models.ChatModel`: a scripted model and a function-backed model."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeAlias, cast

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.message import ContentBlock, Msg, TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.models import (
    ChatModel,
    ChatResponse,
    ModelSettings,
    ResponseFormat,
    ScriptItem,
    ToolChoice,
    ToolSchema,
    to_response,
)
from agentscope.testing._request import ModelRequest

__all__ = ["FunctionModel", "ModelFunction", "ScriptedModel", "StreamFunction"]

ModelFunction: TypeAlias = Callable[[list[Msg], ModelRequest], "ScriptItem | Awaitable[ScriptItem]"]
"""Plays the model: receives the messages and the full request, returns what the model answers."""

StreamFunction: TypeAlias = Callable[
    [list[Msg], ModelRequest], AsyncIterator["str | ToolUseBlock | ThinkingDelta"]
]
"""Plays a streaming model: yields text pieces, thinking pieces and complete tool calls."""


class _RecordingModel(ChatModel):
    """Shared request recording for the test doubles."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.requests: list[ModelRequest] = []
        """Every request received, oldest first."""

    def _record(
        self,
        messages: Sequence[Msg],
        tools: Sequence[ToolSchema] | None,
        tool_choice: ToolChoice | None,
        response_format: ResponseFormat | None,
        settings: ModelSettings | None,
    ) -> ModelRequest:
        request = ModelRequest(
            messages=list(messages),
            tools=list(tools or ()),
            tool_choice=tool_choice,
            response_format=response_format,
            settings=settings if settings is not None else ModelSettings(),
        )
        self.requests.append(request)
        return request

    @property
    def last_request(self) -> ModelRequest:
        """The most recent request. Raises AssertionError when none was made."""
        assert self.requests, f"{self.model_name}: no request was made"
        return self.requests[-1]


async def _stream_response(response: ChatResponse, chunk_chars: int) -> AsyncIterator[ModelStreamEvent]:
    """Replay a complete response as provider-like deltas, then the response itself."""
    tool_index = 0
    for block in response.content:
        if isinstance(block, TextBlock):
            for start in range(0, len(block.text), chunk_chars):
                yield TextDelta(block.text[start : start + chunk_chars])
        elif isinstance(block, ThinkingBlock):
            yield ThinkingDelta(block.thinking)
        elif isinstance(block, ToolUseBlock):
            arguments = block.raw_input if block.raw_input is not None else json.dumps(block.input)
            yield ToolCallDelta(index=tool_index, id=block.id, name=block.name, arguments=arguments)
            tool_index += 1
    yield response


class ScriptedModel(_RecordingModel):
    """A model that answers from a script, for tests and examples.

    ``script`` is a list of steps, one per model call, or a single responder callable that is asked each time.
    A step is a :class:`ChatResponse`, a string, one :class:`ToolUseBlock` (see :func:`tool_call`), a list of blocks
    (several tool calls make a parallel call), a :class:`Msg`, or a callable taking the :class:`ModelRequest` and
    returning one of these (sync or async).

    >>> model = ScriptedModel([tool_call("add", a=1, b=2), "It is 3."])

    Every request is recorded in :attr:`requests`. :meth:`assert_complete` fails when steps are left over; running
    out of steps raises AssertionError naming the request that had no answer.
    Streaming splits text into ``stream_chunk_chars``-sized deltas.
    """

    def __init__(
        self,
        script: Sequence[ScriptItem | Callable[[ModelRequest], ScriptItem | Awaitable[ScriptItem]]]
        | Callable[[ModelRequest], ScriptItem | Awaitable[ScriptItem]],
        *,
        model_name: str = "scripted",
        stream_chunk_chars: int = 8,
    ) -> None:
        super().__init__(model_name)
        self._responder = script if callable(script) else None
        self._steps = [] if callable(script) else list(script)
        self._position = 0
        self.stream_chunk_chars = stream_chunk_chars

    @property
    def remaining(self) -> int:
        """Scripted steps not yet used."""
        return len(self._steps) - self._position

    def assert_complete(self) -> None:
        """Fail when scripted steps are left: the workflow made fewer model calls than the script expects."""
        if self._responder is None and self.remaining:
            raise AssertionError(
                f"{self.model_name}: {self.remaining} scripted step(s) were never requested "
                f"(used {self._position} of {len(self._steps)})"
            )

    async def _answer(self, request: ModelRequest) -> ChatResponse:
        step: object
        if self._responder is not None:
            step = self._responder(request)
        else:
            if self._position >= len(self._steps):
                raise AssertionError(
                    f"{self.model_name}: script exhausted after {len(self._steps)} step(s); unexpected request "
                    f"#{len(self.requests)} whose last message is {request.messages[-1].text[:200]!r}"
                    if request.messages
                    else f"{self.model_name}: script exhausted after {len(self._steps)} step(s)"
                )
            step = self._steps[self._position]
            self._position += 1
            if callable(step):
                step = cast(Callable[[ModelRequest], object], step)(request)
        if inspect.isawaitable(step):
            step = await step
        return to_response(cast(ScriptItem, step))

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        request = self._record(messages, tools, tool_choice, response_format, settings)
        return await self._answer(request)

    async def stream(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        request = self._record(messages, tools, tool_choice, response_format, settings)
        response = await self._answer(request)
        async for event in _stream_response(response, self.stream_chunk_chars):
            yield event


class FunctionModel(_RecordingModel):
    """A model played by a Python function, for tests that compute the answer from the conversation.

    ``function(messages, request)`` returns a step as :class:`ScriptedModel` accepts (sync or async).
    ``stream_function(messages, request)``, when given, is an async generator used for streaming: it yields text
    pieces (``str``), :class:`ThinkingDelta` pieces and complete :class:`ToolUseBlock` calls; the final response is
    assembled from them. Without it, streaming replays the function's answer in chunks.

    >>> def echo(messages, request):
    ...     return f"you said {messages[-1].text}"
    >>> model = FunctionModel(echo)
    """

    def __init__(
        self,
        function: ModelFunction | None = None,
        *,
        stream_function: StreamFunction | None = None,
        model_name: str = "function",
        stream_chunk_chars: int = 8,
    ) -> None:
        if function is None and stream_function is None:
            raise TypeError("FunctionModel needs `function`, `stream_function`, or both")
        super().__init__(model_name)
        self.function = function
        self.stream_function = stream_function
        self.stream_chunk_chars = stream_chunk_chars

    async def _call_function(self, request: ModelRequest) -> ChatResponse:
        assert self.function is not None
        step = self.function(request.messages, request)
        if inspect.isawaitable(step):
            step = await step
        return to_response(step)

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        request = self._record(messages, tools, tool_choice, response_format, settings)
        if self.function is None:
            response: ChatResponse | None = None
            async for event in self._run_stream_function(request):
                if isinstance(event, ChatResponse):
                    response = event
            assert response is not None
            return response
        return await self._call_function(request)

    async def stream(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        request = self._record(messages, tools, tool_choice, response_format, settings)
        if self.stream_function is None:
            response = await self._call_function(request)
            async for event in _stream_response(response, self.stream_chunk_chars):
                yield event
            return
        async for event in self._run_stream_function(request):
            yield event

    async def _run_stream_function(self, request: ModelRequest) -> AsyncIterator[ModelStreamEvent]:
        assert self.stream_function is not None
        blocks: list[ContentBlock] = []
        tool_index = 0
        async for piece in self.stream_function(request.messages, request):
            if isinstance(piece, str):
                if blocks and isinstance(blocks[-1], TextBlock):
                    blocks[-1] = TextBlock(text=blocks[-1].text + piece)
                else:
                    blocks.append(TextBlock(text=piece))
                yield TextDelta(piece)
            elif isinstance(piece, ThinkingDelta):
                if blocks and isinstance(blocks[-1], ThinkingBlock):
                    blocks[-1] = ThinkingBlock(thinking=blocks[-1].thinking + piece.thinking)
                else:
                    blocks.append(ThinkingBlock(thinking=piece.thinking))
                yield piece
            else:
                blocks.append(piece)
                yield ToolCallDelta(
                    index=tool_index, id=piece.id, name=piece.name, arguments=json.dumps(piece.input)
                )
                tool_index += 1
        finish = "tool_calls" if tool_index else "stop"
        yield ChatResponse(content=blocks, finish_reason=finish)
