"""ReActAgent behaviour: the loop, parallel tools, errors back to the model, structured output, interrupts."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, Field

from agentscope.agents import ReActAgent, ReplyArguments
from agentscope.events import ReplyEvent, TextDelta, ToolCallEvent, ToolResultDelta, ToolResultEvent
from agentscope.exceptions import UsageError
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatResponse
from agentscope.testing import FunctionModel, ModelRequest, ScriptedModel, tool_call
from agentscope.tools import Toolkit, require_approval


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First number.
        b: Second number.
    """
    return a + b


def make_agent(script: Any, *tools: Any, **kwargs: Any) -> tuple[ReActAgent, ScriptedModel]:
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    toolkit = Toolkit()
    for tool in tools or (add,):
        toolkit.register(tool)
    agent = ReActAgent(name="calc", sys_prompt="You add numbers.", model=model, toolkit=toolkit, **kwargs)
    return agent, model


def tool_results(request: ModelRequest) -> list[ToolResultBlock]:
    return [b for m in request.messages for b in m.blocks_of(ToolResultBlock)]


async def test_answers_directly_without_tools() -> None:
    agent, model = make_agent(["Hello!"])
    reply = await agent(Msg(role="user", content="hi"))
    assert reply.text == "Hello!"
    assert reply.role == "assistant"
    assert reply.name == "calc"
    request = model.last_request
    assert request.messages[0].role == "system"
    assert request.messages[0].text == "You add numbers."
    assert request.messages[-1].text == "hi"
    assert request.tool_names == ["add"]
    model.assert_complete()


async def test_tool_round_feeds_result_back_to_model() -> None:
    agent, model = make_agent([tool_call("add", a=2, b=3), "2 + 3 = 5"])
    reply = await agent(Msg(role="user", content="What is 2+3?"))
    assert reply.text == "2 + 3 = 5"
    [result] = tool_results(model.last_request)
    assert result.output == "5"
    assert not result.is_error
    history = await agent.memory.get()
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    model.assert_complete()


async def test_parallel_tool_calls_run_concurrently_and_keep_call_order() -> None:
    started: list[str] = []
    both_started = anyio.Event()

    async def slow(tag: str) -> str:
        """Wait until both calls are running.

        Args:
            tag: Label returned.
        """
        started.append(tag)
        if len(started) == 2:
            both_started.set()
        with anyio.fail_after(5):
            await both_started.wait()  # deadlocks if the calls ran one after the other
        return tag

    script = [[tool_call("slow", tag="first"), tool_call("slow", tag="second")], "done"]
    agent, model = make_agent(script, slow)
    await agent(Msg(role="user", content="go"))
    results = tool_results(model.last_request)
    assert [r.output for r in results] == ["first", "second"]


async def test_concurrency_cap_limits_simultaneous_tools() -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        """Do some work.

        Args:
            n: Which one.
        """
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1
        return n

    calls = [tool_call("work", n=i) for i in range(6)]
    agent, model = make_agent([calls, "ok"], work, max_concurrent_tools=2)
    await agent(Msg(role="user", content="go"))
    assert peak == 2
    assert [r.output for r in tool_results(model.last_request)] == [str(i) for i in range(6)]


async def test_malformed_tool_json_goes_back_to_model_as_tool_error() -> None:
    bad = ToolUseBlock(id="c1", name="add", input={}, raw_input='{"a": 1, "b":')
    agent, model = make_agent([bad, tool_call("add", a=1, b=2), "3"])
    reply = await agent(Msg(role="user", content="1+2"))
    assert reply.text == "3"
    first_error = tool_results(model.requests[1])[0]
    assert first_error.is_error
    assert "JSON" in str(first_error.output)


async def test_unknown_tool_and_bad_arguments_are_reported_not_raised() -> None:
    script = [tool_call("nope", x=1), tool_call("add", a="two", b=2), "gave up"]
    agent, model = make_agent(script)
    reply = await agent(Msg(role="user", content="?"))
    assert reply.text == "gave up"
    unknown, invalid = tool_results(model.last_request)
    assert unknown.is_error
    assert "nope" in str(unknown.output)
    assert invalid.is_error
    assert "a" in str(invalid.output)


async def test_max_iters_asks_for_a_final_answer_without_tools() -> None:
    looping = [tool_call("add", a=1, b=1) for _ in range(3)]
    agent, model = make_agent([*looping, "best effort: 2"], max_iters=3)
    reply = await agent(Msg(role="user", content="loop"))
    assert reply.text == "best effort: 2"
    assert reply.metadata["max_iters_reached"] is True
    assert model.last_request.tool_choice == "none"
    assert len(model.requests) == 4


class Answer(BaseModel):
    value: int = Field(description="The sum.")
    explanation: str


