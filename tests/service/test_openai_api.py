"""The OpenAI Chat Completions API of ``agentscope serve``, through the real ``openai`` client and raw HTTP, against
a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
import pytest

from agentscope import tracing
from agentscope.agents import ReActAgent, load_agent_factory
from agentscope.exceptions import ModelHTTPError
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit
from agentscope.types import ChatResponse, ChatUsage

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""

CALCULATOR = Path(__file__).resolve().parents[2] / "examples" / "calculator.py"


def lookup(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


def weather_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Calls ``lookup`` once, then answers from its result; every call reports its tokens."""
    results = messages[-1].blocks_of(ToolResultBlock)
    if results:
        return ChatResponse(
            content=[TextBlock(text=f"It is {results[0].output}.")],
            usage=ChatUsage(input_tokens=30, output_tokens=7),
        )
    call = tool_call("lookup", city=messages[-1].text.split()[-1].rstrip("?"))
    return ChatResponse(content=[call], usage=ChatUsage(input_tokens=20, output_tokens=5))


def weather_agent() -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(lookup)
    return ReActAgent("weather", model=FunctionModel(weather_model, stream_chunk_chars=4), toolkit=toolkit)


@pytest.fixture
async def client(serving: Serving) -> AsyncIterator[openai.AsyncOpenAI]:
    async with serving(weather_agent) as base_url, openai.AsyncOpenAI(base_url=base_url, api_key="-") as c:
        yield c


async def test_the_calculator_example_answers_the_openai_client(serving: Serving) -> None:
    factory = await anyio.to_thread.run_sync(load_agent_factory, str(CALCULATOR))  # runs the file
    async with (
        serving(factory, model_name="calculator") as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        answer = await client.chat.completions.create(
            model="calculator", messages=[{"role": "user", "content": "What is 6 * 7?"}]
        )
        models = await client.models.list()
        model = await client.models.retrieve("calculator")
    assert answer.choices[0].message.content == "The result is 42.0."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "calculator"
    steps = (answer.choices[0].message.model_extra or {})["agentscope"]["steps"]
    assert [(s["type"], s["name"]) for s in steps] == [("tool_call", "multiply"), ("tool_result", "multiply")]
    assert json.loads(steps[0]["arguments"]) == {"a": 6.0, "b": 7.0}
    assert steps[1]["output"] == "42.0"
    assert steps[1]["is_error"] is False
    assert steps[1]["id"] == steps[0]["id"]
    assert answer.choices[0].message.tool_calls is None  # the agent's own calls are not the client's to run
    assert [m.id for m in models.data] == ["calculator"]
    assert model.id == "calculator"


async def test_usage_sums_every_model_call_of_the_reply(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="test-agent", messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (
        50,
        12,
        62,
    )


async def test_streaming_sends_text_steps_usage_and_done(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="test-agent",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text: list[str] = []
    steps: list[dict[str, Any]] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == "test-agent"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            steps.extend(((choice.delta.model_extra or {}).get("agentscope") or {}).get("steps", []))
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert "".join(text) == "It is sunny in Oslo."
    assert len(text) > 3  # streamed in pieces, not as one message
    assert [(s["type"], s["name"]) for s in steps] == [("tool_call", "lookup"), ("tool_result", "lookup")]
    assert steps[1]["output"] == "sunny in Oslo"
    assert finish == ["stop"]
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (50, 12)


async def test_the_raw_stream_is_openai_server_sent_events_ending_in_done(serving: Serving) -> None:
    async with serving(weather_agent) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
        body = {"model": "x", "messages": [{"role": "user", "content": "Weather in Rome?"}], "stream": True}
        async with http.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            raw = "".join([part async for part in response.aiter_text()])
    events = [block for block in raw.split("\n\n") if block]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert not any("usage" in c for c in chunks)  # only with stream_options.include_usage


async def test_without_a_session_the_request_carries_the_conversation(serving: Serving) -> None:
    seen: list[list[tuple[str, str]]] = []

    def echo(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        seen.append([(m.role, m.text) for m in messages])
        return f"reply {len(seen)}"

    def factory() -> ReActAgent:
        return ReActAgent("echo", sys_prompt="Be brief.", model=FunctionModel(echo))

    history = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {"role": "user", "content": "how are you?"},
    ]
    async with serving(factory) as base_url, openai.AsyncOpenAI(base_url=base_url, api_key="-") as client:
        await client.chat.completions.create(model="m", messages=history)  # type: ignore[arg-type]
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "again"}])
    assert seen[0] == [
        ("system", "Be brief."),
        ("system", "Answer in French."),
        ("user", "hi"),
        ("assistant", "salut"),
        ("user", "how are you?"),
    ]
    assert seen[1] == [("system", "Be brief."), ("user", "again")]  # a fresh agent: nothing kept


async def test_every_request_is_traced_and_its_trace_id_comes_back(serving: Serving) -> None:
    exporter = tracing.InMemoryExporter()
    tracing.init(None, exporters=[exporter])
    try:
        async with serving(weather_agent) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
            body = {"model": "x", "messages": [{"role": "user", "content": "Weather in Lima?"}]}
            response = await http.post("/chat/completions", json=body)
            streamed = await http.post("/chat/completions", json={**body, "stream": True})
            health = await http.get(base_url.removesuffix("/v1") + "/healthz")
        await tracing.aflush()
    finally:
        await anyio.to_thread.run_sync(tracing.shutdown)  # joins the writer thread
    assert response.status_code == 200
    assert streamed.status_code == 200
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32
    assert int(trace_id, 16)
    assert streamed.headers["x-trace-id"] != trace_id
    assert "x-trace-id" not in health.headers  # probes are not traced
    spans = [s for s in exporter.spans if s.trace_id == trace_id]
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "POST /v1/chat/completions"
    assert root.attributes["http.response.status_code"] == 200
    assert any(s.kind == "agent" for s in exporter.children(root))
    assert {s.kind for s in spans} >= {"agent", "model", "tool"}
    assert any(s.trace_id == streamed.headers["x-trace-id"] and s.kind == "tool" for s in exporter.spans)


async def test_a_failing_agent_is_an_openai_error_with_the_details_in_the_server_log(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        raise ModelHTTPError("provider said no: secret-detail", status_code=500)

    def factory() -> ReActAgent:
        return ReActAgent("broken", model=FunctionModel(broken))

    async with (
        serving(factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="the agent's model failed") as mid_stream:
            async for _ in stream:
                pass
    assert failed.value.status_code == 502
    assert "the agent's model failed (ModelHTTPError)" in failed.value.message
    assert "secret-detail" not in failed.value.message + str(mid_stream.value)
    assert "secret-detail" in caplog.text  # the operator sees what happened
