"""Formatters: Msg lists and tool schemas -> OpenAI and Anthropic payloads (pure functions)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from agentscope.formatters import (
    AnthropicPayload,
    dump_tool_arguments,
    format_anthropic_messages,
    format_anthropic_tool_choice,
    format_anthropic_tools,
    format_openai_messages,
    format_openai_response_format,
    format_openai_tool_choice,
    format_openai_tools,
    parse_tool_arguments,
    resolve_response_format,
    sanitize_name,
)
from agentscope.message import (
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from agentscope.models import ToolSchema

PNG = ImageBlock(source=Base64Source(media_type="image/png", data="AAAA"))
URL_IMAGE = ImageBlock(source=URLSource(url="https://example.com/a.jpg"))
TOOL = ToolSchema(name="add", description="Add.", parameters={"type": "object", "properties": {"a": {}}})


# -- shared helpers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": 1}', ({"a": 1}, None)),
        ("", ({}, None)),
        ("  ", ({}, None)),
        ('{"a": ', ({}, '{"a": ')),
        ("[1]", ({}, "[1]")),
        ('"text"', ({}, '"text"')),
        ("null", ({}, "null")),
    ],
)
def test_parse_tool_arguments(raw: str, expected: tuple[dict[str, Any], str | None]) -> None:
    assert parse_tool_arguments(raw) == expected


def test_dump_tool_arguments_prefers_raw_input_when_unparsed() -> None:
    assert dump_tool_arguments(ToolUseBlock(id="1", name="f", input={"a": "é"})) == '{"a": "é"}'
    assert dump_tool_arguments(ToolUseBlock(id="1", name="f", raw_input="{bad")) == "{bad"


def test_sanitize_name() -> None:
    assert sanitize_name("Alice") == "Alice"
    assert sanitize_name("Dr. Who?") == "Dr__Who_"
    assert sanitize_name("x" * 100) == "x" * 64
    assert sanitize_name("") == "_"


class Inner(BaseModel):
    n: int


class Outer(BaseModel):
    name: str
    items: list[Inner]


class WithDefault(BaseModel):
    name: str
    note: str = ""


def test_resolve_response_format_from_models() -> None:
    outer = resolve_response_format(Outer)
    assert outer.name == "Outer"
    assert outer.strict is True
    assert outer.schema["additionalProperties"] is False
    assert outer.schema["$defs"]["Inner"]["additionalProperties"] is False
    assert resolve_response_format(Outer) is outer  # cached per class
    assert resolve_response_format(WithDefault).strict is False


def test_resolve_response_format_from_dicts() -> None:
    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
        },
        "required": ["properties"],
    }
    original = copy.deepcopy(schema)
    resolved = resolve_response_format(schema)
    assert schema == original
    assert resolved.name == "response"
    assert resolved.strict is True
    # A property that happens to be called "properties" is a schema, not a property map.
    assert set(resolved.schema["properties"]) == {"properties"}
    assert resolved.schema["properties"]["properties"]["additionalProperties"] is False

    wrapper = {"name": "my format!", "schema": {"type": "object", "properties": {}}, "strict": False}
    resolved = resolve_response_format(wrapper)
    assert (resolved.name, resolved.strict) == ("my_format_", False)
    open_schema = {"title": "Open", "type": "object", "additionalProperties": True, "properties": {}}
    assert resolve_response_format(open_schema).strict is False


# -- OpenAI -------------------------------------------------------------------------------------------------------


def test_openai_plain_messages_and_names() -> None:
    messages = [
        Msg(role="system", content="Rules.", name="sys"),
        Msg(role="user", content="Hi", name="Bob Smith"),
        Msg(role="assistant", content="Hello", name="agent.1"),
        Msg(role="tool", content="orphan tool text"),
    ]
    assert format_openai_messages(messages) == [
        {"role": "system", "content": "Rules.", "name": "sys"},
        {"role": "user", "content": "Hi", "name": "Bob_Smith"},
        {"role": "assistant", "content": "Hello", "name": "agent_1"},
        {"role": "user", "content": "orphan tool text"},
    ]
    assert "name" not in format_openai_messages(messages, include_names=False)[1]


def test_openai_user_blocks() -> None:
    only_text = Msg(role="user", content=[TextBlock(text="a"), TextBlock(text="b")])
    with_images = Msg(role="user", content=[TextBlock(text="look"), PNG, URL_IMAGE])
    assert format_openai_messages([only_text, with_images]) == [
        {"role": "user", "content": "a\nb"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ],
        },
    ]


def test_openai_assistant_blocks() -> None:
    messages = [
        Msg(role="assistant", content=[ThinkingBlock(thinking="hmm", signature="s")]),  # nothing to send
        Msg(
            role="assistant",
            content=[
                ThinkingBlock(thinking="hmm"),
                ToolUseBlock(id="c1", name="add", input={"a": 1}),
                ToolUseBlock(id="c2", name="add", raw_input="{oops"),
            ],
        ),
    ]
    assert format_openai_messages(messages) == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}},
                {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{oops"}},
            ],
        }
    ]


def test_openai_tool_results_and_their_images() -> None:
    messages = [
        Msg(
            role="assistant", content=[ToolUseBlock(id="c1", name="shot"), ToolUseBlock(id="c2", name="add")]
        ),
        Msg(role="tool", content=[ToolResultBlock(id="c1", name="shot", output=[PNG])]),
        Msg(
            role="tool",
            content=[ToolResultBlock(id="c2", name="add", output="bad input", is_error=True)],
        ),
        Msg(role="user", content="thanks"),
    ]
    out = format_openai_messages(messages)
    assert [m["role"] for m in out] == ["assistant", "tool", "tool", "user", "user"]
    assert out[1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "(image output follows in the next message)",
    }
    assert out[2] == {"role": "tool", "tool_call_id": "c2", "content": "Error: bad input"}
    assert out[3]["content"][-1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert "shot" in out[3]["content"][1]["text"]
    assert out[4] == {"role": "user", "content": "thanks"}


def test_openai_tool_results_before_text_of_the_same_message() -> None:
    msg = Msg(
        role="user",
        content=[TextBlock(text="also this"), ToolResultBlock(id="c1", name="add", output="3")],
    )
    assert format_openai_messages([msg]) == [
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "user", "content": "also this"},
    ]


def test_openai_tools_and_choice() -> None:
    assert format_openai_tools([TOOL]) == [
        {
            "type": "function",
            "function": {"name": "add", "description": "Add.", "parameters": TOOL.parameters},
        }
    ]
    assert format_openai_tool_choice("auto") == "auto"
    assert format_openai_tool_choice("add") == {"type": "function", "function": {"name": "add"}}


def test_openai_response_format() -> None:
    fmt = format_openai_response_format(Inner)
    assert fmt == {
        "type": "json_schema",
        "json_schema": {
            "name": "Inner",
            "schema": {
                "properties": {"n": {"title": "N", "type": "integer"}},
                "required": ["n"],
                "title": "Inner",
                "type": "object",
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


# -- Anthropic ----------------------------------------------------------------------------------------------------


def test_anthropic_system_extraction_and_merging() -> None:
    messages = [
        Msg(role="system", content="A."),
        Msg(role="user", content="one"),
        Msg(role="user", content=[TextBlock(text=""), TextBlock(text="two")]),
        Msg(role="system", content="B."),
        Msg(role="assistant", content="three"),
    ]
    assert format_anthropic_messages(messages) == AnthropicPayload(
        system="A.\n\nB.",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
        ],
    )
    assert format_anthropic_messages([Msg(role="user", content="x")]).system is None


def test_anthropic_blocks() -> None:
    data_url = ImageBlock(source=URLSource(url="data:image/jpeg;base64,BBBB"))
    messages = [
        Msg(role="user", content=[TextBlock(text="see"), PNG, URL_IMAGE, data_url]),
        Msg(
            role="assistant",
            content=[
                ThinkingBlock(thinking="unsigned, from elsewhere"),
                ThinkingBlock(thinking="signed", signature="sig"),
                TextBlock(text="calling"),
                ToolUseBlock(id="t1", name="add", input={"a": 1}),
                ToolUseBlock(id="t2", name="add", raw_input="{bad"),
            ],
        ),
        Msg(role="user", content="by the way"),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="t1", name="add", output="2"),
                ToolResultBlock(id="t2", name="add", output="", is_error=True),
            ],
        ),
    ]
    payload = format_anthropic_messages(messages)
    assert payload.messages[0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "BBBB"}},
    ]
    assert payload.messages[1]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "sig"},
        {"type": "text", "text": "calling"},
        {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1}},
        {"type": "tool_use", "id": "t2", "name": "add", "input": {}},
    ]
    # The user's text and the tool results merge into one turn, results first.
    assert payload.messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "2"},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True},
            {"type": "text", "text": "by the way"},
        ],
    }
    assert len(payload.messages) == 3


def test_anthropic_prefix_names() -> None:
    messages = [
        Msg(role="assistant", name="Alice", content="Yes."),
        Msg(role="user", name="Bob", content="No."),
    ]
    plain = format_anthropic_messages(messages)
    named = format_anthropic_messages(messages, prefix_names=True)
    assert plain.messages[0]["content"] == [{"type": "text", "text": "Yes."}]
    assert named.messages[0]["content"] == [{"type": "text", "text": "Alice: Yes."}]
    assert named.messages[1]["content"] == [{"type": "text", "text": "Bob: No."}]


def test_anthropic_tools_and_choice() -> None:
    assert format_anthropic_tools([TOOL]) == [
        {"name": "add", "description": "Add.", "input_schema": TOOL.parameters}
    ]
    assert format_anthropic_tool_choice(None) is None
    assert format_anthropic_tool_choice("required") == {"type": "any"}
    assert format_anthropic_tool_choice("none", parallel_tool_calls=False) == {"type": "none"}
    assert format_anthropic_tool_choice("add", parallel_tool_calls=True) == {"type": "tool", "name": "add"}
