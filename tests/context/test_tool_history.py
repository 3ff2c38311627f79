"""Tool-call history stays valid: every call in memory has exactly one result and JSON-object arguments, after
interruption, timeout, error or malformed model output, and both providers accept the next request."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from agentscope.agents import ReActAgent
from agentscope.context import (
    INVALID_ARGUMENTS_KEY,
    NO_RESULT_OUTPUT,
    ToolCallLedger,
    repair_tool_history,
)
from agentscope.memory import SQLiteMemory
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit, require_approval

from .conftest import assert_paired, continue_on_both_providers

pytestmark = pytest.mark.anyio


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First number.
        b: Second number.
    """
    return a + b


async def slow(seconds: float) -> str:
    """Wait, then say so.

    Args:
        seconds: How long to wait.
    """
    await anyio.sleep(seconds)
    return "waited"


def _agent(script: list[object], *, toolkit: Toolkit | None = None, **kwargs: object) -> ReActAgent:
    if toolkit is None:
        toolkit = Toolkit()
        toolkit.register(add)
        toolkit.register(slow)
    return ReActAgent("calc", "You add numbers.", ScriptedModel(script), toolkit=toolkit, **kwargs)  # type: ignore[arg-type]


def _call(call_id: str, name: str = "add", **arguments: object) -> ToolUseBlock:
    return ToolUseBlock(id=call_id, name=name, input=arguments)  # type: ignore[arg-type]


def _result(call_id: str, output: str = "3", name: str = "add") -> ToolResultBlock:
    return ToolResultBlock(id=call_id, name=name, output=output)


# ---------------------------------------------------------------------- repair on read (pure)


def test_a_valid_history_comes_back_unchanged() -> None:
    history = [
        Msg(role="user", content="1+2?"),
        Msg(role="assistant", content=[_call("c1", a=1, b=2)]),
        Msg(role="tool", content=[_result("c1")]),
        Msg(role="assistant", content="3"),
    ]
    repaired, report = repair_tool_history(history)
    assert not report.changed
    assert all(a is b for a, b in zip(repaired, history, strict=True))


