"""The rollout service over HTTP on 127.0.0.1, driven by agentscope's own OpenAIChatModel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import ContextLengthExceeded
from agentscope.message import Msg
from agentscope.models import ChatResponse, OpenAIChatModel
from agentscope.rl import Turn
from agentscope.rl.rollout import (
    RemoteRolloutServer,
    RolloutHTTPServer,
    RolloutService,
    TorchEngine,
    messages_from_openai,
)

pytestmark = pytest.mark.usefixtures("allow_model_requests")


@pytest.fixture
async def server(memorized_dir: Path, tokenizer: Any) -> AsyncIterator[RolloutHTTPServer]:
    service = RolloutService(TorchEngine(memorized_dir, max_batch=4, max_seq_len=1024), tokenizer)
    async with service, RolloutHTTPServer(service) as server:
        yield server


class Recorder(OpenAIChatModel):
    """OpenAIChatModel that keeps the responses the agent saw."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[ChatResponse] = []

    async def generate(self, *args: Any, **kwargs: Any) -> ChatResponse:
        response = await super().generate(*args, **kwargs)
        self.responses.append(response)
        return response


async def test_an_agent_on_openai_chat_model_is_recorded_over_http(
    server: RolloutHTTPServer, helpers: Any
) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    async with httpx2.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as client:
        sid = (await client.post("/sessions", json={})).json()["session_id"]
        model = Recorder(
            "policy",
            base_url=server.base_url,
            api_key="-",
            default_settings={"temperature": 0.0, "extra_body": {"session_id": sid}},
        )
        async with model:
            agent = ReActAgent("solver", helpers.SYSTEM, model, toolkit=helpers.toolkit())
            reply = await agent(Msg(role="user", content=helpers.QUESTION))
        assert reply.text == "The answer is 42."

        closed = await client.delete(f"/sessions/{sid}")
        turns = [Turn.model_validate(t) for t in closed.json()["turns"]]
        assert len(turns) == 2
        # what the agent's client parsed is exactly what the service recorded
        for response, turn in zip(model.responses, turns, strict=True):
            assert response.prompt_token_ids == turn.prompt_ids
            assert response.completion_token_ids == turn.completion_ids
            assert response.logprobs == pytest.approx(turn.logprobs)
            assert response.policy_version == turn.version_tail == 0
        # the history came back as OpenAI messages and was still recognised: the ids extend, never re-tokenized
        context = turns[0].prompt_ids + turns[0].completion_ids
        assert turns[1].prompt_ids[: len(context)] == context

        assert (await client.delete(f"/sessions/{sid}")).status_code == 404
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "policy"
        stats = (await client.get("/stats")).json()
        assert stats["rollout/incremental_fraction"] == 0.5
        bad = await client.post("/v1/chat/completions", content=b"not json")
        assert bad.status_code == 400
        for body, problem in [
            (
                {"messages": [{"role": "wizard", "content": "x"}]},
                "messages[0]: unknown message role 'wizard'",
            ),
            ({"messages": [], "temperature": "hot"}, "temperature must be a number, got 'hot'"),
        ]:
            refused = await client.post("/v1/chat/completions", json=body)
            assert (refused.status_code, refused.json()["error"]["message"]) == (400, problem)


async def test_streaming_carries_the_rl_fields(server: RolloutHTTPServer, helpers: Any) -> None:
    model = OpenAIChatModel(
        "policy",
        base_url=server.base_url,
        api_key="-",
        default_settings={"extra_body": {"session_id": "s-1"}},
    )
    async with model:
        events = [
            e
            async for e in model.stream(
                [Msg(role="system", content=helpers.SYSTEM), Msg(role="user", content=helpers.QUESTION)],
                tools=[helpers.CALCULATOR],
                settings={"temperature": 0.0},
            )
        ]
    final = events[-1]
    assert isinstance(final, ChatResponse)
    assert final.tool_calls[0].input == {"expression": "17 + 25"}
    assert final.finish_reason == "tool_calls"
    assert final.prompt_token_ids
    assert final.completion_token_ids
    assert final.logprobs
    assert len(final.logprobs) == len(final.completion_token_ids)
    assert final.policy_version == 0
    async with httpx2.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as client:
        turns = (await client.delete("/sessions/s-1")).json()["turns"]  # opened on first use
    assert turns[0]["completion_ids"] == final.completion_token_ids


