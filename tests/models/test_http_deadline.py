"""``timeout_s`` of the HTTP models is a deadline for a whole attempt, not a limit on each read.

A real slow-drip server on 127.0.0.1 sends each byte just before a per-read timeout would fire: before the fix a
1 s call against it lasted as long as the server kept dripping (5.1 s in the review).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import pytest

from agentscope.exceptions import ModelTimeoutError
from agentscope.message import Msg
from agentscope.models import AnthropicChatModel, ChatModel, OpenAIChatModel

pytestmark = pytest.mark.usefixtures("allow_model_requests")

USER = [Msg(role="user", content="hi")]
DRIP_S = 0.2  # well below the 1 s timeout: a per-read timeout never fires
DRIPS = 30  # 6 s of dripping in all, then the answer completes

OPENAI_BODY = json.dumps(
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}]}
).encode()


@asynccontextmanager
async def drip_server(
    head: bytes, body: bytes, *, drip_head: bool = False, drips: int = DRIPS
) -> AsyncGenerator[tuple[str, list[float]]]:
    """An HTTP server on 127.0.0.1 that answers every request with ``head`` and ``body``, the first ``drips``
    bytes of the body (of head and body with ``drip_head``) one every ``DRIP_S`` seconds, then the rest at
    once; yields its URL and the times requests arrived."""
    arrivals: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            arrivals.append(time.monotonic())
            dripped = head + body if drip_head else body
            if not drip_head:
                writer.write(head)
            for i in range(min(drips, len(dripped))):
                writer.write(dripped[i : i + 1])
                await writer.drain()
                await asyncio.sleep(DRIP_S)
            writer.write(dripped[drips:])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", arrivals
        server.close()


def json_head(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


async def generate_fails_after(model: ChatModel, limit_s: float = 1.0) -> float:
    """Seconds ``model.generate`` took to raise ModelTimeoutError naming the deadline."""
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError, match=f"within {limit_s:g}s"):
        await model.generate(USER)
    return time.monotonic() - started


def openai(url: str, *, max_retries: int = 0) -> OpenAIChatModel:
    return OpenAIChatModel(
        "m",
        base_url=f"{url}/v1",
        api_key="sk-test",
        timeout_s=1.0,
        max_retries=max_retries,
        backoff=(0.01, 0.01),
    )


async def test_a_slow_drip_body_cannot_stretch_a_call() -> None:
    async with drip_server(json_head(OPENAI_BODY), OPENAI_BODY) as (url, _), openai(url) as model:
        elapsed = await generate_fails_after(model)
    assert elapsed < 2.5


async def test_slow_drip_headers_cannot_stretch_a_call() -> None:
    async with (
        drip_server(json_head(OPENAI_BODY), OPENAI_BODY, drip_head=True) as (url, _),
        openai(url) as model,
    ):
        elapsed = await generate_fails_after(model)
    assert elapsed < 2.5


async def test_the_deadline_covers_the_whole_stream() -> None:
    events = b"".join(
        b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n' for _ in range(3)
    )  # complete events keep arriving, one byte at a time, well within any per-read timeout
    async with drip_server(SSE_HEAD, events + b"data: [DONE]\n\n") as (url, _), openai(url) as model:
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="while streaming"):
            async for _ in model.stream(USER):
                pass
        elapsed = time.monotonic() - started
    assert elapsed < 2.5


async def test_anthropic_streams_have_the_same_deadline() -> None:
    event = b'event: ping\ndata: {"type": "ping"}\n\n'
    async with (
        drip_server(SSE_HEAD, event * 10) as (url, _),
        AnthropicChatModel("m", base_url=url, api_key="k", timeout_s=1.0, max_retries=0) as model,
    ):
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="while streaming"):
            async for _ in model.stream(USER):
                pass
        assert time.monotonic() - started < 2.5


async def test_each_retry_gets_a_new_deadline_and_settings_override_it() -> None:
    async with (
        drip_server(json_head(OPENAI_BODY), OPENAI_BODY) as (url, arrivals),
        openai(url, max_retries=1) as retrying,
        openai(url) as model,
    ):
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="after 2 attempts"):
            await retrying.generate(USER)
        assert 1.9 < time.monotonic() - started < 4.0
        assert len(arrivals) == 2
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match=r"within 0\.5s"):
            await model.generate(USER, settings={"timeout_s": 0.5})
        assert time.monotonic() - started < 1.5


async def test_a_fast_answer_is_unaffected() -> None:
    body = OPENAI_BODY
    async with drip_server(json_head(body), body, drips=2) as (url, _), openai(url) as model:  # 0.4 s of drip
        response = await model.generate(USER)
    assert response.text == "late"
