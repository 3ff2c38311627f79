"""AG-UI on ``agentscope serve``: a ``RunAgentInput`` posted to a real uvicorn server on 127.0.0.1, every event of
the answer validated with ag-ui-protocol's own event models."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    Event,
    ReasoningMessageContentEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from pydantic import TypeAdapter

from agentscope.agents import ReActAgent
from agentscope.exceptions import ModelResponseError
from agentscope.message import Msg, TextBlock, ThinkingBlock, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit
from agentscope.types import ChatResponse

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL (``.../v1``)."""

EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


def lookup(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


def chatty_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Says what it will do, calls ``lookup``, answers from its result; other questions get every user message."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        return ChatResponse(content=[TextBlock(text=f"It is {results[0].output}.")])
    if "weather" in last.text.lower():
        return [TextBlock(text="Let me look."), tool_call("lookup", city=last.text.split()[-1].rstrip("?"))]
    heard = " | ".join(m.text for m in messages if m.role == "user")
    return ChatResponse(content=[TextBlock(text=f"You said: {heard}")])


def chatty_agent() -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(lookup)
    return ReActAgent("ui", model=FunctionModel(chatty_model, stream_chunk_chars=4), toolkit=toolkit)


def run_input(thread: str, *messages: Any) -> dict[str, Any]:
    """A RunAgentInput on the wire (camelCase), built with the SDK's model."""
    body = RunAgentInput(
        thread_id=thread,
        run_id=f"run-{len(messages)}",
        messages=list(messages),
        tools=[],
        context=[],
        forwarded_props={},
    )
    return body.model_dump(mode="json", by_alias=True)


async def run(base_url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[BaseEvent]:
    """Post the input and validate every server-sent event with ag-ui-protocol's event models."""
    async with (
        httpx2.AsyncClient(base_url=base_url.removesuffix("/v1"), timeout=10, headers=headers) as http,
        http.stream("POST", "/agui", json=body, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join([part async for part in response.aiter_text()])
    blocks = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks)
    return [EVENTS.validate_json(block.removeprefix("data: ")) for block in blocks]


def types(events: list[BaseEvent]) -> list[str]:
    return [event.type.value for event in events]


def collapse(names: list[str]) -> list[str]:
    """Runs of one event type as one (the content deltas)."""
    return [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]


async def test_a_run_streams_text_and_a_tool_call_as_ag_ui_events_in_order(serving: Serving) -> None:
    async with serving(chatty_agent) as base_url:
        events = await run(base_url, run_input("t1", UserMessage(id="u1", content="Weather in Paris?")))
    assert collapse(types(events)) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    started, finished = events[0], events[-1]
    assert isinstance(started, RunStartedEvent)
    assert isinstance(finished, RunFinishedEvent)
    assert (started.thread_id, started.run_id, finished.thread_id, finished.run_id) == (
        "t1",
        "run-1",
        "t1",
        "run-1",
    )
    messages = [e for e in events if isinstance(e, TextMessageStartEvent)]
    texts = [
        "".join(
            e.delta for e in events if isinstance(e, TextMessageContentEvent) and e.message_id == m.message_id
        )
        for m in messages
    ]
    assert texts == ["Let me look.", "It is sunny in Paris."]
    assert len([e for e in events if isinstance(e, TextMessageContentEvent)]) > 4  # streamed in pieces
    (call,) = [e for e in events if isinstance(e, ToolCallStartEvent)]
    (args,) = [e for e in events if isinstance(e, ToolCallArgsEvent)]
    (result,) = [e for e in events if isinstance(e, ToolCallResultEvent)]
    assert call.tool_call_name == "lookup"
    assert call.parent_message_id == messages[0].message_id  # the call belongs to the text before it
    assert json.loads(args.delta) == {"city": "Paris"}
    assert (args.tool_call_id, result.tool_call_id) == (call.tool_call_id, call.tool_call_id)
    assert result.content == "sunny in Paris"


async def test_the_thread_is_the_session_and_a_new_thread_takes_the_clients_history(serving: Serving) -> None:
    first = UserMessage(id="u1", content="hello")
    async with serving(chatty_agent) as base_url:
        await run(base_url, run_input("t1", first))
        # the client sends its whole history, as AG-UI clients do: the session already holds it
        again = await run(
            base_url,
            run_input(
                "t1",
                first,
                AssistantMessage(id="a1", content="You said: hello"),
                UserMessage(id="u2", content="and?"),
            ),
        )
        seeded = await run(
            base_url,
            run_input(
                "t2",
                UserMessage(id="x", content="earlier"),
                AssistantMessage(id="y", content="ok"),
                UserMessage(id="z", content="now"),
            ),
        )

    def answer(events: list[BaseEvent]) -> str:
        return "".join(e.delta for e in events if isinstance(e, TextMessageContentEvent))

    assert answer(again) == "You said: hello | and?"
    assert answer(seeded) == "You said: earlier | now"


async def test_a_failing_agent_ends_the_stream_with_run_error_and_no_details(serving: Serving) -> None:
    def broken(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        raise ModelResponseError("secret upstream detail")

    async with serving(lambda: ReActAgent("ui", model=FunctionModel(broken))) as base_url:
        events = await run(base_url, run_input("t1", UserMessage(id="u1", content="hi")))
    assert types(events) == ["RUN_STARTED", "RUN_ERROR"]
    error = events[-1]
    assert isinstance(error, RunErrorEvent)
    assert error.code == "model_error"
    assert "ModelResponseError" in error.message
    assert "secret" not in error.message


async def test_bad_input_is_a_400_naming_the_problem_and_keys_are_required(serving: Serving) -> None:
    async with serving(chatty_agent, api_keys=["k1"]) as base_url:
        root = base_url.removesuffix("/v1")
        good = run_input("t1", UserMessage(id="u1", content="hello"))
        async with httpx2.AsyncClient(base_url=root, timeout=10) as http:
            anonymous = await http.post("/agui", json=good)
            keyed = {"Authorization": "Bearer k1"}
            no_thread = await http.post(
                "/agui", json={k: v for k, v in good.items() if k != "threadId"}, headers=keyed
            )
            assistant_last = await http.post(
                "/agui", json=run_input("t1", AssistantMessage(id="a", content="hi")), headers=keyed
            )
        events = await run(base_url, good, headers=keyed)
    assert anonymous.status_code == 401
    assert no_thread.status_code == 400
    assert "threadId" in no_thread.json()["error"]["message"]
    assert assistant_last.status_code == 400
    assert "last message must be a user message" in assistant_last.json()["error"]["message"]
    assert types(events)[-1] == "RUN_FINISHED"


async def test_reasoning_streams_as_reasoning_events_before_the_text(serving: Serving) -> None:
    def thoughtful(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        return [ThinkingBlock(thinking="The user greets me."), TextBlock(text="Hello there.")]

    async with serving(
        lambda: ReActAgent("ui", model=FunctionModel(thoughtful, stream_chunk_chars=5))
    ) as base_url:
        events = await run(base_url, run_input("t1", UserMessage(id="u1", content="hi")))
    assert collapse(types(events)) == [
        "RUN_STARTED",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    thought = "".join(e.delta for e in events if isinstance(e, ReasoningMessageContentEvent))
    assert thought == "The user greets me."
