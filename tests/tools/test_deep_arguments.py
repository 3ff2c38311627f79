"""Deeply nested tool-call arguments and MCP replies become tool errors the model sees, never exceptions.

Before: arguments of ``"[" * 100000`` raised RecursionError out of the agent (from the model's parse), valid
JSON nested 900 deep raised pydantic's ValidationError building the tool call, and an MCP stdio reply nested
past pydantic's limit was dropped, so its call waited for its timeout (or for ever).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentscope.agents import ReActAgent
from agentscope.events import ReplyEvent
from agentscope.formatters import MAX_ARGUMENT_DEPTH, load_tool_arguments, parse_tool_arguments
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import AnthropicChatModel, ChatModel, ChatResponse, OpenAIChatModel
from agentscope.testing import AnthropicCompatServer, OpenAICompatServer
from agentscope.tools import MCPClient, StdioServer, Toolkit

HOSTILE = Path(__file__).with_name("hostile_mcp_server.py")

UNCLOSED = "[" * 100_000
DEEP_900 = '{"a": ' + "[" * 900 + "]" * 900 + "}"
TOO_DEEP = f"arguments are nested too deeply (more than {MAX_ARGUMENT_DEPTH} levels of objects and arrays)"


def nested(depth: int) -> dict[str, Any]:
    """An arguments object ``depth`` levels deep (the object itself is level 1)."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


def echo(a: Any = None) -> str:
    """Echo the argument's type.

    Args:
        a: Anything.
    """
    return type(a).__name__


def test_the_parser_never_raises_on_deep_input() -> None:
    assert parse_tool_arguments(UNCLOSED) == ({}, UNCLOSED)
    assert parse_tool_arguments(DEEP_900) == ({}, DEEP_900)
    assert load_tool_arguments(UNCLOSED) == TOO_DEEP
    assert load_tool_arguments(DEEP_900) == TOO_DEEP
    deepest_allowed = nested(MAX_ARGUMENT_DEPTH)
    assert parse_tool_arguments(json.dumps(deepest_allowed)) == (deepest_allowed, None)
    assert load_tool_arguments(json.dumps(nested(MAX_ARGUMENT_DEPTH + 1))) == TOO_DEEP


async def test_the_toolkit_refuses_deep_arguments_from_any_source() -> None:
    toolkit = Toolkit()
    toolkit.register(echo)
    for call in (
        ToolUseBlock(id="1", name="echo", raw_input=UNCLOSED),
        ToolUseBlock(id="2", name="echo", raw_input=DEEP_900),
        ToolUseBlock(id="3", name="echo", input=nested(MAX_ARGUMENT_DEPTH + 1)),  # e.g. from an MCP client
    ):
        result = await toolkit.call(call)
        assert result.is_error
        assert isinstance(result.output, str)
        assert result.output.startswith(TOO_DEEP)
    ok = await toolkit.call(ToolUseBlock(id="4", name="echo", input=nested(MAX_ARGUMENT_DEPTH)))
    assert (ok.is_error, ok.output) == (False, "list")


