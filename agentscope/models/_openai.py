"""OpenAI Chat Completions client over httpx2 (no SDK): OpenAI, vLLM, SGLang and AgentScope's rollout service.

The wire format, RL fields included (token ids, log-probs, policy version), is the OpenAI codec's:
:func:`~agentscope.formatters.format_openai_request` writes each request, :func:`~agentscope.formatters.parse_openai_response`
and :class:`~agentscope.formatters.OpenAIStreamDecoder` read each answer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx2

from agentscope.events import ModelStreamEvent
from agentscope.formatters import OpenAIStreamDecoder, format_openai_request, parse_openai_response
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

__all__ = ["OpenAIChatModel"]


class OpenAIChatModel(ChatModel):
    """A model served behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: Model name sent in every request.
        base_url: API root; requests go to ``{base_url}/chat/completions``.
        api_key: Bearer token; defaults to the ``OPENAI_API_KEY`` environment variable (local servers may
            need none).
        timeout_s: Deadline of one attempt, in seconds, from sending the request to the last byte of the answer
            (of a stream: to its last event); a retry gets a new one. ``settings["timeout_s"]`` overrides it
            per call.
        max_retries: Retries on 408/429/5xx answers, timeouts and connection errors.
        backoff: ``(base, max)`` seconds of the exponential backoff between retries.
        default_settings: Settings for every call; per-call ``settings`` override them key by key.
        http_client: Use this client (its owner closes it) instead of creating one.
        transport: Transport for the client we create (tests, custom networking).
        headers: Extra headers for every request.

    One pooled ``httpx2.AsyncClient`` is created on first use and closed by :meth:`aclose` (or ``async with``);
    like any asyncio connection pool it belongs to the event loop that first used it, so use one model per loop.
    Stop iterating :meth:`stream` early only inside ``contextlib.aclosing`` so the connection is released at once.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
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
        self.default_settings: ModelSettings = ModelSettings(**(default_settings or {}))
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        all_headers = {"content-type": "application/json", "accept": "application/json"}
        if key:
            all_headers["authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        self._http = HTTPChannel(
            provider="OpenAI-compatible API",
            url=f"{self.base_url}/chat/completions",
            headers=all_headers,
            secret=key,
            key_hint="pass api_key= or set OPENAI_API_KEY",
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
        merged: ModelSettings = {**self.default_settings, **settings} if settings else self.default_settings
        body = format_openai_request(
            self.model_name,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            settings=merged,
            stream=stream,
        )
        return body, merged.get("timeout_s")

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Send one Chat Completions request and return the complete answer."""
        check_model_requests_allowed()
        body, timeout_s = self.build_request_body(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format, settings=settings
        )
        return parse_openai_response(await self._http.post_json(body, timeout_s=timeout_s))

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
        body, timeout_s = self.build_request_body(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            settings=settings,
            stream=True,
        )
        decoder = OpenAIStreamDecoder()
        async with self._http.stream(body, timeout_s=timeout_s) as events:
            async for event in events:
                deltas = decoder.feed(event.data)
                if decoder.finished:
                    break
                for delta in deltas:
                    yield delta
        yield decoder.result()
