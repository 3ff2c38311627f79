"""Shared HTTP plumbing of the provider clients: one pooled ``httpx2.AsyncClient``, retries, SSE, errors.

What a failed request becomes (see :mod:`agentscope.exceptions`)::

    retryable status (408, 429, 500, 502, 503, 504, 529)  -> retried, then ModelHTTPError
    other error status (400, 401, 403, 404, 422, ...)      -> ModelHTTPError at once, with a hint
    deadline passed (timeout_s; see below)                 -> retried, then ModelTimeoutError
    connection error (refused, reset, protocol error)      -> retried, then ModelConnectionError
    a 2xx answer that is not the JSON we expect            -> ModelResponseError

``timeout_s`` is a deadline for each attempt as a whole, not for each read: from sending the request to the last
byte of the answer, so a server that drips bytes slowly cannot stretch a call. For a stream the deadline covers
the whole stream, up to its last event (a long generation needs a ``timeout_s`` to match). A retry gets a new
deadline; waiting between attempts is not counted.

Retries wait ``min(backoff_max, backoff_base * 2**attempt)`` with jitter (between half and all of it), or what
the server's ``Retry-After`` / ``retry-after-ms`` header asks for when that is at most a minute. A stream is
retried only until its response headers arrive; once events flow, a failure is raised as it is.

Our own client is created on first use in a worker thread: creating one loads the TLS trust store from disk
(tens of milliseconds), which must not block the event loop. Under load it becomes several connection pools, one
more for every :data:`POOL_LOAD` requests in flight (sharing that trust store): httpcore2 assigns every request by
scanning all connections of its pool, so one pool with 500 requests in flight spends most of the client's CPU on
that scan (``benchmarks/agent_overhead``: 1.3x the agent steps per second of one pool at 500 agents). A single
agent still uses one pool and one connection. httpx2 checks certificates against the system's trust
store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` override it), not a bundled one.

The API key lives only in the request headers. It is never logged, and it is removed from every error message
and error body, in case a server echoes it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import anyio
import httpx2

from agentscope._json import as_object, error_code
from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelHTTPError,
    ModelResponseError,
    ModelTimeoutError,
)

__all__ = [
    "POOL_LOAD",
    "RETRYABLE_STATUS_CODES",
    "HTTPChannel",
    "RetryPolicy",
    "SSEEvent",
    "encode_body",
    "parse_retry_after",
]

logger = logging.getLogger("agentscope.models")

POOL_LOAD = 32
"""Requests in flight on one of our connection pools before another pool takes new ones."""
_MAX_POOLS = 32  # 32 pools of 32 connections: the 1,024 connections one pool allowed before

RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504, 529})
"""Statuses that mean "try again later": timeout, rate limit, server errors, Anthropic's 529 overloaded."""

_MAX_BODY_CHARS = 2000

_HINTS: dict[int, str] = {
    400: "the provider rejected the request; check the model name, the messages and the settings",
    401: "check the API key",
    403: "the API key is not allowed to use this model or endpoint; check its permissions",
    404: "check base_url and the model name",
    408: "the provider timed out; try again later or raise max_retries",
    413: "the request is too large; shorten the conversation or the tool outputs",
    422: "the provider could not process the request; check the settings and extra_body",
    429: "rate limited and retries are exhausted; lower the request rate or raise max_retries",
}


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A request body as the channel sends it: compact UTF-8 JSON."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``Retry-After`` seconds or date), or None."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before trying a failed request again."""

    max_retries: int = 3
    """Retries after the first attempt (0 disables retrying)."""
    backoff_base_s: float = 0.5
    """Wait before the first retry; doubles with each further retry."""
    backoff_max_s: float = 8.0
    """Longest computed wait."""
    max_retry_after_s: float = 60.0
    """A server's ``Retry-After`` is honoured up to this many seconds; longer asks get the backoff."""

    def delay_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None and retry_after <= self.max_retry_after_s:
            return retry_after
        delay = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return delay * (0.5 + random.random() / 2)


@dataclass(slots=True)
class SSEEvent:
    """One server-sent event."""

    event: str | None
    """The ``event:`` field (Anthropic names its events; OpenAI does not)."""
    data: str
    """The ``data:`` lines, joined with newlines."""


