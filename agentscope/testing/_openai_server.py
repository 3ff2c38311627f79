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
  format, as JSON or, when the request asks for ``stream: true``, as server-sent events; token ids, log-probs
  and the policy version are included when the response has them (the vLLM / rollout-service field names);
- a ``dict``: sent verbatim as the JSON body (status 200);
- an :class:`ErrorReply`: an error status with a body and headers (e.g. ``Retry-After``);
- an :class:`SSEReply`: exactly these server-sent events (for malformed or unusual streams).

The responder may be sync or async. Sync responders run on the server's event loop thread, so keep them quick;
to simulate a slow server use an async responder that awaits ``asyncio.sleep``. A responder that raises makes
the server answer 500 and records the exception in :attr:`errors`.

The server runs uvicorn in a background thread on a free port; ``uvicorn`` is imported only when a server is
started (it comes with the ``dev`` and ``serve`` extras). Use it as a context manager (``with`` or
``async with``), or call :meth:`start` and :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeAlias

import anyio

from agentscope.formatters._common import dump_tool_arguments
from agentscope.message import TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.models._base import ChatResponse, ChatUsage

if TYPE_CHECKING:
    import uvicorn


class _UvicornServer(Protocol):
    """The parts of our ``uvicorn.Server`` subclass that the server uses."""

    started: bool

    def run(self, sockets: list[socket.socket] | None = None) -> None: ...

    def request_exit(self) -> None: ...


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

    def __init__(self, responder: Responder, *, chunk_size: int = 8, host: str = "127.0.0.1") -> None:
        self.responder = responder
        """The responder; may be swapped while the server runs."""
        self.chunk_size = chunk_size
        """Characters of text per streamed delta."""
        self.host = host
        self.requests: list[RecordedRequest] = []
        """Requests received, in order (recorded before the responder runs)."""
        self.errors: list[BaseException] = []
        """Exceptions raised by the responder."""
        self._server: _UvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
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
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the test servers need uvicorn: pip install 'agentscope[dev]' (or 'agentscope[serve]')"
            ) from exc
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without
        # it every response pays a 40 ms delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        server = _server_class()(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end. Safe to call more than once."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.request_exit()
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()

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
            await _send_bytes(send, 400, b'{"error": {"message": "invalid JSON"}}', "application/json")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method: str = scope["method"]
        path: str = scope["path"]
        self.requests.append(RecordedRequest(method, path, headers, body, time.monotonic()))

        if method == "GET" and path.rstrip("/") == f"{self._prefix}/models":
            models = {"object": "list", "data": [{"id": "test-model", "object": "model"}]}
            await _send_bytes(send, 200, json.dumps(models).encode(), "application/json")
            return
        if method != "POST" or path.rstrip("/") != self._endpoint:
            await _send_bytes(send, 404, b'{"error": {"message": "not found"}}', "application/json")
            return
        try:
            reply = self.responder(body)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:
            self.errors.append(exc)
            error = {"error": {"type": "server_error", "message": f"responder raised {exc!r}"}}
            await _send_bytes(send, 500, json.dumps(error).encode(), "application/json")
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
            if body.get("stream"):
                await _send_events(send, self._stream_events(body, reply), 0.0)
            else:
                await _send_bytes(
                    send, 200, json.dumps(self._render(body, reply)).encode(), "application/json"
                )
            return
        await _send_bytes(send, 200, json.dumps(dict(reply)).encode(), "application/json")

    def _raw_events(self, reply: SSEReply) -> Iterator[bytes]:
        for item in reply.events:
            name, data = item if isinstance(item, tuple) else (None, item)
            yield _sse(data if isinstance(data, str) else dict(data), name)
        if reply.done and self._done_marker:
            yield b"data: [DONE]\n\n"

    def _chunks(self, text: str) -> list[str]:
        size = max(1, self.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    # -- provider specifics (overridden) ---------------------------------------------------------------------

    def _error_body(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def _render(self, body: dict[str, Any], response: ChatResponse) -> dict[str, Any]:
        raise NotImplementedError

    def _stream_events(self, body: dict[str, Any], response: ChatResponse) -> Iterator[bytes]:
        raise NotImplementedError


@functools.cache
def _server_class() -> Callable[[uvicorn.Config], _UvicornServer]:
    import uvicorn

    class _Server(uvicorn.Server):
        """A uvicorn server that stops as soon as asked (the stock one polls ``should_exit`` every 0.1 s)."""

        _loop: asyncio.AbstractEventLoop | None = None
        _wake: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # on_tick refreshes the Date header when counter % 10 == 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

        def request_exit(self) -> None:
            self.should_exit = True
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(wake.set)

    return _Server


def _sse(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def _send_bytes(
    send: _ASGISend, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
) -> None:
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


async def _send_events(send: _ASGISend, events: Iterator[bytes], delay_s: float) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in events:
        if delay_s:
            await asyncio.sleep(delay_s)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _finish_reason(response: ChatResponse) -> str:
    if response.finish_reason:
        return response.finish_reason
    return "tool_calls" if response.tool_calls else "stop"


class OpenAICompatServer(_CompatServer):
    """An OpenAI Chat Completions server (``POST /v1/chat/completions``, ``GET /v1/models``) on 127.0.0.1.

    ``base_url`` ends in ``/v1``, as clients expect. A :class:`~agentscope.models.ChatResponse` is rendered
    with thinking as ``reasoning_content``, tool calls (their ``raw_input`` when set, so malformed arguments
    can be produced), ``usage``, and, when set, ``prompt_token_ids`` (top level; in a stream, the first
    chunk), ``token_ids`` (in the choice; in a stream, the finishing chunk), ``logprobs.content`` (tokens
    written as ``token_id:<id>`` when ids are known) and ``policy_version`` (top level; in a stream, the
    finishing chunk). Streams send the role, then reasoning, text and tool-call deltas, the finishing chunk, a
    usage chunk when ``stream_options.include_usage`` is set, and ``data: [DONE]``.
    """

    _endpoint = "/v1/chat/completions"
    _prefix = "/v1"

    def _error_body(self, status: int) -> dict[str, Any]:
        return {"error": {"message": f"error {status}", "type": "server_error", "code": status}}

    def _render(self, body: dict[str, Any], response: ChatResponse) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
        thinking = "".join(b.thinking for b in response.content if isinstance(b, ThinkingBlock))
        if thinking:
            message["reasoning_content"] = thinking
        if response.tool_calls:
            message["tool_calls"] = [_openai_call(b) for b in response.tool_calls]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": _finish_reason(response)}
        choice.update(_openai_token_fields(response))
        data: dict[str, Any] = {
            "id": response.id or f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.model or body.get("model", "test-model"),
            "choices": [choice],
            "usage": _openai_usage(response.usage),
        }
        if response.prompt_token_ids is not None:
            data["prompt_token_ids"] = response.prompt_token_ids
        if response.policy_version is not None:
            data["policy_version"] = response.policy_version
        return data

    def _stream_events(self, body: dict[str, Any], response: ChatResponse) -> Iterator[bytes]:
        base: dict[str, Any] = {
            "id": response.id or f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": response.model or body.get("model", "test-model"),
        }

        def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            return _sse({**base, "choices": [choice], **extra})

        first: dict[str, Any] = {}
        if response.prompt_token_ids is not None:
            first["prompt_token_ids"] = response.prompt_token_ids
        yield chunk({"role": "assistant", "content": ""}, **first)
        for block in response.content:
            if isinstance(block, ThinkingBlock):
                for piece in self._chunks(block.thinking):
                    yield chunk({"reasoning_content": piece})
            elif isinstance(block, TextBlock):
                for piece in self._chunks(block.text):
                    yield chunk({"content": piece})
        for index, call in enumerate(response.tool_calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield chunk({"tool_calls": [head]})
            for piece in self._chunks(dump_tool_arguments(call)):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        final_choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": _finish_reason(response)}
        final_choice.update(_openai_token_fields(response))
        final: dict[str, Any] = {**base, "choices": [final_choice]}
        if response.policy_version is not None:
            final["policy_version"] = response.policy_version
        yield _sse(final)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield _sse({**base, "choices": [], "usage": _openai_usage(response.usage)})
        yield b"data: [DONE]\n\n"


def _openai_call(block: ToolUseBlock) -> dict[str, Any]:
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": dump_tool_arguments(block)},
    }


def _openai_usage(usage: ChatUsage | None) -> dict[str, int]:
    usage = usage or ChatUsage()
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _openai_token_fields(response: ChatResponse) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    ids = response.completion_token_ids
    if ids is not None:
        fields["token_ids"] = ids
    if response.logprobs is not None:
        tokens = [f"token_id:{i}" for i in ids] if ids is not None else [""] * len(response.logprobs)
        fields["logprobs"] = {
            "content": [
                {"token": token, "logprob": lp, "bytes": None, "top_logprobs": []}
                for token, lp in zip(tokens, response.logprobs, strict=False)
            ]
        }
    return fields


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicCompatServer(_CompatServer):
    """An Anthropic Messages API server (``POST /v1/messages``) on 127.0.0.1; ``base_url`` has no ``/v1``.

    A :class:`~agentscope.models.ChatResponse` is rendered as ``text``, ``thinking`` (with its signature) and
    ``tool_use`` blocks with ``usage``; ``finish_reason`` is mapped to ``stop_reason`` (``stop`` ->
    ``end_turn``, ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use``). Streams follow the documented
    event sequence: ``message_start``, per block ``content_block_start`` / ``content_block_delta``
    (``text_delta``, ``thinking_delta`` then ``signature_delta``, ``input_json_delta``) /
    ``content_block_stop``, ``ping``, ``message_delta`` and ``message_stop``. A streamed tool call's arguments
    are its ``raw_input`` when set.
    """

    _endpoint = "/v1/messages"
    _done_marker = False

    def _error_body(self, status: int) -> dict[str, Any]:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"error {status}"}}

    def _message(
        self, body: dict[str, Any], response: ChatResponse, content: list[dict[str, Any]]
    ) -> dict[str, Any]:
        usage = response.usage or ChatUsage()
        stop = _finish_reason(response)
        return {
            "id": response.id or f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": response.model or body.get("model", "test-model"),
            "content": content,
            "stop_reason": _ANTHROPIC_STOP.get(stop, stop),
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    def _render(self, body: dict[str, Any], response: ChatResponse) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in response.content:
            if isinstance(block, TextBlock):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, ThinkingBlock):
                content.append(
                    {"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""}
                )
            elif isinstance(block, ToolUseBlock):
                content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        return self._message(body, response, content)

    def _stream_events(self, body: dict[str, Any], response: ChatResponse) -> Iterator[bytes]:
        start = self._message(body, response, [])
        start["stop_reason"] = None
        start["usage"] = {"input_tokens": start["usage"]["input_tokens"], "output_tokens": 1}
        yield _sse({"type": "message_start", "message": start}, "message_start")
        index = 0
        for block in response.content:
            events: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
            if isinstance(block, TextBlock):
                deltas = [{"type": "text_delta", "text": p} for p in self._chunks(block.text)]
                events.append(({"type": "text", "text": ""}, deltas))
            elif isinstance(block, ThinkingBlock):
                deltas = [{"type": "thinking_delta", "thinking": p} for p in self._chunks(block.thinking)]
                if block.signature:
                    deltas.append({"type": "signature_delta", "signature": block.signature})
                events.append(({"type": "thinking", "thinking": ""}, deltas))
            elif isinstance(block, ToolUseBlock):
                arguments = dump_tool_arguments(block)
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in self._chunks(arguments)]
                events.append(({"type": "tool_use", "id": block.id, "name": block.name, "input": {}}, deltas))
            else:
                continue
            for content_block, deltas in events:
                yield _sse(
                    {"type": "content_block_start", "index": index, "content_block": content_block},
                    "content_block_start",
                )
                for delta in deltas:
                    yield _sse(
                        {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
                    )
                yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
                index += 1
            if index == 1:
                yield _sse({"type": "ping"}, "ping")
        usage = response.usage or ChatUsage()
        stop = _finish_reason(response)
        delta = {"stop_reason": _ANTHROPIC_STOP.get(stop, stop), "stop_sequence": None}
        yield _sse(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.output_tokens}},
            "message_delta",
        )
        yield _sse({"type": "message_stop"}, "message_stop")
