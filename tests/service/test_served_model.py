"""``agentscope serve --model``: one chat model per process, handed to the factory for every agent, so that all
requests share its connection pool; closed with the service."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import openai
import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import UsageError
from agentscope.models import ChatModel, OpenAIChatModel
from agentscope.service import AgentService, ServeConfig
from agentscope.testing import OpenAICompatServer

Serving = Callable[..., AbstractAsyncContextManager[str]]


@pytest.mark.usefixtures("allow_model_requests")
async def test_every_agent_gets_the_one_served_model(serving: Serving) -> None:
    models: list[ChatModel] = []

    def build_agent(model: ChatModel | None = None) -> ReActAgent:
        assert model is not None
        models.append(model)
        return ReActAgent("upstream", model=model)

    async with OpenAICompatServer(lambda body: f"upstream saw {len(body['messages'])} messages") as upstream:
        config: dict[str, Any] = {"model": "openai:up-model", "model_base_url": upstream.base_url}
        async with (
            serving(build_agent, **config) as base_url,
            openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as client,
        ):
            answers = [
                await client.chat.completions.create(
                    model="test-agent", messages=[{"role": "user", "content": f"question {i}"}]
                )
                for i in range(3)
            ]
        requests = upstream.requests
    assert [a.choices[0].message.content for a in answers] == [
        "upstream saw 1 messages"
    ] * 3  # each request stateless: its question only
    assert len(requests) == 3
    assert {r.body["model"] for r in requests} == {"up-model"}
    assert len(models) == 3
    assert isinstance(models[0], OpenAIChatModel)
    assert all(m is models[0] for m in models)  # one model (one connection pool) for every agent


async def test_a_factory_without_a_model_parameter_is_refused(tmp_path: Path) -> None:
    def fixed() -> ReActAgent:
        raise AssertionError("never built")

    config = ServeConfig(model="openai:m", sessions_db=tmp_path / "s.db")
    with pytest.raises(UsageError, match="takes no 'model' parameter"):
        AgentService(fixed, config)
    with pytest.raises(UsageError, match="not both"):
        AgentService(lambda model=None: fixed(), config, agent_kwargs={"model": object()})
