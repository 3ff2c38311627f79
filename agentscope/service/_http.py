"""The HTTP side every protocol router shares: errors in OpenAI's shape, bounded bodies, answers that stop when
the client goes away, and the middleware in front of everything (API keys, Host check, tracing, access log).

Imported only when an app is built (it needs starlette, which comes with the ``serve`` extra).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentscope import tracing
from agentscope._http_body import read_limited_body
from agentscope._json import as_object
from agentscope._net import is_loopback_host
from agentscope.formatters import format_openai_error
from agentscope.service._config import ServeConfig
from agentscope.tracing import switch

__all__ = [
    "TRACE_HEADER",
    "ApiError",
    "EventStream",
    "ServiceMiddleware",
    "error_response",
    "read_json_body",
    "run_until_disconnect",
]

logger = logging.getLogger("agentscope.service")

_T = TypeVar("_T")

TRACE_HEADER = "X-Trace-Id"
"""Response header with the request's trace id (32 hex digits) while tracing records it."""

_PUBLIC_PATHS = frozenset({"/healthz", "/.well-known/agent-card.json"})
"""Paths served without an API key and without a span: load balancers probe ``/healthz``; A2A clients discover the
agent (and how to authenticate) from its card."""

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class ApiError(Exception):
    """An error answer: status, message and OpenAI's error ``type`` and ``code``."""

    def __init__(
        self, status: int, message: str, *, error_type: str = "invalid_request_error", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The error as a JSON response."""
        return error_response(self.status, self.message, self.error_type, self.code, headers)


def error_body(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI sends it."""
    body = format_openai_error(message, error_type=error_type)
    body["error"].update({"param": None, "code": code})
    return body


def error_response(
    status: int, message: str, error_type: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in OpenAI's format (clients such as ``openai`` raise it with this message)."""
    return JSONResponse(error_body(message, error_type, code), status_code=status, headers=headers)


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read up to ``limit`` bytes.

    Raises:
        ApiError: 413 for a larger body (refused before reading when ``Content-Length`` says so), 400 for a body
            that is not a JSON object.
    """
    raw = await read_limited_body(request, limit)
    if raw is None:
        raise ApiError(
            413,
            f"the request body is larger than this server accepts ({limit} bytes)",
            code="request_too_large",
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}", code="invalid_json")
    return as_object(body)


async def _watch_disconnect(receive: Receive, gone: Callable[[], None]) -> None:
    """Wait until the client disconnects (the body has been read), then call ``gone``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone()
            return


async def run_until_disconnect(request: Request, work: Callable[[], Awaitable[_T]]) -> _T | None:
    """Run ``work`` (after the body was read), cancelling it if the client disconnects first (then None)."""
    done = False
    with anyio.CancelScope() as scope:

        def gone() -> None:
            if not done:
                scope.cancel()

        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request.receive, gone))
        try:
            result = await work()
            done = True
            return result
        finally:
            watcher.cancel()
    logger.info(
        "%s %s: the client disconnected; the agent run was cancelled", request.method, request.url.path
    )
    return None


