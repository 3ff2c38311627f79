"""Spans made by a real ReActAgent run: names, GenAI attributes, parent/child relations, errors, payloads."""

from __future__ import annotations

import anyio
import pytest

from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _genai, _spans

pytestmark = pytest.mark.anyio


def _usage(i: int, o: int) -> ChatUsage:
    return ChatUsage(input_tokens=i, output_tokens=o)


async def _run_calculator(toolkit: Toolkit) -> Msg:
    model = ScriptedModel(
        [
            ChatResponse(
                content=[
                    TextBlock(text="Both at once."),
                    tool_call("slow_double", x=4),
                    tool_call("slow_double", x=5),
                    tool_call("lookup", city="Atlantis"),
                ],
                usage=_usage(100, 20),
                finish_reason="tool_calls",
                prompt_token_ids=[1, 2, 3],
                completion_token_ids=[4, 5],
                logprobs=[-0.1, -0.2],
                policy_version=7,
            ),
            ChatResponse(content=[TextBlock(text="8 and 10; Atlantis is unknown.")], usage=_usage(150, 10)),
        ]
    )
    agent = ReActAgent("calc", "You calculate.", model, toolkit=toolkit, description="a calculator")
    reply = await agent(Msg(role="user", name="user", content="Double 4 and 5, find Atlantis."))
    model.assert_complete()
    return reply


