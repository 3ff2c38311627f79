"""PlanNotebook on a ReActAgent driven by ScriptedModel: tools, the hint before each call, errors, state, traces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.exceptions import UsageError
from agentscope.message import Msg, ToolResultBlock
from agentscope.plan import DEFAULT_NO_PLAN_HINT, PLAN_SPAN, PlanNotebook, SubTaskSpec
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tracing import TraceStore


def system_text(messages: list[Msg]) -> str:
    assert messages[0].role == "system"
    return messages[0].text


def tool_results(messages: list[Msg]) -> list[ToolResultBlock]:
    return [b for m in messages for b in m.blocks_of(ToolResultBlock)]


async def test_a_plan_is_created_revised_worked_through_and_finished(plan_run: Any) -> None:
    agent, notebook, reply = await plan_run.run_plan()
    assert reply.text == plan_run.final

    assert notebook.plan is None
    [plan] = notebook.history
    assert (plan.name, plan.state, plan.outcome) == (
        "Lisbon weekend",
        "done",
        "Flight TP1350 and Casa Alfama booked",
    )
    assert [(s.name, s.state) for s in plan.subtasks] == [
        ("Find flights", "done"),
        ("Book hotel", "done"),
        ("Plan the days", "abandoned"),
    ]
    assert [s.outcome for s in plan.subtasks] == [
        "TP1350 on Friday 18:05, 180 EUR",
        "Casa Alfama, 2 nights, 240 EUR",
        "The traveller plans the days",
    ]

    # The model saw the plan as it stood before each call, in the system message of that request only.
    systems = [system_text(r.messages) for r in agent.model.requests]
    assert len(systems) == 9
    assert systems[0].startswith("You organise trips.")
    assert DEFAULT_NO_PLAN_HINT in systems[0]
    assert "Plan: Lisbon weekend [todo]" in systems[1]
    assert "   0. [todo] Find flights" in systems[1]
    assert "2. [todo] Plan the days" not in systems[1]
    assert "   2. [todo] Plan the days: A route" in systems[2]
    assert "Plan: Lisbon weekend [in_progress]" in systems[3]
    assert "-> 0. [in_progress] Find flights: Cheapest direct flight on Friday" in systems[3]
    assert "   0. [done] Find flights (outcome: TP1350 on Friday 18:05, 180 EUR)" in systems[4]
    assert "-> 1. [in_progress] Book hotel" in systems[4]
    assert "-> 2. [in_progress] Plan the days" in systems[6]
    assert "   2. [abandoned] Plan the days (outcome: The traveller plans the days)" in systems[7]
    assert "Plan:" not in systems[8]
    assert DEFAULT_NO_PLAN_HINT in systems[8]

    # Memory holds the conversation only: no hint, no system message.
    stored = await agent.memory.get()
    assert all(m.role != "system" for m in stored)
    assert not any("Your current plan" in m.text or DEFAULT_NO_PLAN_HINT in m.text for m in stored)

    # The wrong index was answered with an error naming it; everything else succeeded.
    results = tool_results(stored)
    assert len(results) == 8
    errors = [plan_run.result_text(r) for r in results if r.is_error]
    assert errors == ["There is no subtask 5: the plan has 3 subtasks, numbered 0 to 2."]


async def test_without_a_system_prompt_the_hint_is_the_system_message() -> None:
    model = ScriptedModel([tool_call("view_plan"), "No plan yet."])
    agent = ReActAgent("planner", model=model)
    PlanNotebook(no_plan_hint="Plan first.").attach(agent)
    await agent(Msg(role="user", name="user", content="hi"))
    for request in model.requests:
        assert [m.role for m in request.messages][:2] == ["system", "user"]
        assert request.messages[0].text == "Plan first."
    assert tool_results(await agent.memory.get())[0].output == "There is no open plan."

    silent = ScriptedModel(["Hello."])
    quiet_agent = ReActAgent("quiet", model=silent)
    PlanNotebook(no_plan_hint=None).attach(quiet_agent)
    await quiet_agent(Msg(role="user", name="user", content="hi"))
    assert [m.role for m in silent.requests[0].messages] == ["user"]


def snapshot(notebook: PlanNotebook) -> dict[str, Any]:
    return json.loads(json.dumps(notebook.state_dict()))


def error_of(response: Any) -> str:
    assert response.is_error, response.text_content
    return response.text_content


def test_each_tool_refuses_bad_input_naming_the_problem_and_changes_nothing() -> None:
    notebook = PlanNotebook()
    empty = snapshot(notebook)
    assert "no open plan" in error_of(notebook.finish_subtask(0, "x"))
    assert "no open plan" in error_of(notebook.revise_plan("add", 0, "x"))
    assert "no open plan" in error_of(notebook.update_subtask_state(0, "in_progress"))
    assert "no open plan" in error_of(notebook.finish_plan("done", "x"))
    assert "needs a non-empty name" in error_of(notebook.create_plan(" ", "d", "o", []))
    assert snapshot(notebook) == empty

    created = notebook.create_plan(
        "p", "d", "o", [SubTaskSpec(name="first"), SubTaskSpec(name="second", description="then this")]
    )
    assert not created.is_error
    assert isinstance(created.structured, dict)
    assert created.structured["name"] == "p"
    before = snapshot(notebook)
    assert "A plan is already open: 'p'" in error_of(notebook.create_plan("q", "d", "o", []))
    assert "Subtask 1 'second' cannot start: subtask 0 'first' is todo" in error_of(
        notebook.update_subtask_state(1, "in_progress")
    )
    assert "is todo, not in progress" in error_of(notebook.finish_subtask(0, "done it"))
    assert (
        error_of(notebook.finish_subtask(2, "x"))
        == "There is no subtask 2: the plan has 2 subtasks, numbered 0 to 1."
    )
    assert "use 0 to 2" in error_of(notebook.revise_plan("add", 3, "late"))
    assert "needs a non-empty name" in error_of(notebook.revise_plan("add", 0, ""))
    assert "new name or description" in error_of(notebook.revise_plan("revise", 0))
    assert "subtasks are open: 0 'first' (todo), 1 'second' (todo)" in error_of(
        notebook.finish_plan("done", "x")
    )
    assert "Give the plan's outcome" in error_of(notebook.finish_plan("abandoned", " "))
    assert snapshot(notebook) == before

    assert not notebook.update_subtask_state(0, "in_progress").is_error
    before = snapshot(notebook)
    assert "is in_progress; only a subtask still to do can be revised" in error_of(
        notebook.revise_plan("revise", 0, "renamed")
    )
    assert "is in_progress and cannot be deleted" in error_of(notebook.revise_plan("delete", 0))
    assert "Give the subtask's outcome" in error_of(notebook.finish_subtask(0, ""))
    assert snapshot(notebook) == before

    assert not notebook.finish_subtask(0, "found it").is_error
    assert "already done; its state is final" in error_of(notebook.update_subtask_state(0, "todo"))
    assert (
        "-> 1. [in_progress] second: then this" in notebook.view_plan().text_content
    )  # the next one started
    assert not notebook.revise_plan("add", 2, "later").is_error
    assert not notebook.revise_plan("delete", 2).is_error
    assert notebook.plan is not None
    assert [s.name for s in notebook.plan.subtasks] == ["first", "second"]
    assert not notebook.finish_plan("abandoned", "changed my mind").is_error
    assert notebook.plan is None
    assert notebook.history[0].state == "abandoned"
    assert "- p [abandoned]: changed my mind" in notebook.view_plan(include_history=True).text_content


async def test_arguments_the_schema_refuses_come_back_as_tool_errors() -> None:
    model = ScriptedModel(
        [
            tool_call(
                "create_plan", name="p", description="d", expected_outcome="o", subtasks=[{"title": "x"}]
            ),
            tool_call("update_subtask_state", subtask_index=0, state="finished"),
            "Gave up.",
        ]
    )
    agent = ReActAgent("planner", model=model)
    notebook = PlanNotebook()
    notebook.attach(agent)
    await agent(Msg(role="user", name="user", content="go"))
    results = tool_results(await agent.memory.get())
    assert [r.is_error for r in results] == [True, True]
    assert "name" in str(results[0].output)
    assert "state" in str(results[1].output)
    assert notebook.plan is None


async def test_the_notebook_is_saved_with_the_agent_and_restored_on_a_fresh_one(plan_run: Any) -> None:
    script = [*plan_run.plan_script()[:4], "I booked the flight; the hotel is next."]
    agent, notebook = plan_run.plan_agent(ScriptedModel(script))
    await agent(Msg(role="user", name="user", content=plan_run.question))
    assert notebook.plan is not None
    assert notebook.plan.current == 1

    state = json.loads(json.dumps(agent.state_dict()))  # as a session store keeps it
    fresh_model = ScriptedModel(
        [tool_call("finish_subtask", subtask_index=1, outcome="Casa Alfama"), "Hotel booked too."]
    )
    fresh, fresh_notebook = plan_run.plan_agent(fresh_model)
    fresh.load_state_dict(state)
    assert fresh_notebook.plan == notebook.plan
    await fresh(Msg(role="user", name="user", content="Go on."))
    assert "-> 1. [in_progress] Book hotel" in system_text(fresh_model.requests[0].messages)
    assert fresh_notebook.plan is not None
    assert [s.state for s in fresh_notebook.plan.subtasks] == ["done", "done", "in_progress"]

    # A state saved before the notebook existed leaves the notebook as it is.
    older = {k: v for k, v in state.items() if k != "parts"}
    fresh.load_state_dict(older)
    assert fresh_notebook.plan is not None


def test_a_second_notebook_on_one_agent_is_refused_naming_the_clash() -> None:
    agent = ReActAgent("planner", model=ScriptedModel([]))
    PlanNotebook().attach(agent)
    tools = agent.toolkit.schemas()
    with pytest.raises(UsageError, match="already has tools named create_plan, revise_plan"):
        PlanNotebook().attach(agent)
    assert agent.toolkit.schemas() == tools
    with pytest.raises(ValueError, match="already saves a state part named 'plan_notebook'"):
        agent.register_state("plan_notebook", PlanNotebook())


def test_every_plan_change_is_a_span_with_the_whole_plan(tmp_path: Path, plan_run: Any) -> None:
    store = tmp_path / "traces.db"
    agentscope.init(store, project="plan", run_name="lisbon")  # opens the store: not on an event loop
    try:
        asyncio.run(plan_run.run_plan())
    finally:
        tracing.shutdown()
    with TraceStore(store) as traces:
        spans, total = traces.list_spans(name=PLAN_SPAN, run_id=None, trace_id=None, limit=100)
        assert total == 7  # the call with a wrong index changed nothing
        details = [traces.get_span(s["span_id"], trace_id=s["trace_id"]) for s in spans]
        tools, _ = traces.list_spans(kind="tool", limit=100)
        by_id = {s["span_id"]: s for s in tools}
    changes = [d["attributes"]["agentscope.plan.change"] for d in details if d is not None]
    assert changes == [
        "create_plan",
        "revise_plan:add",
        "update_subtask_state",
        "finish_subtask",
        "finish_subtask",
        "update_subtask_state",
        "finish_plan",
    ]
    last = details[-1]
    assert last is not None
    assert last["attributes"]["agentscope.plan"]["state"] == "done"
    assert [s["state"] for s in last["attributes"]["agentscope.plan"]["subtasks"]] == [
        "done",
        "done",
        "abandoned",
    ]
    parent = by_id[last["parent_id"]]
    assert parent["name"] == "execute_tool finish_plan"
