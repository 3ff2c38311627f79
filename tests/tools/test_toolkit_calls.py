"""Toolkit calls: validation, error results, threads, timeouts, control-flow exceptions, cancellation."""

import asyncio
import contextvars
import threading
import time
from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from agentscope.exceptions import ApprovalRequired, ModelRetry, UsageError
from agentscope.message import Base64Source, ImageBlock, TextBlock, ToolResultBlock, ToolUseBlock, URLSource
from agentscope.tools import Toolkit, ToolResponse, tool_threads


def use(name: str, raw_input: str | None = None, /, **arguments: Any) -> ToolUseBlock:
    return ToolUseBlock(id=f"call-{name}", name=name, input=arguments, raw_input=raw_input)


class Item(BaseModel):
    name: str
    qty: int = 1


def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


async def order(items: list[Item], priority: Literal["low", "high"] = "low") -> str:
    """Place an order."""
    return f"{priority}:" + ",".join(f"{i.name}x{i.qty}" for i in items)


@pytest.fixture
def toolkit() -> Toolkit:
    tk = Toolkit()
    tk.register(add)
    tk.register(order)
    return tk


# ---------------------------------------------------------------------------------------------- arguments


async def test_valid_call_validates_and_coerces(toolkit: Toolkit) -> None:
    result = await toolkit.call(use("add", a=2, b="3"))
    assert result == ToolResultBlock(id="call-add", name="add", output="5", is_error=False)
    result = await toolkit.call(use("order", items=[{"name": "tea", "qty": 2}, {"name": "cake"}]))
    assert result.output == "low:teax2,cakex1"
    assert not result.is_error


async def test_validation_errors_name_each_bad_parameter_concisely(toolkit: Toolkit) -> None:
    called: list[int] = []

    def spy(a: int) -> None:
        called.append(a)

    toolkit.register(spy)
    result = await toolkit.call(use("add", b="many", c=1))
    assert result.is_error
    assert result.output == (
        "Invalid arguments for tool 'add':\n"
        "- missing required argument 'a'\n"
        "- b: Input should be a valid integer, unable to parse string as an integer (got 'many')\n"
        "- unexpected argument 'c' (the tool takes: a, b)"
    )
    nested = await toolkit.call(use("order", items=[{"qty": "x"}], priority="urgent"))
    assert nested.is_error
    assert isinstance(nested.output, str)
    lines = nested.output.splitlines()
    assert lines[0] == "Invalid arguments for tool 'order':"
    assert "- items[0].name: field required" in lines
    assert any(line.startswith("- items[0].qty: Input should be a valid integer") for line in lines)
    assert "- priority: Input should be 'low' or 'high' (got 'urgent')" in lines
    assert len(lines) <= 8
    assert (await toolkit.call(use("spy", a="nope"))).is_error
    assert called == []  # the tool is never called with invalid arguments


async def test_huge_bad_input_is_truncated_in_the_error(toolkit: Toolkit) -> None:
    result = await toolkit.call(use("add", a="x" * 10_000))
    assert isinstance(result.output, str)
    assert result.is_error
    assert len(result.output) < 300


async def test_unknown_tool_lists_available_ones(toolkit: Toolkit) -> None:
    result = await toolkit.call(use("multiply", a=1))
    assert result.is_error
    assert result.id == "call-multiply"
    assert result.name == "multiply"
    assert result.output == "Unknown tool 'multiply'. Available tools: add, order."
    empty = await Toolkit().call(use("anything"))
    assert empty.output == "Unknown tool 'anything'. No tools are available."


async def test_malformed_json_arguments_are_reported_and_the_tool_not_called() -> None:
    calls: list[str] = []
    toolkit = Toolkit()

    @toolkit.tool
    def record(text: str) -> None:
        calls.append(text)

    raw = '{"text": "unterminated'
    result = await toolkit.call(use("record", raw))
    assert result.is_error
    assert isinstance(result.output, str)
    assert result.output.startswith("arguments were not valid JSON: Unterminated string starting at")
    assert result.output.endswith(f"; you sent: {raw}")

    long_raw = "{" + "x" * 1000
    result = await toolkit.call(use("record", long_raw))
    assert isinstance(result.output, str)
    assert result.output.endswith("…")
    assert len(result.output) < 400

    result = await toolkit.call(use("record", "[1, 2]"))
    assert (
        result.output == "arguments were not valid JSON: expected a JSON object, got list; you sent: [1, 2]"
    )
    assert calls == []


async def test_empty_raw_arguments_mean_no_arguments() -> None:
    toolkit = Toolkit()

    @toolkit.tool
    def ping() -> str:
        return "pong"

    assert (await toolkit.call(use("ping", ""))).output == "pong"