async def test_structured_output_validates_and_retries_invalid_answers() -> None:
    script = [
        tool_call("add", a=2, b=3),
        "The answer is 5",  # plain text is not accepted: the agent insists on the tool
        tool_call("generate_response", value="five", explanation="x"),  # invalid: retried
        tool_call("generate_response", value=5, explanation="2+3"),
    ]
    agent, model = make_agent(script)
    reply = await agent(Msg(role="user", content="2+3?"), structured_model=Answer)
    assert reply.metadata["structured_output"] == {"value": 5, "explanation": "2+3"}
    assert model.requests[2].tool_choice == "generate_response"
    invalid = tool_results(model.requests[3])[-1]
    assert invalid.is_error
    assert "value" in str(invalid.output)
    assert "generate_response" in model.requests[0].tool_names
    model.assert_complete()


async def test_interrupt_during_tools_leaves_memory_consistent() -> None:
    entered = anyio.Event()

    async def hang(seconds: float) -> str:
        """Sleep.

        Args:
            seconds: How long.
        """
        entered.set()
        await anyio.sleep(seconds)
        return "woke"

    async def quick() -> str:
        """Return at once."""
        return "quick done"

    script = [[tool_call("quick"), tool_call("hang", seconds=60)], "unused"]
    agent, _model = make_agent(script, hang, quick)
    reply: list[Msg] = []

    async def run() -> None:
        reply.append(await agent(Msg(role="user", content="go")))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await entered.wait()
            agent.interrupt()
    assert reply[0].metadata["interrupted"] is True
    history = await agent.memory.get()
    uses = [b.id for m in history for b in m.blocks_of(ToolUseBlock)]
    results = {b.id: b for m in history for b in m.blocks_of(ToolResultBlock)}
    assert set(uses) == set(results), "every tool call must have a result in memory"
    outputs = [results[i].output for i in uses]
    assert outputs[0] == "quick done"
    assert results[uses[1]].is_error
    assert "interrupted" in str(outputs[1])
    # the agent is usable again afterwards, and its next model call sees a consistent history
    model2 = ScriptedModel(["back"])
    agent.model = model2
    assert (await agent(Msg(role="user", content="again"))).text == "back"


async def test_cancelling_the_caller_propagates_and_keeps_memory_consistent() -> None:
    entered = anyio.Event()

    async def hang() -> str:
        """Hang."""
        entered.set()
        await anyio.sleep(60)
        return "never"

    agent, _ = make_agent([tool_call("hang")], hang)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent, Msg(role="user", content="go"))
            await entered.wait()
            tg.cancel_scope.cancel()
    history = await agent.memory.get()
    assert history[-1].role == "tool"
    assert history[-1].blocks_of(ToolResultBlock)[0].is_error


async def test_agent_refuses_concurrent_replies() -> None:
    gate = anyio.Event()

    async def wait_gate() -> str:
        """Wait."""
        await gate.wait()
        return "ok"

    agent, _ = make_agent([tool_call("wait_gate"), "done"], wait_gate)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent, Msg(role="user", content="1"))
        await anyio.sleep(0.01)
        with pytest.raises(UsageError, match="already replying"):
            await agent(Msg(role="user", content="2"))
        gate.set()


async def test_hooks_see_and_can_change_each_stage() -> None:
    agent, model = make_agent([tool_call("add", a=1, b=1), "two"])
    seen: list[str] = []

    def pre_reply(_agent: Any, kwargs: ReplyArguments) -> ReplyArguments:
        seen.append("pre_reply")
        kwargs["msg"] = Msg(role="user", content="rewritten")
        return kwargs

    async def pre_acting(_agent: Any, call: ToolUseBlock) -> ToolUseBlock:
        seen.append("pre_acting")
        return call.model_copy(update={"input": {"a": 40, "b": 2}})

    def post_acting(_agent: Any, result: ToolResultBlock) -> None:
        seen.append(f"post_acting:{result.output}")

    def post_reasoning(_agent: Any, response: ChatResponse) -> None:
        seen.append("post_reasoning")

    def post_reply(_agent: Any, reply: Msg) -> Msg:
        seen.append("post_reply")
        return reply.model_copy(update={"content": reply.text.upper()})

    agent.register_hook("pre_reply", "p", pre_reply)
    agent.register_hook("pre_acting", "p", pre_acting)
    agent.register_hook("post_acting", "p", post_acting)
    agent.register_hook("post_reasoning", "p", post_reasoning)
    agent.register_hook("post_reply", "p", post_reply)
    reply = await agent(Msg(role="user", content="original"))
    assert reply.text == "TWO"
    assert model.requests[0].messages[-1].text == "rewritten"
    assert seen == [
        "pre_reply",
        "post_reasoning",
        "pre_acting",
        "post_acting:42",
        "post_reasoning",
        "post_reply",
    ]
    with pytest.raises(ValueError, match="unknown hook type"):
        agent.register_hook("bogus", "x", post_reply)  # type: ignore[arg-type]


