"""AnthropicChatModel against a real Anthropic-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

import agentscope.models
from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelHTTPError,
    ModelRequestsBlockedError,
    ModelTimeoutError,
)
from agentscope.message import (
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from agentscope.models import AnthropicChatModel, ChatResponse, ChatUsage, ToolSchema
from agentscope.testing import AnthropicCompatServer, ErrorReply, SSEReply

pytestmark = pytest.mark.usefixtures("allow_model_requests")

KEY = "sk-ant-test-0123456789"
USER = [Msg(role="user", content="hi")]
WEATHER = ToolSchema(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def make_model() -> AsyncIterator[Any]:
    models: list[AnthropicChatModel] = []

    def make(server: AnthropicCompatServer, **kwargs: Any) -> AnthropicChatModel:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("backoff", (0.001, 0.002))
        model = AnthropicChatModel("claude-test", base_url=server.base_url, **kwargs)
        models.append(model)
        return model

    yield make
    for model in models:
        await model.aclose()


async def collect(stream: AsyncIterator[ModelStreamEvent]) -> tuple[list[ModelStreamEvent], ChatResponse]:
    events = [event async for event in stream]
    final = events[-1]
    assert isinstance(final, ChatResponse)
    return events[:-1], final


def scripted(*replies: Any) -> Any:
    remaining = list(replies)

    def responder(body: dict[str, Any]) -> Any:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return responder


async def test_generate_text_with_system_prompt(make_model: Any) -> None:
    reply = ChatResponse(content=[TextBlock(text="Hello!")], usage=ChatUsage(input_tokens=9, output_tokens=3))
    messages = [Msg(role="system", content="Be brief."), *USER, Msg(role="system", content="Be kind.")]
    async with AnthropicCompatServer(lambda body: reply) as server:
        response = await make_model(server).generate(
            messages, settings={"temperature": 0.1, "stop": ["END"], "seed": 3, "top_p": 0.5}
        )
    assert response.content == [TextBlock(text="Hello!")]
    assert response.usage == ChatUsage(input_tokens=9, output_tokens=3)
    assert response.finish_reason == "stop"
    assert response.metadata["stop_reason"] == "end_turn"
    [request] = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "Be brief.\n\nBe kind.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.1,
        "top_p": 0.5,
        "stop_sequences": ["END"],
    }


async def test_max_tokens_default_and_setting(make_model: Any) -> None:
    async with AnthropicCompatServer(lambda body: "ok") as server:
        await make_model(server, max_tokens=99).generate(USER)
        await make_model(server).generate(USER, settings={"max_tokens": 12})
    assert [b["max_tokens"] for b in server.bodies] == [99, 12]


async def test_stream_text(make_model: Any) -> None:
    text = "Streaming from Claude works."
    reply = ChatResponse(content=[TextBlock(text=text)], usage=ChatUsage(input_tokens=4, output_tokens=6))
    async with AnthropicCompatServer(lambda body: reply, chunk_size=6) as server:
        events, final = await collect(make_model(server).stream(USER))
    assert all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert final.content == [TextBlock(text=text)]
    assert final.usage == ChatUsage(input_tokens=4, output_tokens=6)
    assert final.finish_reason == "stop"
    assert final.id
    assert server.bodies[0]["stream"] is True


async def test_tool_calls_parallel(make_model: Any) -> None:
    reply = ChatResponse(
        content=[
            TextBlock(text="Checking both."),
            ToolUseBlock(id="tu_1", name="get_weather", input={"city": "Paris"}),
            ToolUseBlock(id="tu_2", name="get_weather", input={"city": "Oslo"}),
        ]
    )
    async with AnthropicCompatServer(lambda body: reply, chunk_size=5) as server:
        model = make_model(server)
        response = await model.generate(USER, tools=[WEATHER], tool_choice="required")
        events, final = await collect(model.stream(USER, tools=[WEATHER]))
    for result in (response, final):
        assert result.content == reply.content
        assert result.finish_reason == "tool_calls"
    assert server.bodies[0]["tools"] == [
        {"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER.parameters}
    ]
    assert server.bodies[0]["tool_choice"] == {"type": "any"}
    assert "tool_choice" not in server.bodies[1]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [
        (0, "tu_1", "get_weather"),
        (1, "tu_2", "get_weather"),
    ]
    for index, call in enumerate(reply.tool_calls):
        assert json.loads("".join(d.arguments for d in deltas if d.index == index)) == call.input


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("get_weather", False, {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
async def test_tool_choice_mapping(make_model: Any, choice: Any, parallel: Any, expected: Any) -> None:
    settings: Any = {} if parallel is None else {"parallel_tool_calls": parallel}
    async with AnthropicCompatServer(lambda body: "ok") as server:
        await make_model(server).generate(USER, tools=[WEATHER], tool_choice=choice, settings=settings)
    assert server.bodies[0]["tool_choice"] == expected


async def test_malformed_streamed_tool_input_kept_raw(make_model: Any) -> None:
    reply = ChatResponse(content=[ToolUseBlock(id="tu_1", name="get_weather", raw_input='{"city": "Pa')])
    async with AnthropicCompatServer(lambda body: reply, chunk_size=3) as server:
        _, final = await collect(make_model(server).stream(USER, tools=[WEATHER]))
    assert final.tool_calls == [
        ToolUseBlock(id="tu_1", name="get_weather", input={}, raw_input='{"city": "Pa')
    ]


async def test_tool_result_round_trip_with_image(make_model: Any) -> None:
    history = [
        Msg(role="user", content="Weather?"),
        Msg(
            role="assistant",
            content=[
                TextBlock(text="Let me check."),
                ToolUseBlock(id="tu_1", name="get_weather", input={"city": "Paris"}),
            ],
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(
                    id="tu_1",
                    name="get_weather",
                    output=[
                        TextBlock(text="Sunny"),
                        ImageBlock(source=URLSource(url="https://example.com/sun.png")),
                    ],
                )
            ],
        ),
        Msg(role="user", content="And tomorrow?"),
    ]
    async with AnthropicCompatServer(lambda body: "Sunny again.") as server:
        response = await make_model(server).generate(history, tools=[WEATHER])
    assert response.text == "Sunny again."
    assert server.bodies[0]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu_1",
                    "content": [
                        {"type": "text", "text": "Sunny"},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/sun.png"}},
                    ],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_with_signature_round_trip(make_model: Any, stream: bool) -> None:
    thinking = ThinkingBlock(thinking="The user wants weather; call the tool.", signature="sig-abc123==")
    call = ToolUseBlock(id="tu_1", name="get_weather", input={"city": "Paris"})
    turns = iter([ChatResponse(content=[thinking, call]), ChatResponse(content=[TextBlock(text="Sunny.")])])
    async with AnthropicCompatServer(lambda body: next(turns), chunk_size=7) as server:
        model = make_model(server)
        settings: Any = {"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}
        if stream:
            events, first = await collect(model.stream(USER, tools=[WEATHER], settings=settings))
            assert "".join(e.thinking for e in events if isinstance(e, ThinkingDelta)) == thinking.thinking
        else:
            first = await model.generate(USER, tools=[WEATHER], settings=settings)
        assert first.content == [thinking, call]
        result = Msg(role="tool", content=[ToolResultBlock(id="tu_1", name="get_weather", output="Sunny")])
        await model.generate([*USER, first.to_msg(), result], tools=[WEATHER], settings=settings)
    assert server.bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assistant = server.bodies[1]["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": thinking.thinking, "signature": "sig-abc123=="},
            {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    }


async def test_redacted_thinking_and_cache_usage_kept_in_metadata(make_model: Any) -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "hi"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 2},
    }
    async with AnthropicCompatServer(lambda body: data) as server:
        response = await make_model(server).generate(USER)
    assert response.content == [TextBlock(text="hi")]
    assert response.metadata["redacted_thinking"] == ["opaque"]
    assert response.metadata["cache_read_input_tokens"] == 100
    assert response.usage == ChatUsage(input_tokens=105, output_tokens=2)
    assert response.finish_reason == "length"


class Verdict(BaseModel):
    ok: bool
    reason: str


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_via_forced_tool(make_model: Any, stream: bool) -> None:
    reply = ChatResponse(
        content=[ToolUseBlock(id="tu_f", name="Verdict", input={"ok": True, "reason": "fine"})],
        finish_reason="tool_use",
    )
    async with AnthropicCompatServer(lambda body: reply, chunk_size=4) as server:
        model = make_model(server)
        if stream:
            events, response = await collect(model.stream(USER, tools=[WEATHER], response_format=Verdict))
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == response.text
            assert not any(isinstance(e, ToolCallDelta) for e in events)
        else:
            response = await model.generate(USER, tools=[WEATHER], response_format=Verdict)
    assert Verdict.model_validate_json(response.text) == Verdict(ok=True, reason="fine")
    assert response.tool_calls == []
    assert response.finish_reason == "stop"
    body = server.bodies[0]
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert [t["name"] for t in body["tools"]] == ["get_weather", "Verdict"]
    assert body["tools"][1]["input_schema"]["properties"].keys() == {"ok", "reason"}


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_non_object_schema_is_wrapped(make_model: Any, stream: bool) -> None:
    schema = {"title": "Numbers", "type": "array", "items": {"type": "integer"}}
    reply = ChatResponse(content=[ToolUseBlock(id="tu_f", name="Numbers", input={"value": [1, 2, 3]})])
    async with AnthropicCompatServer(lambda body: reply) as server:
        model = make_model(server)
        if stream:
            events, response = await collect(model.stream(USER, response_format=schema))
            assert [e.text for e in events if isinstance(e, TextDelta)] == [response.text]
        else:
            response = await model.generate(USER, response_format=schema)
    assert json.loads(response.text) == [1, 2, 3]
    tool = server.bodies[0]["tools"][0]
    assert tool["input_schema"]["properties"]["value"]["type"] == "array"


async def test_retry_529_overloaded_then_success(make_model: Any) -> None:
    responder = scripted(ErrorReply(529), ErrorReply(429, headers={"retry-after": "0"}), "ok")
    async with AnthropicCompatServer(responder) as server:
        response = await make_model(server).generate(USER)
    assert response.text == "ok"
    assert len(server.requests) == 3


async def test_exhausted_retries(make_model: Any) -> None:
    async with AnthropicCompatServer(lambda body: ErrorReply(529)) as server:
        with pytest.raises(ModelHTTPError) as info:
            await make_model(server, max_retries=1).generate(USER)
    assert info.value.status_code == 529
    assert "overloaded_error" in info.value.body
    assert len(server.requests) == 2


async def test_a_prompt_over_the_context_window_is_context_length_exceeded_and_not_retried(
    make_model: Any,
) -> None:
    """Anthropic's answers to a prompt that does not fit, or leaves no room for ``max_tokens`` (their real bodies,
    request id aside), are the error the OpenAI model raises for one, so an agent or the RL environment cluster
    treats both alike; other 400s stay what they were."""
    too_long = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    no_room = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease "
            "input length or `max_tokens` and try again",
        },
    }
    other = {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}}
    replies = scripted(ErrorReply(400, too_long), ErrorReply(400, no_room), ErrorReply(400, other))
    async with AnthropicCompatServer(replies) as server:
        with pytest.raises(ContextLengthExceeded, match="208310 tokens > 200000 maximum"):
            await make_model(server).generate(USER)
        with pytest.raises(ContextLengthExceeded, match="197000 \\+ 8192 > 200000"):
            await make_model(server).generate(USER)
        assert len(server.requests) == 2  # one request each
        with pytest.raises(ModelHTTPError) as info:
            await make_model(server).generate(USER)
        assert not isinstance(info.value, ContextLengthExceeded)


async def test_401_not_retried_and_key_redacted(make_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}}
    async with AnthropicCompatServer(lambda b: ErrorReply(401, body)) as server:
        model = make_model(server)
        with pytest.raises(ModelHTTPError) as info:
            await model.generate(USER)
    assert len(server.requests) == 1
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in info.value.body
    assert KEY not in repr(model)
    assert KEY not in caplog.text


async def test_stream_error_event(make_model: Any) -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]
    async with AnthropicCompatServer(lambda body: SSEReply(events)) as server:
        with pytest.raises(ModelHTTPError, match="Overloaded") as info:
            await collect(make_model(server).stream(USER))
    assert info.value.status_code == 529


async def test_timeout(make_model: Any) -> None:
    async def slow(body: dict[str, Any]) -> str:
        await asyncio.sleep(0.25)
        return "late"

    async with AnthropicCompatServer(slow) as server:
        with pytest.raises(ModelTimeoutError):
            await make_model(server, timeout_s=0.05, max_retries=0).generate(USER)


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AnthropicChatModel(
        "c", base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=1, backoff=(0.001, 0.001)
    ) as model:
        with pytest.raises(ModelConnectionError, match="2 attempts"):
            await model.generate(USER)


async def test_requests_blocked(make_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agentscope.models, "ALLOW_MODEL_REQUESTS", False)
    async with AnthropicCompatServer(lambda body: "never") as server:
        with pytest.raises(ModelRequestsBlockedError):
            await make_model(server).generate(USER)
    assert server.requests == []


async def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    async with (
        AnthropicCompatServer(lambda body: "ok") as server,
        AnthropicChatModel("c", base_url=server.base_url) as model,
    ):
        await model.generate(USER)
    assert server.requests[0].headers["x-api-key"] == "env-key"
