"""A scripted agent that makes a plan, revises it, works through it and finishes it (shared by the plan tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.models import ChatModel, ChatResponse
from agentscope.plan import PlanNotebook
from agentscope.testing import ScriptedModel, tool_call

SYS_PROMPT = "You organise trips. Plan before you act."
QUESTION = "Organise a weekend in Lisbon for me."
FINAL = "Your Lisbon weekend is organised: flight and hotel booked."


def plan_script() -> list[ChatResponse]:
    """The model's side: create, revise, start, finish (one wrong index on the way), abandon, finish the plan."""
    steps: list[Any] = [
        tool_call(
            "create_plan",
            name="Lisbon weekend",
            description="Organise a weekend in Lisbon",
            expected_outcome="Flight and hotel booked",
            subtasks=[
                {"name": "Find flights", "description": "Cheapest direct flight on Friday"},
                {"name": "Book hotel", "description": "Two nights in Alfama"},
            ],
        ),
        tool_call("revise_plan", action="add", subtask_index=2, name="Plan the days", description="A route"),
        tool_call("update_subtask_state", subtask_index=0, state="in_progress"),
        tool_call("finish_subtask", subtask_index=0, outcome="TP1350 on Friday 18:05, 180 EUR"),
        tool_call("finish_subtask", subtask_index=5, outcome="nothing"),
        tool_call("finish_subtask", subtask_index=1, outcome="Casa Alfama, 2 nights, 240 EUR"),
        tool_call(
            "update_subtask_state", subtask_index=2, state="abandoned", reason="The traveller plans the days"
        ),
        tool_call("finish_plan", state="done", outcome="Flight TP1350 and Casa Alfama booked"),
    ]
    responses = [ChatResponse(content=[s], finish_reason="tool_calls") for s in steps]
    responses.append(ChatResponse(content=[TextBlock(text=FINAL)], finish_reason="stop"))
    return responses


def plan_agent(model: ChatModel | None = None) -> tuple[ReActAgent, PlanNotebook]:
    agent = ReActAgent("planner", SYS_PROMPT, model or ScriptedModel(plan_script()), max_iters=12)
    notebook = PlanNotebook()
    notebook.attach(agent)
    return agent, notebook


async def run_plan(model: ChatModel | None = None) -> tuple[ReActAgent, PlanNotebook, Msg]:
    agent, notebook = plan_agent(model)
    reply = await agent(Msg(role="user", name="user", content=QUESTION))
    return agent, notebook, reply


def result_text(block: ToolResultBlock) -> str:
    if isinstance(block.output, str):
        return block.output
    return "".join(b.text for b in block.output if isinstance(b, TextBlock))


@dataclass
class PlanRun:
    """The helpers above, for test modules (importlib mode: tests cannot import conftest)."""

    run_plan: Any
    plan_agent: Any
    plan_script: Any
    result_text: Any
    final: str
    question: str


@pytest.fixture(scope="session")
def plan_run() -> PlanRun:
    return PlanRun(run_plan, plan_agent, plan_script, result_text, FINAL, QUESTION)