class EventStream(Response):
    """Server-sent events written by ``produce(emit)``; the client disconnecting cancels ``produce``.

    (Starlette's StreamingResponse notices a disconnect only when it next writes, or not at all on ASGI 2.4
    servers; an agent waiting on its model would run on. Here a second task listens for the disconnect.)
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        # Not Response.__init__: it would declare the length of an empty body.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
        self.produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        done = False
        with anyio.CancelScope() as cancel_scope:

            def gone() -> None:
                if not done:
                    cancel_scope.cancel()

            watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, gone))
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )

                async def emit(chunk: bytes) -> None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})

                await self.produce(emit)
                done = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client went away while we wrote
                cancel_scope.cancel()
            finally:
                watcher.cancel()
        if cancel_scope.cancelled_caught:
            logger.info(
                "%s: the client disconnected mid-stream; the agent run was cancelled", scope.get("path")
            )


class ServiceMiddleware:
    """In front of every route: the Host check, the API key, the request's span and the access log line.

    - **API keys** (when configured): ``Authorization: Bearer <key>``, compared with every configured key in
      constant time (:func:`hmac.compare_digest`); 401 when missing, 403 when wrong, in OpenAI's error format.
      Keys are never logged. ``/healthz`` needs none.
    - **Host** (when no key is configured, so the server is on loopback): only loopback ``Host`` headers, so that a
      web page cannot reach the agent through DNS rebinding.
    - **Cross-site requests** (when no key is configured): a request from a web page of another origin (an
      ``Origin`` that is not loopback, or ``Sec-Fetch-Site: cross-site``) gets 403, and a ``POST`` must say
      ``Content-Type: application/json`` (else 415), so that a page cannot send a "simple" cross-site request that
      the browser delivers without asking: any site the user visits could otherwise run the agent and its tools.
      With keys, a browser cannot attach ``Authorization`` to a cross-site request without the server's consent
      (it gives none: no CORS headers).
    - **WebSocket** connections need the same key (closed with code 1008 otherwise).
    - **Tracing** (while on): a span per request (``POST /v1/chat/completions``) around the agent's spans; its
      trace id goes back in :data:`TRACE_HEADER`.
    """

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self._keys = config.key_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self._refusal(_headers(scope), "GET") is not None:
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = _headers(scope)
        public = path in _PUBLIC_PATHS
        problem = None if public else self._refusal(headers, scope["method"])
        if problem is not None:
            await problem(scope, receive, send)
            self._log(scope, problem.status_code, time.perf_counter(), None)
            return
        if public or not switch.ON:
            await self._serve(scope, receive, send, None)
            return
        with tracing.span(f"{scope['method']} {path}", "env", {"http.route": path}) as span:
            await self._serve(scope, receive, send, span if span.recording else None)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, span: tracing.Span | None) -> None:
        started = time.perf_counter()
        status = 500
        trace_id = span.trace_id_hex if span is not None else None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if trace_id is not None:
                    message["headers"] = [*message.get("headers", []), (b"x-trace-id", trace_id.encode())]
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status("error", f"HTTP {status}")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self._log(scope, status, started, trace_id)

    def _refusal(self, headers: dict[str, str], method: str) -> JSONResponse | None:
        if not self._keys:
            host = _host_name(headers.get("host", ""))
            if host not in _LOOPBACK_NAMES and not is_loopback_host(host):
                return error_response(
                    400,
                    "this server has no API keys, so it answers only requests addressed to a loopback host "
                    "(Host: 127.0.0.1 or localhost); configure API keys to serve other names",
                    "invalid_request_error",
                    "untrusted_host",
                )
            return _cross_site_refusal(headers, method)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error_response(
                401,
                "missing API key: send it as 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "missing_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
        candidate = given.strip().encode()
        matched = False
        for key in self._keys:  # every key, whatever matched: the time taken says nothing
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            return error_response(
                403, "the API key is not valid for this server", "invalid_request_error", "invalid_api_key"
            )
        return None

    @staticmethod
    def _log(scope: Scope, status: int, started: float, trace_id: str | None) -> None:
        if logger.isEnabledFor(logging.INFO):
            took_ms = (time.perf_counter() - started) * 1000
            trace = f" trace={trace_id}" if trace_id else ""
            logger.info("%s %s %d %.1fms%s", scope["method"], scope["path"], status, took_ms, trace)


def _headers(scope: Scope) -> dict[str, str]:
    found: MutableMapping[str, str] = {}
    for name, value in scope["headers"]:
        found[name.decode("latin-1").lower()] = value.decode("latin-1")
    return dict(found)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port, lower case (``[::1]:8000`` -> ``::1``, ``LOCALHOST.`` ->
    ``localhost``)."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower().rstrip(".")


def _cross_site_refusal(headers: dict[str, str], method: str) -> JSONResponse | None:
    """403 for a request a web page of another origin sent, 415 for a POST whose body is not declared JSON (the
    "simple" requests a browser sends cross-site without asking the server first); None when it may pass."""
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        origin_host = _host_name(urlsplit(origin).netloc)
        if origin_host not in _LOOPBACK_NAMES and not is_loopback_host(origin_host):
            return error_response(
                403,
                f"cross-origin request from {origin[:100]!r} refused: this server has no API keys and answers "
                "only programs on this machine; configure API keys to serve web pages",
                "invalid_request_error",
                "cross_origin",
            )
    if origin == "null" or headers.get("sec-fetch-site") == "cross-site":
        return error_response(
            403,
            "cross-site request refused: this server has no API keys and answers only programs on this machine",
            "invalid_request_error",
            "cross_origin",
        )
    if method == "POST":
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return error_response(
                415,
                f"send the body as JSON with 'Content-Type: application/json' (got {media_type or 'none'!r})",
                "invalid_request_error",
                "unsupported_media_type",
            )
    return None
