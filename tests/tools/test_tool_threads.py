"""The tool threads that run sync tools: what a tool author relies on (context, errors, concurrency of blocking tools,
cancellation, ``anyio.from_thread``) and what the pool promises about its threads (few for fast calls, none idle)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest

from agentscope.message import ToolUseBlock
from agentscope.tools import Toolkit, ToolThreads

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def test_a_sync_tool_sees_the_callers_context_and_runs_off_the_loop() -> None:
    loop_thread = threading.get_ident()

    def tool() -> tuple[str, int]:
        return _request_id.get(), threading.get_ident()

    _request_id.set("r-42")
    seen, thread = await ToolThreads().run(tool)
    assert seen == "r-42"
    assert thread != loop_thread


async def test_errors_reach_the_caller_and_a_stop_iteration_is_wrapped() -> None:
    pool = ToolThreads()

    def fails() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await pool.run(fails)

    def stops() -> None:
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration") as info:
        await pool.run(stops)
    assert isinstance(info.value.__cause__, StopIteration)


async def test_blocking_tools_run_at_once_up_to_the_limit() -> None:
    """Eight tools that each wait for all eight: they finish only if the pool grows to eight threads."""
    pool = ToolThreads(max_threads=8)
    barrier = threading.Barrier(8, timeout=20)

    def blocking() -> int:
        return barrier.wait()

    results: list[object] = []

    async def one() -> None:
        results.append(await pool.run(blocking))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(one)
    assert sorted(results) == list(range(8))  # every party passed the barrier: none broke it by timing out
    assert pool.threads == 8


async def test_the_pool_never_exceeds_max_threads() -> None:
    pool = ToolThreads(max_threads=3)
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def blocking() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(20)
        with lock:
            running -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(pool.run, blocking)
        await anyio.sleep(0.5)  # ample time for the pool to grow as far as it may
        assert pool.threads == 3
        release.set()
    assert most == 3


async def test_a_burst_of_fast_calls_is_served_by_few_threads() -> None:
    pool = ToolThreads(max_threads=40)

    def fast(i: int) -> int:
        return i * 2

    results = await asyncio.gather(*(pool.run(lambda i=i: fast(i)) for i in range(500)))
    assert results == [i * 2 for i in range(500)]
    # None of these calls blocks, so the pool has no reason to grow; a thread descheduled mid-call on a loaded
    # machine can look blocked once (the count at most doubles per check), hence not exactly 1.
    assert pool.threads <= 4


async def test_a_cancelled_caller_abandons_its_call_and_a_call_not_started_never_starts() -> None:
    pool = ToolThreads(max_threads=1)
    gate = threading.Event()
    started: list[str] = []

    def first() -> str:
        started.append("first")
        gate.wait(20)
        return "first done"

    def second() -> str:
        started.append("second")
        return "second done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run, first)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.1) as scope:
            await pool.run(second)  # queued behind `first` on the only thread
        assert scope.cancelled_caught
        with anyio.move_on_after(0.1) as scope:
            await pool.run(first)  # the only thread is busy: this one is abandoned too
        gate.set()
    await pool.run(lambda: None)  # the thread has gone through the queue
    assert started == ["first"]


async def test_anyio_from_thread_works_inside_a_tool() -> None:
    loop_thread = threading.get_ident()

    def tool() -> int:
        return anyio.from_thread.run_sync(threading.get_ident)

    assert await ToolThreads().run(tool) == loop_thread


def test_a_call_whose_loop_has_closed_is_dropped_quietly() -> None:
    pool = ToolThreads()
    gate = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        gate.wait(20)
        finished.set()

    async def main() -> None:
        with anyio.move_on_after(0.05):
            await pool.run(slow)

    asyncio.run(main())  # the loop closes while the tool still runs
    gate.set()
    assert finished.wait(20)

    async def again() -> str:
        return str(await pool.run(lambda: "served"))

    assert asyncio.run(again()) == "served"  # the pool serves the next loop


async def test_idle_threads_exit() -> None:
    pool = ToolThreads(idle_exit_s=0.05)
    await pool.run(lambda: None)
    for _ in range(400):  # the thread polls nothing: it exits on its own after idle_exit_s
        if not pool.threads:
            break
        await anyio.sleep(0.05)
    assert pool.threads == 0
    assert await pool.run(lambda: "again") == "again"  # and a new call starts one again


async def test_toolkit_runs_sync_tools_in_the_tool_threads() -> None:
    threads: list[str] = []

    def where() -> str:
        """Name the thread this runs in."""
        threads.append(threading.current_thread().name)
        return "ok"

    toolkit = Toolkit()
    toolkit.register(where)
    result = await toolkit.call(ToolUseBlock(id="c1", name="where", input={}))
    assert not result.is_error
    assert threads == ["agentscope tool thread"]


def test_max_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        ToolThreads(max_threads=0)


def test_a_virtual_clock_waits_for_a_tool_thread() -> None:
    """On the simulated clock of the RL schedule simulator, a sync tool takes no virtual time: the clock stands
    still while the thread works, instead of jumping to the next timer."""
    from agentscope.testing import run_virtual

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 3600)  # a timer the clock would otherwise jump to
            before = loop.time()
            await ToolThreads().run(lambda: time.sleep(0.2))
            during = loop.time() - before
            tg.cancel_scope.cancel()
        return before, during

    _, during = run_virtual(main)
    assert during < 1.0


def test_blocking_tools_run_at_once_on_a_virtual_clock() -> None:
    """The timed growth check cannot fire on a simulated clock that stands still while threads work: there a
    waiting call gets a thread at once."""
    from agentscope.testing import run_virtual

    pool = ToolThreads(max_threads=4)
    barrier = threading.Barrier(2, timeout=20)

    async def main() -> list[object]:
        return list(await asyncio.gather(pool.run(barrier.wait), pool.run(barrier.wait)))

    assert sorted(run_virtual(main)) == [0, 1]  # a BrokenBarrierError here: the calls ran one after another


def test_a_check_lost_with_a_closed_loop_does_not_stop_growth_on_the_next() -> None:
    pool = ToolThreads(max_threads=4)
    gate = threading.Event()

    async def abandon() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run, lambda: gate.wait(20))  # the only thread blocks
            await anyio.sleep(0.05)
            tg.start_soon(pool.run, lambda: None)  # queued: a growth check is armed on this loop
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()

    asyncio.run(abandon())  # the loop closes with the check still armed

    async def next_loop() -> str:
        with anyio.fail_after(20):
            return str(await pool.run(lambda: "served"))

    try:
        assert asyncio.run(next_loop()) == "served"  # served by a new thread while the first still blocks
    finally:
        gate.set()


async def test_a_tool_sees_its_caller_cancelled_through_anyio() -> None:
    noticed = threading.Event()
    cancelled = anyio.get_cancelled_exc_class()  # asks the running loop: not from the thread

    def patient() -> None:
        for _ in range(2000):
            try:
                anyio.from_thread.check_cancelled()
            except cancelled:
                noticed.set()
                return
            time.sleep(0.01)

    with anyio.move_on_after(0.1):
        await ToolThreads().run(patient)
    assert await anyio.to_thread.run_sync(noticed.wait, 20)
