"""ChatFormat: ChatML rendering (equal to the saved Jinja chat template) and tolerant completion parsing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.rl.policy import CHAT_TEMPLATE, ChatFormat, ToolsStyle, chat_template
from agentscope.rl.policy._chat_format import tool_dict

TOOL = ToolSchema(
    name="calculator",
    description="Evaluate an expression.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
FMT = ChatFormat()


def _hf_tokenizer(template: str, **kwargs: Any) -> Any:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), chat_template=template, **kwargs)


@pytest.fixture(scope="module")
def hf_template() -> Any:
    return _hf_tokenizer(CHAT_TEMPLATE)


def conversation() -> tuple[list[Msg], list[dict[str, Any]]]:
    ours = [
        Msg(role="system", content="Be brief."),
        Msg(role="user", content="What is 1 + 2 and 2 - 2?"),
        Msg(
            role="assistant",
            content=[
                TextBlock(text="Let me see."),
                ToolUseBlock(id="a", name="calculator", input={"expression": "1 + 2"}),
                ToolUseBlock(id="b", name="calculator", input={"expression": "2 - 2"}),
            ],
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="a", name="calculator", output="3"),
                ToolResultBlock(id="b", name="calculator", output="no", is_error=True),
            ],
        ),
        Msg(role="assistant", content=[ToolUseBlock(id="c", name="calculator", input={"expression": "ü"})]),
        Msg(role="tool", content=[ToolResultBlock(id="c", name="calculator", output="?")]),
        Msg(role="assistant", content="3 and 0"),
        Msg(role="user", content="Thanks"),
    ]
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1 + 2"}}}
    theirs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1 + 2 and 2 - 2?"},
        {
            "role": "assistant",
            "content": "Let me see.",
            "tool_calls": [
                call,
                {
                    "type": "function",
                    "function": {"name": "calculator", "arguments": {"expression": "2 - 2"}},
                },
            ],
        },
        {"role": "tool", "content": "3"},
        {"role": "tool", "content": "Error: no"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "ü"}}}],
        },
        {"role": "tool", "content": "?"},
        {"role": "assistant", "content": "3 and 0"},
        {"role": "user", "content": "Thanks"},
    ]
    return ours, theirs


def test_rendering_equals_the_saved_chat_template(hf_template: Any) -> None:
    ours, theirs = conversation()
    for tools in ([TOOL], None):
        expected = hf_template.apply_chat_template(
            theirs,
            tools=[tool_dict(t) for t in tools] if tools else None,
            tokenize=False,
            add_generation_prompt=True,
        )
        assert FMT.render(ours, tools) == expected
    # no system message: the default one
    assert FMT.render(ours[1:2]) == hf_template.apply_chat_template(
        theirs[1:2], tokenize=False, add_generation_prompt=True
    )


def test_the_layout_is_qwen25_chatml() -> None:
    ours, _ = conversation()
    text = FMT.render(ours[:4], [TOOL])
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "calculator"' in text
    assert (
        '<|im_start|>assistant\nLet me see.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 + 2"}}'
        "\n</tool_call>\n<tool_call>\n" in text
    )
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n3\n</tool_response>\n<tool_response>\nError: no\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert FMT.generation_prompt() == "<|im_start|>assistant\n"


def test_parse_text_and_tool_calls() -> None:
    blocks = FMT.parse_completion(
        ' I will compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 + 2"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}\n</tool_call>'
    )
    assert isinstance(blocks[0], TextBlock)
    assert blocks[0].text == "I will compute."
    calls = [b for b in blocks if isinstance(b, ToolUseBlock)]
    assert [(c.name, c.input, c.raw_input) for c in calls] == [
        ("calculator", {"expression": "1 + 2"}, None),
        ("search", {"q": "x"}, None),
    ]
    assert calls[0].id != calls[1].id
    assert FMT.parse_completion("just text") == [TextBlock(text="just text")]
    assert FMT.parse_completion("  ") == []
    # the rendering of a parsed completion is the canonical text again
    msg = Msg(role="assistant", content=blocks)
    assert FMT.assistant_body(msg).startswith("I will compute.\n<tool_call>\n")


@pytest.mark.parametrize(
    ("completion", "name", "raw"),
    [
        (
            '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 +}\n</tool_call>',
            "calculator",
            '{"expression": "1 +',
        ),
        ('<tool_call>\n{"name": "calculator", "arguments": [1, 2]}\n</tool_call>', "calculator", "[1, 2]"),
        ('<tool_call>\n{"name": "calc", "arguments": {"a": 1}', "calc", '{"a": 1'),  # cut off by max_tokens
        ("<tool_call>\nnot json at all\n</tool_call>", "", "not json at all"),
        ("<tool_call></tool_call>", "", ""),
    ],
)
def test_malformed_tool_calls_keep_the_raw_text(completion: str, name: str, raw: str) -> None:
    (call,) = FMT.parse_completion(completion)
    assert isinstance(call, ToolUseBlock)
    assert (call.name, call.input, call.raw_input) == (name, {}, raw)
    assert FMT.render_assistant(Msg(role="assistant", content=[call]))  # renders without raising


def test_parsing_never_raises() -> None:
    rng = random.Random(0)
    alphabet = [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        '"name"',
        ":",
        '"arguments"',
        ",",
        "[",
        "]",
        '"',
        "\\",
        "x",
        "\n",
        " ",
    ]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for block in FMT.parse_completion(text):
            assert isinstance(block, TextBlock | ToolUseBlock)


@pytest.mark.parametrize("style", ["qwen", "compact"])
def test_each_tools_style_renders_as_its_saved_template(style: ToolsStyle) -> None:
    tokenizer = _hf_tokenizer(chat_template(style), agentscope_tools_style=style)
    chat = ChatFormat.for_tokenizer(tokenizer)
    assert chat.tools_style == style
    ours, theirs = conversation()
    two = [
        TOOL,
        ToolSchema(
            name="lookup", description="", parameters={"properties": {"a": {"type": "integer"}, "b": {}}}
        ),
    ]
    expected = tokenizer.apply_chat_template(
        theirs, tools=[tool_dict(t) for t in two], tokenize=False, add_generation_prompt=True
    )
    assert chat.render(ours, two) == expected


def test_the_compact_style_lists_one_line_per_tool_and_keeps_the_call_format() -> None:
    ours, _ = conversation()
    compact, qwen = ChatFormat(tools_style="compact"), ChatFormat()
    text = compact.render(ours[:4], [TOOL])
    assert (
        "\n# Tools\ncalculator(expression: string): Evaluate an expression.\nCall a tool with <tool_call>"
        in text
    )
    assert len(text) < len(qwen.render(ours[:4], [TOOL])) - 250
    body = text.split("<|im_start|>assistant\n")[1]
    assert body == qwen.render(ours[:4], [TOOL]).split("<|im_start|>assistant\n")[1]  # calls render the same
    assert (
        ChatFormat.for_tokenizer(object()).tools_style == "qwen"
    )  # a tokenizer that says nothing: Qwen2.5's
