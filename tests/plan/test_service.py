"""The plan lives with an ``agentscope serve`` session: made in one request, it is shown to the model in the next
one on the same session, after a server restart (a fresh agent per request, its state from the session store)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path

import openai
import uvicorn  # noqa: F401  # pyright: ignore[reportUnusedImport]  # imported here: the first import reads files, which the event loop must not

from agentscope._uvicorn import BackgroundServer
from agentscope.agents import ReActAgent
from agentscope.message import Msg, ToolResultBlock
from agentscope.plan import PlanNotebook
from agentscope.service import AgentService, ServeConfig, create_app
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call

SESSION = {"X-Session-Id": "trip-1"}


def model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """``plan``: create a plan and start its first subtask. ``where am I?``: the subtask in progress, read from
    the plan the agent shows before the call (or ``no plan``)."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if last.role == "user" and last.text == "plan":
        return tool_call(
            "create_plan",
            name="Lisbon weekend",
            description="A weekend in Lisbon",
            expected_outcome="Booked",
            subtasks=[{"name": "Find flights"}, {"name": "Book hotel"}],
        )
    if results and results[0].name == "create_plan":
        return tool_call("update_subtask_state", subtask_index=0, state="in_progress")
    if results:
        return "Started."
    system = messages[0].text if messages[0].role == "system" else ""
    return next((line for line in system.splitlines() if line.startswith("->")), "no plan")


def factory() -> ReActAgent:
    agent = ReActAgent("planner", "You plan trips.", FunctionModel(model))
    PlanNotebook().attach(agent)
    return agent


@contextlib.asynccontextmanager
async def serving(sessions_db: Path) -> AsyncGenerator[openai.AsyncOpenAI]:
    service = AgentService(factory, ServeConfig(sessions_db=sessions_db, model_name="planner"))
    server = BackgroundServer(create_app(service), name="agent service")
    await server.astart()
    try:
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="-") as client:
            yield client
    finally:
        await server.astop()
        await service.aclose()


async def ask(client: openai.AsyncOpenAI, text: str, headers: dict[str, str]) -> str | None:
    answer = await client.chat.completions.create(
        model="planner", messages=[{"role": "user", "content": text}], extra_headers=headers
    )
    return answer.choices[0].message.content


async def test_the_plan_is_kept_with_the_session_across_requests_and_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    async with serving(db) as client:
        assert await ask(client, "plan", SESSION) == "Started."
        assert await ask(client, "where am I?", SESSION) == "-> 0. [in_progress] Find flights"
    async with serving(db) as client:  # a new server on the same session store
        assert await ask(client, "where am I?", SESSION) == "-> 0. [in_progress] Find flights"
        assert await ask(client, "where am I?", {"X-Session-Id": "another"}) == "no plan"
