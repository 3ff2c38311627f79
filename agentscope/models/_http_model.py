"""The base of the chat models that call a provider's HTTP API: one constructor, one request path, one stream loop.

A provider client (:class:`~agentscope.models.OpenAIChatModel`, :class:`~agentscope.models.AnthropicChatModel`)
names its endpoint and authentication headers in class attributes and maps one call to its wire format in
:meth:`HTTPChatModel._encode` (with the provider's codec from :mod:`agentscope.formatters`). Everything else is
shared: the options, the pooled :class:`~agentscope.models._http.HTTPChannel` (retries, deadlines, errors), the
settings merge, ``generate``, ``stream``, ``repr`` and ``aclose``.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypedDict

import httpx2

from agentscope.events import ModelStreamEvent
from agentscope.message import Msg
from agentscope.models._base import ChatModel, check_model_requests_allowed
from agentscope.models._http import HTTPChannel, RetryPolicy, encode_body
from agentscope.types import ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = ["HTTPChatModel", "HTTPModelOptions", "ReplyCodec", "RequestOptions", "StreamDecoder"]


class StreamDecoder(Protocol):
    """What the codecs' stream decoders (``OpenAIStreamDecoder``, ``AnthropicStreamDecoder``) offer."""

    finished: bool
    """True once the provider's end-of-stream event arrived."""

    def feed(self, data: str) -> list[ModelStreamEvent]:
        """Take one server-sent event's data; return the deltas it carries."""
        ...

    def result(self) -> ChatResponse:
        """The complete answer streamed so far."""
        ...


@dataclass(frozen=True, slots=True)
class ReplyCodec:
    """How to read the answer to one request: its JSON, or its stream."""

    parse: Callable[[Any], ChatResponse]
    """The decoded JSON answer -> :class:`ChatResponse`."""
    decoder: Callable[[], StreamDecoder]
    """A new decoder for the server-sent events of a streamed answer."""


class RequestOptions(TypedDict):
    """What a call asks besides the messages, as the codecs' request formatters take it (keyword arguments)."""

    tools: Sequence[ToolSchema] | None
    tool_choice: ToolChoice | None
    response_format: ResponseFormat | None
    settings: ModelSettings
    """Already merged with the model's ``default_settings``."""


class HTTPModelOptions(TypedDict, total=False):
    """The keyword arguments of :class:`HTTPChatModel` (for subclasses that add their own)."""

    base_url: str | None
    api_key: str | None
    timeout_s: float
    max_retries: int
    backoff: tuple[float, float]
    default_settings: ModelSettings | None
    http_client: httpx2.AsyncClient | None
    transport: httpx2.AsyncBaseTransport | None
    headers: Mapping[str, str] | None


class HTTPChatModel(ChatModel):
    """A chat model behind a provider's HTTP API, reached through one pooled ``httpx2.AsyncClient``.

    The client is created on first use and closed by :meth:`aclose` (or ``async with``); like any asyncio
    connection pool it belongs to the event loop that first used it, so use one model per loop. Stop iterating
    :meth:`stream` early only inside ``contextlib.aclosing`` so the connection is released at once.
    """

    provider: ClassVar[str]
    """Name of the API in error messages."""
    default_base_url: ClassVar[str]
    """API root when none is given."""
    endpoint: ClassVar[str]
    """Path under ``base_url`` that requests are POSTed to."""
    api_key_env: ClassVar[str]
    """Environment variable holding the API key when none is given."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff: tuple[float, float] = (0.5, 8.0),
        default_settings: ModelSettings | None = None,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A client of ``model``; nothing is connected before the first request.

        Args:
            model: Model name sent in every request.
            base_url: API root (default: the class's ``default_base_url``); requests go to
                ``{base_url}{endpoint}``.
            api_key: The API key; defaults to the environment variable named by the class's ``api_key_env``
                (local servers may need none).
            timeout_s: Deadline of one attempt, in seconds, from sending the request to the last byte of the
                answer (of a stream: to its last event); a retry gets a new one. ``settings["timeout_s"]``
                overrides it per call.
            max_retries: Retries on 408/429/5xx/529 answers, timeouts and connection errors.
            backoff: ``(base, max)`` seconds of the exponential backoff between retries.
            default_settings: Settings for every call; per-call ``settings`` override them key by key.
            http_client: Use this client (its owner closes it) instead of creating one.
            transport: Transport for the client we create (tests, custom networking).
            headers: Extra headers for every request.
        """
        self.model_name = model
        self.base_url = (base_url if base_url is not None else self.default_base_url).rstrip("/")
        self.default_settings: ModelSettings = ModelSettings(**(default_settings or {}))
        key = api_key if api_key is not None else os.environ.get(self.api_key_env)
        all_headers = {"content-type": "application/json", "accept": "application/json"}
        all_headers.update(self._provider_headers(key))
        all_headers.update(headers or {})
        self._http = HTTPChannel(
            provider=self.provider,
            url=f"{self.base_url}{self.endpoint}",
            headers=all_headers,
            secret=key,
            key_hint=f"pass api_key= or set {self.api_key_env}",
            timeout_s=timeout_s,
            retry=RetryPolicy(max_retries=max_retries, backoff_base_s=backoff[0], backoff_max_s=backoff[1]),
            http_client=http_client,
            transport=transport,
        )

    @abstractmethod
    def _provider_headers(self, api_key: str | None) -> dict[str, str]:
        """The provider's own headers for every request: authentication (when there is a key), version..."""

    @abstractmethod
    def _encode(
        self, messages: Sequence[Msg], options: RequestOptions, stream: bool
    ) -> tuple[dict[str, Any], ReplyCodec]:
        """One call in the provider's wire format: the request body, and how to read its answer."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this model created. Safe to call more than once."""
        await self._http.aclose()

    def _encoded(
        self, messages: Sequence[Msg], options: RequestOptions, stream: bool
    ) -> tuple[bytes, ReplyCodec]:
        """The request body as JSON bytes, and how to read its answer.

        Only the bytes travel: the body's dicts (the whole conversation again, and the tool schemas) are dropped
        here, so they do not live while the request is in flight (megabytes at hundreds of requests at once)."""
        body, reply = self._encode(messages, options, stream)
        return encode_body(body), reply

    def _options(
        self,
        tools: Sequence[ToolSchema] | None,
        tool_choice: ToolChoice | None,
        response_format: ResponseFormat | None,
        settings: ModelSettings | None,
    ) -> RequestOptions:
        merged: ModelSettings = {**self.default_settings, **settings} if settings else self.default_settings
        return {
            "tools": tools,
            "tool_choice": tool_choice,
            "response_format": response_format,
            "settings": merged,
        }

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
        options = self._options(tools, tool_choice, response_format, settings)
        body, _ = self._encode(messages, options, stream)
        return body, options["settings"].get("timeout_s")

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Send one request and return the complete answer."""
        check_model_requests_allowed()
        options = self._options(tools, tool_choice, response_format, settings)
        content, reply = self._encoded(messages, options, False)
        return reply.parse(
            await self._http.post_json(content, timeout_s=options["settings"].get("timeout_s"))
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
        options = self._options(tools, tool_choice, response_format, settings)
        content, reply = self._encoded(messages, options, True)
        decoder = reply.decoder()
        async with self._http.stream(content, timeout_s=options["settings"].get("timeout_s")) as events:
            async for event in events:
                deltas = decoder.feed(event.data)
                if decoder.finished:
                    break
                for delta in deltas:
                    yield delta
        yield decoder.result()
