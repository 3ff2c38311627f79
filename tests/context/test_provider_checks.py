"""The provider test servers refuse what providers refuse: unpaired tool calls and results, non-object arguments."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from agentscope.testing import AnthropicCompatServer, OpenAICompatServer


def _openai_call(call_id: str, arguments: str = '{"a": 1}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "add", "arguments": arguments}}


Case = tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]

OPENAI_CASES: dict[str, Case] = {
    "paired": ([_openai_call("c1")], [{"role": "tool", "tool_call_id": "c1", "content": "1"}], None),
    "no result": ([_openai_call("c1")], [], "did not have response messages: c1"),
    "result twice": (
        [_openai_call("c1")],
        [{"role": "tool", "tool_call_id": "c1", "content": "1"}] * 2,
        "'c1' is not waiting for one (answered twice)",
    ),
    "result for no call": (
        [],
        [{"role": "tool", "tool_call_id": "c9", "content": "1"}],
        "must be a response",
    ),
    "arguments not JSON": (
        [_openai_call("c1", '{"a": 1,')],
        [{"role": "tool", "tool_call_id": "c1", "content": "1"}],
        "function.arguments: not a JSON object",
    ),
}


@pytest.mark.parametrize(("calls", "results", "problem"), list(OPENAI_CASES.values()), ids=list(OPENAI_CASES))
def test_the_openai_server_checks_tool_call_pairing(
    calls: list[dict[str, Any]], results: list[dict[str, Any]], problem: str | None
) -> None:
    assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls} if calls else {}
    messages = [{"role": "user", "content": "add"}, *([assistant] if calls else []), *results]
    messages.append({"role": "user", "content": "next"})
    with OpenAICompatServer(lambda body: "ok") as server, httpx2.Client() as client:
        response = client.post(
            f"{server.base_url}/chat/completions", json={"model": "m", "messages": messages}
        )
    if problem is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert problem in response.json()["error"]["message"]


def _tool_use(call_id: str, payload: object = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call_id,
        "name": "add",
        "input": {"a": 1} if payload is None else payload,
    }


def _tool_result(call_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": "1"}


ANTHROPIC_CASES: dict[str, Case] = {
    "paired": ([_tool_use("t1")], [_tool_result("t1")], None),
    "no result": ([_tool_use("t1")], [{"type": "text", "text": "next"}], "without `tool_result` blocks"),
    "result twice": ([_tool_use("t1")], [_tool_result("t1"), _tool_result("t1")], "unexpected `tool_use_id`"),
    "result for no call": (
        [{"type": "text", "text": "hm"}],
        [_tool_result("t9")],
        "unexpected `tool_use_id`",
    ),
    "input not an object": ([_tool_use("t1", "[1]")], [_tool_result("t1")], "Input should be an object"),
}


@pytest.mark.parametrize(
    ("assistant", "user", "problem"), list(ANTHROPIC_CASES.values()), ids=list(ANTHROPIC_CASES)
)
def test_the_anthropic_server_checks_tool_use_pairing(
    assistant: list[dict[str, Any]], user: list[dict[str, Any]], problem: str | None
) -> None:
    messages = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": user},
    ]
    with AnthropicCompatServer(lambda body: "ok") as server, httpx2.Client() as client:
        response = client.post(
            f"{server.base_url}/v1/messages", json={"model": "m", "max_tokens": 10, "messages": messages}
        )
    if problem is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert problem in response.json()["error"]["message"]


def test_the_check_can_be_turned_off() -> None:
    messages = [{"role": "assistant", "content": None, "tool_calls": [_openai_call("c1")]}]
    with OpenAICompatServer(lambda body: "ok", check_history=False) as server, httpx2.Client() as client:
        response = client.post(
            f"{server.base_url}/chat/completions", json={"model": "m", "messages": messages}
        )
    assert response.status_code == 200
