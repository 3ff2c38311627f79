"""Anthropic Messages API client over httpx2 (no SDK).

The wire format is the Anthropic codec's: :func:`~agentscope.formatters.format_anthropic_request` writes each
request (``response_format`` emulated with a forced tool), :func:`~agentscope.formatters.parse_anthropic_response`
and :class:`~agentscope.formatters.AnthropicStreamDecoder` read each answer (``finish_reason`` normalised to the
OpenAI names, the provider's ``stop_reason``, cache counts and redacted thinking kept in ``metadata``); their
module docstrings say exactly how.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx2

from agentscope.events import ModelStreamEvent
from agentscope.formatters import (
    AnthropicFormatTool,
    AnthropicStreamDecoder,
    format_anthropic_request,
    parse_anthropic_response,
)
from agentscope.message import Msg
from agentscope.models._base import (
    ChatModel,
    ChatResponse,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
    check_model_requests_allowed,
)
from agentscope.models._http import HTTPChannel, RetryPolicy

__all__ = ["AnthropicChatModel"]

ANTHROPIC_VERSION = "2023-06-01"


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
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
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
    ) -> tuple[dict[str, Any], float | None, AnthropicFormatTool | None]:
        merged: ModelSettings = {**self.default_settings, **settings} if settings else self.default_settings
        body, format_tool = format_anthropic_request(
            self.model_name,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            settings=merged,
            stream=stream,
            max_tokens=self.max_tokens,
        )
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
        data = await self._http.post_json(body, timeout_s=timeout_s)
        return parse_anthropic_response(data, format_tool=format_tool)

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
        decoder = AnthropicStreamDecoder(format_tool)
        async with self._http.stream(body, timeout_s=timeout_s) as events:
            async for event in events:
                deltas = decoder.feed(event.data)
                if decoder.finished:
                    break
                for delta in deltas:
                    yield delta
        yield decoder.result()
