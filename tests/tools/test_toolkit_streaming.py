"""Streaming tools: async and sync generators yield pieces; ``stream`` ends with exactly one merged result."""

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agentscope.exceptions import ModelRetry
from agentscope.message import Base64Source, ImageBlock, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.tools import Toolkit, ToolResponse

IMAGE = ImageBlock(source=Base64Source(media_type="image/png", data="iVBORw0KGgo="))


def use(name: str, **arguments: Any) -> ToolUseBlock:
    return ToolUseBlock(id=f"call-{name}", name=name, input=arguments)


async def collect(toolkit: Toolkit, call: ToolUseBlock) -> tuple[list[ToolResponse], ToolResultBlock]:
    items = [item async for item in toolkit.stream(call)]
    *pieces, final = items
    assert isinstance(final, ToolResultBlock)
    assert all(isinstance(p, ToolResponse) for p in pieces)
    return [p for p in pieces if isinstance(p, ToolResponse)], final


async def count_async(n: int) -> AsyncIterator[str]:
    """Count asynchronously.

    Args:
        n: How far.
    """
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield f"{i} "


def count_sync(n: int) -> Iterator[str]:
    """Count in a worker thread."""
    for i in range(n):
        yield f"{i} "


async def test_async_generator_streams_pieces_then_one_merged_result() -> None:
    toolkit = Toolkit()
    toolkit.register(count_async)
    info = toolkit.get("count_async")
    assert info is not None
    assert info.streaming
    assert toolkit.schemas()[0].parameters["properties"]["n"]["description"] == "How far."
    pieces, final = await collect(toolkit, use("count_async", n=3))
    assert [p.text_content for p in pieces] == ["0 ", "1 ", "2 "]
    assert final == ToolResultBlock(id="call-count_async", name="count_async", output="0 1 2 ")
    assert (await toolkit.call(use("count_async", n=4))).output == "0 1 2 3 "


async def test_sync_generator_streams_from_worker_threads() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def produce(n: int) -> Iterator[str]:
        for i in range(n):
            threads.add(threading.get_ident())
            time.sleep(0.01)  # blocking is fine: each next() runs in a worker thread
            yield f"<{i}>"

    toolkit = Toolkit()
    toolkit.register(produce)
    toolkit.register(count_sync)
    pieces, final = await collect(toolkit, use("produce", n=3))
    assert [p.text_content for p in pieces] == ["<0>", "<1>", "<2>"]
    assert final.output == "<0><1><2>"
    assert loop_thread not in threads
    assert (await toolkit.call(use("count_sync", n=2))).output == "0 1 "


async def test_pieces_are_yielded_as_they_are_produced() -> None:
    gate = anyio.Event()

    async def waits_for_consumer() -> AsyncIterator[str]:
        yield "first"
        await gate.wait()
        yield "second"

    toolkit = Toolkit()
    toolkit.register(waits_for_consumer)
    seen: list[Any] = []
    async for item in toolkit.stream(use("waits_for_consumer")):
        seen.append(item)
        if len(seen) == 1:
            gate.set()  # the tool is blocked until the first piece has reached us
    assert [type(x) for x in seen] == [ToolResponse, ToolResponse, ToolResultBlock]
    assert seen[-1].output == "firstsecond"


async def test_merging_keeps_images_in_place_and_structured_pieces_on_their_own_lines() -> None:
    async def mixed() -> AsyncIterator[object]:
        yield "before "
        yield "image:"
        yield IMAGE
        yield ToolResponse(content=[TextBlock(text="after")], metadata={"a": 1})
        yield {"n": 1}
        yield {"n": 2}

    toolkit = Toolkit()
    toolkit.register(mixed)
    pieces, final = await collect(toolkit, use("mixed"))
    assert len(pieces) == 6
    assert pieces[4].structured == {"n": 1}
    assert final.output == [TextBlock(text="before image:"), IMAGE, TextBlock(text='after\n{"n":1}\n{"n":2}')]
    merged = await toolkit.execute(use("mixed"))
    assert merged.structured == [{"n": 1}, {"n": 2}]
    assert merged.metadata == {"a": 1}


async def test_non_streaming_tools_yield_only_the_final_result() -> None:
    def plain(x: int) -> int:
        return x + 1

    toolkit = Toolkit()
    toolkit.register(plain)
    items = [item async for item in toolkit.stream(use("plain", x=1))]
    assert items == [ToolResultBlock(id="call-plain", name="plain", output="2")]
    errors = [item async for item in toolkit.stream(use("missing"))]
    assert len(errors) == 1
    assert isinstance(errors[0], ToolResultBlock)
    assert errors[0].is_error


