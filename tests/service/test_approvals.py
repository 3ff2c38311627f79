"""Human approval over HTTP: a reply that pauses for a tool call's approval, and the client's decision (approve,
edit the arguments, reject with a reason) in a later request on the session, also after a server restart; through
the real ``openai`` client against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import httpx2
import openai
import pytest

from agentscope.agents import ReActAgent
from agentscope.message import ContentBlock, Msg, ToolResultBlock, ToolUseBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit, require_approval
from agentscope.types import ChatResponse

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""

SESSION = {"X-Session-Id": "s-1"}


class Files:
    """An agent that removes files only with a human's approval; records what was removed and what its model saw."""

    def __init__(self) -> None:
        self.removed: list[str] = []
        self.seen_results: list[str] = []

    def model(self, messages: list[Msg], request: ModelRequest) -> ScriptItem:
        """``remove P1 P2...`` -> one ``remove`` call per path (ids r1, r2... across the conversation); after the
        results, an answer that repeats them; any other user message is echoed with the results before it."""
        last = messages[-1]
        if last.role == "user" and last.text.startswith("remove "):
            done = sum(len(m.blocks_of(ToolUseBlock)) for m in messages)
            paths = last.text.split()[1:]
            calls: list[ContentBlock] = [
                tool_call("remove", _id=f"r{done + i}", path=p) for i, p in enumerate(paths, start=1)
            ]
            return ChatResponse(content=calls)
        asked = max(i for i, m in enumerate(messages) if m.role == "user" and m.text.startswith("remove "))
        results = sorted(
            (r for m in messages[asked:] for r in m.blocks_of(ToolResultBlock)), key=lambda r: r.id
        )
        self.seen_results.extend(str(r.output) for r in results)
        answer = " | ".join(f"{r.id}: {r.output}" for r in results)
        return f"{last.text} -> {answer}" if last.role == "user" else answer

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
        return ReActAgent("files", model=FunctionModel(self.model, stream_chunk_chars=4), toolkit=toolkit)


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def decide(*approvals: dict[str, Any]) -> dict[str, Any]:
    return {"agentscope": {"approvals": list(approvals)}}


def extension(answer: Any) -> dict[str, Any]:
    return cast("dict[str, Any]", (answer.choices[0].message.model_extra or {})["agentscope"])


async def pause(client: openai.AsyncOpenAI, text: str = "remove a.txt") -> Any:
    return await client.chat.completions.create(model="m", messages=ask(text), extra_headers=SESSION)


async def test_a_paused_reply_says_what_waits_and_an_approval_runs_the_call_once(serving: Serving) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        paused = await pause(client)
        assert files.removed == []
        done = await client.chat.completions.create(
            model="m",
            messages=[],
            extra_headers=SESSION,
            extra_body=decide({"call_id": "r1", "action": "approve"}),
        )
        with pytest.raises(openai.BadRequestError, match="has no tool call waiting for approval"):
            await client.chat.completions.create(
                model="m",
                messages=[],
                extra_headers=SESSION,
                extra_body=decide({"call_id": "r1", "action": "approve"}),
            )
    choice = paused.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == "I need approval before running: remove (removing a.txt)."
    assert not choice.message.tool_calls
    assert extension(paused)["approval_required"] == [
        {"call_id": "r1", "name": "remove", "arguments": {"path": "a.txt"}, "reason": "removing a.txt"}
    ]
    assert [(s["type"], s["id"]) for s in extension(paused)["steps"]] == [("tool_call", "r1")]

    assert done.choices[0].message.content == "r1: removed a.txt"
    assert done.choices[0].finish_reason == "stop"
    assert "approval_required" not in extension(done)
    assert [(s["type"], s["id"], s["output"]) for s in extension(done)["steps"]] == [
        ("tool_result", "r1", "removed a.txt")
    ]
    assert files.removed == ["a.txt"]  # once: a second approval finds nothing waiting


async def test_edited_arguments_run_instead_and_the_model_is_told(serving: Serving) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        await pause(client)
        done = await client.chat.completions.create(
            model="m",
            messages=[],
            extra_headers=SESSION,
            extra_body=decide({"call_id": "r1", "action": "edit", "arguments": {"path": "a.txt.bak"}}),
        )
    assert files.removed == ["a.txt.bak"]
    assert done.choices[0].message.content == (
        'r1: [A human changed the arguments to {"path": "a.txt.bak"}]\nremoved a.txt.bak'
    )


async def test_a_rejected_call_never_runs_and_the_model_sees_the_reason(serving: Serving) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        await pause(client, "remove a.txt b.txt")
        done = await client.chat.completions.create(
            model="m",
            messages=ask("thanks"),  # a new user message, after the decisions
            extra_headers=SESSION,
            extra_body=decide(
                {"call_id": "r1", "action": "reject", "reason": "a.txt is the only copy"},
                {"call_id": "r2", "action": "approve"},
            ),
        )
    assert files.removed == ["b.txt"]
    assert "A human refused this call: a.txt is the only copy" in files.seen_results
    assert done.choices[0].message.content == (
        "thanks -> r1: A human refused this call: a.txt is the only copy | r2: removed b.txt"
    )
    assert [(s["id"], s["is_error"]) for s in extension(done)["steps"]] == [("r1", True), ("r2", False)]


