"""Real HTTP servers on 127.0.0.1 that speak the OpenAI Chat Completions and Anthropic Messages wire formats.

For tests and benchmarks of anything that talks to a model over HTTP::

    def responder(body: dict) -> Reply:
        return "hello"          # or a ChatResponse, a raw dict, ErrorReply(...), SSEReply(...)

    with OpenAICompatServer(responder) as server:
        model = OpenAIChatModel("test", base_url=server.base_url, api_key="sk-test")
        ...
        assert server.requests[0].body["messages"][0]["content"] == "hi"

The responder receives the parsed JSON request body and returns one of:

- a :class:`~agentscope.models.ChatResponse` or a ``str`` (a text answer): rendered in the server's wire
  format by the provider's codec (:mod:`agentscope.formatters`), as JSON or, when the request asks for
  ``stream: true``, as server-sent events; token ids, log-probs and the policy version are included when the
  response has them (the vLLM / rollout-service field names);
- a ``dict``: sent verbatim as the JSON body (status 200);
- an :class:`ErrorReply`: an error status with a body and headers (e.g. ``Retry-After``);
- an :class:`SSEReply`: exactly these server-sent events (for malformed or unusual streams).

The responder may be sync or async. Sync responders run on the server's event loop thread, so keep them quick;
to simulate a slow server use an async responder that awaits ``asyncio.sleep``. A responder that raises makes
the server answer 500 and records the exception in :attr:`errors`. A body that is not JSON gets 400, any other
path 404; a conversation whose tool calls and results do not pair up (a call without its result, a result
for no call or a second one, arguments that are not a JSON object) gets 400 as the providers answer it
(``check_history=False`` accepts it). Every error body has the provider's shape
(:func:`~agentscope.formatters.format_openai_error`, :func:`~agentscope.formatters.format_anthropic_error`).

The server runs uvicorn in a background thread on a free port; ``uvicorn`` is imported only when a server is
started (it comes with the ``dev`` and ``serve`` extras). Use it as a context manager (``with`` or
``async with``), or call :meth:`start` and :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeAlias, cast

import anyio

from agentscope._uvicorn import BackgroundServer
from agentscope.formatters import (
    encode_sse,
    format_anthropic_error,
    format_anthropic_response,
    format_anthropic_stream,
    format_openai_error,
    format_openai_response,
    format_openai_stream,
)
from agentscope.message import TextBlock
from agentscope.models import ChatResponse
from agentscope.testing._history import anthropic_history_problem, openai_history_problem

__all__ = [
    "AnthropicCompatServer",
    "ErrorReply",
    "OpenAICompatServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "SSEReply",
]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Answer with an error status."""

    status: int
    """HTTP status code, e.g. 429 or 503."""
    body: Mapping[str, Any] | str | None = None
    """JSON body (a mapping) or raw text; None sends the provider's usual error object."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Extra response headers, e.g. ``{"Retry-After": "1"}``."""


@dataclass(frozen=True, slots=True)
class SSEReply:
    """Answer with exactly these server-sent events (status 200, ``text/event-stream``)."""

    events: Sequence[Mapping[str, Any] | str | tuple[str, Mapping[str, Any] | str]]
    """Each event's data (a mapping is sent as JSON); a ``(name, data)`` pair adds an ``event:`` line."""
    done: bool = True
    """Finish with ``data: [DONE]`` (OpenAI style). The Anthropic server ignores this."""
    delay_s: float = 0.0
    """Pause before each event, to test timeouts while streaming."""


Reply: TypeAlias = ChatResponse | str | Mapping[str, Any] | ErrorReply | SSEReply
"""What a responder returns."""

Responder: TypeAlias = Callable[[dict[str, Any]], Reply | Awaitable[Reply]]
"""Receives the parsed request body; returns (or awaits to) a :data:`Reply`."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server received."""

    method: str
    """HTTP method."""
    path: str
    """Request path, e.g. ``/v1/chat/completions``."""
    headers: dict[str, str]
    """Request headers, lower-case names."""
    body: dict[str, Any]
    """Parsed JSON body (empty when there was none)."""
    received_at: float
    """``time.monotonic()`` when the request arrived."""