async def test_stream_yields_typed_events_in_order() -> None:
    async def countdown(n: int):  # type: ignore[no-untyped-def]
        """Count down.

        Args:
            n: Start.
        """
        for i in range(n, 0, -1):
            yield str(i)

    agent, _ = make_agent([tool_call("countdown", n=3), "Liftoff now"], countdown)
    events = [e async for e in agent.stream(Msg(role="user", content="count"))]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ToolCallEvent"
    assert kinds.count("ToolResultDelta") == 3
    assert isinstance(events[-1], ReplyEvent)
    assert events[-1].msg.text == "Liftoff now"
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Liftoff now"
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.result.output == "321"
    call = next(e for e in events if isinstance(e, ToolCallEvent))
    assert call.agent == "calc"
    deltas = [e.chunk.text_content for e in events if isinstance(e, ToolResultDelta)]
    assert deltas == ["3", "2", "1"]


async def test_leaving_a_stream_early_stops_the_reply() -> None:
    stopped = anyio.Event()

    async def hang() -> str:
        """Hang."""
        try:
            await anyio.sleep(60)
        finally:
            stopped.set()
        return "never"

    agent, _ = make_agent([tool_call("hang"), "x"], hang)
    stream = agent.stream(Msg(role="user", content="go"))
    async for event in stream:
        if isinstance(event, ToolCallEvent):
            break
    await stream.aclose()
    with anyio.fail_after(2):
        await stopped.wait()


async def test_streaming_model_deltas_come_from_the_model() -> None:
    async def stream_fn(messages: list[Msg], request: ModelRequest):  # type: ignore[no-untyped-def]
        for piece in ["Hel", "lo ", "world"]:
            yield piece

    agent = ReActAgent(name="s", model=FunctionModel(stream_function=stream_fn))
    events = [e async for e in agent.stream(Msg(role="user", content="hi"))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo ", "world"]
    assert events[-1].msg.text == "Hello world"  # type: ignore[union-attr]


async def test_sync_tools_do_not_block_other_agents() -> None:
    def blocking(seconds: float) -> str:
        """Block the thread.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "slept"

    agent, _ = make_agent([tool_call("blocking", seconds=0.3), "ok"], blocking)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await agent(Msg(role="user", content="go"))
        tg.cancel_scope.cancel()
    assert ticks >= 10


async def test_state_dict_round_trip_restores_conversation() -> None:
    agent, _ = make_agent([tool_call("add", a=1, b=2), "3"])
    await agent(Msg(role="user", content="1+2"))
    state = agent.state_dict()
    clone, model = make_agent(["remembered"])
    clone.load_state_dict(state)
    await clone(Msg(role="user", content="and now?"))
    sent = model.last_request.messages
    assert [m.text for m in sent if m.role == "user"] == ["1+2", "and now?"]
    assert await clone.memory.size() == await agent.memory.size() + 2


async def test_approval_pauses_and_resumes() -> None:
    deleted: list[str] = []

    def delete_file(path: str) -> str:
        """Delete a file.

        Args:
            path: The file.
        """
        require_approval(f"deleting {path}")
        deleted.append(path)
        return f"deleted {path}"

    script = [
        [tool_call("delete_file", _id="d1", path="a.txt"), tool_call("add", a=1, b=1)],
        "deleted a.txt",
        tool_call("delete_file", _id="d2", path="b.txt"),
        "left b.txt alone",
    ]
    agent, model = make_agent(script, delete_file, add)
    paused = await agent(Msg(role="user", content="clean up"))
    assert paused.metadata["approval_required"] == [
        {"id": "d1", "name": "delete_file", "input": {"path": "a.txt"}, "reason": "deleting a.txt"}
    ]
    assert deleted == []
    done = await agent(approve=["d1"])
    assert deleted == ["a.txt"]
    assert done.text == "deleted a.txt"
    # the model saw both results right after its tool-use message
    assert {r.id: r.output for r in tool_results(model.requests[1])}["d1"] == "deleted a.txt"
    paused = await agent(Msg(role="user", content="and b.txt"))
    assert paused.metadata["approval_required"][0]["id"] == "d2"  # type: ignore[index]
    refused = await agent(Msg(role="user", content="no, keep it"))  # a new message refuses what is pending
    assert refused.text == "left b.txt alone"
    assert deleted == ["a.txt"]
    denial = next(r for r in tool_results(model.last_request) if r.id == "d2")
    assert denial.is_error
    assert "refused" in str(denial.output)
    history = await agent.memory.get()
    uses = [b.id for m in history for b in m.blocks_of(ToolUseBlock)]
    answered = [r.id for m in history for r in m.blocks_of(ToolResultBlock)]
    assert sorted(uses) == sorted(answered), "every call answered exactly once"
    model.assert_complete()


async def test_text_blocks_in_tool_call_responses_are_kept() -> None:
    response = ChatResponse(content=[TextBlock(text="Let me add."), tool_call("add", a=1, b=2)])
    agent, model = make_agent([response, "3"])
    await agent(Msg(role="user", content="1+2"))
    assistant = model.last_request.messages[2]
    assert assistant.text == "Let me add."
    assert assistant.tool_calls[0].name == "add"


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(TypeError, match="needs a model"):
        ReActAgent(name="x")
    with pytest.raises(ValueError, match="max_iters"):
        ReActAgent(name="x", model=ScriptedModel([]), max_iters=0)
