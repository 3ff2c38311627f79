"""OpenAIChatModel against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
from pydantic import BaseModel

import agentscope.models
from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelHTTPError,
    ModelRequestsBlockedError,
    ModelResponseError,
    ModelTimeoutError,
)
from agentscope.message import (
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from agentscope.models import ChatResponse, ChatUsage, OpenAIChatModel, ToolSchema
from agentscope.testing import ErrorReply, OpenAICompatServer, SSEReply

pytestmark = pytest.mark.usefixtures("allow_model_requests")

KEY = "sk-test-0123456789abcdef"
USER = [Msg(role="user", content="hi")]
WEATHER = ToolSchema(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def make_model() -> AsyncIterator[Any]:
    """Build models bound to a server; all are closed at the end of the test."""
    models: list[OpenAIChatModel] = []

    def make(server: OpenAICompatServer, **kwargs: Any) -> OpenAIChatModel:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("backoff", (0.001, 0.002))
        model = OpenAIChatModel("test-model", base_url=server.base_url, **kwargs)
        models.append(model)
        return model

    yield make
    for model in models:
        await model.aclose()


async def collect(stream: AsyncIterator[ModelStreamEvent]) -> tuple[list[ModelStreamEvent], ChatResponse]:
    events = [event async for event in stream]
    final = events[-1]
    assert isinstance(final, ChatResponse)
    assert not any(isinstance(e, ChatResponse) for e in events[:-1])
    return events[:-1], final


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- text ---------------------------------------------------------------------------------------------------------


async def test_generate_text(make_model: Any) -> None:
    reply = ChatResponse(content=[TextBlock(text="Hello!")], usage=ChatUsage(input_tokens=7, output_tokens=2))
    async with OpenAICompatServer(lambda body: reply) as server:
        model = make_model(server)
        response = await model.generate(
            [Msg(role="system", content="Be brief."), *USER], settings={"temperature": 0.2, "max_tokens": 50}
        )
    assert response.text == "Hello!"
    assert response.content == [TextBlock(text="Hello!")]
    assert response.usage == ChatUsage(input_tokens=7, output_tokens=2)
    assert response.finish_reason == "stop"
    assert response.model == "test-model"
    assert response.id
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": "test-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 50,
    }


async def test_call_is_generate(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: "ok") as server:
        assert (await make_model(server)(USER)).text == "ok"


async def test_stream_text(make_model: Any) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    reply = ChatResponse(content=[TextBlock(text=text)], usage=ChatUsage(input_tokens=3, output_tokens=10))
    async with OpenAICompatServer(lambda body: reply, chunk_size=5) as server:
        events, final = await collect(make_model(server).stream(USER))
    assert all(isinstance(e, TextDelta) for e in events)
    assert len(events) == 9
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert final.text == text
    assert final.usage == ChatUsage(input_tokens=3, output_tokens=10)
    assert final.finish_reason == "stop"
    assert server.bodies[0]["stream"] is True
    assert server.bodies[0]["stream_options"] == {"include_usage": True}


async def test_reasoning_content_becomes_thinking(make_model: Any) -> None:
    reply = ChatResponse(content=[ThinkingBlock(thinking="Let me think."), TextBlock(text="42")])
    async with OpenAICompatServer(lambda body: reply, chunk_size=4) as server:
        model = make_model(server)
        response = await model.generate(USER)
        events, final = await collect(model.stream(USER))
    assert response.content == [ThinkingBlock(thinking="Let me think."), TextBlock(text="42")]
    assert "".join(e.thinking for e in events if isinstance(e, ThinkingDelta)) == "Let me think."
    assert isinstance(events[0], ThinkingDelta)
    assert final.content == response.content


async def test_default_settings_extra_body_and_per_call_override(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: "ok") as server:
        model = make_model(
            server, default_settings={"temperature": 0.5, "seed": 1, "extra_body": {"top_k": 20}}
        )
        await model.generate(
            USER, settings={"temperature": 0.0, "top_p": 0.9, "stop": ["\n"], "extra_body": {"min_p": 0.1}}
        )
        await model.generate(USER)
    first, second = server.bodies
    assert first["temperature"] == 0.0
    assert first["top_p"] == 0.9
    assert first["stop"] == ["\n"]
    assert first["seed"] == 1
    assert first["min_p"] == 0.1
    assert "top_k" not in first  # extra_body is one setting: the per-call value replaces the default
    assert second["temperature"] == 0.5
    assert second["top_k"] == 20


async def test_multi_agent_names(make_model: Any) -> None:
    messages = [
        Msg(role="user", name="host", content="Debate!"),
        Msg(role="assistant", name="Alice", content="Yes."),
        Msg(role="assistant", name="Bob Smith", content="No."),
    ]
    async with OpenAICompatServer(lambda body: "ok") as server:
        await make_model(server).generate(messages)
    assert server.bodies[0]["messages"] == [
        {"role": "user", "content": "Debate!", "name": "host"},
        {"role": "assistant", "content": "Yes.", "name": "Alice"},
        {"role": "assistant", "content": "No.", "name": "Bob_Smith"},
    ]


# -- tools --------------------------------------------------------------------------------------------------------


def _calls(*calls: tuple[str, str, dict[str, Any]]) -> ChatResponse:
    return ChatResponse(content=[ToolUseBlock(id=i, name=n, input=a) for i, n, a in calls])


async def test_single_tool_call(make_model: Any) -> None:
    reply = _calls(("call_1", "get_weather", {"city": "Paris"}))
    async with OpenAICompatServer(lambda body: reply) as server:
        response = await make_model(server).generate(USER, tools=[WEATHER], tool_choice="auto")
    assert response.tool_calls == [ToolUseBlock(id="call_1", name="get_weather", input={"city": "Paris"})]
    assert response.finish_reason == "tool_calls"
    body = server.bodies[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", "none"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
async def test_tool_choice_mapping(make_model: Any, choice: str, expected: Any) -> None:
    async with OpenAICompatServer(lambda body: "ok") as server:
        await make_model(server).generate(
            USER, tools=[WEATHER], tool_choice=choice, settings={"parallel_tool_calls": False}
        )
    assert server.bodies[0]["tool_choice"] == expected
    assert server.bodies[0]["parallel_tool_calls"] is False


async def test_parallel_tool_calls(make_model: Any) -> None:
    reply = _calls(("c1", "get_weather", {"city": "Paris"}), ("c2", "get_weather", {"city": "Oslo"}))
    async with OpenAICompatServer(lambda body: reply, chunk_size=3) as server:
        model = make_model(server)
        response = await model.generate(USER, tools=[WEATHER])
        events, final = await collect(model.stream(USER, tools=[WEATHER]))
    expected = [
        ToolUseBlock(id="c1", name="get_weather", input={"city": "Paris"}),
        ToolUseBlock(id="c2", name="get_weather", input={"city": "Oslo"}),
    ]
    assert response.tool_calls == expected
    assert final.tool_calls == expected
    assert final.finish_reason == "tool_calls"
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [
        (0, "c1", "get_weather"),
        (1, "c2", "get_weather"),
    ]
    for index, call in enumerate(expected):
        arguments = "".join(d.arguments for d in deltas if d.index == index)
        assert json.loads(arguments) == call.input
    assert all(d.id is None and d.name is None for d in deltas if d.arguments)


async def test_stream_tool_calls_without_index_are_kept_apart(make_model: Any) -> None:
    base = {"id": "x", "model": "m", "object": "chat.completion.chunk"}

    def chunk(call: dict[str, Any]) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}

    events = [
        chunk({"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":'}}),
        chunk({"function": {"arguments": " 1}"}}),
        chunk({"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}),
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    async with OpenAICompatServer(lambda body: SSEReply(events)) as server:
        stream_events, final = await collect(make_model(server).stream(USER))
    assert final.tool_calls == [
        ToolUseBlock(id="a", name="f", input={"x": 1}),
        ToolUseBlock(id="b", name="g"),
    ]
    assert [e.index for e in stream_events if isinstance(e, ToolCallDelta)] == [0, 0, 1]


@pytest.mark.parametrize("raw", ['{"city": "Par', "[1, 2]", "not json at all"])
async def test_malformed_tool_arguments_kept_raw(make_model: Any, raw: str) -> None:
    reply = ChatResponse(content=[ToolUseBlock(id="c1", name="get_weather", raw_input=raw)])
    async with OpenAICompatServer(lambda body: reply, chunk_size=4) as server:
        model = make_model(server)
        response = await model.generate(USER, tools=[WEATHER])
        _, final = await collect(model.stream(USER, tools=[WEATHER]))
    for result in (response, final):
        assert result.tool_calls == [ToolUseBlock(id="c1", name="get_weather", input={}, raw_input=raw)]


async def test_empty_tool_arguments_mean_no_arguments(make_model: Any) -> None:
    data = {
        "id": "x",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}}
                    ],
                },
            }
        ],
    }
    async with OpenAICompatServer(lambda body: data) as server:
        response = await make_model(server).generate(USER)
    assert response.tool_calls == [ToolUseBlock(id="c", name="now", input={}, raw_input=None)]


async def test_tool_result_round_trip(make_model: Any) -> None:
    png = ImageBlock(source=Base64Source(media_type="image/png", data="iVBORw0KGgo="))
    history = [
        Msg(role="user", content="Weather in Paris and a picture of Oslo?"),
        Msg(
            role="assistant",
            name="agent",
            content=[
                ThinkingBlock(thinking="two calls"),
                TextBlock(text="Checking."),
                ToolUseBlock(id="c1", name="get_weather", input={"city": "Paris"}),
                ToolUseBlock(id="c2", name="photo", input={"city": "Oslo"}),
            ],
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="c1", name="get_weather", output="Sunny, 21 C"),
                ToolResultBlock(id="c2", name="photo", output=[TextBlock(text="Here it is"), png]),
            ],
        ),
    ]
    turns = iter(
        [
            _calls(("c1", "get_weather", {"city": "Paris"}), ("c2", "photo", {"city": "Oslo"})),
            ChatResponse(content=[TextBlock(text="Sunny in Paris; Oslo looks cold.")]),
        ]
    )
    async with OpenAICompatServer(lambda body: next(turns)) as server:
        model = make_model(server)
        first = await model.generate(history[:1], tools=[WEATHER])
        assert first.to_msg(name="agent").tool_calls == history[1].tool_calls
        second = await model.generate(history, tools=[WEATHER])
    assert second.text == "Sunny in Paris; Oslo looks cold."
    messages = server.bodies[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Checking.",
        "name": "agent",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "photo", "arguments": '{"city": "Oslo"}'}},
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C"}
    assert messages[3]["tool_call_id"] == "c2"
    assert messages[3]["content"].startswith("Here it is")
    image_parts = [p for p in messages[4]["content"] if p["type"] == "image_url"]
    assert image_parts == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]


# -- structured output --------------------------------------------------------------------------------------------


class Answer(BaseModel):
    city: str
    temperature_c: float


async def test_structured_output_from_pydantic_class(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: '{"city": "Paris", "temperature_c": 21.5}') as server:
        response = await make_model(server).generate(USER, response_format=Answer)
    assert Answer.model_validate_json(response.text) == Answer(city="Paris", temperature_c=21.5)
    fmt = server.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"].keys() == {"city", "temperature_c"}
    assert schema["additionalProperties"] is False


async def test_structured_output_from_dict_schema(make_model: Any) -> None:
    schema = {
        "title": "Verdict",
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}},
        "required": ["ok"],
    }
    async with OpenAICompatServer(lambda body: '{"ok": true}') as server:
        await make_model(server).generate(USER, response_format=schema)
    fmt = server.bodies[0]["response_format"]["json_schema"]
    assert fmt["name"] == "Verdict"
    assert fmt["strict"] is False  # "note" is optional, so strict mode would reject the schema
    assert fmt["schema"]["properties"] == schema["properties"]
    assert "additionalProperties" not in schema  # the caller's schema is not modified


# -- RL passthrough -----------------------------------------------------------------------------------------------

RL_REPLY = ChatResponse(
    content=[TextBlock(text="4")],
    usage=ChatUsage(input_tokens=3, output_tokens=2),
    prompt_token_ids=[101, 102, 103],
    completion_token_ids=[19, 2],
    logprobs=[-0.25, -0.0001],
    policy_version=7,
)


@pytest.mark.parametrize("stream", [False, True])
async def test_token_ids_logprobs_and_policy_version_pass_through(make_model: Any, stream: bool) -> None:
    async with OpenAICompatServer(lambda body: RL_REPLY) as server:
        model = make_model(server)
        response = (await collect(model.stream(USER)))[1] if stream else await model.generate(USER)
    assert response.prompt_token_ids == [101, 102, 103]
    assert response.completion_token_ids == [19, 2]
    assert response.logprobs == [-0.25, -0.0001]
    assert response.policy_version == 7
    assert response.usage == ChatUsage(input_tokens=3, output_tokens=2)


async def test_token_ids_from_logprob_tokens(make_model: Any) -> None:
    data = {
        "id": "x",
        "model": "m",
        "prompt_token_ids": [1, 2],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {"token": "token_id:15", "logprob": -0.5, "top_logprobs": []},
                        {"token": "token_id:7", "logprob": -1.5, "top_logprobs": []},
                    ]
                },
            }
        ],
    }
    async with OpenAICompatServer(lambda body: data) as server:
        response = await make_model(server).generate(USER)
    assert response.completion_token_ids == [15, 7]
    assert response.logprobs == [-0.5, -1.5]
    assert response.prompt_token_ids == [1, 2]


async def test_plain_logprob_tokens_give_no_ids(make_model: Any) -> None:
    data = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "hi"},
                "logprobs": {"content": [{"token": "hi", "logprob": -0.1}]},
            }
        ]
    }
    async with OpenAICompatServer(lambda body: data) as server:
        response = await make_model(server).generate(USER)
    assert response.completion_token_ids is None
    assert response.logprobs == [-0.1]


async def test_streamed_token_ids_are_concatenated_across_chunks(make_model: Any) -> None:
    base = {"id": "x", "model": "m", "object": "chat.completion.chunk"}

    def chunk(text: str, ids: list[int], lps: list[float], **extra: Any) -> dict[str, Any]:
        logprobs = {
            "content": [{"token": f"token_id:{i}", "logprob": lp} for i, lp in zip(ids, lps, strict=True)]
        }
        choice = {"index": 0, "delta": {"content": text}, "token_ids": ids, "logprobs": logprobs}
        return {**base, "choices": [{**choice, "finish_reason": extra.pop("finish_reason", None)}], **extra}

    events = [
        chunk("", [], [], prompt_token_ids=[5, 6, 7]),
        chunk("Hel", [11], [-0.1]),
        chunk("lo", [12, 13], [-0.2, -0.3]),
        chunk("", [], [], finish_reason="stop", policy_version=3),
        {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}},
    ]
    async with OpenAICompatServer(lambda body: SSEReply(events)) as server:
        deltas, final = await collect(make_model(server).stream(USER))
    assert [e.text for e in deltas if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert final.prompt_token_ids == [5, 6, 7]
    assert final.completion_token_ids == [11, 12, 13]
    assert final.logprobs == [-0.1, -0.2, -0.3]
    assert final.policy_version == 3
    assert final.usage == ChatUsage(input_tokens=3, output_tokens=3)
    assert final.finish_reason == "stop"


# -- retries and errors -------------------------------------------------------------------------------------------


def scripted(*replies: Any) -> Any:
    """A responder that gives the replies in order, then repeats the last one."""
    remaining = list(replies)

    def responder(body: dict[str, Any]) -> Any:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return responder


async def test_retry_429_honours_retry_after(make_model: Any) -> None:
    responder = scripted(ErrorReply(429, headers={"Retry-After": "1"}), "finally")
    async with OpenAICompatServer(responder) as server:
        model = make_model(server, backoff=(0.001, 0.001))
        started = time.monotonic()
        response = await model.generate(USER)
    assert response.text == "finally"
    assert len(server.requests) == 2
    gap = server.requests[1].received_at - server.requests[0].received_at
    assert gap >= 0.95
    assert time.monotonic() - started < 5


async def test_retry_after_ms(make_model: Any) -> None:
    responder = scripted(ErrorReply(429, headers={"retry-after-ms": "200"}), "ok")
    async with OpenAICompatServer(responder) as server:
        await make_model(server, backoff=(0.001, 0.001)).generate(USER)
    assert server.requests[1].received_at - server.requests[0].received_at >= 0.19


async def test_retry_503_then_success(make_model: Any) -> None:
    responder = scripted(ErrorReply(503), ErrorReply(502), ErrorReply(500), "up again")
    async with OpenAICompatServer(responder) as server:
        response = await make_model(server).generate(USER)
    assert response.text == "up again"
    assert len(server.requests) == 4


async def test_retries_exhausted_raise_http_error(make_model: Any) -> None:
    async with OpenAICompatServer(
        lambda body: ErrorReply(503, {"error": {"message": "overloaded"}})
    ) as server:
        model = make_model(server, max_retries=2)
        with pytest.raises(ModelHTTPError) as info:
            await model.generate(USER)
    assert info.value.status_code == 503
    assert "overloaded" in info.value.body
    assert "3 attempts" in str(info.value)
    assert len(server.requests) == 3


async def test_a_prompt_over_the_context_window_is_context_length_exceeded_and_not_retried(
    make_model: Any,
) -> None:
    too_long = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 "
            "tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    other = {"error": {"message": "bad", "type": "invalid_request_error", "code": "invalid_value"}}
    async with OpenAICompatServer(scripted(ErrorReply(400, too_long), ErrorReply(400, other))) as server:
        with pytest.raises(ContextLengthExceeded, match="maximum context length is 8192"):
            await make_model(server).generate(USER)
        assert len(server.requests) == 1  # not retried: the same prompt would not fit again
        with pytest.raises(ModelHTTPError) as info:  # any other 400 stays what it was
            await make_model(server).generate(USER)
        assert not isinstance(info.value, ContextLengthExceeded)


async def test_401_not_retried_and_key_never_leaks(make_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}
    async with OpenAICompatServer(lambda body: ErrorReply(401, echo)) as server:
        model = make_model(server)
        with pytest.raises(ModelHTTPError) as info:
            await model.generate(USER)
    assert len(server.requests) == 1
    error = info.value
    assert error.status_code == 401
    assert "check the API key" in str(error)
    assert "OPENAI_API_KEY" in str(error)
    assert KEY not in str(error)
    assert KEY not in error.body
    assert "***" in error.body
    assert KEY not in repr(model)
    assert KEY not in caplog.text


async def test_key_not_logged_during_retries(make_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with OpenAICompatServer(scripted(ErrorReply(429), ErrorReply(503), "ok")) as server:
        await make_model(server).generate(USER)
    assert "retrying" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize(("status", "hint"), [(400, "rejected"), (404, "base_url"), (422, "settings")])
async def test_other_4xx_not_retried(make_model: Any, status: int, hint: str) -> None:
    async with OpenAICompatServer(lambda body: ErrorReply(status)) as server:
        with pytest.raises(ModelHTTPError) as info:
            await make_model(server).generate(USER)
    assert info.value.status_code == status
    assert hint in str(info.value)
    assert len(server.requests) == 1


async def test_timeout_is_retried_then_raises(make_model: Any) -> None:
    async def slow(body: dict[str, Any]) -> str:
        await asyncio.sleep(0.25)
        return "too late"

    async with OpenAICompatServer(slow) as server:
        model = make_model(server, timeout_s=0.05, max_retries=1)
        with pytest.raises(ModelTimeoutError, match="timeout_s"):
            await model.generate(USER)
    assert len(server.requests) == 2


async def test_per_call_timeout_setting(make_model: Any) -> None:
    async def slow(body: dict[str, Any]) -> str:
        await asyncio.sleep(0.25)
        return "done"

    async with OpenAICompatServer(slow) as server:
        model = make_model(server, max_retries=0)
        with pytest.raises(ModelTimeoutError):
            await model.generate(USER, settings={"timeout_s": 0.05})


async def test_connection_refused(make_model: Any) -> None:
    port = free_port()
    model = OpenAIChatModel(
        "m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=2, backoff=(0.001, 0.002)
    )
    async with model:
        with pytest.raises(ModelConnectionError, match="3 attempts"):
            await model.generate(USER)
        with pytest.raises(ModelConnectionError):
            await collect(model.stream(USER))


async def test_connection_error_then_success(make_model: Any) -> None:
    attempts = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise httpx2.ConnectError("refused", request=request)
        reply = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        return httpx2.Response(200, json=reply)

    async with OpenAIChatModel(
        "m", base_url="http://127.0.0.1:9/v1", transport=httpx2.MockTransport(handler), backoff=(0.001, 0.001)
    ) as model:
        assert (await model.generate(USER)).text == "hi"
    assert attempts == 2


async def test_stream_retries_before_first_event(make_model: Any) -> None:
    async with OpenAICompatServer(scripted(ErrorReply(429), "streamed")) as server:
        _, final = await collect(make_model(server).stream(USER))
    assert final.text == "streamed"
    assert len(server.requests) == 2


async def test_stream_http_error(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: ErrorReply(401)) as server:
        with pytest.raises(ModelHTTPError) as info:
            await collect(make_model(server).stream(USER))
    assert info.value.status_code == 401
    assert len(server.requests) == 1


async def test_stream_timeout_between_events(make_model: Any) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
    async with OpenAICompatServer(lambda body: SSEReply([chunk, chunk], delay_s=0.2)) as server:
        model = make_model(server, timeout_s=0.05, max_retries=0)
        with pytest.raises(ModelTimeoutError, match="while streaming"):
            await collect(model.stream(USER))


async def test_stream_error_event(make_model: Any) -> None:
    events = [
        {"choices": [{"index": 0, "delta": {"content": "par"}}]},
        {"error": {"message": "engine died", "code": 500}},
    ]
    async with OpenAICompatServer(lambda body: SSEReply(events)) as server:
        with pytest.raises(ModelResponseError, match="engine died"):
            await collect(make_model(server).stream(USER))


async def test_invalid_json_answer(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: {"unexpected": True}) as server:
        with pytest.raises(ModelResponseError, match="without choices"):
            await make_model(server).generate(USER)


async def test_requests_blocked_when_not_allowed(make_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agentscope.models, "ALLOW_MODEL_REQUESTS", False)
    async with OpenAICompatServer(lambda body: "never") as server:
        model = make_model(server)
        with pytest.raises(ModelRequestsBlockedError):
            await model.generate(USER)
        with pytest.raises(ModelRequestsBlockedError):
            await collect(model.stream(USER))
    assert server.requests == []


# -- client lifecycle ---------------------------------------------------------------------------------------------


async def test_one_pooled_client_per_model(make_model: Any) -> None:
    async with OpenAICompatServer(lambda body: "ok") as server:
        model = make_model(server)
        await model.generate(USER)
        client = model._http._client
        assert isinstance(client, httpx2.AsyncClient)
        await model.generate(USER)
        await collect(model.stream(USER))
        assert model._http._client is client
        await model.aclose()
        assert client.is_closed
        await model.aclose()  # twice is fine
        assert (await model.generate(USER)).text == "ok"  # a closed model opens a new client when used again
        assert model._http._client is not client


async def test_concurrent_first_requests_share_one_client(
    make_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client is built in a worker thread (loading the TLS trust store blocks); the requests that arrive
    # while it is being built must wait for it, not build one each.
    built: list[httpx2.AsyncClient] = []

    class CountedClient(httpx2.AsyncClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(httpx2, "AsyncClient", CountedClient)
    async with OpenAICompatServer(lambda body: "ok") as server:
        model = make_model(server)
        answers = await asyncio.gather(*(model.generate(USER) for _ in range(20)))
    assert [a.text for a in answers] == ["ok"] * 20
    assert built == [model._http._client]


async def test_caller_http_client_is_used_and_left_open() -> None:
    async with OpenAICompatServer(lambda body: "ok") as server, httpx2.AsyncClient() as client:
        model = OpenAIChatModel("m", base_url=server.base_url, api_key=KEY, http_client=client)
        assert (await model.generate(USER)).text == "ok"
        await model.aclose()
        assert not client.is_closed
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    async with (
        OpenAICompatServer(lambda body: "ok") as server,
        OpenAIChatModel("m", base_url=server.base_url + "/", headers={"x-extra": "1"}) as model,
    ):
        await model.generate(USER)
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"
    assert server.requests[0].headers["x-extra"] == "1"
    assert server.requests[0].path == "/v1/chat/completions"


async def test_no_api_key_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with (
        OpenAICompatServer(lambda body: "ok") as server,
        OpenAIChatModel("m", base_url=server.base_url) as model,
    ):
        await model.generate(USER)
    assert "authorization" not in server.requests[0].headers


async def test_concurrent_requests_share_the_client(make_model: Any) -> None:
    in_flight, most_in_flight = 0, 0

    async def echo(body: dict[str, Any]) -> str:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return body["messages"][-1]["content"]

    async with OpenAICompatServer(echo) as server:
        model = make_model(server)
        results = await asyncio.gather(
            *(model.generate([Msg(role="user", content=str(i))]) for i in range(20))
        )
    assert [r.text for r in results] == [str(i) for i in range(20)]
    assert (
        most_in_flight > 1
    )  # concurrent, not one after another (counted, not timed: a busy machine is slow)


async def test_requests_in_flight_spread_over_pools_and_one_at_a_time_uses_one(make_model: Any) -> None:
    """Our client grows one connection pool per POOL_LOAD requests in flight (httpcore2's cost per request grows
    with the connections of its pool); requests one at a time stay on one pool and one connection."""
    from agentscope.models._http import POOL_LOAD

    release = threading.Event()  # set here, read in the server's thread and loop
    waiting = 0

    async def held(body: dict[str, Any]) -> str:
        nonlocal waiting
        waiting += 1
        while not release.is_set():  # noqa: ASYNC110 - set from the test's thread: an asyncio.Event is not safe
            await asyncio.sleep(0.005)
        return body["messages"][-1]["content"]

    async with OpenAICompatServer(held) as server:
        model = make_model(server)
        channel = model._http
        release.set()
        for i in range(3):
            assert (await model.generate([Msg(role="user", content=str(i))])).text == str(i)
        assert len(channel._pools) == 1

        release.clear()
        n = 2 * POOL_LOAD + 5
        calls = [asyncio.create_task(model.generate([Msg(role="user", content=str(i))])) for i in range(n)]
        for _ in range(2000):  # until every request has reached the server (counted, not timed)
            if waiting >= 3 + n:
                break
            await asyncio.sleep(0.01)
        assert waiting == 3 + n
        assert len(channel._pools) == 3
        assert channel._loads == [POOL_LOAD, POOL_LOAD, 5]
        release.set()
        results = await asyncio.gather(*calls)
        assert [r.text for r in results] == [str(i) for i in range(n)]
        assert channel._loads == [0, 0, 0]
        pools = list(channel._pools)
        await model.aclose()
        assert all(pool.is_closed for pool in pools)


class _LookAlikeClient:
    """Stands in for an ``httpx.AsyncClient`` (httpx may not be installed): anything but httpx2's."""


def test_a_client_or_transport_that_is_not_httpx2_is_refused_by_name() -> None:
    with pytest.raises(
        TypeError, match=r"http_client must be an httpx2\.AsyncClient, got .*_LookAlikeClient"
    ):
        OpenAIChatModel("m", http_client=_LookAlikeClient())  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match=r"transport must be an httpx2\.AsyncBaseTransport"):
        OpenAIChatModel("m", transport=_LookAlikeClient())  # pyright: ignore[reportArgumentType]


async def test_aclose_waits_for_a_client_being_made() -> None:
    model = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    channel = model._http  # pyright: ignore[reportPrivateUsage]
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel._get_client)  # pyright: ignore[reportPrivateUsage]
        await (
            anyio.lowlevel.checkpoint()
        )  # the first request holds the lock while a worker thread makes the client
        await model.aclose()
    assert channel._client is None  # pyright: ignore[reportPrivateUsage]