def test_openai_messages_convert_back_to_msgs() -> None:
    msgs = messages_from_openai(
        [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{oops"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "Error: bad"},
            {"role": "user", "content": "next"},
        ]
    )
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "user"]
    assert msgs[1].text == "hi\n[image]"
    calls = msgs[2].tool_calls
    assert (calls[0].input, calls[1].raw_input) == ({"x": 1}, "{oops")
    results = msgs[3].content
    assert isinstance(results, list)
    assert [(r.id, r.name) for r in results if r.type == "tool_result"] == [("a", "f"), ("b", "g")]
    with pytest.raises(ValueError, match="role"):
        messages_from_openai([{"role": "wizard", "content": "x"}])


async def test_a_prompt_longer_than_the_context_is_context_length_exceeded_in_process_and_over_http(
    memorized_dir: Path, tokenizer: Any, helpers: Any
) -> None:
    service = RolloutService(TorchEngine(memorized_dir, max_batch=2, max_seq_len=64), tokenizer)
    long_question = [Msg(role="user", content="What is 6 times 7? " * 40)]
    async with service, RolloutHTTPServer(service) as server:
        with pytest.raises(ContextLengthExceeded, match="leaves no room to generate"):
            await service.chat(None, long_question)
        async with httpx2.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as client:
            answer = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "policy",
                    "messages": [{"role": "user", "content": "What is 6 times 7? " * 40}],
                },
            )
        assert answer.status_code == 400  # the request's fault, as OpenAI answers it
        assert answer.json()["error"]["code"] == "context_length_exceeded"
        async with RemoteRolloutServer(server.base_url.removesuffix("/v1")) as remote:
            with pytest.raises(ContextLengthExceeded, match="leaves no room to generate"):
                await remote.chat(remote.open_session(), long_question)
            # a prompt that fits is still answered
            short = await remote.chat(None, [Msg(role="user", content=helpers.QUESTION)])
            assert short.completion_token_ids


async def test_sessions_closed_by_a_remote_client_are_dropped_on_the_server_together(
    server: RolloutHTTPServer, helpers: Any
) -> None:
    root = server.base_url.removesuffix("/v1")
    question = [Msg(role="user", content=helpers.QUESTION)]
    async with RemoteRolloutServer(root) as remote:
        sids = [remote.open_session() for _ in range(3)]
        for sid in sids:
            await remote.chat(sid, question)
        assert set(sids) <= set(server.service.sessions)
        drops: list[httpx2.Request] = []

        async def record(request: httpx2.Request) -> None:
            drops.append(request)

        remote._client.event_hooks["request"].append(record)  # pyright: ignore[reportPrivateUsage]
        turns = [remote.close_session(sid) for sid in sids]
        assert all(len(t) == 1 for t in turns)  # the client's own record: no round trip
        with anyio.fail_after(10):
            while set(sids) & set(server.service.sessions):  # noqa: ASYNC110 - polling the server's state
                await anyio.sleep(0.05)
        # one request for the three, which does not send their turns back
        assert [(r.method, r.url.path) for r in drops] == [("POST", "/sessions/drop")]
        await remote.drop_session("never-opened")  # best effort: a session the server does not hold
    # closing the client sent the drop still waiting
    assert [(r.method, r.url.path) for r in drops] == [("POST", "/sessions/drop")] * 2
    assert json.loads(drops[-1].content) == {"session_ids": ["never-opened"]}
    async with httpx2.AsyncClient(base_url=root) as client:
        refused = await client.post("/sessions/drop", json={"session_ids": "s-1"})
        assert refused.status_code == 400
        assert "session_ids" in refused.json()["error"]["message"]
        assert (await client.post("/sessions/drop", json={"session_ids": ["x"]})).json() == {"dropped": 0}


async def test_a_server_without_the_batch_route_gets_one_delete_per_session() -> None:
    """A rollout server from before ``POST /sessions/drop`` (it answers 405 there): the sessions still go."""
    from fastapi import FastAPI

    from agentscope._uvicorn import BackgroundServer

    deleted: list[str] = []
    old = FastAPI()

    @old.delete("/sessions/{session_id}")
    async def close(session_id: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        deleted.append(session_id)
        return {"session_id": session_id, "turns": []}

    server = BackgroundServer(old, name="old rollout server")
    await anyio.to_thread.run_sync(server.start)
    try:
        remote = await anyio.to_thread.run_sync(  # its client reads the CA store
            RemoteRolloutServer, f"http://127.0.0.1:{server.port}"
        )
        for sid in ("a", "b"):
            remote.close_session(remote.open_session(sid))
        await remote.aclose()  # sends what waits
    finally:
        await anyio.to_thread.run_sync(server.stop)
    assert deleted == ["a", "b"]
