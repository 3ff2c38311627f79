"""Multi-agent: pipelines, MsgHub broadcast, agents as tools of other agents, the human in the loop."""

from __future__ import annotations

import time

import anyio
import pytest

from agentscope.agents import ReActAgent, UserAgent
from agentscope.message import Msg, ToolResultBlock
from agentscope.pipelines import MsgHub, fanout_pipeline, sequential_pipeline
from agentscope.testing import FunctionModel, ModelRequest, ScriptedModel, tool_call
from agentscope.tools import Toolkit


def echo_agent(name: str, prefix: str) -> ReActAgent:
    def respond(messages: list[Msg], request: ModelRequest) -> str:
        return f"{prefix}({messages[-1].text})"

    return ReActAgent(name=name, model=FunctionModel(respond))


async def test_sequential_pipeline_chains_replies() -> None:
    agents = [echo_agent("a", "A"), echo_agent("b", "B"), echo_agent("c", "C")]
    out = await sequential_pipeline(agents, Msg(role="user", content="x"))
    assert out is not None
    assert out.text == "C(B(A(x)))"


async def test_fanout_pipeline_runs_concurrently_and_keeps_order() -> None:
    release = anyio.Event()
    arrived = 0

    async def slow(messages: list[Msg], request: ModelRequest) -> str:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            release.set()
        with anyio.fail_after(5):
            await release.wait()  # only returns if all three are running at once
        return request.messages[0].text

    agents = [ReActAgent(name=n, sys_prompt=n, model=FunctionModel(slow)) for n in ("x", "y", "z")]
    replies = await fanout_pipeline(agents, Msg(role="user", content="go"))
    assert [r.text for r in replies] == ["x", "y", "z"]
    sequential = await fanout_pipeline(
        [echo_agent("p", "P"), echo_agent("q", "Q")], Msg(role="user", content="m"), concurrent=False
    )
    assert [r.text for r in sequential] == ["P(m)", "Q(m)"]


async def test_msghub_broadcasts_replies_and_follows_membership() -> None:
    alice, bob, carol = echo_agent("alice", "A"), echo_agent("bob", "B"), echo_agent("carol", "C")
    announcement = Msg(role="user", name="host", content="topic")
    async with MsgHub([alice, bob], announcement=announcement) as hub:
        await alice()
        assert [m.text for m in await bob.memory.get()] == ["topic", "A(topic)"]
        hub.add(carol)
        await bob()
        assert [m.text for m in await carol.memory.get()] == ["B(A(topic))"]
        hub.remove(bob)
        await carol()
        assert "C(B(A(topic)))" not in [m.text for m in await bob.memory.get()]
        assert (await alice.memory.get())[-1].text == "C(B(A(topic)))"
    await alice(Msg(role="user", content="after"))  # outside the hub: no broadcast
    assert (await carol.memory.get())[-1].text == "C(B(A(topic)))"


async def test_agent_as_tool_of_another_agent() -> None:
    expert = ReActAgent(
        name="math expert",
        description="Solves arithmetic.",
        model=ScriptedModel(["The answer is 42."]),
    )
    toolkit = Toolkit()
    toolkit.register(expert.as_tool())
    boss_model = ScriptedModel([tool_call("ask_math_expert", task="6*7?"), "Expert says 42."])
    boss = ReActAgent(name="boss", model=boss_model, toolkit=toolkit)
    reply = await boss(Msg(role="user", content="what is 6*7"))
    assert reply.text == "Expert says 42."
    [schema] = boss_model.requests[0].tools
    assert schema.description.startswith("Solves arithmetic.")
    assert schema.parameters["required"] == ["task"]
    [result] = [b for m in boss_model.last_request.messages for b in m.blocks_of(ToolResultBlock)]
    assert result.output == "The answer is 42."
    assert (await expert.memory.get())[0].text == "6*7?"


async def test_user_agent_reads_without_blocking_the_loop() -> None:
    def slow_input(prompt: str) -> str:
        time.sleep(0.2)
        return f"typed after {prompt!r}"

    user = UserAgent("human", input_fn=slow_input)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        reply = await user(Msg(role="assistant", name="bot", content="your turn"))
        tg.cancel_scope.cancel()
    assert reply.text == "typed after 'human: '"
    assert reply.role == "user"
    assert ticks >= 5
    assert [m.text for m in await user.memory.get()] == ["your turn", reply.text]


async def test_async_input_function() -> None:
    async def answer(prompt: str) -> str:
        return "async yes"

    assert (await UserAgent(input_fn=answer)()).text == "async yes"


def test_agent_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        UserAgent("")