def _openai(server: OpenAICompatServer) -> ChatModel:
    return OpenAIChatModel("m", base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.mark.usefixtures("allow_model_requests")
@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
async def test_an_agent_turns_deep_arguments_from_the_model_into_tool_errors(streaming: bool) -> None:
    """Through the real parse path: an OpenAI-compatible server on 127.0.0.1 sends the arguments as text."""
    script = iter(
        [
            ChatResponse(content=[ToolUseBlock(id="c1", name="echo", raw_input=UNCLOSED)]),
            ChatResponse(content=[ToolUseBlock(id="c2", name="echo", raw_input=DEEP_900)]),
            "done",
        ]
    )
    async with OpenAICompatServer(lambda body: next(script)) as server:
        toolkit = Toolkit()
        toolkit.register(echo)
        async with _openai(server) as model:
            agent = ReActAgent("a", model=model, toolkit=toolkit)
            if streaming:
                events = [event async for event in agent.stream(Msg(role="user", content="go"))]
                final = events[-1]
                assert isinstance(final, ReplyEvent)
                reply = final.msg
            else:
                reply = await agent(Msg(role="user", content="go"))
        assert reply.text == "done"
        results = [b for m in await agent.memory.get() for b in m.blocks_of(ToolResultBlock)]
        assert [r.is_error for r in results] == [True, True]
        assert all(str(r.output).startswith(TOO_DEEP) for r in results)
        # The conversation (raw arguments included) went back to the server as JSON.
        assert len(server.requests) == 3


@pytest.mark.usefixtures("allow_model_requests")
async def test_deep_anthropic_tool_input_becomes_a_tool_error() -> None:
    """Anthropic sends ``input`` already parsed: nested 900 deep it used to fail building the tool call."""
    deep_input: Any = []
    for _ in range(900):
        deep_input = [deep_input]
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "tool_use", "id": "t1", "name": "echo", "input": {"a": deep_input}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    script = iter([body, ChatResponse(content=[])])
    async with AnthropicCompatServer(lambda request: next(script)) as server:
        toolkit = Toolkit()
        toolkit.register(echo)
        async with AnthropicChatModel("m", base_url=server.base_url, api_key="k", max_retries=0) as model:
            response = await model.generate([Msg(role="user", content="go")])
            (call,) = response.tool_calls
            assert call.input == {}
            result = await toolkit.call(call)
    assert result.is_error
    assert str(result.output).startswith(TOO_DEEP)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        ("unclosed", "Invalid JSON: recursion limit exceeded"),
        ("deep", "Invalid JSON: recursion limit exceeded"),
        ("scalar_result", "valid JSON, but not a JSON-RPC message"),
    ],
)
async def test_an_unreadable_mcp_stdio_reply_fails_its_call_at_once(tool: str, problem: str) -> None:
    server = StdioServer(sys.executable, [str(HOSTILE)])
    async with MCPClient(server, name="hostile", timeout_s=60) as client:
        toolkit = Toolkit()
        await toolkit.register_mcp(client)
        started = time.monotonic()
        result = await toolkit.call(ToolUseBlock(id="c", name=tool))
        assert time.monotonic() - started < 10, "the call waited for its timeout"
        assert result.is_error
        assert str(result.output).startswith(
            f"MCP server 'hostile' answered the call to tool '{tool}' with a reply that cannot be read ({problem}"
        )
        # The connection is still usable.
        again = await toolkit.call(ToolUseBlock(id="d", name="echo", input={"x": 1}))
        assert (again.is_error, again.output) == (False, '{"x": 1}')


@pytest.mark.parametrize(
    ("completion", "error"),
    [
        ("<tool_call>\n" + UNCLOSED + "\n</tool_call>", "Unknown tool ''"),
        ('<tool_call>\n{"name": "echo", "arguments": ' + DEEP_900 + "}\n</tool_call>", TOO_DEEP),
        (  # arguments sent as a JSON string holding a deep object
            '<tool_call>\n{"name": "echo", "arguments": '
            + json.dumps(json.dumps(nested(100)))
            + "}\n</tool_call>",
            "arguments were not valid JSON: expected a JSON object, got str",
        ),
    ],
    ids=["unclosed", "deep-900", "deep-as-string"],
)
async def test_the_rl_policy_parser_turns_deep_calls_into_tool_errors(completion: str, error: str) -> None:
    """The trained policy's completions are parsed by ChatFormat (another tool-call parse path)."""
    from agentscope.rl.policy import ChatFormat

    (call,) = ChatFormat().parse_completion(completion)
    assert isinstance(call, ToolUseBlock)
    assert call.input == {}
    toolkit = Toolkit()
    toolkit.register(echo)
    result = await toolkit.call(call)
    assert result.is_error
    assert str(result.output).startswith(error)
