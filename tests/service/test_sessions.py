"""Sessions: memory kept across requests and server restarts, requests on one session queued, list and delete,
and a client that goes away mid-stream cancelling the agent's run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
import pytest

from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.service._store import SessionStore
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""


class Recorder:
    """A model that answers ``reply <n>`` and records what each call saw and how many calls overlapped."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.seen: list[list[str]] = []
        self.active = 0
        self.most_active = 0

    async def __call__(self, messages: list[Msg], request: ModelRequest) -> ScriptItem:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await anyio.sleep(self.delay_s)
            self.seen.append([f"{m.role}:{m.text}" for m in messages if m.role != "system"])
            return f"reply to {messages[-1].text}"
        finally:
            self.active -= 1

    def factory(self) -> ReActAgent:
        return ReActAgent("recorder", model=FunctionModel(self))


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_a_session_keeps_the_conversation_across_requests_and_a_restart(serving: Serving) -> None:
    model = Recorder()
    async with (
        serving(model.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        first = await client.chat.completions.with_raw_response.create(
            model="m", messages=ask("one"), extra_headers={"X-Session-Id": "s-1"}
        )
        # The client resends the whole history; with a session only the last user message counts.
        await client.chat.completions.create(
            model="m",
            messages=[*ask("one"), {"role": "assistant", "content": "reply to one"}, *ask("two")],
            extra_headers={"X-Session-Id": "s-1"},
        )
    assert first.headers["x-session-id"] == "s-1"
    async with (
        serving(model.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        answer = await client.chat.completions.create(
            model="m", messages=ask("three"), extra_headers={"X-Session-Id": "s-1"}
        )
    assert answer.choices[0].message.content == "reply to three"
    assert model.seen[-1] == [
        "user:one",
        "assistant:reply to one",
        "user:two",
        "assistant:reply to two",
        "user:three",
    ]


async def test_the_openai_user_field_names_the_session_and_sessions_can_be_listed_and_deleted(
    serving: Serving,
) -> None:
    model = Recorder()
    async with (
        serving(model.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):
        for user, text in (("alice", "a1"), ("bob", "b1"), ("alice", "a2")):
            await client.chat.completions.create(model="m", messages=ask(text), user=user)
        async with httpx2.AsyncClient(base_url=base_url) as http:
            listed = (await http.get("/sessions")).json()
            paged = (await http.get("/sessions", params={"limit": 1})).json()
            rest = (await http.get("/sessions", params={"after": paged["last_id"]})).json()
            deleted = await http.delete("/sessions/alice")
            again = await http.delete("/sessions/alice")
            after = (await http.get("/sessions")).json()
        await client.chat.completions.create(model="m", messages=ask("a3"), user="alice")
    assert model.seen[2] == ["user:a1", "assistant:reply to a1", "user:a2"]
    assert [(s["id"], s["turns"]) for s in listed["data"]] == [("alice", 2), ("bob", 1)]
    assert listed["object"] == "list"
    assert listed["has_more"] is False
    assert [s["id"] for s in paged["data"]] == ["alice"]
    assert paged["has_more"] is True
    assert [s["id"] for s in rest["data"]] == ["bob"]
    assert deleted.status_code == 200
    assert deleted.json() == {
        "id": "alice",
        "object": "session.deleted",
        "deleted": True,
    }
    assert again.status_code == 404
    assert again.json()["error"]["type"] == "not_found_error"
    assert "alice" in again.json()["error"]["message"]
    assert [s["id"] for s in after["data"]] == ["bob"]
    assert model.seen[-1] == ["user:a3"]  # a deleted session starts afresh


async def test_two_requests_on_one_session_queue_and_never_interleave(serving: Serving) -> None:
    model = Recorder(delay_s=0.1)
    async with (
        serving(model.factory) as base_url,
        openai.AsyncOpenAI(base_url=base_url, api_key="-") as client,
    ):

        async def send(text: str, session: str) -> None:
            await client.chat.completions.create(
                model="m", messages=ask(text), extra_headers={"X-Session-Id": session}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "first", "shared")
            tg.start_soon(send, "second", "shared")
        assert model.most_active == 1  # queued
        # Requests on different sessions do run at once.
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "x", "other-1")
            tg.start_soon(send, "y", "other-2")
        assert model.most_active == 2
    first, second = sorted(model.seen[:2], key=len)
    assert len(first) == 1
    assert len(second) == 3
    assert second[:2] == [first[0], f"assistant:reply to {first[0].removeprefix('user:')}"]


async def test_a_client_leaving_mid_stream_cancels_the_run_and_stores_nothing(serving: Serving) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def slow_stream(messages: list[Msg], request: ModelRequest) -> AsyncIterator[str]:
        yield "Let me think"
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        yield "never sent"

    def factory() -> ReActAgent:
        return ReActAgent("slow", model=FunctionModel(stream_function=slow_stream))

    async with serving(factory) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
        body = {"model": "m", "messages": ask("hello"), "stream": True}
        async with http.stream(
            "POST", "/chat/completions", json=body, headers={"X-Session-Id": "gone"}
        ) as response:
            async for line in response.aiter_lines():
                if "Let me think" in line:
                    break
        # Leaving the block closed the connection mid-stream.
        with anyio.fail_after(5):
            await cancelled.wait()
        assert started.is_set()
        sessions = (await http.get("/sessions")).json()
    assert sessions["data"] == []  # the cancelled turn was not stored


async def test_a_client_leaving_before_a_json_answer_cancels_the_run(serving: Serving) -> None:
    cancelled = anyio.Event()
    started = anyio.Event()

    async def slow(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "never"

    def factory() -> ReActAgent:
        return ReActAgent("slow", model=FunctionModel(slow))

    async with serving(factory) as base_url:
        async with httpx2.AsyncClient(base_url=base_url) as http, anyio.create_task_group() as tg:
            tg.start_soon(partial(http.post, "/chat/completions", json={"model": "m", "messages": ask("hi")}))
            with anyio.fail_after(5):
                await started.wait()
            tg.cancel_scope.cancel()  # the client gives up: its connection closes
        with anyio.fail_after(5):
            await cancelled.wait()


@pytest.mark.parametrize("session", ["", "x" * 257, "bad\nid"])
async def test_a_malformed_session_id_is_a_400(serving: Serving, session: str) -> None:
    async with serving(Recorder().factory) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/chat/completions", json={"model": "m", "messages": ask("hi"), "user": session}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_session_id"


async def test_two_servers_on_one_sessions_file_keep_a_session_s_requests_apart(serving: Serving) -> None:
    # Two servers (as `--workers 2` runs two processes) share the file; the session's lease serialises them.
    model = Recorder(delay_s=0.1)
    async with (
        serving(model.factory) as one,
        serving(model.factory) as two,
        openai.AsyncOpenAI(base_url=one, api_key="-") as client_one,
        openai.AsyncOpenAI(base_url=two, api_key="-") as client_two,
    ):

        async def send(client: openai.AsyncOpenAI, text: str) -> None:
            await client.chat.completions.create(
                model="m", messages=ask(text), extra_headers={"X-Session-Id": "s"}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, client_one, "first")
            tg.start_soon(send, client_two, "second")
    assert model.most_active == 1
    assert sorted(len(seen) for seen in model.seen) == [1, 3]


async def test_a_lease_left_by_a_dead_process_expires(sessions_db: Path) -> None:
    store = SessionStore(sessions_db)
    try:
        assert await store.try_acquire("s", "dead-process", 0.2) == (True, None)
        assert await store.try_acquire("s", "live-process", 30) == (False, None)
        assert await store.delete_session("s", "live-process") is None  # held: not deleted under a request
        await anyio.sleep(0.25)
        assert await store.try_acquire("s", "live-process", 30) == (True, None)
        await store.release("s", "live-process", {"memory": []})
        assert await store.try_acquire("s", "other", 30) == (True, {"memory": []})
        await store.release("s", "other", None)  # a failed request leaves the state as it was
        sessions, more = await store.list_sessions()
        assert [(s.id, s.turns) for s in sessions] == [("s", 1)]
        assert not more
    finally:
        await store.aclose()


async def test_a_request_longer_than_its_lease_keeps_the_session_by_renewing_it(sessions_db: Path) -> None:
    from agentscope.service import AgentService, ServeConfig

    running = 0
    most = 0

    async def slow(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.6)  # twice the lease: without renewal the other service would take the session
        running -= 1
        return "ok"

    def factory() -> ReActAgent:
        return ReActAgent("slow", model=FunctionModel(slow))

    config = ServeConfig(sessions_db=sessions_db, session_lease_s=0.3)
    first, second = AgentService(factory, config), AgentService(factory, config)  # two processes' worth

    async def turn(service: AgentService) -> None:
        async with service.open_agent("long") as agent:
            await agent(Msg(role="user", name="user", content="hi"))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(turn, first)
            await anyio.sleep(0.1)
            tg.start_soon(turn, second)
    finally:
        await first.aclose()
        await second.aclose()
    assert most == 1
    store = SessionStore(sessions_db)
    try:
        state = await store.get_state("long")
    finally:
        await store.aclose()
    assert state is not None
    assert [m["role"] for m in state["memory"]["messages"]] == ["user", "assistant"] * 2