async def test_preset_kwargs_are_injected_and_cannot_be_set_by_the_model() -> None:
    seen: list[tuple[str, str]] = []

    def fetch(url: str, api_key: str) -> str:
        seen.append((url, api_key))
        return "ok"

    def positional(secret: str, /, x: int) -> str:
        return f"{secret}-{x}"

    toolkit = Toolkit()
    toolkit.register(fetch, preset_kwargs={"api_key": "s3cret"})
    toolkit.register(positional, preset_kwargs={"secret": "p"})
    assert (await toolkit.call(use("fetch", url="http://a"))).output == "ok"
    assert seen == [("http://a", "s3cret")]
    forged = await toolkit.call(use("fetch", url="http://a", api_key="mine"))
    assert forged.is_error
    assert "unexpected argument 'api_key'" in str(forged.output)
    assert (await toolkit.call(use("positional", x=4))).output == "p-4"


async def test_positional_only_and_var_keyword_parameters() -> None:
    def f(a: int, /, b: int, **rest: Any) -> str:
        return f"{a} {b} {sorted(rest.items())}"

    toolkit = Toolkit()
    toolkit.register(f)
    assert (await toolkit.call(use("f", a=1, b=2, z=3))).output == "1 2 [('z', 3)]"


async def test_bound_methods_and_callable_objects_run() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def bump(self, by: int) -> int:
            self.count += by
            return self.count

        async def __call__(self, by: int) -> int:
            self.count -= by
            return self.count

    counter = Counter()
    toolkit = Toolkit()
    toolkit.register(counter.bump)
    toolkit.register(counter, name="drop")
    assert (await toolkit.call(use("bump", by=5))).output == "5"
    assert (await toolkit.call(use("drop", by=2))).output == "3"


# ---------------------------------------------------------------------------------------------- return values


async def test_return_value_conversion() -> None:
    image = ImageBlock(source=Base64Source(media_type="image/png", data="iVBORw0KGgo="))
    url_image = ImageBlock(source=URLSource(url="https://example.com/cat.png"))

    def returns(kind: str) -> object:
        return {
            "str": "hello",
            "none": None,
            "dict": {"b": 1, "a": [True, None]},
            "int": 7,
            "bool": False,
            "model": Item(name="tea", qty=2),
            "image": image,
            "blocks": [TextBlock(text="look: "), url_image],
            "response": ToolResponse(
                content=[TextBlock(text="custom")], structured={"k": 1}, metadata={"m": 2}
            ),
            "error_response": ToolResponse.text("soft failure", is_error=True),
            "empty_list": [],
        }[kind]

    toolkit = Toolkit()
    toolkit.register(returns)

    async def output(kind: str) -> Any:
        result = await toolkit.call(use("returns", kind=kind))
        return result.output

    assert await output("str") == "hello"
    assert await output("none") == ""
    assert await output("dict") == '{"b":1,"a":[true,null]}'
    assert await output("int") == "7"
    assert await output("bool") == "false"
    assert await output("model") == '{"name":"tea","qty":2}'
    assert await output("image") == [image]
    assert await output("blocks") == [TextBlock(text="look: "), url_image]
    assert await output("response") == "custom"
    assert await output("empty_list") == "[]"
    soft = await toolkit.call(use("returns", kind="error_response"))
    assert soft.is_error
    assert soft.output == "soft failure"

    assert (await toolkit.execute(use("returns", kind="model"))).structured == {"name": "tea", "qty": 2}
    assert (await toolkit.execute(use("returns", kind="dict"))).structured == {"b": 1, "a": [True, None]}
    assert (await toolkit.execute(use("returns", kind="int"))).structured == 7
    assert (await toolkit.execute(use("returns", kind="str"))).structured is None
    full = await toolkit.execute(use("returns", kind="response"))
    assert full.structured == {"k": 1}
    assert full.metadata == {"m": 2}


# ---------------------------------------------------------------------------------------------- execution


