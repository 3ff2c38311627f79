"""LangChain's ``ChatOpenAI`` against ``agentscope serve``: a served agent is a chat model to LangChain, invoked and
streamed, with sessions through a header; a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit
from agentscope.types import ChatResponse, ChatUsage

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""


def lookup(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


def weather_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Calls ``lookup`` for a question about a city, then answers from its result; says how many user turns
    its memory holds when asked, so a test can see the session's memory."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        return ChatResponse(
            content=[TextBlock(text=f"It is {results[0].output}.")],
            usage=ChatUsage(input_tokens=30, output_tokens=7),
        )
    if last.text == "How many questions so far?":
        turns = sum(1 for m in messages if m.role == "user" and not m.blocks_of(ToolResultBlock))
        return ChatResponse(
            content=[TextBlock(text=f"{turns} questions.")], usage=ChatUsage(input_tokens=1, output_tokens=1)
        )
    call = tool_call("lookup", city=last.text.split()[-1].rstrip("?"))
    return ChatResponse(content=[call], usage=ChatUsage(input_tokens=20, output_tokens=5))


def chat_openai(base_url: str, **options: Any) -> ChatOpenAI:
    """LangChain's OpenAI chat model pointed at the served agent."""
    return ChatOpenAI(base_url=base_url, api_key=SecretStr("-"), model="test-agent", max_retries=0, **options)


def weather_agent() -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(lookup)
    return ReActAgent("weather", model=FunctionModel(weather_model, stream_chunk_chars=4), toolkit=toolkit)


async def test_chat_openai_invokes_a_served_agent_and_reads_its_usage(serving: Serving) -> None:
    async with serving(weather_agent) as base_url:
        llm = chat_openai(base_url)
        answer = await llm.ainvoke([HumanMessage("Weather in Paris?")])
    assert isinstance(answer, AIMessage)
    assert answer.content == "It is sunny in Paris."
    assert answer.tool_calls == []  # the agent's own tool calls are not LangChain's to run
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"]) == (50, 12)
    assert answer.response_metadata["finish_reason"] == "stop"


async def test_chat_openai_streams_a_served_agent_in_pieces(serving: Serving) -> None:
    async with serving(weather_agent) as base_url:
        llm = chat_openai(base_url, stream_usage=True)
        chunks: list[AIMessageChunk] = [chunk async for chunk in llm.astream("Weather in Oslo?")]
    assert len(chunks) > 3
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert whole.content == "It is sunny in Oslo."
    assert whole.tool_call_chunks == []
    assert whole.usage_metadata is not None
    assert (whole.usage_metadata["input_tokens"], whole.usage_metadata["output_tokens"]) == (50, 12)


async def test_a_session_header_gives_chat_openai_the_agents_memory(serving: Serving) -> None:
    async with serving(weather_agent) as base_url:
        remembered = chat_openai(base_url, default_headers={"X-Session-Id": "langchain-user-1"})
        stateless = chat_openai(base_url)
        await remembered.ainvoke("Weather in Rome?")
        await remembered.ainvoke("Weather in Lima?")
        in_session = await remembered.ainvoke("How many questions so far?")
        without = await stateless.ainvoke("How many questions so far?")
    assert in_session.content == "3 questions."
    assert without.content == "1 questions."
