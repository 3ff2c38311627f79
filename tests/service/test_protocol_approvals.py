"""Human approval over A2A (the task's ``input-required`` state) and AG-UI (the run's ``interrupt`` outcome and
``resume``), each through its protocol's own client or models against a real uvicorn server on 127.0.0.1, with the
decision taken after a server restart."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import httpx2
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_data_parts, get_message_text, new_data_part
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, StreamResponse, TaskState
from a2a.utils.errors import TaskNotFoundError
from ag_ui.core import (
    BaseEvent,
    Event,
    ResumeEntry,
    RunAgentInput,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    ToolCallResultEvent,
    UserMessage,
)
from ag_ui.core import Message as AgUiMessage
from pydantic import TypeAdapter

from agentscope.agents import ReActAgent
from agentscope.message import ContentBlock, Msg, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit, require_approval
from agentscope.types import ChatResponse

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL (``.../v1``)."""

EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


class Files:
    """An agent that removes files only with a human's approval, and records what it removed."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    @staticmethod
    def model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        """``remove P1 P2...`` -> one ``remove`` call per path (ids r1, r2...); after the results, an answer that
        lists them."""
        last = messages[-1]
        if last.role == "user" and last.text.startswith("remove "):
            calls: list[ContentBlock] = [
                tool_call("remove", _id=f"r{i}", path=p) for i, p in enumerate(last.text.split()[1:], start=1)
            ]
            return ChatResponse(content=calls)
        results = sorted((r for m in messages for r in m.blocks_of(ToolResultBlock)), key=lambda r: r.id)
        return " | ".join(f"{r.id}: {r.output}" for r in results)

    def factory(self) -> ReActAgent:
        removed = self.removed

        def remove(path: str) -> str:
            """Remove a file.

            Args:
                path: The file.
            """
            require_approval(f"removing {path}")
            removed.append(path)
            return f"removed {path}"

        toolkit = Toolkit()
        toolkit.register(remove)
        return ReActAgent("files", model=FunctionModel(self.model), toolkit=toolkit)


# ---------------------------------------------------------------------- AG-UI


def run_input(
    thread: str, text: str | None = None, resume: list[ResumeEntry] | None = None
) -> dict[str, Any]:
    messages: list[AgUiMessage] = [UserMessage(id="u1", content=text)] if text is not None else []
    body = RunAgentInput(thread_id=thread, run_id="run", messages=messages, resume=resume)
    return body.model_dump(mode="json", by_alias=True, exclude_none=True)


async def agui(base_url: str, body: dict[str, Any]) -> list[BaseEvent]:
    async with (
        httpx2.AsyncClient(base_url=base_url.removesuffix("/v1"), timeout=10) as http,
        http.stream("POST", "/agui", json=body, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        raw = "".join([part async for part in response.aiter_text()])
    return [EVENTS.validate_json(block.removeprefix("data: ")) for block in raw.split("\n\n") if block]


async def test_an_ag_ui_run_that_waits_for_approval_ends_in_interrupts_and_resumes_after_a_restart(
    serving: Serving,
) -> None:
    files = Files()
    async with serving(files.factory) as base_url:
        paused = await agui(base_url, run_input("t-1", "remove a.txt b.txt"))
    finished = paused[-1]
    assert isinstance(finished, RunFinishedEvent)
    assert isinstance(finished.outcome, RunFinishedInterruptOutcome)
    interrupts = finished.outcome.interrupts
    assert [(i.id, i.tool_call_id, i.reason, i.message) for i in interrupts] == [
        ("r1", "r1", "tool_approval", "removing a.txt"),
        ("r2", "r2", "tool_approval", "removing b.txt"),
    ]
    assert interrupts[0].metadata == {"tool": "remove", "arguments": {"path": "a.txt"}}
    assert interrupts[0].response_schema is not None
    assert files.removed == []

    resume = [
        ResumeEntry(
            interrupt_id="r1", status="resolved", payload={"action": "edit", "arguments": {"path": "a.bak"}}
        ),
        ResumeEntry(interrupt_id="r2", status="cancelled"),
    ]
    async with serving(files.factory) as base_url:  # a new server on the same session file
        resumed = await agui(base_url, run_input("t-1", resume=resume))
    results = {e.tool_call_id: e.content for e in resumed if isinstance(e, ToolCallResultEvent)}
    assert isinstance(results["r1"], str)
    assert results["r1"].endswith("removed a.bak")
    assert results["r2"] == "A human refused this call."
    assert files.removed == ["a.bak"]
    last = resumed[-1]
    assert isinstance(last, RunFinishedEvent)
    assert last.outcome is None


async def test_an_ag_ui_resume_that_does_not_apply_is_a_400_and_the_calls_still_wait(
    serving: Serving,
) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        httpx2.AsyncClient(base_url=base_url.removesuffix("/v1")) as http,
    ):
        await agui(base_url, run_input("t-2", "remove a.txt"))
        unknown = await http.post(
            "/agui", json=run_input("t-2", resume=[ResumeEntry(interrupt_id="zz", status="resolved")])
        )
        not_a_decision = await http.post(
            "/agui",
            json=run_input("t-2", resume=[ResumeEntry(interrupt_id="r1", status="resolved", payload="yes")]),
        )
        bad_action = await http.post(
            "/agui",
            json=run_input(
                "t-2", resume=[ResumeEntry(interrupt_id="r1", status="resolved", payload={"action": "maybe"})]
            ),
        )
        approved = await agui(
            base_url, run_input("t-2", resume=[ResumeEntry(interrupt_id="r1", status="resolved")])
        )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "invalid_resume")
    assert "zz" in unknown.json()["error"]["message"]
    assert (not_a_decision.status_code, not_a_decision.json()["error"]["code"]) == (400, "invalid_resume")
    assert "'r1'" in not_a_decision.json()["error"]["message"]
    assert (bad_action.status_code, bad_action.json()["error"]["code"]) == (400, "invalid_resume")
    assert "resume.0.action" in bad_action.json()["error"]["message"]
    assert files.removed == ["a.txt"]  # approved (no payload) after the refusals changed nothing
    assert any(isinstance(e, ToolCallResultEvent) and e.content == "removed a.txt" for e in approved)


# ---------------------------------------------------------------------- A2A


def message(*parts: Part, context_id: str = "", task_id: str = "") -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER,
            message_id=f"m-{id(parts)}",
            parts=list(parts),
            context_id=context_id,
            task_id=task_id,
        )
    )


async def test_an_a2a_task_that_waits_for_approval_is_input_required_and_continues_after_a_restart(
    serving: Serving,
) -> None:
    files = Files()
    async with serving(files.factory) as base_url, httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, base_url.removesuffix("/v1")).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http))
        events: list[StreamResponse] = [
            e async for e in client.send_message(message(Part(text="remove a.txt b.txt"), context_id="ctx-1"))
        ]
    paused = events[-1].status_update
    task_id = paused.task_id
    assert paused.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert "removing a.txt" in get_message_text(paused.status.message)
    (waiting,) = get_data_parts(list(paused.status.message.parts))
    assert [(c["call_id"], c["name"], c["arguments"]) for c in waiting["approval_required"]] == [
        ("r1", "remove", {"path": "a.txt"}),
        ("r2", "remove", {"path": "b.txt"}),
    ]
    assert files.removed == []

    decisions = {
        "approvals": [
            {"call_id": "r1", "action": "approve"},
            {"call_id": "r2", "action": "reject", "reason": "keep b"},
        ]
    }
    async with serving(files.factory) as base_url, httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, base_url.removesuffix("/v1")).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        stored = await client.get_task(GetTaskRequest(id=task_id))  # tasks live in the session file
        bad = [
            e
            async for e in client.send_message(
                message(
                    new_data_part({"approvals": [{"call_id": "r9", "action": "approve"}]}), context_id="ctx-1"
                )
            )
        ]
        (done,) = [  # in the paused task itself, which the new server found in the session file
            e
            async for e in client.send_message(
                message(new_data_part(decisions), context_id="ctx-1", task_id=task_id)
            )
        ]
    assert stored.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert bad[-1].task.status.state == TaskState.TASK_STATE_REJECTED
    assert "r9" in get_message_text(bad[-1].task.status.message)
    assert done.task.id == task_id
    assert done.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert (
        get_artifact_text(done.task.artifacts[0])
        == "r1: removed a.txt | r2: A human refused this call: keep b"
    )
    assert files.removed == ["a.txt"]


async def test_a_decision_in_the_paused_a2a_task_itself_continues_that_task(serving: Serving) -> None:
    files = Files()
    async with serving(files.factory) as base_url, httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, base_url.removesuffix("/v1")).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        (paused,) = [
            e async for e in client.send_message(message(Part(text="remove a.txt"), context_id="ctx-2"))
        ]
        task = paused.task
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        malformed = {"approvals": [{"call_id": "r1", "action": "edit"}]}  # edit without arguments
        (still,) = [
            e
            async for e in client.send_message(
                message(new_data_part(malformed), context_id=task.context_id, task_id=task.id)
            )
        ]
        decided = {"approvals": [{"call_id": "r1", "action": "edit", "arguments": {"path": "c.txt"}}]}
        (done,) = [
            e
            async for e in client.send_message(
                message(new_data_part(decided), context_id=task.context_id, task_id=task.id)
            )
        ]
    assert still.task.id == task.id
    assert still.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert "approvals.0" in get_message_text(still.task.status.message)
    assert done.task.id == task.id
    assert done.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert files.removed == ["c.txt"]


async def test_deleting_a_session_deletes_its_a2a_tasks(serving: Serving) -> None:
    files = Files()
    async with serving(files.factory) as base_url, httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, base_url.removesuffix("/v1")).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        (paused,) = [
            e async for e in client.send_message(message(Part(text="remove a.txt"), context_id="ctx-3"))
        ]
        kept = await client.get_task(GetTaskRequest(id=paused.task.id))
        deleted = await http.delete(f"{base_url}/sessions/ctx-3")
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id=paused.task.id))
    assert kept.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert deleted.status_code == 200
