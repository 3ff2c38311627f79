"""Compaction: long runs on scripted models stay under the budget, keep every tool call paired, and are traced."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.context import (
    READ_OFFLOADED,
    ContextConfig,
    ContextManager,
    DropOldTurns,
    EstimateTokenCounter,
    OffloadToolResults,
    SummarizeOldTurns,
)
from agentscope.exceptions import ModelHTTPError
from agentscope.formatters import format_openai_request
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatResponse
from agentscope.testing import FunctionModel, ModelRequest, ScriptedModel, ScriptItem, tool_call
from agentscope.tools import Toolkit

from .conftest import anthropic_provider, assert_paired, openai_provider

pytestmark = pytest.mark.anyio

PAGE_CHARS = 4000


def fetch(page: int) -> str:
    """Fetch one page of the report.

    Args:
        page: Page number.
    """
    return (
        f"page {page} begins. " + "".join(f"line {page}.{i} of the report; " for i in range(200))[:PAGE_CHARS]
    )


def _toolkit() -> Toolkit:
    toolkit = Toolkit()
    toolkit.register(fetch)
    return toolkit


def _pages(n: int) -> list[ScriptItem]:
    return [ToolUseBlock(id=f"call_{i}", name="fetch", input={"page": i}) for i in range(n)]


@pytest.fixture
def spans() -> Iterator[tracing.InMemoryExporter]:
    exporter = tracing.InMemoryExporter()
    tracing.init(None, exporters=[exporter], project="tests", flush_interval_s=0.02)
    try:
        yield exporter
    finally:
        tracing.shutdown()


async def _tokens(request: ModelRequest) -> int:
    return await EstimateTokenCounter().count(request.messages, request.tools)


async def test_a_long_run_over_the_budget_is_compacted_paired_and_traced(
    spans: tracing.InMemoryExporter,
) -> None:
    model = ScriptedModel([*_pages(16), "The report has 16 pages."])
    agent = ReActAgent(
        "reader",
        "You read reports.",
        model,
        toolkit=_toolkit(),
        max_iters=20,
        context=ContextConfig(max_tokens=3000),
    )
    question = Msg(role="user", content="Read every page of the report.")
    reply = await agent(question)
    assert reply.text == "The report has 16 pages."
    await tracing.aflush()

    sizes = [await _tokens(r) for r in model.requests]
    uncompacted = await EstimateTokenCounter().count(
        [Msg(role="system", content="You read reports."), *await agent.memory.get()]
    )
    assert uncompacted > 4 * 3000  # the run really exceeds the budget
    assert max(sizes) <= 3000
    for request in model.requests:
        assert_paired(request.messages)
        assert request.messages[0].text == "You read reports."
        assert request.messages[1].id == question.id  # the current user message stays
    assert READ_OFFLOADED in model.requests[-1].tool_names

    compactions = spans.by_name("compact_context")
    assert compactions, "no compact_context span"
    last = compactions[-1].attributes
    assert last["agentscope.context.tokens_before"] > 3000 >= last["agentscope.context.tokens_after"]
    assert last["agentscope.context.policy"] == ["offload_tool_results", "drop_old_turns"]
    assert last["agentscope.context.applied"] == ["offload_tool_results", "drop_old_turns"]
    assert last["agentscope.context.messages_dropped"] > 0
    assert last["agentscope.context.fits"] is True
    chats = spans.by_name("chat scripted")
    assert compactions[-1].parent_id == chats[-1].parent_id  # both inside the agent's invoke_agent span

    # Memory keeps the full history: every page whole.
    stored = [r for m in await agent.memory.get() for r in m.blocks_of(ToolResultBlock)]
    assert [r.output for r in stored] == [fetch(i) for i in range(16)]
    assert_paired(await agent.memory.get())


async def test_an_offloaded_result_is_read_back_with_read_offloaded() -> None:
    def script(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        results = [r for m in messages for r in m.blocks_of(ToolResultBlock)]
        if not results:
            return ToolUseBlock(id="c1", name="fetch", input={"page": 7})
        last = results[-1]
        if last.name == "fetch":
            assert str(last.output).startswith("[offloaded] page 7 begins.")
            assert "read_offloaded(ref='c1', offset=400)" in str(last.output)
            return tool_call(READ_OFFLOADED, ref="c1", offset=400)
        return f"read: {last.output}"

    model = FunctionModel(script)
    config = ContextConfig(max_tokens=800, policies=(OffloadToolResults(max_result_tokens=200),))
    agent = ReActAgent("reader", "You read.", model, toolkit=_toolkit(), context=config)
    reply = await agent(Msg(role="user", content="Read page 7."))
    full = fetch(7)
    assert reply.text.startswith(f"read: [result of fetch (ref c1), characters 400-1200 of {len(full)};")
    assert "read_offloaded(ref='c1', offset=1200)" in reply.text
    assert reply.text.endswith(full[400:1200])


async def test_old_turns_are_summarised_with_a_plain_text_call_and_the_summary_is_reused() -> None:
    summaries: list[ModelRequest] = []
    pages = iter(range(12))

    def play(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        if messages[0].text == SummarizeOldTurns().prompt:
            summaries.append(request)
            return f"Summary #{len(summaries)}: pages were read."
        page = next(pages, None)
        return tool_call("fetch", page=page) if page is not None else "All read."

    model = FunctionModel(play)
    config = ContextConfig(
        max_tokens=6000,
        policies=(SummarizeOldTurns(max_summary_tokens=200), DropOldTurns()),
        keep_recent_turns=2,
    )
    agent = ReActAgent("reader", "You read reports.", model, toolkit=_toolkit(), max_iters=20, context=config)
    assert (await agent(Msg(role="user", content="Read the report."))).text == "All read."

    agent_requests = [r for r in model.requests if r not in summaries]
    assert summaries
    for request in summaries:  # no tools, no structured output: any chat model can summarise
        assert request.tools == []
        assert request.response_format is None
        assert request.settings.get("max_tokens") == 200
    assert len(summaries) < len([r for r in agent_requests if any(m.name == "summary" for m in r.messages)])
    for request in agent_requests:
        assert await _tokens(request) <= 6000
        assert_paired(request.messages)
    last = agent_requests[-1]
    summary = next(m for m in last.messages if m.name == "summary")
    assert summary.text.endswith(f"Summary #{len(summaries)}: pages were read.")
    # The kept summary travels with the agent's state.
    state = agent.state_dict()
    assert state["context"]["summary"]["text"] == f"Summary #{len(summaries)}: pages were read."
    fresh = ReActAgent("reader", "You read reports.", model, context=config)
    fresh.load_state_dict(state)
    assert fresh.context is not None
    assert fresh.context.summary == agent.context.summary  # type: ignore[union-attr]


@pytest.mark.usefixtures("allow_model_requests")
@pytest.mark.parametrize("provider", [openai_provider, anthropic_provider], ids=["openai", "anthropic"])
async def test_a_compacted_long_run_is_accepted_by_both_providers(provider: Any) -> None:
    """Over HTTP: the test servers refuse any request whose tool calls and results do not pair up."""
    async with provider() as (model, server):
        script = iter([*_pages(10), "done"])

        def respond(body: dict[str, Any]) -> ChatResponse | str:
            return _response(next(script))

        server.responder = respond
        agent = ReActAgent(
            "reader",
            "You read reports.",
            model,
            toolkit=_toolkit(),
            max_iters=12,
            context=ContextConfig(max_tokens=2500),
        )
        assert (await agent(Msg(role="user", content="Read it all."))).text == "done"
        assert len(server.requests) == 11
        assert server.errors == []
        sizes = [_body_tokens(r.body) for r in server.requests]
        assert sizes[-1] <= 2500 < sum(len(fetch(i)) for i in range(10)) // 4


def _response(step: ScriptItem) -> ChatResponse | str:
    if isinstance(step, str):
        return step
    assert isinstance(step, ToolUseBlock)
    return ChatResponse(content=[step], finish_reason="tool_calls")


def _body_tokens(body: dict[str, Any]) -> int:
    """The estimate on the wire body (messages and tools as JSON), for either provider."""
    import json

    return len(json.dumps({k: body[k] for k in ("messages", "tools", "system") if k in body})) // 4


async def test_what_is_never_compacted_stays_even_when_the_request_cannot_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ContextManager(ContextConfig(max_tokens=10, keep_recent_turns=1))
    system = Msg(role="system", content="Be brief. " * 20)
    question = Msg(role="user", content="What happened? " * 20)
    history = [
        system,
        Msg(role="user", content="old " * 50),
        Msg(role="assistant", content="old answer " * 20),
        question,
        Msg(role="assistant", content=[ToolUseBlock(id="c1", name="fetch", input={"page": 1})]),
        Msg(role="tool", content=[ToolResultBlock(id="c1", name="fetch", output="x" * 3000)]),
    ]
    with caplog.at_level(logging.WARNING, logger="agentscope.context"):
        fitted = await manager.fit(history, [], model=ScriptedModel([]), protect={question.id})
    assert fitted[0] is system
    assert question in fitted
    assert [m.role for m in fitted[-2:]] == ["assistant", "tool"]  # the last turn, call and result together
    assert_paired(fitted)
    assert manager.last is not None
    assert manager.last.dropped == 2
    assert "still holds" in caplog.text


async def test_a_request_under_the_budget_is_sent_as_it_is(spans: tracing.InMemoryExporter) -> None:
    model = ScriptedModel(["hi"])
    agent = ReActAgent("a", "sys", model, context=ContextConfig(max_tokens=10_000))
    await agent(Msg(role="user", content="hello"))
    await tracing.aflush()
    assert [m.text for m in model.last_request.messages] == ["sys", "hello"]
    assert spans.by_name("compact_context") == []


def test_the_config_is_data_and_bad_values_name_the_field() -> None:
    config = ContextConfig.model_validate(
        {"max_tokens": 1000, "policies": [{"kind": "summarize_old_turns"}, {"kind": "drop_old_turns"}]}
    )
    assert config.policies == (SummarizeOldTurns(), DropOldTurns())
    assert ContextConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValidationError, match="max_tokens"):
        ContextConfig(max_tokens=0)
    with pytest.raises(ValidationError, match="kind"):
        ContextConfig.model_validate({"max_tokens": 10, "policies": [{"kind": "forget_everything"}]})


async def test_the_wire_request_of_a_compacted_conversation_is_what_was_counted() -> None:
    """The estimate counts the request as the OpenAI codec formats it, tool schemas included."""
    counter = EstimateTokenCounter()
    messages = [Msg(role="user", content="x" * 400)]
    tools = _toolkit().schemas()
    with_tools = await counter.count(messages, tools)
    assert with_tools > await counter.count(messages) >= 100
    body = format_openai_request("m", messages, tools=tools)
    import json

    assert abs(with_tools - len(json.dumps(body)) / 4) < 20


async def test_the_last_message_stays_even_without_recent_turns_kept() -> None:
    manager = ContextManager(ContextConfig(max_tokens=60, keep_recent_turns=0, target_ratio=1.0))
    history = [Msg(role="user", content=f"message {i} " * 10) for i in range(5)]
    fitted = await manager.fit(history, [], model=ScriptedModel([]), protect=())
    assert fitted[-1] is history[-1]
    assert history[0] not in fitted


async def test_a_failing_summary_call_falls_through_to_the_next_policy(
    spans: tracing.InMemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def play(messages: list[Msg], request: ModelRequest) -> ScriptItem:
        if messages[0].text == SummarizeOldTurns().prompt:
            raise ModelHTTPError("the provider is overloaded", status_code=529)
        return "fine"

    model = FunctionModel(play)
    config = ContextConfig(max_tokens=300, policies=(SummarizeOldTurns(), DropOldTurns()))
    agent = ReActAgent("a", "sys", model, context=config)
    await agent.memory.add([Msg(role="user", content="old " * 500), Msg(role="assistant", content="ok")])
    with caplog.at_level(logging.WARNING, logger="agentscope.context"):
        assert (await agent(Msg(role="user", content="new"))).text == "fine"
    await tracing.aflush()
    attributes = spans.by_name("compact_context")[-1].attributes
    assert attributes["agentscope.context.applied"] == ["drop_old_turns"]
    assert "overloaded" in attributes["agentscope.context.summary_error"]
    assert "summary call failed" in caplog.text
