"""Anthropic Messages API client over httpx (no SDK).

Structured output: the Messages API has no JSON-schema response format, so ``response_format`` is emulated
with a forced tool. A tool named after the format (a pydantic class's name, or the schema's ``title``, else
``response``) whose ``input_schema`` is the format's schema is added, and ``tool_choice`` is set to
``{"type": "tool", "name": ...}``; the caller's ``tool_choice`` is overridden for that call. The model's call
of that tool comes back as a :class:`~agentscope.message.TextBlock` holding the JSON of its input (streamed as
``TextDelta`` events of the partial JSON), with ``finish_reason="stop"``. A schema that is not an object
schema is wrapped as ``{"value": <schema>}`` for the tool and unwrapped in the answer. Anthropic does not
allow a forced tool together with extended thinking, so do not combine the two.

``finish_reason`` is normalised to the OpenAI names (``end_turn`` and ``stop_sequence`` -> ``stop``,
``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``); the provider's value is kept in
``metadata["stop_reason"]``. ``redacted_thinking`` blocks cannot be represented by a ThinkingBlock; their data
is kept in ``metadata["redacted_thinking"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import ModelHTTPError, ModelResponseError
from agentscope.formatters._anthropic import (
    format_anthropic_messages,
    format_anthropic_tool_choice,
    format_anthropic_tools,
)
from agentscope.formatters._common import (
    as_list,
    as_object,
    parse_tool_arguments,
    resolve_response_format,
    tool_arguments_from_value,
)
from agentscope.message import ContentBlock, Msg, TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.models._base import (
    ChatModel,
    ChatResponse,
    ChatUsage,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
    check_model_requests_allowed,
)
from agentscope.models._http import HTTPChannel, RetryPolicy

__all__ = ["AnthropicChatModel"]

ANTHROPIC_VERSION = "2023-06-01"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}

_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


@dataclass(frozen=True, slots=True)
class _FormatTool:
    """The forced tool that emulates a response format."""

    name: str
    wrapped: bool
    """True when the schema was wrapped as ``{"value": schema}``."""

    def text(self, tool_input: Any) -> str:
        value = as_object(tool_input).get("value") if self.wrapped else tool_input
        return json.dumps(value, ensure_ascii=False)


class AnthropicChatModel(ChatModel):
    """A Claude model behind the Anthropic Messages API (``POST {base_url}/v1/messages``).

    Args:
        model: Model name, for example ``claude-sonnet-4-5``.
        base_url: API root.
        api_key: Sent as ``x-api-key``; defaults to the ``ANTHROPIC_API_KEY`` environment variable.
        max_tokens: ``max_tokens`` when the settings do not give one (the API requires it).
        timeout_s: Deadline of one attempt, in seconds, from sending the request to the last byte of the answer
            (of a stream: to its last event); a retry gets a new one. ``settings["timeout_s"]`` overrides it
            per call.
        max_retries: Retries on 408/429/5xx/529 answers, timeouts and connection errors.
        backoff: ``(base, max)`` seconds of the exponential backoff between retries.
        default_settings: Settings for every call; per-call ``settings`` override them key by key.
        http_client: Use this client (its owner closes it) instead of creating one.
        transport: Transport for the client we create (tests, custom networking).
        headers: Extra headers for every request (for example ``anthropic-beta``).

    Settings map to ``temperature``, ``top_p``, ``max_tokens``, ``stop_sequences`` (from ``stop``) and
    ``tool_choice.disable_parallel_tool_use`` (from ``parallel_tool_calls=False``); ``seed`` is not
    supported by the API and is ignored. Extended thinking is switched on through ``extra_body``, e.g.
    ``{"thinking": {"type": "enabled", "budget_tokens": 2048}}``.

    The HTTP client is pooled and managed as for :class:`~agentscope.models.OpenAIChatModel`.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        max_tokens: int = 4096,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff: tuple[float, float] = (0.5, 8.0),
        default_settings: ModelSettings | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self.default_settings: ModelSettings = ModelSettings(**(default_settings or {}))
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        all_headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if key:
            all_headers["x-api-key"] = key
        all_headers.update(headers or {})
        self._http = HTTPChannel(
            provider="Anthropic API",
            url=f"{self.base_url}/v1/messages",
            headers=all_headers,
            secret=key,
            key_hint="pass api_key= or set ANTHROPIC_API_KEY",
            timeout_s=timeout_s,
            retry=RetryPolicy(max_retries=max_retries, backoff_base_s=backoff[0], backoff_max_s=backoff[1]),
            http_client=http_client,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this model created. Safe to call more than once."""
        await self._http.aclose()

    def build_request_body(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
        stream: bool = False,
    ) -> tuple[dict[str, Any], float | None]:
        """The JSON body of a request and the per-call timeout (None: the model's default)."""
        body, timeout_s, _ = self._build(messages, tools, tool_choice, response_format, settings, stream)
        return body, timeout_s

    def _build(
        self,
        messages: Sequence[Msg],
        tools: Sequence[ToolSchema] | None,
        tool_choice: ToolChoice | None,
        response_format: ResponseFormat | None,
        settings: ModelSettings | None,
        stream: bool,
    ) -> tuple[dict[str, Any], float | None, _FormatTool | None]:
        merged: dict[str, Any] = (
            {**self.default_settings, **settings} if settings else dict(self.default_settings)
        )
        payload = format_anthropic_messages(messages)
        body: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": merged.get("max_tokens", self.max_tokens),
            "messages": payload.messages,
        }
        if payload.system is not None:
            body["system"] = payload.system
        tool_list = format_anthropic_tools(tools) if tools else []
        format_tool: _FormatTool | None = None
        if response_format is not None:
            resolved = resolve_response_format(response_format)
            schema = resolved.schema
            wrapped = schema.get("type") != "object"
            if wrapped:
                schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
            format_tool = _FormatTool(resolved.name, wrapped)
            tool_list.append(
                {
                    "name": resolved.name,
                    "description": "Give your final answer by calling this tool; its input is the answer.",
                    "input_schema": schema,
                }
            )
            tool_choice = resolved.name
        if tool_list:
            body["tools"] = tool_list
            choice = format_anthropic_tool_choice(
                tool_choice, parallel_tool_calls=merged.get("parallel_tool_calls")
            )
            if choice is not None:
                body["tool_choice"] = choice
        elif tool_choice == "none":
            body["tool_choice"] = {"type": "none"}
        for key in ("temperature", "top_p"):
            if key in merged:
                body[key] = merged[key]
        if "stop" in merged:
            body["stop_sequences"] = merged["stop"]
        if stream:
            body["stream"] = True
        extra = merged.get("extra_body")
        if extra:
            body.update(extra)
        return body, merged.get("timeout_s"), format_tool

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Send one Messages API request and return the complete answer."""
        check_model_requests_allowed()
        body, timeout_s, format_tool = self._build(
            messages, tools, tool_choice, response_format, settings, False
        )
        data = as_object(await self._http.post_json(body, timeout_s=timeout_s))
        if data.get("type") == "error":
            raise ModelResponseError(f"Anthropic API answered with an error: {str(data.get('error'))[:300]}")
        if "content" not in data:
            raise ModelResponseError(f"Anthropic API answered without content: {str(data)[:300]!r}")
        content: list[ContentBlock] = []
        redacted: list[str] = []
        for raw in as_list(data.get("content")):
            block = as_object(raw)
            kind = block.get("type")
            if kind == "text":
                content.append(TextBlock(text=block.get("text") or ""))
            elif kind == "thinking":
                content.append(
                    ThinkingBlock(thinking=block.get("thinking") or "", signature=block.get("signature"))
                )
            elif kind == "redacted_thinking":
                redacted.append(str(block.get("data") or ""))
            elif kind == "tool_use":
                if format_tool is not None and block.get("name") == format_tool.name:
                    content.append(TextBlock(text=format_tool.text(block.get("input"))))
                else:
                    tool_input, raw_input = tool_arguments_from_value(block.get("input"))
                    content.append(
                        ToolUseBlock(
                            id=block.get("id") or "",
                            name=block.get("name") or "",
                            input=tool_input,
                            raw_input=raw_input,
                        )
                    )
        usage = as_object(data.get("usage"))
        return _response(
            content,
            stop_reason=data.get("stop_reason"),
            format_tool=format_tool,
            redacted=redacted,
            id=data.get("id"),
            model=data.get("model"),
            usage=ChatUsage(input_tokens=_input_tokens(usage), output_tokens=usage.get("output_tokens") or 0)
            if usage
            else None,
            cache=usage,
        )

    async def stream(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        """Stream text, thinking and tool-call deltas, then the complete :class:`ChatResponse`."""
        check_model_requests_allowed()
        body, timeout_s, format_tool = self._build(
            messages, tools, tool_choice, response_format, settings, True
        )
        state = _StreamState(format_tool)
        async with self._http.stream(body, timeout_s=timeout_s) as events:
            async for event in events:
                try:
                    data = json.loads(event.data)
                except (ValueError, RecursionError) as exc:
                    raise ModelResponseError(
                        f"Anthropic API streamed invalid JSON: {event.data[:200]!r}"
                    ) from exc
                data = as_object(data)
                if data.get("type") == "message_stop":
                    break
                for delta in state.feed(data):
                    yield delta
        yield state.result()


def _input_tokens(usage: dict[str, Any]) -> int:
    """All prompt tokens: uncached, written to the cache and read from it."""
    return (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )


def _response(
    content: list[ContentBlock],
    *,
    stop_reason: Any,
    format_tool: _FormatTool | None,
    redacted: list[str],
    id: Any,
    model: Any,
    usage: ChatUsage | None,
    cache: dict[str, Any],
) -> ChatResponse:
    metadata: dict[str, Any] = {}
    if stop_reason is not None:
        metadata["stop_reason"] = stop_reason
    if redacted:
        metadata["redacted_thinking"] = redacted
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        if cache.get(key):
            metadata[key] = cache[key]
    finish = _FINISH_REASONS.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None
    if (
        format_tool is not None
        and stop_reason == "tool_use"
        and not any(isinstance(b, ToolUseBlock) for b in content)
    ):
        finish = "stop"
    return ChatResponse(
        content=content, usage=usage, finish_reason=finish, id=id, model=model, metadata=metadata
    )


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    if not isinstance(index, int):
        raise ModelResponseError(
            f"Anthropic API streamed a content block event without an index: {data!r:.200}"
        )
    return index


@dataclass(slots=True)
class _Block:
    kind: str
    text: list[str] = field(default_factory=list[str])
    signature: str | None = None
    id: str = ""
    name: str = ""
    data: str = ""
    position: int = -1
    """Position among the tool calls (tool_use blocks only)."""
    is_format: bool = False


class _StreamState:
    """Accumulates Messages API stream events into the final :class:`ChatResponse`."""

    def __init__(self, format_tool: _FormatTool | None) -> None:
        self.format_tool = format_tool
        self.blocks: dict[int, _Block] = {}
        self.tool_calls = 0
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None

    def feed(self, data: dict[str, Any]) -> list[ModelStreamEvent]:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(_index(data), as_object(data.get("delta")))
        if kind == "content_block_start":
            return self._start(_index(data), as_object(data.get("content_block")))
        if kind == "message_start":
            message = as_object(data.get("message"))
            self.id = message.get("id")
            self.model = message.get("model")
            self.usage.update(as_object(message.get("usage")))
        elif kind == "message_delta":
            delta = as_object(data.get("delta"))
            if delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
            self.usage.update({k: v for k, v in as_object(data.get("usage")).items() if v is not None})
        elif kind == "error":
            error = as_object(data.get("error"))
            error_type = str(error.get("type") or "api_error")
            message = error.get("message") or error_type
            raise ModelHTTPError(
                f"Anthropic API reported {error_type} while streaming: {message}",
                status_code=_STREAM_ERROR_STATUS.get(error_type, 500),
                body=json.dumps(data)[:2000],
            )
        elif kind == "content_block_stop":
            return self._stop(_index(data))
        # ping: nothing to do
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[ModelStreamEvent]:
        kind = str(block.get("type") or "")
        state = self.blocks[index] = _Block(kind)
        if kind == "text":
            return self._delta(index, {"type": "text_delta", "text": block.get("text") or ""})
        if kind == "thinking":
            state.signature = block.get("signature") or None
            return self._delta(index, {"type": "thinking_delta", "thinking": block.get("thinking") or ""})
        if kind == "redacted_thinking":
            state.data = str(block.get("data") or "")
        elif kind == "tool_use":
            state.id = str(block.get("id") or "")
            state.name = str(block.get("name") or "")
            if self.format_tool is not None and state.name == self.format_tool.name:
                state.is_format = True
                return []
            state.position = self.tool_calls
            self.tool_calls += 1
            return [ToolCallDelta(index=state.position, id=state.id, name=state.name, arguments="")]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[ModelStreamEvent]:
        state = self.blocks.get(index)
        if state is None:
            raise ModelResponseError(f"Anthropic API streamed a delta for unknown content block {index!r}")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            if text:
                state.text.append(text)
                return [TextDelta(text)]
        elif kind == "input_json_delta":
            partial = delta.get("partial_json") or ""
            if partial:
                state.text.append(partial)
                if state.is_format and self.format_tool is not None and not self.format_tool.wrapped:
                    return [TextDelta(partial)]
                if not state.is_format:
                    return [ToolCallDelta(index=state.position, id=None, name=None, arguments=partial)]
        elif kind == "thinking_delta":
            thinking = delta.get("thinking") or ""
            if thinking:
                state.text.append(thinking)
                return [ThinkingDelta(thinking)]
        elif kind == "signature_delta":
            state.signature = (state.signature or "") + (delta.get("signature") or "")
        return []

    def _stop(self, index: int) -> list[ModelStreamEvent]:
        state = self.blocks.get(index)
        if state is None or not state.is_format or self.format_tool is None or not self.format_tool.wrapped:
            return []
        return [TextDelta(self._format_text(state))]

    def _format_text(self, state: _Block) -> str:
        """The structured answer: the streamed JSON as it is, or unwrapped when the schema was wrapped."""
        joined = "".join(state.text)
        assert self.format_tool is not None
        if not self.format_tool.wrapped:
            return joined
        parsed, raw = parse_tool_arguments(joined)
        return joined if raw is not None else self.format_tool.text(parsed)

    def result(self) -> ChatResponse:
        content: list[ContentBlock] = []
        redacted: list[str] = []
        for _, block in sorted(self.blocks.items()):
            joined = "".join(block.text)
            if block.kind == "text":
                content.append(TextBlock(text=joined))
            elif block.kind == "thinking":
                content.append(ThinkingBlock(thinking=joined, signature=block.signature))
            elif block.kind == "redacted_thinking":
                redacted.append(block.data)
            elif block.kind == "tool_use":
                if block.is_format:
                    content.append(TextBlock(text=self._format_text(block)))
                else:
                    parsed, raw = parse_tool_arguments(joined)
                    content.append(ToolUseBlock(id=block.id, name=block.name, input=parsed, raw_input=raw))
        usage = (
            ChatUsage(
                input_tokens=_input_tokens(self.usage), output_tokens=self.usage.get("output_tokens") or 0
            )
            if self.usage
            else None
        )
        return _response(
            content,
            stop_reason=self.stop_reason,
            format_tool=self.format_tool,
            redacted=redacted,
            id=self.id,
            model=self.model,
            usage=usage,
            cache=self.usage,
        )
