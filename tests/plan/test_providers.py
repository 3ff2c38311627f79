"""The whole plan run against the OpenAI and Anthropic test servers, which refuse unpaired tool calls as the
providers do: the plan hint never splits a call from its result, and each provider gets it as its system prompt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentscope.models import AnthropicChatModel, ChatModel, ChatResponse, OpenAIChatModel
from agentscope.testing import AnthropicCompatServer, OpenAICompatServer


def responder(script: list[ChatResponse]) -> Any:
    steps: Iterator[ChatResponse] = iter(script)

    def answer(body: dict[str, Any]) -> ChatResponse:
        return next(steps)

    return answer


def openai_system(body: dict[str, Any]) -> str:
    first = body["messages"][0]
    assert first["role"] == "system"
    content = first["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def anthropic_system(body: dict[str, Any]) -> str:
    system = body["system"]
    return system if isinstance(system, str) else "".join(part["text"] for part in system)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.usefixtures("allow_model_requests")
async def test_both_providers_accept_every_request_of_a_plan_run(provider: str, plan_run: Any) -> None:
    script = plan_run.plan_script()
    model: ChatModel
    if provider == "openai":
        server: Any = OpenAICompatServer(responder(script))
        system_of = openai_system
    else:
        server = AnthropicCompatServer(responder(script))
        system_of = anthropic_system
    async with server:
        if provider == "openai":
            model = OpenAIChatModel("gpt-test", base_url=server.base_url, api_key="sk-test", max_retries=0)
        else:
            model = AnthropicChatModel(
                "claude-test", base_url=server.base_url, api_key="sk-test", max_retries=0
            )
        async with model:
            _, notebook, reply = await plan_run.run_plan(model)
    assert reply.text == plan_run.final
    assert len(server.requests) == 9
    assert notebook.history[0].state == "done"
    systems = [system_of(r.body) for r in server.requests]
    assert "-> 1. [in_progress] Book hotel" in systems[4]
    assert systems[4].startswith("You organise trips.")