async def test_sync_tool_runs_in_a_worker_thread_without_blocking_the_loop() -> None:
    loop_thread = threading.get_ident()
    tool_threads: list[int] = []

    def slow(seconds: float) -> str:
        tool_threads.append(threading.get_ident())
        time.sleep(seconds)
        return "done"

    toolkit = Toolkit()
    toolkit.register(slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result = await toolkit.call(use("slow", seconds=0.3))
        tg.cancel_scope.cancel()
    assert result.output == "done"
    assert tool_threads
    assert tool_threads[0] != loop_thread
    assert ticks >= 10  # the loop kept running while the tool slept


async def test_an_inline_sync_tool_runs_on_the_event_loop_and_takes_no_timeout() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def add(a: int, b: int) -> int:
        seen.append(threading.get_ident())
        return a + b

    def pieces() -> Any:
        seen.append(threading.get_ident())
        yield "a"
        seen.append(threading.get_ident())
        yield "b"

    toolkit = Toolkit(default_timeout_s=5.0)
    toolkit.register(add, inline=True)
    toolkit.register(pieces, inline=True)
    assert (await toolkit.call(use("add", a=1, b=2))).output == "3"
    assert (await toolkit.call(use("pieces"))).output == "ab"
    assert seen == [loop_thread] * 3

    async def coro() -> str:
        return "x"

    def sync() -> str:
        return "x"

    with pytest.raises(UsageError, match="async"):
        toolkit.register(coro, inline=True)
    with pytest.raises(UsageError, match="timeout_s"):
        toolkit.register(sync, inline=True, timeout_s=1.0)


async def test_sync_tools_share_a_bounded_thread_pool() -> None:
    TOOL_THREADS = tool_threads.max_threads  # 40: the process's tool threads (agentscope.tools.tool_threads)

    running = 0
    most = 0
    lock = threading.Lock()

    def busy() -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return "ok"

    toolkit = Toolkit()
    toolkit.register(busy)
    results: list[str] = []

    async def one() -> None:
        results.append(str((await toolkit.call(use("busy"))).output))

    async with anyio.create_task_group() as tg:
        for _ in range(TOOL_THREADS + 10):
            tg.start_soon(one)
    assert results == ["ok"] * (TOOL_THREADS + 10)
    assert 1 < most <= TOOL_THREADS  # concurrent, and never more threads than the pool holds


async def test_context_variables_reach_sync_and_async_tools() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def sync_read() -> str:
        return var.get()

    async def async_read() -> str:
        return var.get()

    toolkit = Toolkit()
    toolkit.register(sync_read)
    toolkit.register(async_read)
    token = var.set("approved")
    try:
        assert (await toolkit.call(use("sync_read"))).output == "approved"
        assert (await toolkit.call(use("async_read"))).output == "approved"
    finally:
        var.reset(token)


async def test_exceptions_become_error_results_without_traceback() -> None:
    def broken(x: int) -> int:
        raise ValueError(f"bad x: {x}")

    async def bare() -> None:
        raise RuntimeError

    async def group() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(broken_async)

    async def broken_async() -> None:
        raise KeyError("k")

    toolkit = Toolkit()
    for f in (broken, bare, group):
        toolkit.register(f)
    result = await toolkit.call(use("broken", x=3))
    assert result.is_error
    assert result.output == "ValueError: bad x: 3"
    assert (await toolkit.call(use("bare"))).output == "RuntimeError"
    assert (await toolkit.call(use("group"))).output == "KeyError: 'k'"  # one-member groups are unwrapped


async def test_model_retry_sends_exactly_its_message() -> None:
    def picky(n: int) -> int:
        raise ModelRetry("n must be even, try again with an even number")

    async def picky_async() -> None:
        raise ModelRetry("not now")

    toolkit = Toolkit()
    toolkit.register(picky)
    toolkit.register(picky_async)
    result = await toolkit.call(use("picky", n=3))
    assert result == ToolResultBlock(
        id="call-picky", name="picky", output="n must be even, try again with an even number", is_error=True
    )
    assert (await toolkit.call(use("picky_async"))).output == "not now"


async def test_approval_required_propagates_from_every_kind_of_tool() -> None:
    def sync_tool() -> None:
        raise ApprovalRequired("delete files?")

    async def async_tool() -> None:
        raise ApprovalRequired("pay?")

    async def streaming_tool():  # type: ignore[no-untyped-def]
        yield "partial"
        raise ApprovalRequired("continue?")

    async def grouped() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(async_tool)

    toolkit = Toolkit()
    for f in (sync_tool, async_tool, streaming_tool, grouped):
        toolkit.register(f)
    with pytest.raises(ApprovalRequired, match="delete files"):
        await toolkit.call(use("sync_tool"))
    with pytest.raises(ApprovalRequired, match="pay"):
        await toolkit.call(use("async_tool"))
    with pytest.raises(ApprovalRequired, match="continue"):
        await toolkit.call(use("streaming_tool"))
    with pytest.raises(ApprovalRequired, match="pay"):
        await toolkit.call(use("grouped"))
    seen: list[object] = []

    async def drain() -> None:
        async for item in toolkit.stream(use("streaming_tool")):
            seen.append(item)

    with pytest.raises(ApprovalRequired, match="continue"):
        await drain()
    assert seen == [ToolResponse.text("partial")]


async def test_timeout_cancels_an_async_tool() -> None:
    cleaned_up = anyio.Event()

    async def hang() -> None:
        try:
            await anyio.sleep(10)
        finally:
            cleaned_up.set()

    toolkit = Toolkit(default_timeout_s=0.05)
    toolkit.register(hang)
    start = time.monotonic()
    result = await toolkit.call(use("hang"))
    assert time.monotonic() - start < 2
    assert result.is_error
    assert result.output == "Tool 'hang' timed out after 0.05s"
    assert cleaned_up.is_set()


async def test_timeout_abandons_a_sync_tool() -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> str:
        release.wait(5)
        finished.set()
        return "late"

    toolkit = Toolkit()
    toolkit.register(stuck, timeout_s=0.05)
    try:
        result = await toolkit.call(use("stuck"))
        assert result.output == "Tool 'stuck' timed out after 0.05s"
        assert not finished.is_set()  # the thread was abandoned, not waited for
    finally:
        release.set()
    await anyio.to_thread.run_sync(finished.wait, 5)


async def test_per_tool_timeout_overrides_the_default() -> None:
    async def nap() -> str:
        await anyio.sleep(0.1)
        return "rested"

    toolkit = Toolkit(default_timeout_s=0.01)
    toolkit.register(nap, timeout_s=5)
    assert (await toolkit.call(use("nap"))).output == "rested"


async def test_tool_raising_timeout_error_itself_is_not_reported_as_our_timeout() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("upstream took too long")

    toolkit = Toolkit(default_timeout_s=5)
    toolkit.register(own_timeout)
    assert (await toolkit.call(use("own_timeout"))).output == "TimeoutError: upstream took too long"


async def test_cancellation_propagates_and_is_never_swallowed() -> None:
    started = anyio.Event()
    tool_cancelled = anyio.Event()
    returned: list[object] = []

    async def wait_forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            tool_cancelled.set()
            raise

    toolkit = Toolkit(default_timeout_s=30)
    toolkit.register(wait_forever)

    async def caller() -> None:
        returned.append(await toolkit.call(use("wait_forever")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await started.wait()
        tg.cancel_scope.cancel()
    assert tool_cancelled.is_set()
    assert returned == []  # no error result was made up: the cancellation went through

    started = anyio.Event()
    task = asyncio.create_task(toolkit.call(use("wait_forever")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_a_sync_tool_call_returns_promptly() -> None:
    release = threading.Event()

    def stuck() -> None:
        release.wait(5)

    toolkit = Toolkit()
    toolkit.register(stuck)
    start = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        await toolkit.call(use("stuck"))
    release.set()
    assert scope.cancelled_caught
    assert time.monotonic() - start < 2


async def test_inactive_group_calls_fail_cleanly_until_activated() -> None:
    toolkit = Toolkit()
    toolkit.register(add)
    toolkit.create_group("math_extra", "More math")
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    toolkit.register(double, group="math_extra")
    result = await toolkit.call(use("double", x=2))
    assert result.is_error
    assert result.output == (
        "Tool 'double' is not available: its group 'math_extra' is not active. Available tools: add."
    )
    assert calls == []
    toolkit.set_group_active("math_extra", True)
    assert (await toolkit.call(use("double", x=2))).output == "4"
    toolkit.set_group_active("math_extra", False)
    assert (await toolkit.call(use("double", x=2))).is_error
    toolkit.remove("add")
    assert (await toolkit.call(use("add", a=1))).output == "Unknown tool 'add'. No tools are available."


async def test_many_concurrent_calls_on_one_toolkit() -> None:
    async def echo_later(i: int) -> int:
        await anyio.sleep(0.02)
        return i

    def square(i: int) -> int:
        time.sleep(0.005)
        return i * i

    toolkit = Toolkit(default_timeout_s=10)
    toolkit.register(echo_later)
    toolkit.register(square)
    results: dict[str, ToolResultBlock] = {}

    async def one(name: str, i: int) -> None:
        call = ToolUseBlock(id=f"{name}-{i}", name=name, input={"i": i})
        results[call.id] = await toolkit.call(call)

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(300):
            tg.start_soon(one, "echo_later", i)
        for i in range(60):
            tg.start_soon(one, "square", i)
    assert time.monotonic() - start < 3  # concurrent, not 300 x 20 ms
    assert all(results[f"echo_later-{i}"].output == str(i) for i in range(300))
    assert all(results[f"square-{i}"].output == str(i * i) for i in range(60))
    assert all(r.id == k and not r.is_error for k, r in results.items())


async def test_call_throughput_smoke() -> None:
    async def ident(x: int) -> int:
        return x

    toolkit = Toolkit()
    toolkit.register(ident)
    calls = [use("ident", x=i) for i in range(2000)]
    start = time.perf_counter()
    for call in calls:
        await toolkit.call(call)
    assert time.perf_counter() - start < 2  # thousands of calls per second, even on a slow CI machine