async def test_empty_stream_gives_an_empty_result() -> None:
    async def nothing() -> AsyncIterator[str]:
        if False:
            yield ""

    toolkit = Toolkit()
    toolkit.register(nothing)
    assert await collect(toolkit, use("nothing")) == (
        [],
        ToolResultBlock(id="call-nothing", name="nothing", output=""),
    )


async def test_error_after_some_output_keeps_the_output_for_the_model() -> None:
    async def fails_midway() -> AsyncIterator[str]:
        yield "line 1\n"
        yield "line 2"
        raise OSError("disk gone")

    def retry_midway() -> Iterator[str]:
        yield "partial"
        raise ModelRetry("use a smaller range")

    toolkit = Toolkit()
    toolkit.register(fails_midway)
    toolkit.register(retry_midway)
    pieces, final = await collect(toolkit, use("fails_midway"))
    assert len(pieces) == 2
    assert final.is_error
    assert final.output == "line 1\nline 2\nOSError: disk gone"
    _, retried = await collect(toolkit, use("retry_midway"))
    assert retried.is_error
    assert retried.output == "use a smaller range"
    assert (await toolkit.call(use("fails_midway"))).output == "line 1\nline 2\nOSError: disk gone"


async def test_streaming_timeout_counts_tool_time_only() -> None:
    closed = anyio.Event()

    async def slow_stream() -> AsyncIterator[str]:
        try:
            yield "tick"
            await anyio.sleep(10)
            yield "never"
        finally:
            closed.set()

    async def quick_pieces() -> AsyncIterator[str]:
        for i in range(3):
            await anyio.sleep(0.01)
            yield str(i)

    toolkit = Toolkit()
    toolkit.register(slow_stream, timeout_s=0.1)
    toolkit.register(quick_pieces, timeout_s=0.2)
    pieces, final = await collect(toolkit, use("slow_stream"))
    assert [p.text_content for p in pieces] == ["tick"]
    assert final.is_error
    assert final.output == "tick\nTool 'slow_stream' timed out after 0.1s"
    assert closed.is_set()

    # A slow consumer does not use up the tool's budget.
    items: list[Any] = []
    async for item in toolkit.stream(use("quick_pieces")):
        items.append(item)
        await anyio.sleep(0.15)
    assert items[-1] == ToolResultBlock(id="call-quick_pieces", name="quick_pieces", output="012")


async def test_sync_generator_timeout() -> None:
    release = threading.Event()

    def stalls() -> Iterator[str]:
        yield "a"
        release.wait(5)
        yield "b"

    toolkit = Toolkit()
    toolkit.register(stalls, timeout_s=0.05)
    try:
        result = await toolkit.call(use("stalls"))
    finally:
        release.set()
    assert result.is_error
    assert result.output == "a\nTool 'stalls' timed out after 0.05s"


async def test_consumer_stopping_early_closes_the_tool() -> None:
    async_closed = anyio.Event()
    sync_closed = threading.Event()

    async def endless_async() -> AsyncIterator[str]:
        try:
            while True:
                await anyio.lowlevel.checkpoint()
                yield "x"
        finally:
            async_closed.set()

    def endless_sync() -> Iterator[str]:
        try:
            while True:
                yield "y"
        finally:
            sync_closed.set()

    toolkit = Toolkit()
    toolkit.register(endless_async)
    toolkit.register(endless_sync)
    for name in ("endless_async", "endless_sync"):
        async with aclosing(toolkit.stream(use(name))) as stream:
            async for _ in stream:
                break
    assert async_closed.is_set()
    assert sync_closed.is_set()


async def test_cancelling_a_stream_consumer_propagates_and_closes_the_tool() -> None:
    closed = anyio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                await anyio.sleep(0.005)
                yield "z"
        finally:
            closed.set()

    toolkit = Toolkit()
    toolkit.register(endless)
    received = 0
    with anyio.move_on_after(0.1) as scope:
        async with aclosing(toolkit.stream(use("endless"))) as stream:
            async for _ in stream:
                received += 1
    assert scope.cancelled_caught
    assert received > 0
    assert closed.is_set()


async def test_sync_function_returning_a_generator_is_consumed() -> None:
    def make() -> Iterator[str]:
        return count_sync(3)  # a plain function that returns a generator

    toolkit = Toolkit()
    toolkit.register(make)
    info = toolkit.get("make")
    assert info is not None
    assert not info.streaming
    assert (await toolkit.call(use("make"))).output == "0 1 2 "


@pytest.mark.parametrize("n", [0, 1, 50])
async def test_stream_always_ends_with_exactly_one_result(n: int) -> None:
    toolkit = Toolkit()
    toolkit.register(count_async)
    items = [item async for item in toolkit.stream(use("count_async", n=n))]
    assert sum(isinstance(i, ToolResultBlock) for i in items) == 1
    assert isinstance(items[-1], ToolResultBlock)
    assert len(items) == n + 1
