"""The provider codecs both ways: what one direction writes, the other reads back (pure functions, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import ModelHTTPError, ModelResponseError
from agentscope.formatters import (
    AnthropicStreamDecoder,
    ChatRequest,
    OpenAIStreamDecoder,
    encode_sse,
    format_anthropic_error,
    format_anthropic_request,
    format_anthropic_response,
    format_anthropic_stream,
    format_openai_error,
    format_openai_request,
    format_openai_response,
    format_openai_stream,
    parse_anthropic_request,
    parse_anthropic_response,
    parse_openai_messages,
    parse_openai_request,
    parse_openai_response,
    resolve_response_format,
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
from agentscope.models import ChatResponse, ChatUsage, ModelSettings, ToolSchema

PNG = ImageBlock(source=Base64Source(media_type="image/png", data="AAAA"))
URL_IMAGE = ImageBlock(source=URLSource(url="https://example.com/a.jpg"))
ADD = ToolSchema(
    name="add",
    description="Add.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
)
SHOT = ToolSchema(name="shot", description="Take a screenshot.")


class Answer(BaseModel):
    n: int


def comparable(messages: list[Msg]) -> list[tuple[str, str | None, list[dict[str, Any]], dict[str, Any]]]:
    """Messages without their ids and timestamps, content as blocks."""
    return [(m.role, m.name, [b.model_dump() for b in m.blocks], m.metadata) for m in messages]


def sse_data(events: list[bytes]) -> list[str]:
    """The ``data`` of each server-sent event."""
    out: list[str] = []
    for event in b"".join(events).decode().split("\n\n"):
        lines = [line[len("data: ") :] for line in event.split("\n") if line.startswith("data: ")]
        if lines:
            out.append("\n".join(lines))
    return out


def decode(
    decoder: OpenAIStreamDecoder | AnthropicStreamDecoder, events: list[bytes]
) -> list[ModelStreamEvent]:
    deltas: list[ModelStreamEvent] = []
    for data in sse_data(events):
        deltas.extend(decoder.feed(data))
        if decoder.finished:
            break
    assert decoder.finished
    return deltas


def conversation() -> list[Msg]:
    """A multi-agent tool-using conversation in the form both codecs give back exactly."""
    return [
        Msg(role="system", content="Be brief."),
        Msg(role="user", name="bob", content="What is 1 + 2? And look at this."),
        Msg(role="user", name="bob", content=[TextBlock(text="both of these"), PNG, URL_IMAGE]),
        Msg(
            role="assistant",
            name="solver",
            content=[
                TextBlock(text="Let me add."),
                ToolUseBlock(id="c1", name="add", input={"a": 1}),
                ToolUseBlock(id="c2", name="add", raw_input='{"a": '),
            ],
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="c1", name="add", output="3"),
                ToolResultBlock(id="c2", name="add", output="arguments were not valid JSON", is_error=True),
            ],
        ),
        Msg(role="assistant", name="solver", content=[TextBlock(text="It is 3.")]),
    ]


# -- OpenAI: request --------------------------------------------------------------------------------------------


def test_openai_request_round_trip() -> None:
    settings: ModelSettings = {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
        "seed": 7,
        "parallel_tool_calls": False,
        "timeout_s": 3.0,
        "extra_body": {"session_id": "s-1"},
    }
    body = format_openai_request(
        "m",
        conversation(),
        tools=[ADD, SHOT],
        tool_choice="add",
        response_format=Answer,
        settings=settings,
        stream=True,
    )
    decoded = parse_openai_request(json.loads(json.dumps(body)))

    assert comparable(decoded.messages) == comparable(conversation())
    assert decoded.model == "m"
    assert decoded.tools == [ADD, SHOT]
    assert decoded.tool_choice == "add"
    assert decoded.response_format is not None
    assert resolve_response_format(decoded.response_format) == resolve_response_format(Answer)
    assert decoded.settings == {k: v for k, v in settings.items() if k not in ("timeout_s", "extra_body")}
    assert decoded.stream is True
    assert decoded.extra == {"session_id": "s-1"}  # what the codec does not map comes back as it went


def test_openai_request_round_trip_of_what_the_wire_cannot_carry() -> None:
    messages = [
        Msg(role="user", content=[TextBlock(text="a"), TextBlock(text="b")]),
        Msg(
            role="assistant", content=[ThinkingBlock(thinking="hm"), TextBlock(text="x"), TextBlock(text="y")]
        ),
        Msg(role="assistant", content=[ToolUseBlock(id="c1", name="shot")]),
        Msg(
            role="tool", content=[ToolResultBlock(id="c1", name="shot", output=[TextBlock(text="done"), PNG])]
        ),
    ]
    decoded = parse_openai_request({"messages": format_openai_request("m", messages)["messages"]})
    # texts were sent joined, thinking not at all; the screenshot came back in the user message that carried it
    assert comparable(decoded.messages) == comparable(
        [
            Msg(role="user", content="a\nb"),
            Msg(role="assistant", content="x\ny"),
            Msg(role="assistant", content=[ToolUseBlock(id="c1", name="shot")]),
            Msg(
                role="tool",
                content=[
                    ToolResultBlock(
                        id="c1", name="shot", output="done\n(image output follows in the next message)"
                    )
                ],
            ),
            Msg(
                role="user",
                content=[
                    TextBlock(text="Images returned by tools:"),
                    TextBlock(text="[shot (call c1)]"),
                    PNG,
                ],
            ),
        ]
    )
    assert decoded.settings == {}
    assert (decoded.tools, decoded.tool_choice, decoded.response_format, decoded.stream) == (
        [],
        None,
        None,
        False,
    )


def test_openai_request_fields_other_clients_send() -> None:
    decoded = parse_openai_request(
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": "https://example.com/x.png"}],
                },
                {
                    "role": "assistant",
                    "reasoning_content": "think",
                    "content": None,
                    "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}],
                },
            ],
            "max_completion_tokens": 5,
            "max_tokens": 9,
            "stop": "END",
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_object"},
        }
    )
    assert comparable(decoded.messages) == comparable(
        [
            Msg(role="system", content="rules"),
            Msg(role="user", content=[ImageBlock(source=URLSource(url="https://example.com/x.png"))]),
            Msg(
                role="assistant",
                content=[ThinkingBlock(thinking="think"), ToolUseBlock(id="a", name="f", input={"x": 1})],
            ),
        ]
    )
    assert decoded.settings == {"max_tokens": 5, "stop": ["END"]}
    assert decoded.tool_choice == "f"
    assert decoded.response_format == {"type": "object"}
    assert parse_openai_request({"messages": [], "response_format": {"type": "text"}}).response_format is None


def test_openai_images_as_text_for_text_only_consumers() -> None:
    items = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]}
    ]
    assert [m.content for m in parse_openai_messages(items, images_as_text=True)] == ["hi\n[image]"]
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[1\]: image part without a URL"):
        parse_openai_messages(items)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "messages must be a list"),
        ({"messages": "hi"}, "messages must be a list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, r"messages\[0\]: unknown message role 'wizard'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            r"messages\[0\]\.content\[0\]: unsupported content part type 'input_audio'",
        ),
        (
            {"messages": [], "tools": [{"type": "function", "function": {}}]},
            r"tools\[0\]\.function: each tool needs a name",
        ),
        ({"messages": [], "temperature": "hot"}, "temperature must be a number, got 'hot'"),
        ({"messages": [], "max_tokens": True}, "max_tokens must be a number"),
        ({"messages": [], "parallel_tool_calls": "no"}, "parallel_tool_calls must be true or false"),
        ({"messages": [], "tool_choice": {"type": "function"}}, "tool_choice must be"),
        ({"messages": [], "response_format": {"type": "xml"}}, "response_format must be"),
    ],
)
def test_openai_bad_requests_are_refused_naming_the_field(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_openai_request(body)


# -- OpenAI: answer ---------------------------------------------------------------------------------------------


def rl_response(**changes: Any) -> ChatResponse:
    """An answer with everything the OpenAI wire can carry, the RL fields included."""
    fields: dict[str, Any] = {
        "content": [
            ThinkingBlock(thinking="Adding one and two."),
            TextBlock(text="Calling the tool."),
            ToolUseBlock(id="c1", name="add", input={"a": 1}),
            ToolUseBlock(id="c2", name="add", raw_input='{"a": '),  # malformed: the toolkit reports it
        ],
        "usage": ChatUsage(input_tokens=12, output_tokens=5),
        "finish_reason": "tool_calls",
        "id": "chatcmpl-1",
        "model": "policy",
        "prompt_token_ids": [1, 2, 3],
        "completion_token_ids": [4, 5],
        "logprobs": [-0.5, -0.25],
        "policy_version": 3,
        "metadata": {"refusal": "no"},
    }
    fields.update(changes)
    return ChatResponse(**fields)


def test_openai_response_round_trip() -> None:
    response = rl_response()
    data = json.loads(json.dumps(format_openai_response(response)))
    assert parse_openai_response(data) == response
    assert data["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] == '{"a": '
    decoded = parse_openai_response(data).tool_calls[1]
    assert (decoded.input, decoded.raw_input) == ({}, '{"a": ')


def test_openai_response_defaults_and_extra_fields() -> None:
    data = format_openai_response(
        ChatResponse(content=[TextBlock(text="hi")]), model="fallback", extra={"session_id": "s"}
    )
    assert data["model"] == "fallback"
    assert data["id"].startswith("chatcmpl-")
    assert data["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "hi"},
        "finish_reason": "stop",
    }
    assert data["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert data["session_id"] == "s"
    assert "prompt_token_ids" not in data
    assert parse_openai_response(data).usage == ChatUsage()


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_openai_stream_round_trip(chunk_size: int | None) -> None:
    response = rl_response(metadata={})  # a stream has no refusal field
    events = list(format_openai_stream(response, chunk_size=chunk_size, include_usage=True))
    assert sse_data(events)[-1] == "[DONE]"
    decoder = OpenAIStreamDecoder()
    deltas = decode(decoder, events)
    assert decoder.result() == response
    assert "".join(d.thinking for d in deltas if isinstance(d, ThinkingDelta)) == "Adding one and two."
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Calling the tool."
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert "".join(d.arguments for d in calls if d.index == 1) == '{"a": '
    if chunk_size == 1:
        assert len([d for d in deltas if isinstance(d, TextDelta)]) == len("Calling the tool.")


def test_openai_stream_usage_only_when_asked() -> None:
    response = rl_response(metadata={})
    decoder = OpenAIStreamDecoder()
    decode(decoder, list(format_openai_stream(response)))
    assert decoder.result() == response.model_copy(update={"usage": None})


def test_openai_stream_errors() -> None:
    with pytest.raises(ModelResponseError, match="streamed invalid JSON"):
        OpenAIStreamDecoder().feed("{oops")
    with pytest.raises(ModelResponseError, match="error mid-stream: overloaded"):
        OpenAIStreamDecoder().feed(json.dumps(format_openai_error("overloaded")))
    assert format_openai_error("x", error_type="invalid_request_error", code=400) == {
        "error": {"message": "x", "type": "invalid_request_error", "code": 400}
    }


# -- Anthropic: request -----------------------------------------------------------------------------------------


def test_anthropic_request_round_trip() -> None:
    messages = [
        Msg(role="system", content="Be brief."),
        Msg(role="user", content=[TextBlock(text="Add 1 and 2, then look."), PNG, URL_IMAGE]),
        Msg(
            role="assistant",
            content=[
                ThinkingBlock(thinking="Two calls.", signature="sig"),
                TextBlock(text="Calling."),
                ToolUseBlock(id="c1", name="add", input={"a": 1}),
                ToolUseBlock(id="c2", name="shot"),
            ],
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="c1", name="add", output="3"),
                ToolResultBlock(id="c2", name="shot", output=[TextBlock(text="here"), PNG], is_error=True),
            ],
        ),
        Msg(role="user", content=[TextBlock(text="Thanks.")]),
    ]
    settings: ModelSettings = {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
        "parallel_tool_calls": False,
        "extra_body": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    }
    body, format_tool = format_anthropic_request(
        "claude", messages, tools=[ADD, SHOT], tool_choice="required", settings=settings, stream=True
    )
    assert format_tool is None
    decoded = parse_anthropic_request(json.loads(json.dumps(body)))
    assert comparable(decoded.messages) == comparable(messages)
    assert decoded.model == "claude"
    assert decoded.tools == [ADD, SHOT]
    assert decoded.tool_choice == "required"
    assert decoded.settings == {k: v for k, v in settings.items() if k != "extra_body"}
    assert decoded.stream is True
    assert decoded.extra == {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_anthropic_request_round_trip_of_what_the_wire_cannot_carry() -> None:
    messages = [
        Msg(role="user", content="a"),
        Msg(role="user", content="b"),
        Msg(role="assistant", content=[ThinkingBlock(thinking="unsigned"), TextBlock(text="x")]),
    ]
    body, format_tool = format_anthropic_request("claude", messages, response_format=Answer, max_tokens=99)
    decoded = parse_anthropic_request(body)
    # consecutive turns of one role were merged; thinking without a signature was not sent
    assert comparable(decoded.messages) == comparable(
        [
            Msg(role="user", content=[TextBlock(text="a"), TextBlock(text="b")]),
            Msg(role="assistant", content=[TextBlock(text="x")]),
        ]
    )
    # the response format travels as a forced tool, and comes back as that tool
    assert format_tool is not None
    assert decoded.tool_choice == format_tool.name == "Answer"
    assert [t.name for t in decoded.tools] == ["Answer"]
    assert decoded.response_format is None
    assert decoded.settings == {"max_tokens": 99}


def test_anthropic_request_keeps_redacted_thinking() -> None:
    decoded = parse_anthropic_request(
        {
            "system": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}],
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "redacted_thinking", "data": "xyz"}, {"type": "text", "text": "yo"}],
                },
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        }
    )
    assert comparable(decoded.messages) == comparable(
        [
            Msg(role="system", content="A.\n\nB."),
            Msg(role="user", content="hi"),
            Msg(role="assistant", content=[TextBlock(text="yo")], metadata={"redacted_thinking": ["xyz"]}),
        ]
    )
    assert (decoded.tool_choice, decoded.settings) == ("auto", {"parallel_tool_calls": False})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"system": "s"}, "messages must be a list"),
        ({"messages": [{"role": "system", "content": "x"}]}, r"messages\[0\]: unknown message role 'system'"),
        ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\]\.content must be"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f"}]}]},
            r"messages\[0\]\.content\[0\]: unsupported user content block type 'tool_use'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
            r"messages\[0\]\.content\[0\]: image without a base64 or url source",
        ),
        ({"messages": [], "tools": [{"input_schema": {}}]}, r"tools\[0\]: each tool needs a name"),
        ({"messages": [], "tool_choice": {"type": "tool"}}, "tool_choice must be"),
        ({"messages": [], "max_tokens": "many"}, "max_tokens must be a number"),
        ({"messages": [], "stop_sequences": "END"}, "stop_sequences must be a list of strings"),
    ],
)
def test_anthropic_bad_requests_are_refused_naming_the_field(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_anthropic_request(body)


# -- Anthropic: answer ------------------------------------------------------------------------------------------


def claude_response(**changes: Any) -> ChatResponse:
    """An answer with everything the Messages API can carry."""
    fields: dict[str, Any] = {
        "content": [
            ThinkingBlock(thinking="Adding.", signature="sig"),
            TextBlock(text="Calling the tool."),
            ToolUseBlock(id="t1", name="add", input={"a": 1}),
        ],
        "usage": ChatUsage(input_tokens=20, output_tokens=5),
        "finish_reason": "tool_calls",
        "id": "msg_1",
        "model": "claude",
        "metadata": {
            "stop_reason": "tool_use",
            "redacted_thinking": ["opaque"],
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 7,
        },
    }
    fields.update(changes)
    return ChatResponse(**fields)


def test_anthropic_response_round_trip() -> None:
    response = claude_response()
    data = json.loads(json.dumps(format_anthropic_response(response)))
    assert data["usage"] == {
        "input_tokens": 8,
        "output_tokens": 5,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 7,
    }
    assert [b["type"] for b in data["content"]] == ["redacted_thinking", "thinking", "text", "tool_use"]
    assert parse_anthropic_response(data) == response


def test_anthropic_response_stop_reasons() -> None:
    plain = ChatResponse(content=[TextBlock(text="hi")], finish_reason="length")
    data = format_anthropic_response(plain, model="fallback")
    assert (data["stop_reason"], data["model"]) == ("max_tokens", "fallback")
    assert parse_anthropic_response(data).finish_reason == "length"
    exact = plain.model_copy(update={"metadata": {"stop_reason": "stop_sequence"}, "finish_reason": "stop"})
    assert format_anthropic_response(exact)["stop_reason"] == "stop_sequence"


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_anthropic_stream_round_trip(chunk_size: int | None) -> None:
    malformed = ToolUseBlock(id="t2", name="add", raw_input='{"a": ')
    response = claude_response(content=[*claude_response().content, malformed])
    events = list(format_anthropic_stream(response, chunk_size=chunk_size))
    decoder = AnthropicStreamDecoder()
    deltas = decode(decoder, events)
    assert decoder.result() == response  # a stream carries malformed arguments; a message's input cannot
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Calling the tool."
    assert "".join(d.thinking for d in deltas if isinstance(d, ThinkingDelta)) == "Adding."
    assert [(d.index, d.name) for d in deltas if isinstance(d, ToolCallDelta) and d.name] == [
        (0, "add"),
        (1, "add"),
    ]


def test_anthropic_forced_format_tool_answers_as_text() -> None:
    body, format_tool = format_anthropic_request(
        "claude", [Msg(role="user", content="n?")], response_format=int_schema()
    )
    assert body["tool_choice"] == {"type": "tool", "name": "count"}
    assert format_tool is not None
    assert format_tool.wrapped
    wire = ChatResponse(
        content=[ToolUseBlock(id="t", name="count", input={"value": 3})], finish_reason="tool_calls"
    )
    parsed = parse_anthropic_response(format_anthropic_response(wire), format_tool=format_tool)
    assert (parsed.text, parsed.finish_reason) == ("3", "stop")
    decoder = AnthropicStreamDecoder(format_tool)
    deltas = decode(decoder, list(format_anthropic_stream(wire, chunk_size=3)))
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["3"]
    assert decoder.result().text == "3"


def int_schema() -> dict[str, Any]:
    return {"title": "count", "type": "integer"}


def test_anthropic_errors() -> None:
    assert format_anthropic_error(429) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "error 429"},
    }
    assert format_anthropic_error(418, "teapot")["error"] == {"type": "api_error", "message": "teapot"}
    event = {"type": "error", **format_anthropic_error(529, "busy")}
    with pytest.raises(ModelHTTPError, match="overloaded_error while streaming: busy") as caught:
        AnthropicStreamDecoder().feed(json.dumps(event))
    assert caught.value.status_code == 529
    with pytest.raises(ModelResponseError, match="answered with an error"):
        parse_anthropic_response(format_anthropic_error(400))
    with pytest.raises(ModelResponseError, match="delta for unknown content block 4"):
        AnthropicStreamDecoder().feed(json.dumps({"type": "content_block_delta", "index": 4, "delta": {}}))


# -- shared -----------------------------------------------------------------------------------------------------


def test_sse_encoding_and_request_defaults() -> None:
    assert encode_sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert encode_sse("plain", "named") == b"event: named\ndata: plain\n\n"
    request = ChatRequest(messages=[])
    assert (request.tools, request.settings, request.extra, request.stream) == ([], {}, {}, False)