async def test_a_paused_session_is_decided_after_a_server_restart(serving: Serving) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        await pause(client)
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        done = await client.chat.completions.create(
            model="m",
            messages=[],
            extra_headers=SESSION,
            extra_body=decide({"call_id": "r1", "action": "approve"}),
        )
        async with httpx2.AsyncClient(base_url=base_url) as http:
            sessions = (await http.get("/sessions")).json()
    assert done.choices[0].message.content == "r1: removed a.txt"
    assert files.removed == ["a.txt"]
    assert [(s["id"], s["turns"]) for s in sessions["data"]] == [("s-1", 2)]


async def read_stream(stream: Any) -> tuple[str, dict[str, list[Any]], list[str]]:
    text: list[str] = []
    extra: dict[str, list[Any]] = {"steps": [], "approval_required": []}
    finish: list[str] = []
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            sent = cast("dict[str, list[Any]]", (choice.delta.model_extra or {}).get("agentscope") or {})
            for key, items in sent.items():
                extra[key].extend(items)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    return "".join(text), extra, finish


async def test_streaming_a_pause_and_its_decision(serving: Serving) -> None:
    files = Files()
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        paused = await read_stream(
            await client.chat.completions.create(
                model="m", messages=ask("remove a.txt"), extra_headers=SESSION, stream=True
            )
        )
        with pytest.raises(
            openai.BadRequestError
        ) as refused:  # refused with a status, before the stream starts
            await client.chat.completions.create(
                model="m",
                messages=[],
                extra_headers=SESSION,
                stream=True,
                extra_body=decide({"call_id": "r9", "action": "approve"}),
            )
        done = await read_stream(
            await client.chat.completions.create(
                model="m",
                messages=[],
                extra_headers=SESSION,
                stream=True,
                extra_body=decide({"call_id": "r1", "action": "approve"}),
            )
        )
    text, extra, finish = paused
    assert text == "I need approval before running: remove (removing a.txt)."
    assert extra["approval_required"] == [
        {"call_id": "r1", "name": "remove", "arguments": {"path": "a.txt"}, "reason": "removing a.txt"}
    ]
    assert [(s["type"], s["id"]) for s in extra["steps"]] == [("tool_call", "r1")]
    assert finish == ["stop"]
    assert "no tool call 'r9' waits for approval" in refused.value.message
    text, extra, finish = done
    assert text == "r1: removed a.txt"
    assert [(s["type"], s["id"]) for s in extra["steps"]] == [("tool_result", "r1")]
    assert extra["approval_required"] == []
    assert finish == ["stop"]
    assert files.removed == ["a.txt"]


async def test_bad_decisions_are_400s_naming_the_problem_and_leave_the_session_paused(
    serving: Serving,
) -> None:
    files = Files()
    refusals: list[openai.BadRequestError] = []
    async with (
        serving(files.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        with pytest.raises(openai.BadRequestError) as nothing_waits:
            await client.chat.completions.create(
                model="m",
                messages=[],
                extra_headers=SESSION,
                extra_body=decide({"call_id": "r1", "action": "approve"}),
            )
        await pause(client)
        bodies: list[dict[str, Any]] = [
            decide({"call_id": "nope", "action": "approve"}),
            decide({"call_id": "r1", "action": "edit", "arguments": {"path": "a.txt", "force": True}}),
            decide({"call_id": "r1", "action": "edit", "arguments": {"path": 3}}),
            decide({"call_id": "r1", "action": "edit"}),
            decide({"call_id": "r1", "action": "maybe"}),
            {"agentscope": {"approval": []}},
        ]
        for body in bodies:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model="m", messages=[], extra_headers=SESSION, extra_body=body
                )
            refusals.append(refused.value)
        with pytest.raises(openai.BadRequestError) as stateless:
            await client.chat.completions.create(
                model="m", messages=[], extra_body=decide({"call_id": "r1", "action": "approve"})
            )
        with pytest.raises(openai.BadRequestError) as pause_without_session:
            await client.chat.completions.create(model="m", messages=ask("remove c.txt"))
        done = await client.chat.completions.create(
            model="m",
            messages=[],
            extra_headers=SESSION,
            extra_body=decide({"call_id": "r1", "action": "approve"}),
        )
    assert "has no tool call waiting for approval" in nothing_waits.value.message
    messages = [r.message for r in refusals]
    assert all(r.status_code == 400 for r in refusals)
    assert "no tool call 'nope' waits for approval (waiting: 'r1')" in messages[0]
    assert "the edited arguments of call 'r1' do not fit" in messages[1]
    assert "unexpected argument 'force'" in messages[1]
    assert "path: Input should be a valid string" in messages[2]
    assert "agentscope.approvals.0" in messages[3]
    assert "action 'edit' of call 'r1' needs the new 'arguments'" in messages[3]
    assert "agentscope.approvals.0.action" in messages[4]
    assert "agentscope.approval: Extra inputs are not permitted" in messages[5]
    assert [r.code for r in refusals] == ["invalid_approvals"] * 3 + ["invalid_agentscope_extension"] * 3
    assert stateless.value.code == "session_required"
    assert "X-Session-Id" in stateless.value.message
    assert pause_without_session.value.code == "session_required"
    assert "remove (call r1)" in pause_without_session.value.message
    # None of it touched the paused session: the call still waits, and runs once when approved.
    assert done.choices[0].message.content == "r1: removed a.txt"
    assert files.removed == ["a.txt"]
