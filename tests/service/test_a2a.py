"""A2A on ``agentscope serve``, through the ``a2a-sdk`` client against a real uvicorn server on 127.0.0.1, and the
other direction: a remote A2A agent as a tool of a local agent (:class:`agentscope.tools.A2AAgent`)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_data_parts, get_message_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)

from agentscope.agents import ReActAgent
from agentscope.exceptions import ModelRetry, UsageError
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import A2AAgent, Toolkit
from agentscope.types import ChatResponse

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL (``.../v1``)."""


def lookup(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


def remembering_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Weather questions go through ``lookup``; anything else is answered with every user message so far."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        return ChatResponse(content=[TextBlock(text=f"It is {results[0].output}.")])
    if "weather" in last.text.lower():
        return tool_call("lookup", city=last.text.split()[-1].rstrip("?"))
    heard = " | ".join(m.text for m in messages if m.role == "user")
    return ChatResponse(content=[TextBlock(text=f"You said: {heard}")])


def remembering_agent() -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(lookup)
    return ReActAgent("remote", model=FunctionModel(remembering_model, stream_chunk_chars=4), toolkit=toolkit)


def user_message(text: str, context_id: str = "") -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER, message_id=f"m-{text[:8]}", parts=[Part(text=text)], context_id=context_id
        )
    )


def root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def test_the_a2a_client_reads_the_card_streams_a_task_and_the_context_remembers(
    serving: Serving,
) -> None:
    async with serving(remembering_agent) as base_url, httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, root(base_url)).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http))
        events: list[StreamResponse] = [
            e async for e in client.send_message(user_message("Weather in Paris?"))
        ]

        first = events[0].task
        task_id, context_id = first.id, first.context_id
        assert first.status.state == TaskState.TASK_STATE_SUBMITTED
        steps = [
            data
            for e in events
            if e.HasField("status_update")
            for data in get_data_parts(list(e.status_update.status.message.parts))
        ]
        assert [(s["type"], s["name"]) for s in steps] == [("tool_call", "lookup"), ("tool_result", "lookup")]
        assert json.loads(steps[0]["arguments"]) == {"city": "Paris"}
        assert steps[1]["output"] == "sunny in Paris"
        chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert len(chunks) > 2  # the reply streamed in pieces...
        assert "".join(get_artifact_text(c.artifact) for c in chunks[:-1]) == "It is sunny in Paris."
        assert (chunks[-1].append, chunks[-1].last_chunk) == (False, True)  # ...then replaced by the reply
        assert get_artifact_text(chunks[-1].artifact) == "It is sunny in Paris."
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED

        # the same context is the same session: the agent remembers; a blocking (non-streaming) send this time
        blocking = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        (answer,) = [e async for e in blocking.send_message(user_message("What did I say?", context_id))]
        stored = await client.get_task(GetTaskRequest(id=task_id))

    assert answer.task.context_id == context_id
    assert answer.task.id != task_id
    assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_artifact_text(answer.task.artifacts[0]) == "You said: Weather in Paris? | What did I say?"
    assert card.name == "test-agent"
    assert card.capabilities.streaming
    assert card.supported_interfaces[0].url == f"{root(base_url)}/a2a"
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED
    assert [get_artifact_text(a) for a in stored.artifacts] == ["It is sunny in Paris."]
    assert len(stored.artifacts[0].parts) == 1  # the chunks were replaced, not kept next to the reply


async def test_a_file_part_is_rejected_naming_the_problem(serving: Serving) -> None:
    async with serving(remembering_agent) as base_url, httpx.AsyncClient(timeout=10) as http:
        client = await create_client(
            await A2ACardResolver(http, root(base_url)).get_agent_card(),
            ClientConfig(httpx_client=http, streaming=False),
        )
        request = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id="f1", parts=[Part(url="http://127.0.0.1/x.png")])
        )
        (answer,) = [e async for e in client.send_message(request)]
    assert answer.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "text and data parts only, not url parts" in get_message_text(answer.task.status.message)


async def test_the_card_is_public_and_names_the_bearer_scheme_while_a2a_calls_need_the_key(
    serving: Serving,
) -> None:
    async with serving(remembering_agent, api_keys=["k1"]) as base_url:
        async with httpx.AsyncClient(timeout=10) as anonymous:
            card_response = await anonymous.get(f"{root(base_url)}/.well-known/agent-card.json")
            refused = await anonymous.post(
                f"{root(base_url)}/a2a",
                json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}},
            )
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": "Bearer k1"}) as http:
            card = await A2ACardResolver(http, root(base_url)).get_agent_card()
            client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
            (answer,) = [e async for e in client.send_message(user_message("hello"))]
    assert card_response.status_code == 200
    assert "bearer" in card_response.json()["securitySchemes"]
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"
    assert get_artifact_text(answer.task.artifacts[0]) == "You said: hello"


def delegating_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Passes the user's message to the remote agent's tool, then answers with what it said."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        status = "error" if results[0].is_error else "ok"
        return ChatResponse(content=[TextBlock(text=f"[{status}] {results[0].output}")])
    return tool_call("ask_test_agent", message=last.text)


async def test_a_local_agent_calls_a_served_agent_as_an_a2a_tool_that_keeps_the_context(
    serving: Serving,
) -> None:
    async with serving(remembering_agent, api_keys=["k1"]) as base_url:
        remote = A2AAgent(root(base_url), api_key="k1")
        card = await remote.card()
        toolkit = Toolkit()
        toolkit.register(remote.as_tool())  # named and described by the card
        local = ReActAgent("local", model=FunctionModel(delegating_model), toolkit=toolkit)
        first = await local(Msg(role="user", content="Weather in Oslo?"))
        second = await local(Msg(role="user", content="And what did I ask?"))
    (schema,) = toolkit.schemas()
    assert schema.name == "ask_test_agent"
    assert schema.description.startswith(card.description)
    assert first.text == "[ok] It is sunny in Oslo."
    assert second.text == "[ok] You said: Weather in Oslo? | And what did I ask?"  # one remote conversation
    assert remote.context_id


async def test_an_unreachable_a2a_agent_is_a_tool_error_naming_its_url() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = A2AAgent(f"http://127.0.0.1:{port}").as_tool(name="gone", description="Not there.")
    with pytest.raises(ModelRetry, match=rf"the A2A agent at http://127.0.0.1:{port} could not be reached"):
        await tool("hello")


def test_the_a2a_tool_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(UsageError, match="must start with http:// or https://"):
        A2AAgent("127.0.0.1:8000")


async def test_cancelling_a_task_stops_the_run_and_leaves_the_session_as_it_was(serving: Serving) -> None:
    started = anyio.Event()

    async def slow_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        if messages[-1].text == "slow":
            started.set()
            await anyio.sleep(30)
        return remembering_model(messages, request)

    async with (
        serving(lambda: ReActAgent("remote", model=FunctionModel(slow_model))) as base_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        card = await A2ACardResolver(http, root(base_url)).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False, polling=True))
        (submitted,) = [e async for e in client.send_message(user_message("slow", "ctx-1"))]
        await started.wait()
        cancelled = await client.cancel_task(CancelTaskRequest(id=submitted.task.id))
        blocking = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        (after,) = [e async for e in blocking.send_message(user_message("what now?", "ctx-1"))]
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    # the cancelled turn left nothing in the session
    assert get_artifact_text(after.task.artifacts[0]) == "You said: what now?"