_ASGISend: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]
_ASGIReceive: TypeAlias = Callable[[], Awaitable[dict[str, Any]]]


class _CompatServer:
    """A uvicorn server in a background thread, serving one JSON POST endpoint through a responder."""

    _endpoint: str = ""
    _prefix: str = ""
    _done_marker: bool = True

    def __init__(
        self,
        responder: Responder,
        *,
        chunk_size: int = 8,
        host: str = "127.0.0.1",
        check_history: bool = True,
    ) -> None:
        self.responder = responder
        """The responder; may be swapped while the server runs."""
        self.chunk_size = chunk_size
        """Characters of text per streamed delta."""
        self.host = host
        self.check_history = check_history
        """Answer 400 to a conversation whose tool calls and results do not pair up, as the providers do."""
        self.requests: list[RecordedRequest] = []
        """Requests received, in order (recorded before the responder runs)."""
        self.errors: list[BaseException] = []
        """Exceptions raised by the responder."""
        self._background: BackgroundServer | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """What a client takes as ``base_url``."""
        if not self.port:
            raise RuntimeError("the server is not running; use it as a context manager or call start()")
        return f"http://{self.host}:{self.port}{self._prefix}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests received, in order."""
        return [r.body for r in self.requests]

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        if self._background is not None:
            raise RuntimeError("the server is already running")
        background = BackgroundServer(
            self._app,
            host=self.host,
            name=type(self).__name__,
            install_hint="pip install -e '.[dev]' (or '.[serve]')",
        )
        background.start()
        self._background, self.port = background, background.port

    def stop(self) -> None:
        """Stop serving and wait for the thread to end. Safe to call more than once."""
        background, self._background = self._background, None
        if background is not None:
            background.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    # -- ASGI ------------------------------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: _ASGIReceive, send: _ASGISend) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            await _send_json(send, 400, self._error_body(400, "invalid JSON"))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method: str = scope["method"]
        path: str = scope["path"]
        self.requests.append(RecordedRequest(method, path, headers, body, time.monotonic()))

        if method == "GET" and path.rstrip("/") == f"{self._prefix}/models":
            await _send_json(send, 200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
            return
        if method != "POST" or path.rstrip("/") != self._endpoint:
            await _send_json(send, 404, self._error_body(404, "not found"))
            return
        problem = self._history_problem(body) if self.check_history else None
        if problem is not None:
            await _send_json(send, 400, self._error_body(400, problem))
            return
        try:
            reply = self.responder(body)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:
            self.errors.append(exc)
            await _send_json(send, 500, self._error_body(500, f"responder raised {exc!r}"))
            return
        with contextlib.suppress(OSError):  # the client went away
            await self._reply(send, body, reply)

    async def _reply(self, send: _ASGISend, body: dict[str, Any], reply: Reply) -> None:
        if isinstance(reply, ErrorReply):
            payload = reply.body if reply.body is not None else self._error_body(reply.status)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            content_type = "text/plain" if isinstance(payload, str) else "application/json"
            await _send_bytes(send, reply.status, data, content_type, reply.headers)
            return
        if isinstance(reply, SSEReply):
            await _send_events(send, self._raw_events(reply), reply.delay_s)
            return
        if isinstance(reply, str):
            reply = ChatResponse(content=[TextBlock(text=reply)])
        if isinstance(reply, ChatResponse):
            model = body.get("model", "test-model")
            if body.get("stream"):
                await _send_events(send, self._stream(body, reply, model), 0.0)
            else:
                await _send_json(send, 200, self._render(reply, model))
            return
        await _send_json(send, 200, dict(reply))

    def _raw_events(self, reply: SSEReply) -> Iterator[bytes]:
        for item in reply.events:
            name, data = item if isinstance(item, tuple) else (None, item)
            yield encode_sse(data if isinstance(data, str) else dict(data), name)
        if reply.done and self._done_marker:
            yield encode_sse("[DONE]")

    # -- provider specifics (overridden) ---------------------------------------------------------------------

    def _error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def _history_problem(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def _render(self, response: ChatResponse, model: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _stream(self, body: dict[str, Any], response: ChatResponse, model: Any) -> Iterator[bytes]:
        raise NotImplementedError


async def _send_bytes(
    send: _ASGISend, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
) -> None:
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


async def _send_json(send: _ASGISend, status: int, payload: Mapping[str, Any]) -> None:
    await _send_bytes(send, status, json.dumps(payload).encode(), "application/json")


async def _send_events(send: _ASGISend, events: Iterator[bytes], delay_s: float) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in events:
        if delay_s:
            await asyncio.sleep(delay_s)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class OpenAICompatServer(_CompatServer):
    """An OpenAI Chat Completions server (``POST /v1/chat/completions``, ``GET /v1/models``) on 127.0.0.1.

    ``base_url`` ends in ``/v1``, as clients expect. A :class:`~agentscope.models.ChatResponse` is rendered by
    :func:`~agentscope.formatters.format_openai_response` and :func:`~agentscope.formatters.format_openai_stream`:
    thinking as ``reasoning_content``, tool calls (their ``raw_input`` when set, so malformed arguments can be
    produced), ``usage``, and, when set, ``prompt_token_ids`` (top level; in a stream, the first chunk),
    ``token_ids`` and ``logprobs.content`` (in the choice; in a stream, the finishing chunk) and
    ``policy_version`` (top level; in a stream, the finishing chunk). Streams send the role, then reasoning, text
    and tool-call deltas of ``chunk_size`` characters, the finishing chunk, a usage chunk when
    ``stream_options.include_usage`` is set, and ``data: [DONE]``.
    """

    _endpoint = "/v1/chat/completions"
    _prefix = "/v1"

    def _error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        return format_openai_error(message or f"error {status}", code=status)

    def _history_problem(self, body: dict[str, Any]) -> str | None:
        return openai_history_problem(body)

    def _render(self, response: ChatResponse, model: Any) -> dict[str, Any]:
        return format_openai_response(response, model=model)

    def _stream(self, body: dict[str, Any], response: ChatResponse, model: Any) -> Iterator[bytes]:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(
            cast("dict[str, Any]", options).get("include_usage")
        )
        return format_openai_stream(
            response, model=model, chunk_size=self.chunk_size, include_usage=include_usage
        )


class AnthropicCompatServer(_CompatServer):
    """An Anthropic Messages API server (``POST /v1/messages``) on 127.0.0.1; ``base_url`` has no ``/v1``.

    A :class:`~agentscope.models.ChatResponse` is rendered by :func:`~agentscope.formatters.format_anthropic_response`
    and :func:`~agentscope.formatters.format_anthropic_stream`: ``text``, ``thinking`` (with its signature) and
    ``tool_use`` blocks with ``usage``; ``finish_reason`` is mapped to ``stop_reason`` (``stop`` -> ``end_turn``,
    ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use``). Streams follow the documented event sequence:
    ``message_start``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
    ``thinking_delta`` then ``signature_delta``, ``input_json_delta``) / ``content_block_stop``, ``ping``,
    ``message_delta`` and ``message_stop``. A streamed tool call's arguments are its ``raw_input`` when set.
    """

    _endpoint = "/v1/messages"
    _done_marker = False

    def _error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        return format_anthropic_error(status, message)

    def _history_problem(self, body: dict[str, Any]) -> str | None:
        return anthropic_history_problem(body)

    def _render(self, response: ChatResponse, model: Any) -> dict[str, Any]:
        return format_anthropic_response(response, model=model)

    def _stream(self, body: dict[str, Any], response: ChatResponse, model: Any) -> Iterator[bytes]:
        return format_anthropic_stream(response, model=model, chunk_size=self.chunk_size)
