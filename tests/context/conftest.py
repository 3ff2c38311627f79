"""Helpers for the context tests: send an agent's next request to both provider test servers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from agentscope.agents import ReActAgent
from agentscope.context import repair_tool_history
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import AnthropicChatModel, ChatModel, OpenAIChatModel
from agentscope.testing import AnthropicCompatServer, OpenAICompatServer


@asynccontextmanager
async def openai_provider() -> AsyncGenerator[tuple[ChatModel, OpenAICompatServer]]:
    async with (
        OpenAICompatServer(lambda body: "ok") as server,
        OpenAIChatModel("gpt-test", base_url=server.base_url, api_key="sk-test", max_retries=0) as model,
    ):
        yield model, server


@asynccontextmanager
async def anthropic_provider() -> AsyncGenerator[tuple[ChatModel, AnthropicCompatServer]]:
    async with (
        AnthropicCompatServer(lambda body: "ok") as server,
        AnthropicChatModel(
            "claude-test", base_url=server.base_url, api_key="sk-test", max_retries=0
        ) as model,
    ):
        yield model, server


async def continue_on_both_providers(agent: ReActAgent) -> None:
    """The agent's next request goes to an OpenAI and an Anthropic test server, which refuse unpaired tool
    calls as the providers do: both must accept it and answer."""
    for provider in (openai_provider, anthropic_provider):
        async with provider() as (model, server):
            agent.model = model
            reply = await agent(Msg(role="user", content="go on"))
            assert reply.text == "ok", f"{type(server).__name__} refused the request: {reply.text!r}"
            assert [r.path for r in server.requests] == [server.requests[0].path]


def assert_paired(messages: list[Msg]) -> None:
    """Every tool call directly followed by exactly one result, nothing else (the canonical form)."""
    repaired, report = repair_tool_history(messages)
    assert not report.changed, f"history needed repair: {report}"
    calls = [b.id for m in messages for b in m.blocks_of(ToolUseBlock)]
    results = [b.id for m in messages for b in m.blocks_of(ToolResultBlock)]
    assert sorted(calls) == sorted(results)
    assert len(set(calls)) == len(calls)
    assert repaired == messages
