"""The encoder's caches (conversations, content blocks, messages, tool lists, short strings) change how much work
a span costs, never what is written."""

from __future__ import annotations

import copy
import json

import pytest

from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _spans, switch
from agentscope.tracing._genai import ModelSpan
from agentscope.tracing._records import Encoder
from agentscope.tracing._spans import Span


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Span]:
    spans: list[Span] = []
    monkeypatch.setattr(switch, "ON", True)
    monkeypatch.setattr(_spans, "_submit", spans.append)
    return spans


async def test_a_warm_encoder_writes_what_a_fresh_one_writes(captured: list[Span], toolkit: Toolkit) -> None:
    usage = ChatUsage(input_tokens=11, output_tokens=7)
    model = ScriptedModel(
        [
            ChatResponse(
                content=[TextBlock(text="go"), tool_call("add", a=1, b=2), tool_call("lookup", city="x")],
                usage=usage,
                finish_reason="tool_calls",
                id="resp-1",
                model="m-2024",
                policy_version=3,
            ),
            ChatResponse(content=[tool_call("slow_double", x=2)], usage=usage),
            "done " * 1000,  # a long answer: a blob
        ]
    )
    await ReActAgent("enc", "system " * 500, model, toolkit=toolkit)(Msg(role="user", content="hi"))
    assert {s.kind for s in captured} == {"agent", "model", "tool"}
    warm = Encoder()  # sees every span of the run, in order: its caches are hit
    fresh_blobs: set[str] = set()
    for span in captured:
        twin = copy.copy(span)
        twin.attributes = dict(span.attributes)
        a = warm.encode(span, "run")
        fresh = Encoder()
        b = fresh.encode(twin, "run")
        fresh_blobs |= fresh.take_blobs().keys()
        assert a.name == b.name
        assert (a.status, a.status_message, a.input_tokens, a.output_tokens) == (
            b.status,
            b.status_message,
            b.input_tokens,
            b.output_tokens,
        )
        assert json.loads(a.attributes) == json.loads(b.attributes), a.name
    assert warm.take_blobs().keys() == fresh_blobs


async def test_the_encoder_does_not_keep_conversations_alive(captured: list[Span], toolkit: Toolkit) -> None:
    import gc
    import weakref

    encoder = Encoder()
    watched: list[weakref.ref[Msg]] = []
    for i in range(30):
        model = ScriptedModel([tool_call("add", a=i, b=1), "done"])
        agent = ReActAgent(f"a{i}", "You add.", model, toolkit=toolkit)
        question = Msg(role="user", content="x" * 10_000)  # a large message (an image would be larger)
        watched.append(weakref.ref(question))
        await agent(question)
        for span in captured:
            encoder.encode(span, "run")
        captured.clear()
        del agent, model, question
    gc.collect()
    alive = [ref for ref in watched if ref() is not None]
    assert len(alive) <= 1, f"{len(alive)} of 30 finished conversations are still held by the encoder"


def test_attributes_set_on_an_agent_core_span_win_over_the_request_and_lose_to_the_response() -> None:
    class Model:
        model_name = "m"

    span = ModelSpan("", "model", 1, 2, None, {}, True)
    span.model, span.messages, span.tools = Model(), (Msg(role="user", content="hi"),), []
    span.tool_choice, span.settings, span.streaming = None, {"temperature": 0.2}, False
    span.response = ChatResponse(
        content=[TextBlock(text="ok")], model="m-2024", usage=ChatUsage(input_tokens=3)
    )
    span.set_attributes(
        {
            "gen_ai.request.temperature": 0.9,  # the caller's correction of the request: kept
            "gen_ai.response.model": "mine",  # what the model said wins
            "error.type": "timeout",
        }
    )
    record = Encoder().encode(span, "run")
    attributes = json.loads(record.attributes)
    assert record.name == "chat m"
    assert attributes["gen_ai.request.temperature"] == 0.9
    assert attributes["gen_ai.response.model"] == "m-2024"
    assert attributes["error.type"] == "timeout"
    assert record.attributes.count('"gen_ai.response.model"') == 1, "each name once"
    names = list(
        attributes
    )  # request, then the span's own, then the response's (a name keeps its first place)
    assert (
        names.index("gen_ai.request.model")
        < names.index("error.type")
        < names.index("gen_ai.usage.input_tokens")
    )
    assert (record.input_tokens, record.output_tokens) == (3, 0)