def test_every_broken_shape_is_repaired() -> None:
    history = [
        Msg(role="user", content="go"),
        Msg(
            role="assistant",
            content=[_call("c1", a=1, b=2), ToolUseBlock(id="c2", name="add", raw_input="{oops")],
        ),
        Msg(role="user", content="hurry"),  # c1 and c2 dangle; c1's result comes late
        Msg(role="tool", content=[_result("c1"), _result("c1", "again"), _result("ghost")]),
        Msg(role="assistant", content=[_call("c1", a=2, b=2)]),  # an id used again
        Msg(role="assistant", content="done"),
    ]
    repaired, report = repair_tool_history(history)
    assert_paired(repaired)
    assert [m.role for m in repaired] == [
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    first = repaired[2].blocks_of(ToolResultBlock)
    assert [(r.id, r.output, r.is_error) for r in first] == [
        ("c1", "3", False),
        ("c2", NO_RESULT_OUTPUT, True),
    ]
    renamed = repaired[4].tool_calls[0]
    assert renamed.id == "c1~2"
    assert repaired[5].blocks_of(ToolResultBlock)[0].id == "c1~2"
    fixed = repaired[1].tool_calls[1]
    assert (fixed.input, fixed.raw_input) == ({}, None)
    assert repaired[1].metadata[INVALID_ARGUMENTS_KEY] == {"c2": "{oops"}
    assert sorted(report.dropped_results) == ["c1", "ghost"]
    assert report.fixed_arguments == ["c2"]
    assert history[1].tool_calls[1].raw_input == "{oops"  # the input is not modified


# ---------------------------------------------------------------------- repair on write (the ledger)


def test_the_ledger_answers_dangling_calls_when_the_conversation_moves_on() -> None:
    ledger = ToolCallLedger()
    ledger.prime([])
    stored = ledger.write(Msg(role="assistant", content=[_call("c1"), _call("c2")]))
    stored += ledger.write(Msg(role="tool", content=[_result("c1")]))
    stored += ledger.write(Msg(role="tool", content=[_result("c1", "duplicate")]))  # dropped
    assert [w.id for w in ledger.waiting] == ["c2"]
    stored += ledger.write(Msg(role="user", content="next"))
    assert_paired(stored)
    assert [m.role for m in stored] == ["assistant", "tool", "tool", "user"]
    assert stored[2].blocks_of(ToolResultBlock)[0].output == NO_RESULT_OUTPUT
    assert ledger.report.dropped_results == ["c1"]


def test_the_ledger_leaves_held_calls_waiting() -> None:
    ledger = ToolCallLedger()
    ledger.prime([Msg(role="user", content="hi"), Msg(role="assistant", content=[_call("c1")])])
    assert [w.id for w in ledger.waiting] == ["c1"]
    assert ledger.write(Msg(role="user", content="meanwhile"), held={"c1"})[0].text == "meanwhile"
    assert (
        ledger.write(Msg(role="tool", content=[_result("c1")]))[0].blocks_of(ToolResultBlock)[0].output == "3"
    )
    assert ledger.waiting == []


# ---------------------------------------------------------------------- agents in trouble


@pytest.mark.usefixtures("allow_model_requests")
async def test_cancelled_mid_tool_memory_stays_paired_and_providers_accept() -> None:
    agent = _agent([[tool_call("slow", seconds=30), tool_call("add", a=1, b=2)]])
    add_done = anyio.Event()

    def on_result(_: ReActAgent, result: ToolResultBlock) -> None:
        if result.name == "add":
            add_done.set()

    # Cancel once add has returned (not after a fixed delay, which a loaded machine may not meet): the sync hook
    # runs just before its result is kept, with no checkpoint in between, while slow still sleeps.
    agent.register_hook("post_acting", "add_done", on_result)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def ask() -> None:
                await agent(Msg(role="user", content="wait then add"))

            tg.start_soon(ask)
            await add_done.wait()
            tg.cancel_scope.cancel()
    history = await agent.memory.get()
    assert_paired(history)
    outputs = {r.name: r.output for m in history for r in m.blocks_of(ToolResultBlock)}
    assert outputs["add"] == "3"
    assert "interrupted" in str(outputs["slow"])
    await continue_on_both_providers(agent)
    assert_paired(await agent.memory.get())


@pytest.mark.usefixtures("allow_model_requests")
async def test_interrupted_before_its_tools_run_the_calls_get_a_result() -> None:
    """interrupt() from a post_reasoning hook: the model's calls are stored, none of them runs."""
    agent = _agent([tool_call("add", a=1, b=2)])
    agent.register_hook("post_reasoning", "stop", lambda a, response: a.interrupt())
    reply = await agent(Msg(role="user", content="add"))
    assert reply.metadata.get("interrupted") is True
    history = await agent.memory.get()
    assert_paired(history)
    await continue_on_both_providers(agent)


@pytest.mark.usefixtures("allow_model_requests")
async def test_a_tool_that_times_out_gets_an_error_result_and_providers_accept() -> None:
    toolkit = Toolkit()
    toolkit.register(slow, timeout_s=0.05)
    agent = _agent([tool_call("slow", seconds=30), "gave up"], toolkit=toolkit)
    assert (await agent(Msg(role="user", content="wait"))).text == "gave up"
    results = [r for m in await agent.memory.get() for r in m.blocks_of(ToolResultBlock)]
    assert [r.is_error for r in results] == [True]
    assert "timed out" in str(results[0].output)
    assert_paired(await agent.memory.get())
    await continue_on_both_providers(agent)


@pytest.mark.usefixtures("allow_model_requests")
async def test_malformed_model_arguments_are_stored_as_an_object_and_providers_accept() -> None:
    bad = ToolUseBlock(id="c1", name="add", raw_input='{"a": 1, "b":')
    agent = _agent([bad, "could not add"])
    await agent(Msg(role="user", content="1+"))
    history = await agent.memory.get()
    assert_paired(history)
    stored = history[1]
    assert (stored.tool_calls[0].input, stored.tool_calls[0].raw_input) == ({}, None)
    assert stored.metadata[INVALID_ARGUMENTS_KEY] == {"c1": '{"a": 1, "b":'}
    error = history[2].blocks_of(ToolResultBlock)[0]
    assert error.is_error
    assert '{"a": 1, "b":' in str(error.output)
    await continue_on_both_providers(agent)  # vLLM (and the test server) refuse unparsable arguments


class Answer(BaseModel):
    value: int


@pytest.mark.usefixtures("allow_model_requests")
async def test_max_iters_with_an_extra_call_next_to_the_answer_leaves_no_call_unanswered() -> None:
    """The forced final answer came with another call: it used to stay in memory without a result."""
    script: list[object] = [
        tool_call("add", a=1, b=2),
        [tool_call("generate_response", value=3), tool_call("add", a=3, b=3)],
    ]
    agent = _agent(script, max_iters=1)
    reply = await agent(Msg(role="user", content="1+2"), structured_model=Answer)
    assert reply.metadata["structured_output"] == {"value": 3}
    assert_paired(await agent.memory.get())
    await continue_on_both_providers(agent)


@pytest.mark.usefixtures("allow_model_requests")
async def test_a_client_history_with_dangling_and_duplicate_results_is_repaired() -> None:
    """A history stored as a client sent it (as `agentscope serve` does): a call never answered, a result twice."""
    agent = _agent([])
    await agent.memory.add(
        [
            Msg(role="user", content="add twice"),
            Msg(role="assistant", content=[_call("c1", a=1, b=2)]),
            Msg(role="tool", content=[_result("c1")]),
            Msg(role="tool", content=[_result("c1", "3 again")]),
            Msg(role="assistant", content=[_call("c2", a=2, b=2), TextBlock(text="and now")]),
        ]
    )
    await continue_on_both_providers(agent)
    # The agent's first write answered c2 in memory; the duplicate the client wrote itself stays there, and every
    # request leaves it out.
    _, report = repair_tool_history(await agent.memory.get())
    assert (report.synthetic_results, report.dropped_results) == ([], ["c1"])


@pytest.mark.usefixtures("allow_model_requests")
async def test_a_message_observed_while_a_call_waits_for_approval_keeps_the_approval() -> None:
    def guarded_add(a: int, b: int) -> int:
        """Add two integers, once a human approves.

        Args:
            a: First number.
            b: Second number.
        """
        require_approval("adding needs a human")
        return a + b

    toolkit = Toolkit()
    toolkit.register(guarded_add, name="add")
    agent = _agent([tool_call("add", a=1, b=2), "3"], toolkit=toolkit)
    paused = await agent(Msg(role="user", content="1+2"))
    call_id = paused.metadata["approval_required"][0]["id"]  # type: ignore[index]
    await agent.observe(Msg(role="user", name="bob", content="I am here too"))
    reply = await agent(approve=[call_id])
    assert reply.text == "3"
    results = [r for m in await agent.memory.get() for r in m.blocks_of(ToolResultBlock)]
    assert [(r.id, r.output) for r in results] == [(call_id, "3")]  # the real result, no synthetic one
    await continue_on_both_providers(agent)


@pytest.mark.usefixtures("allow_model_requests")
async def test_a_session_left_with_a_dangling_call_by_a_killed_process_is_repaired_on_resume(
    tmp_path: Path,
) -> None:
    """SQLite memory: the process died after storing the model's call, before its result; a new agent resumes."""
    path = tmp_path / "memory.db"
    async with SQLiteMemory(path, session_id="s") as memory:
        await memory.add(
            [Msg(role="user", content="add"), Msg(role="assistant", content=[_call("c1", a=1, b=2)])]
        )
    async with SQLiteMemory(path, session_id="s") as memory:
        agent = _agent([], memory=memory)
        await continue_on_both_providers(agent)
        history = await memory.get()
    assert_paired(history)
    assert [m.role for m in history[:4]] == ["user", "assistant", "tool", "user"]
    assert history[2].blocks_of(ToolResultBlock)[0].output == NO_RESULT_OUTPUT