class HTTPChannel:
    """One provider endpoint: a lazily created, pooled ``httpx2.AsyncClient`` plus retry and error handling.

    Args:
        provider: Name used in error messages, for example ``"OpenAI-compatible API"``.
        url: Absolute URL the requests are POSTed to.
        headers: Headers for every request (authentication included).
        secret: The API key, removed from every message and error body.
        key_hint: What a 401 message tells the user to check, for example ``"api_key= or OPENAI_API_KEY"``.
        timeout_s: Default deadline of one attempt, in seconds (see the module docstring for what it covers).
        retry: Retry policy.
        http_client: A client to use instead of our own; it is not closed by :meth:`aclose`.
        transport: Transport for our own client (for tests or custom networking).
    """

    def __init__(
        self,
        *,
        provider: str,
        url: str,
        headers: Mapping[str, str],
        secret: str | None,
        key_hint: str,
        timeout_s: float,
        retry: RetryPolicy,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        # httpx's classes look alike and half work here (no retries, raw errors), so they are refused by name
        # (the annotations say httpx2, but untyped callers pass what they have).
        if http_client is not None and not isinstance(cast("object", http_client), httpx2.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx2.AsyncClient, got {type(http_client).__module__}."
                f"{type(http_client).__qualname__} (httpx is no longer used)"
            )
        if transport is not None and not isinstance(cast("object", transport), httpx2.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx2.AsyncBaseTransport, got {type(transport).__module__}."
                f"{type(transport).__qualname__} (httpx is no longer used)"
            )
        self.provider = provider
        self.url = url
        self.retry = retry
        self.timeout_s = timeout_s
        self._headers = dict(headers)
        self._secret = secret or None
        self._key_hint = key_hint
        self._transport = transport
        self._client = http_client
        self._owns_client = http_client is None
        self._client_lock = anyio.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._pools: list[httpx2.AsyncClient] = []  # our own client first, then the pools added under load
        self._loads: list[int] = []  # requests in flight on each pool

    async def _get_client(self) -> httpx2.AsyncClient:
        client = self._client
        if client is None:
            async with self._client_lock:  # one client, however many first requests race for it
                client = self._client
                if client is None:
                    client = self._client = await anyio.to_thread.run_sync(self._new_client)
        return client

    def _new_client(self) -> httpx2.AsyncClient:
        if self._ssl is None and self._transport is None:
            self._ssl = httpx2.create_ssl_context()  # the slow part (reads the trust store): once per channel
        return httpx2.AsyncClient(
            headers=self._headers,
            timeout=self.timeout_s,
            verify=self._ssl if self._ssl is not None else True,
            transport=self._transport,
            limits=httpx2.Limits(max_connections=POOL_LOAD, max_keepalive_connections=POOL_LOAD),
        )

    @asynccontextmanager
    async def _lease(self) -> AsyncGenerator[httpx2.AsyncClient]:
        """The client to send one request on: a pool with fewer than :data:`POOL_LOAD` requests in flight (a new
        pool if none has room), counted as in use until the response is closed. A caller's client, or ours with
        a custom transport (one transport cannot be split), is always the one client."""
        client = await self._get_client()
        if not self._owns_client or self._transport is not None:
            yield client
            return
        if not self._pools or self._pools[0] is not client:  # first use, or reopened after aclose
            self._pools, self._loads = [client], [0]
        pools, loads = self._pools, self._loads
        index = next((i for i, load in enumerate(loads) if load < POOL_LOAD), None)
        if index is None and len(pools) < _MAX_POOLS:
            pools.append(self._new_client())  # the trust store is loaded already: no disk, no thread
            loads.append(0)
            index = len(pools) - 1
        elif index is None:
            index = min(range(len(loads)), key=loads.__getitem__)
        loads[index] += 1
        try:
            yield pools[index]
        finally:
            loads[index] -= 1

    async def aclose(self) -> None:
        """Close our own client; a caller's client is left open. Safe to call twice; a later request reopens."""
        if not self._owns_client:
            return
        async with self._client_lock:  # not while a first request is still making the client
            client, self._client = self._client, None
            extra, self._pools, self._loads = self._pools[1:], [], []
        for each in [*extra, client]:
            if each is not None:
                await each.aclose()

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***``."""
        if self._secret and self._secret in text:
            return text.replace(self._secret, "***")
        return text

    def _request(self, client: httpx2.AsyncClient, content: bytes, timeout_s: float | None) -> httpx2.Request:
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        if self._owns_client:
            if timeout_s is None:
                return client.build_request("POST", self.url, content=content)
            return client.build_request("POST", self.url, content=content, timeout=timeout)
        return client.build_request("POST", self.url, content=content, headers=self._headers, timeout=timeout)

    async def _send(
        self, client: httpx2.AsyncClient, content: bytes, timeout_s: float | None, *, stream: bool
    ) -> tuple[httpx2.Response, float]:
        """Send with retries; return a 2xx response (unread when ``stream``) and the deadline of its attempt
        (``anyio.current_time()`` scale), or raise a model error."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        attempt = 0
        while True:
            request = self._request(client, content, timeout_s)
            response: httpx2.Response | None = None
            failure: httpx2.TimeoutException | httpx2.TransportError | None = None
            deadline = anyio.current_time() + timeout
            with anyio.move_on_after(timeout) as scope:
                try:
                    response = await client.send(request, stream=stream)
                    if stream and response.status_code >= 300:  # the body is only for the message
                        with contextlib.suppress(httpx2.TransportError):
                            await response.aread()
                except httpx2.UnsupportedProtocol as exc:
                    raise ModelConnectionError(
                        self.redact(f"{self.provider}: cannot send to {self.url}: {exc}; check base_url")
                    ) from exc
                except (httpx2.TimeoutException, httpx2.TransportError) as exc:
                    failure = exc
            if scope.cancelled_caught or failure is not None:
                if response is not None:
                    await response.aclose()
                if attempt >= self.retry.max_retries:
                    if failure is None:
                        self._raise_deadline_passed(timeout, attempt + 1)
                    self._raise_transport_error(failure, attempt + 1, timeout_s)
                delay = self.retry.delay_s(attempt)
                reason = type(failure).__name__ if failure is not None else f"no answer within {timeout:g}s"
            else:
                assert response is not None
                status = response.status_code
                if status < 300:
                    return response, deadline
                if stream:
                    await response.aclose()
                if status not in RETRYABLE_STATUS_CODES or attempt >= self.retry.max_retries:
                    self._raise_status_error(response, attempt + 1)
                delay = self.retry.delay_s(attempt, parse_retry_after(response.headers))
                reason = f"HTTP {status}"
            attempt += 1
            logger.info(
                "%s: %s, retrying in %.2fs (retry %d of %d)",
                self.provider,
                reason,
                delay,
                attempt,
                self.retry.max_retries,
            )
            await anyio.sleep(delay)

    async def post_json(self, content: bytes, *, timeout_s: float | None = None) -> Any:
        """POST ``content`` (a JSON body, as :func:`encode_body` makes it) and return the decoded JSON answer (each
        attempt within ``timeout_s``)."""
        async with self._lease() as client:
            response, _ = await self._send(client, content, timeout_s, stream=False)
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's stack
            snippet = self.redact(response.text[:200])
            raise ModelResponseError(f"{self.provider} answered with invalid JSON: {snippet!r}") from exc

    @asynccontextmanager
    async def stream(
        self, content: bytes, *, timeout_s: float | None = None
    ) -> AsyncGenerator[AsyncIterator[SSEEvent]]:
        """POST ``content`` (as :meth:`post_json` takes it) and yield its server-sent events; the response is
        closed on exit.

        The whole stream, up to its last event, must arrive within ``timeout_s`` (else ModelTimeoutError);
        transport failures while streaming become model errors.
        """
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        async with self._lease() as client:
            response, deadline = await self._send(client, content, timeout_s, stream=True)
            try:
                yield self._iter_sse(response, deadline, timeout)
            finally:
                await response.aclose()

    async def _iter_sse(
        self, response: httpx2.Response, deadline: float, limit_s: float
    ) -> AsyncIterator[SSEEvent]:
        """Parse a ``text/event-stream`` body into events, each read bounded by what is left of the deadline."""
        event: str | None = None
        data: list[str] = []
        lines = response.aiter_lines()
        try:
            while True:
                line: str | None = None
                with anyio.move_on_after(deadline - anyio.current_time()) as scope:
                    line = await anext(lines, None)
                if scope.cancelled_caught:
                    self._raise_deadline_passed(limit_s, 1, during_stream=True)
                if line is None:
                    break
                if not line:
                    if data:
                        yield SSEEvent(event, "\n".join(data))
                    event = None
                    data = []
                    continue
                if line[0] == ":":
                    continue
                name, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
            if data:
                yield SSEEvent(event, "\n".join(data))
        except (httpx2.TimeoutException, httpx2.TransportError) as exc:
            self._raise_transport_error(exc, 1, limit_s, during_stream=True)

    def _raise_deadline_passed(
        self, timeout: float, attempts: int, *, during_stream: bool = False
    ) -> NoReturn:
        where = (
            "while streaming" if during_stream else f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        )
        message = (
            f"{self.provider}: no complete answer from {self.url} within {timeout:g}s ({where}); "
            "raise timeout_s (or settings['timeout_s']) or check that the server is healthy"
        )
        raise ModelTimeoutError(self.redact(message))

    def _raise_transport_error(
        self,
        exc: httpx2.TimeoutException | httpx2.TransportError,
        attempts: int,
        timeout_s: float | None,
        *,
        during_stream: bool = False,
    ) -> NoReturn:
        where = (
            "while streaming" if during_stream else f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        )
        if isinstance(exc, httpx2.TimeoutException):
            timeout = timeout_s if timeout_s is not None else self.timeout_s
            message = (
                f"{self.provider}: no answer from {self.url} within {timeout:g}s "
                f"({type(exc).__name__} {where}); "
                "raise timeout_s (or settings['timeout_s']) or check that the server is healthy"
            )
            raise ModelTimeoutError(self.redact(message)) from exc
        detail = str(exc) or type(exc).__name__
        message = (
            f"{self.provider}: could not reach {self.url} ({detail}, {where}); "
            "check base_url and that the server is running"
        )
        raise ModelConnectionError(self.redact(message)) from exc

    def _raise_status_error(self, response: httpx2.Response, attempts: int) -> NoReturn:
        status = response.status_code
        body = self.redact(response.text[:_MAX_BODY_CHARS])
        hint = _HINTS.get(status)
        if status == 401:
            hint = f"check the API key ({self._key_hint})"
        elif hint is None:
            hint = (
                "the provider is failing; try again later or raise max_retries"
                if status >= 500
                else "the provider rejected the request"
            )
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = _error_detail(body)
        message = f"{self.provider} returned HTTP {status}{tries}: {hint}" + (
            f". Provider says: {detail}" if detail else ""
        )
        if status == 400 and _overflows_context(body):
            raise ContextLengthExceeded(self.redact(message))
        raise ModelHTTPError(self.redact(message), status_code=status, body=body)


def _overflows_context(body: str) -> bool:
    """Whether a 400's body says the prompt does not fit the context window: OpenAI's (and compatible servers')
    ``error.code`` ``context_length_exceeded``, or Anthropic's ``invalid_request_error`` whose message is
    ``prompt is too long: N tokens > M maximum`` or ``input length and `max_tokens` exceed context limit: ...``."""
    if error_code(body) == ContextLengthExceeded.OPENAI_CODE:
        return True
    try:
        error = as_object(as_object(json.loads(body)).get("error"))
    except (ValueError, RecursionError):
        return False
    message = error.get("message")
    return (
        error.get("type") == "invalid_request_error"
        and isinstance(message, str)
        and message.lower().startswith(ContextLengthExceeded.ANTHROPIC_MESSAGES)
    )


def _error_detail(body: str) -> str:
    """The provider's own error message (from ``{"error": {"message": ...}}`` and the like), else the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body[:300].strip()
    error = as_object(data).get("error", data)
    if isinstance(error, str):
        return error[:300]
    message = as_object(error).get("message")
    if isinstance(message, str):
        return message[:300]
    return body[:300].strip()
