"""The local provider-compatible servers themselves, driven by a plain httpx2 client."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from agentscope.message import TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import (
    AnthropicCompatServer,
    ErrorReply,
    OpenAICompatServer,
    SSEReply,
)


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_sync_context_manager_records_requests() -> None:
    with OpenAICompatServer(lambda body: "hi") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        with httpx2.Client() as client:
            answer = client.post(
                f"{server.base_url}/chat/completions",
                json={"model": "m", "messages": []},
                headers={"X-A": "b"},
            ).json()
            models = client.get(f"{server.base_url}/models").json()
            missing = client.post(f"{server.base_url}/nope", json={})
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["object"] == "chat.completion"
    assert models["data"][0]["id"] == "test-model"
    assert missing.status_code == 404
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/nope"),
    ]
    assert server.requests[0].headers["x-a"] == "b"
    assert server.bodies[0] == {"model": "m", "messages": []}


def test_lifecycle_errors() -> None:
    server = OpenAICompatServer(lambda body: "x")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()


async def test_replies_of_every_kind() -> None:
    replies: list[Any] = [
        {"verbatim": True},
        ErrorReply(418, "teapot", {"X-Why": "tea"}),
        ErrorReply(503),
    ]

    async def responder(body: dict[str, Any]) -> Any:
        return replies.pop(0)

    async with OpenAICompatServer(responder) as server, httpx2.AsyncClient() as client:
        url = f"{server.base_url}/chat/completions"
        first = await client.post(url, json={})
        second = await client.post(url, json={})
        third = await client.post(url, json={})
    assert first.json() == {"verbatim": True}
    assert (second.status_code, second.text, second.headers["x-why"]) == (418, "teapot", "tea")
    assert third.status_code == 503
    assert third.json()["error"]["code"] == 503


async def test_responder_exception_becomes_500() -> None:
    def broken(body: dict[str, Any]) -> str:
        raise ValueError("boom")

    async with OpenAICompatServer(broken) as server, httpx2.AsyncClient() as client:
        response = await client.post(f"{server.base_url}/chat/completions", json={})
    assert response.status_code == 500
    assert "boom" in response.text
    assert isinstance(server.errors[0], ValueError)


async def test_openai_stream_format() -> None:
    reply = ChatResponse(
        content=[
            ThinkingBlock(thinking="t"),
            TextBlock(text="abc"),
            ToolUseBlock(id="c", name="f", input={}),
        ],
        usage=ChatUsage(input_tokens=1, output_tokens=2),
        prompt_token_ids=[1],
        completion_token_ids=[2, 3],
        logprobs=[-1.0, -2.0],
        policy_version=4,
    )
    async with OpenAICompatServer(lambda body: reply, chunk_size=2) as server, httpx2.AsyncClient() as client:
        url = f"{server.base_url}/chat/completions"
        with_usage = await client.post(url, json={"stream": True, "stream_options": {"include_usage": True}})
        without_usage = await client.post(url, json={"stream": True})
    assert with_usage.headers["content-type"] == "text/event-stream"
    data = sse_data(with_usage.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["prompt_token_ids"] == [1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "t"}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[2:4]] == ["ab", "c"]
    assert chunks[4]["choices"][0]["delta"]["tool_calls"][0]["id"] == "c"
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert finish["choices"][0]["token_ids"] == [2, 3]
    assert [e["token"] for e in finish["choices"][0]["logprobs"]["content"]] == ["token_id:2", "token_id:3"]
    assert finish["policy_version"] == 4
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert "usage" not in json.loads(sse_data(without_usage.text)[-2])


async def test_raw_sse_reply() -> None:
    reply = SSEReply([{"a": 1}, "plain", ("named", {"b": 2})], done=False)
    async with OpenAICompatServer(lambda body: reply) as server, httpx2.AsyncClient() as client:
        response = await client.post(f"{server.base_url}/chat/completions", json={"stream": True})
    assert response.text == 'data: {"a":1}\n\ndata: plain\n\nevent: named\ndata: {"b":2}\n\n'


async def test_anthropic_stream_event_sequence() -> None:
    reply = ChatResponse(
        content=[
            ThinkingBlock(thinking="hm", signature="s"),
            TextBlock(text="hi"),
            ToolUseBlock(id="t", name="f"),
        ],
        usage=ChatUsage(input_tokens=3, output_tokens=4),
    )
    async with AnthropicCompatServer(lambda body: reply) as server, httpx2.AsyncClient() as client:
        response = await client.post(f"{server.base_url}/v1/messages", json={"stream": True})
        plain = await client.post(f"{server.base_url}/v1/messages", json={})
    events = [line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],
        "ping",
        *["content_block_start", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_stop"],
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for d in sse_data(response.text)]
    assert data[2]["delta"] == {"type": "thinking_delta", "thinking": "hm"}
    assert data[3]["delta"] == {"type": "signature_delta", "signature": "s"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"
    assert data[-2]["usage"] == {"output_tokens": 4}
    message = plain.json()
    assert message["type"] == "message"
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 4}