async def test_an_agent_run_is_one_trace_of_agent_model_and_tool_spans(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    reply = await _run_calculator(toolkit)
    await tracing.aflush()

    (root,) = spans.by_name("invoke_agent calc")
    assert root.kind == "agent"
    assert root.parent_id is None
    assert {s.trace_id for s in spans.spans} == {root.trace_id}
    children = spans.children(root)
    names = [s.name for s in children]
    assert names[0] == "chat scripted"
    assert names[-1] == "chat scripted"
    assert sorted(names[1:4]) == [
        "execute_tool lookup",
        "execute_tool slow_double",
        "execute_tool slow_double",
    ]
    kinds = sorted(s.kind for s in children)
    assert kinds == ["model", "model", "tool", "tool", "tool"]

    a = root.attributes
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "calc"
    assert a["gen_ai.agent.description"] == "a calculator"
    assert a["gen_ai.input.messages"][0]["content"] == "Double 4 and 5, find Atlantis."
    assert a["gen_ai.output.messages"][0]["content"][0]["text"] == reply.text


async def test_parallel_tool_calls_are_overlapping_siblings_under_the_agent(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    await _run_calculator(toolkit)
    await tracing.aflush()
    (root,) = spans.by_name("invoke_agent calc")
    doubles = spans.by_name("execute_tool slow_double")
    assert len(doubles) == 2
    assert all(s.parent_id == root.span_id for s in doubles)
    first, second = sorted(doubles, key=lambda s: s.start_ns)
    assert second.start_ns < first.end_ns, "the two 50 ms calls ran concurrently"
    assert sorted(s.attributes["gen_ai.tool.call.arguments"]["x"] for s in doubles) == [4, 5]
    assert sorted(s.attributes["gen_ai.tool.call.result"][0]["text"] for s in doubles) == ["10", "8"]
    assert all(s.status == "unset" for s in doubles)


async def test_model_spans_carry_request_response_usage_and_token_data(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    await _run_calculator(toolkit)
    await tracing.aflush()
    first, second = sorted(spans.by_name("chat scripted"), key=lambda s: s.start_ns)
    a = first.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "scripted"
    assert a["gen_ai.usage.input_tokens"] == 100
    assert a["gen_ai.usage.output_tokens"] == 20
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert [m["role"] for m in a["gen_ai.input.messages"]] == ["system", "user"]
    assert a["gen_ai.input.messages"][0]["content"] == "You calculate."
    assert {t["name"] for t in a["gen_ai.tool.definitions"]} == {"add", "slow_double", "lookup"}
    output = a["gen_ai.output.messages"]
    assert output[0] == {"type": "text", "text": "Both at once."}
    assert [b["name"] for b in output[1:]] == ["slow_double", "slow_double", "lookup"]
    assert a["agentscope.prompt_token_ids"] == [1, 2, 3]
    assert a["agentscope.completion_token_ids"] == [4, 5]
    assert a["agentscope.logprobs"] == [-0.1, -0.2]
    assert a["agentscope.policy_version"] == 7
    # The second call's prompt holds the whole exchange: the tool results came back to the model.
    roles = [m["role"] for m in second.attributes["gen_ai.input.messages"]]
    assert roles == ["system", "user", "assistant", "tool"]


async def test_a_failing_tool_is_an_error_span_with_its_message(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    await _run_calculator(toolkit)
    await tracing.aflush()
    (failed,) = spans.by_name("execute_tool lookup")
    assert failed.status == "error"
    assert failed.attributes["error.type"] == "tool_error"
    assert "no such city: Atlantis" in (failed.status_message or "")
    assert failed.attributes["gen_ai.tool.name"] == "lookup"
    assert failed.attributes["gen_ai.tool.call.id"].startswith("call_")


async def test_a_failing_model_call_marks_model_and_agent_spans(spans: tracing.InMemoryExporter) -> None:
    def broken(_: object) -> ChatResponse:
        raise RuntimeError("provider is down")

    agent = ReActAgent("a", "", ScriptedModel(broken))
    with pytest.raises(RuntimeError, match="provider is down"):
        await agent(Msg(role="user", content="hi"))
    await tracing.aflush()
    (model,) = spans.by_name("chat scripted")
    (root,) = spans.by_name("invoke_agent a")
    for s in (model, root):
        assert s.status == "error"
        assert s.attributes["error.type"] == "RuntimeError"
        assert s.status_message == "RuntimeError: provider is down"
    assert model.parent_id == root.span_id


async def test_streaming_agents_trace_tool_streams_too(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    model = ScriptedModel([tool_call("add", a=1, b=2), "3"])
    agent = ReActAgent("streamer", "", model, toolkit=toolkit)
    events = [e async for e in agent.stream(Msg(role="user", content="1+2"))]
    assert events
    await tracing.aflush()
    (root,) = spans.by_name("invoke_agent streamer")
    (tool,) = spans.by_name("execute_tool add")
    assert tool.parent_id == root.span_id
    assert tool.attributes["gen_ai.tool.call.result"] == "3"
    models = spans.by_name("chat scripted")
    assert len(models) == 2
    assert all(m.attributes["agentscope.request.stream"] is True for m in models)


async def test_an_agent_used_as_a_tool_nests_under_the_tool_span(spans: tracing.InMemoryExporter) -> None:
    expert = ReActAgent("expert", "", ScriptedModel(["42"]), description="knows things")
    toolkit = Toolkit()
    toolkit.register(expert.as_tool())
    boss = ReActAgent(
        "boss", "", ScriptedModel([tool_call("ask_expert", task="meaning?"), "It is 42."]), toolkit=toolkit
    )
    await boss(Msg(role="user", content="ask the expert"))
    await tracing.aflush()
    (boss_span,) = spans.by_name("invoke_agent boss")
    (tool_span,) = spans.by_name("execute_tool ask_expert")
    (expert_span,) = spans.by_name("invoke_agent expert")
    assert tool_span.parent_id == boss_span.span_id
    assert expert_span.parent_id == tool_span.span_id
    assert expert_span.trace_id == boss_span.trace_id


async def test_generic_spans_and_traced_functions_nest_and_record_errors(
    spans: tracing.InMemoryExporter,
) -> None:
    @tracing.traced(kind="env")
    async def reset_env() -> str:
        return "ready"

    @tracing.traced(name="sandbox exec", kind="env")
    def run_code() -> None:
        raise ValueError("exit status 1")

    with tracing.span("episode 1", "env", {"agentscope.episode": 1}) as episode:
        assert tracing.current_span() is episode
        assert await reset_env() == "ready"
        with pytest.raises(ValueError, match="exit status 1"):
            await anyio.to_thread.run_sync(run_code)  # a worker thread inherits the current span
        with tracing.span("train step", "train") as step:
            step.set_attribute("train/policy_loss", 0.25)
            step.set_attribute("agentscope.batch", tracing.Json({"size": 8}))
    assert tracing.current_span() is None
    loose = tracing.start_span("detached", "train")
    loose.end()
    loose.end()  # ending twice is harmless
    await tracing.aflush()

    (ep,) = spans.by_name("episode 1")
    assert ep.kind == "env"
    assert ep.parent_id is None
    assert ep.attributes == {"agentscope.episode": 1}
    by_name = {s.name: s for s in spans.spans}
    assert (
        by_name["test_generic_spans_and_traced_functions_nest_and_record_errors.<locals>.reset_env"].parent_id
        == ep.span_id
    )
    failed = by_name["sandbox exec"]
    assert failed.parent_id == ep.span_id
    assert failed.status == "error"
    assert failed.attributes["error.type"] == "ValueError"
    step = by_name["train step"]
    assert step.kind == "train"
    assert step.attributes == {
        "train/policy_loss": 0.25,
        "agentscope.batch": {"size": 8},
    }
    assert [s.name for s in spans.spans].count("detached") == 1


async def test_large_values_are_stored_once_as_blobs(
    spans: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    prompt = "Follow these rules carefully. " * 400  # ~12 KB, sent with every model call
    model = ScriptedModel([tool_call("add", a=1, b=2), tool_call("add", a=3, b=3), "done"])
    agent = ReActAgent("big", prompt, model, toolkit=toolkit)
    await agent(Msg(role="user", content="go"))
    await tracing.aflush()
    models = spans.by_name("chat scripted")
    assert len(models) == 3
    assert all(m.attributes["gen_ai.input.messages"][0]["content"] == prompt for m in models)
    holding_prompt = [d for d, data in spans.blobs.items() if b"Follow these rules" in data]
    assert len(holding_prompt) == 1, "the system prompt is stored once, not once per call"
    tool_lists = [d for d, data in spans.blobs.items() if b'"slow_double"' in data]
    assert len(tool_lists) == 1, "the tool definitions are stored once"


async def test_with_tracing_off_nothing_is_recorded_and_no_span_is_made(
    toolkit: Toolkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not tracing.enabled()

    def no_spans(*_: object, **__: object) -> None:
        raise AssertionError("a span was created while tracing is off")

    monkeypatch.setattr(_spans, "_user_span", no_spans)
    monkeypatch.setattr(_spans, "Span", no_spans)
    monkeypatch.setattr(_genai, "new_span", no_spans)
    await _run_calculator(toolkit)
    model = ScriptedModel([tool_call("add", a=1, b=2), "3"])
    events = [
        e async for e in ReActAgent("s", "", model, toolkit=toolkit).stream(Msg(role="user", content="x"))
    ]
    assert events
    with tracing.span("nothing", "env") as s:
        assert not s.recording
        s.set_attribute("ignored", 1)
    assert tracing.current_span() is None
    assert tracing.start_span("x", "env") is s
    tracing.record_metric("train/loss", 1.0)  # a no-op, no error


async def test_metrics_are_recorded_with_steps(spans: tracing.InMemoryExporter) -> None:
    tracing.record_metric("train/policy_loss", 0.5)
    tracing.record_metric("train/policy_loss", 0.4)
    tracing.record_metric("train/policy_loss", 0.3, step=10)
    tracing.log_metrics({"rollout/tokens_per_s": 1200.0, "eval/success_rate": 0.5}, step=3)
    await tracing.aflush()
    points = [(m.name, m.step, m.value) for m in spans.metrics]
    assert points == [
        ("train/policy_loss", 0, 0.5),
        ("train/policy_loss", 1, 0.4),
        ("train/policy_loss", 10, 0.3),
        ("rollout/tokens_per_s", 3, 1200.0),
        ("eval/success_rate", 3, 0.5),
    ]


async def test_a_root_span_joins_the_callers_opentelemetry_span(spans: tracing.InMemoryExporter) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    otel = TracerProvider().get_tracer("app")
    with otel.start_as_current_span("http request") as outer:
        with tracing.span("inner", "env"):
            pass
        context = outer.get_span_context()
    await tracing.aflush()
    (inner,) = spans.by_name("inner")
    assert inner.trace_id == f"{context.trace_id:032x}"
    assert inner.parent_id == f"{context.span_id:016x}"


async def test_streaming_tools_and_approvals_are_traced(spans: tracing.InMemoryExporter) -> None:
    from agentscope.tools._approval import require_approval

    toolkit = Toolkit()

    async def countdown(n: int):
        """Count down.

        Args:
            n: Where to start.
        """
        for i in range(n, 0, -1):
            yield f"{i} "

    def delete_all(path: str) -> str:
        """Delete everything under a path.

        Args:
            path: The path.
        """
        require_approval("deleting files needs a human")
        return "deleted"

    toolkit.register(countdown)
    toolkit.register(delete_all)
    model = ScriptedModel([[tool_call("countdown", n=3), tool_call("delete_all", path="/tmp/x")], "waiting"])
    agent = ReActAgent("careful", "", model, toolkit=toolkit)
    events = [e async for e in agent.stream(Msg(role="user", content="count, then delete"))]
    assert events
    await tracing.aflush()
    (count,) = spans.by_name("execute_tool countdown")
    assert count.attributes["gen_ai.tool.call.result"] == "3 2 1 "
    (delete,) = spans.by_name("execute_tool delete_all")
    assert delete.attributes["agentscope.tool.approval_required"] is True
    assert delete.attributes["agentscope.tool.approval_reason"] == "deleting files needs a human"
    assert delete.status == "unset"


async def test_a_streamed_model_call_records_its_time_to_first_chunk(spans: tracing.InMemoryExporter) -> None:
    from collections.abc import AsyncIterator, Sequence
    from typing import Any

    from agentscope.events import TextDelta
    from agentscope.models import ChatModel

    class SlowStarter(ChatModel):
        model_name = "slow-starter"

        async def generate(self, messages: Sequence[Msg], **_: Any) -> ChatResponse:
            raise AssertionError("the agent streams")

        async def stream(self, messages: Sequence[Msg], **_: Any) -> AsyncIterator[Any]:
            await anyio.sleep(0.05)  # before the first chunk
            yield TextDelta(text="Hel")
            await anyio.sleep(0.1)  # the rest of the answer
            yield TextDelta(text="lo")
            yield ChatResponse(content=[TextBlock(text="Hello")], finish_reason="stop")

    agent = ReActAgent("talker", "", SlowStarter())
    events = [e async for e in agent.stream(Msg(role="user", content="hi"))]
    assert events
    await tracing.aflush()
    (model,) = spans.by_name("chat slow-starter")
    first = model.attributes["gen_ai.response.time_to_first_chunk"]
    duration = (model.end_ns - model.start_ns) / 1e9
    assert first >= 0.045  # the 50 ms sleep (timers may fire within the clock's resolution)
    assert duration - first >= 0.09, "measured at the first chunk, not at the end"
