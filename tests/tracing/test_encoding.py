"""The encoder's fast paths for the agent core's spans write exactly what the generic path writes."""

from __future__ import annotations

import copy
import json

import pytest

from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _runtime
from agentscope.tracing._records import Encoder
from agentscope.tracing._runtime import Span, expand


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Span]:
    spans: list[Span] = []
    monkeypatch.setattr(_runtime, "ON", True)
    monkeypatch.setattr(_runtime, "_submit", spans.append)
    return spans


async def test_fast_and_generic_encodings_agree(captured: list[Span], toolkit: Toolkit) -> None:
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
    fast, generic = Encoder(), Encoder()
    for span in captured:
        twin = copy.copy(span)
        twin.attributes = dict(span.attributes)
        expand(twin)
        a = fast.encode(span, "run")
        b = generic.encode(twin, "run")
        assert a.name == b.name
        assert (a.status, a.status_message, a.input_tokens, a.output_tokens) == (
            b.status,
            b.status_message,
            b.input_tokens,
            b.output_tokens,
        )
        assert json.loads(a.attributes) == json.loads(b.attributes), a.name
    assert fast.take_blobs().keys() == generic.take_blobs().keys()


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
