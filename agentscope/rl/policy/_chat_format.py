"""ChatML in the Qwen2.5 style: messages and tools to prompt text, and completions back to content blocks.

The layout, as the Qwen2.5 chat template writes it::

    <|im_start|>system
    {system prompt}

    # Tools
    ...
    <tools>
    {"type": "function", "function": {...}}
    </tools>
    ...<|im_end|>
    <|im_start|>user
    {text}<|im_end|>
    <|im_start|>assistant
    {text}
    <tool_call>
    {"name": "calculator", "arguments": {"expression": "1 + 2"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    3
    </tool_response><|im_end|>
    <|im_start|>assistant

A ``compact`` tools style lists each tool as one line instead of its JSON schema (``find_person(name: string):
Find a person's id by full name.``): the tiny policy uses it (its format is ours to choose, and the schema block was
two thirds of every episode's tokens); models trained on Qwen2.5's template keep ``qwen``. A tokenizer says which
style it was trained with in its ``agentscope_tools_style`` init argument (:meth:`ChatFormat.for_tokenizer`).

The tiny policy's tokenizer carries the same layout as its Jinja chat template (:func:`chat_template`), so
``tokenizer.apply_chat_template`` and :class:`ChatFormat` render the same text (one difference: the template merges
consecutive ``tool`` messages into one user block, while :class:`ChatFormat` renders each :class:`Msg` as its own
block; a ReActAgent puts all results of one step into one message, so the two agree there).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias, cast

from pydantic import JsonValue

from agentscope.formatters import json_value_problem, tool_result_text
from agentscope.message import ContentBlock, Msg, TextBlock, ToolResultBlock, ToolUseBlock, new_id
from agentscope.models import ToolSchema

__all__ = ["CHAT_TEMPLATE", "ChatFormat", "ToolsStyle", "chat_template"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

_TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)

ToolsStyle: TypeAlias = Literal["qwen", "compact"]
"""How the system block lists the tools: Qwen2.5's JSON schemas, or one line per tool."""

_COMPACT_INTRO = "\n\n# Tools"
_COMPACT_OUTRO = '\nCall a tool with <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>'

_TOOLS_JINJA: dict[ToolsStyle, str] = {
    "qwen": (
        "{{- " + json.dumps(_TOOLS_INTRO) + " }}"
        "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
        "{{- " + json.dumps(_TOOLS_OUTRO) + " }}"
    ),
    "compact": (
        "{{- " + json.dumps(_COMPACT_INTRO) + " }}"
        "{%- for tool in tools %}{%- set f = tool['function'] if tool['function'] is defined else tool %}"
        "{{- '\\n' + f['name'] + '(' }}"
        "{%- for name, spec in (f['parameters']['properties'] or {}).items() %}"
        "{{- (', ' if not loop.first else '') + name + ': ' + (spec['type'] if spec['type'] is defined else 'any') }}"
        "{%- endfor %}{{- ')' }}{%- if f['description'] %}{{- ': ' + f['description'] }}{%- endif %}{%- endfor %}"
        "{{- " + json.dumps(_COMPACT_OUTRO) + " }}"
    ),
}


def chat_template(tools_style: ToolsStyle = "qwen") -> str:
    """The Jinja chat template equivalent to :class:`ChatFormat` with ``tools_style`` (saved with the tiny policy's
    tokenizer, so that ``tokenizer.apply_chat_template`` renders what the policy was trained on)."""
    return (
        "{%- if messages and messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
        "{%- set rest = messages[1:] %}{%- else %}{%- set system = '" + DEFAULT_SYSTEM_PROMPT + "' %}"
        "{%- set rest = messages %}{%- endif %}"
        "{{- '<|im_start|>system\\n' + system }}"
        "{%- if tools %}" + _TOOLS_JINJA[tools_style] + "{%- endif %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- for message in rest %}"
        "{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{%- set ns = namespace(parts=[]) %}"
        "{%- if message['content'] %}{%- set ns.parts = ns.parts + [message['content']] %}{%- endif %}"
        "{%- for call in message.get('tool_calls') or [] %}"
        "{%- if call['function'] is defined %}{%- set call = call['function'] %}{%- endif %}"
        "{%- set args = call['arguments'] if call['arguments'] is string else (call['arguments'] | tojson) %}"
        "{%- set ns.parts = ns.parts + ['<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' + args"
        " + '}\\n</tool_call>'] %}"
        "{%- endfor %}"
        "{{- ns.parts | join('\\n') }}{{- '<|im_end|>\\n' }}"
        "{%- elif message['role'] == 'tool' %}"
        "{%- if loop.first or rest[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
        "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
        "{%- if loop.last or rest[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
        "{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


CHAT_TEMPLATE = chat_template("qwen")
"""The Jinja chat template of Qwen2.5's layout (:func:`chat_template` with ``"qwen"``)."""

_INVALID_ARGUMENTS_KEY = "invalid_tool_arguments"
"""Where a repaired history keeps a call's unparsable arguments (``agentscope.context.INVALID_ARGUMENTS_KEY``)."""

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_NAME_RE = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CALL_SHAPE_RE = re.compile(
    r'^\{\s*"name"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*"arguments"\s*:\s*(.*?)\s*\}$', re.DOTALL
)


class ChatFormat:
    """Renders conversations for the policy and parses what it generates (ChatML, Qwen2.5 tool-call style).

    Args:
        default_system_prompt: The system prompt used when a conversation has no system message.
        tools_style: How the system block lists the tools (see the module docstring).
    """

    def __init__(
        self, *, default_system_prompt: str = DEFAULT_SYSTEM_PROMPT, tools_style: ToolsStyle = "qwen"
    ) -> None:
        self.default_system_prompt = default_system_prompt
        """Used when the conversation starts without a system message."""
        self.tools_style: ToolsStyle = tools_style
        """How the system block lists the tools."""

    @classmethod
    def for_tokenizer(cls, tokenizer: object) -> ChatFormat:
        """The format a tokenizer's policy was trained with: its ``agentscope_tools_style`` init argument
        (saved in ``tokenizer_config.json`` by :func:`~agentscope.rl.policy.build_tiny_policy`), else ``qwen``."""
        init_kwargs: object = getattr(tokenizer, "init_kwargs", None)
        style = (
            cast("dict[str, object]", init_kwargs).get("agentscope_tools_style")
            if isinstance(init_kwargs, dict)
            else None
        )
        return cls(tools_style="compact" if style == "compact" else "qwen")

    # ------------------------------------------------------------------ rendering

    def render_system(self, prompt: str | None, tools: Sequence[ToolSchema] | None = None) -> str:
        """The system block: the prompt (the default when None) and, when there are tools, their signatures."""
        text = IM_START + "system\n" + (self.default_system_prompt if prompt is None else prompt)
        if tools and self.tools_style == "compact":
            text += (
                _COMPACT_INTRO + "".join("\n" + _compact_signature(tool) for tool in tools) + _COMPACT_OUTRO
            )
        elif tools:
            text += _TOOLS_INTRO
            for tool in tools:
                text += "\n" + json.dumps(tool_dict(tool), ensure_ascii=False)
            text += _TOOLS_OUTRO
        return text + IM_END + "\n"

    def render_message(self, msg: Msg) -> str:
        """One message as a ChatML block.

        ``user`` and ``system`` messages render their text; ``tool`` messages (and any message holding tool
        results) render as a user block of ``<tool_response>`` sections, failed calls prefixed ``Error: ``;
        ``assistant`` messages go through :meth:`render_assistant`. Images are not supported by a text policy and
        render as ``[image]``.
        """
        if msg.role == "assistant":
            return self.render_assistant(msg)
        results = msg.blocks_of(ToolResultBlock)
        if results:
            text = ""
            for result in results:
                output = tool_result_text(result)
                if result.is_error:
                    output = f"Error: {output}"
                text += f"\n{TOOL_RESPONSE_OPEN}\n{output}\n{TOOL_RESPONSE_CLOSE}"
            rest = _plain_text(msg)
            if rest:
                text += "\n" + rest
            return IM_START + "user" + text + IM_END + "\n"
        role = "system" if msg.role == "system" else "user"
        return IM_START + role + "\n" + _plain_text(msg) + IM_END + "\n"

    def render_assistant(self, msg: Msg) -> str:
        """An assistant message as the policy would have generated it (for history it did not generate)."""
        return self.generation_prompt() + self.assistant_body(msg) + IM_END + "\n"

    def assistant_body(self, msg: Msg) -> str:
        """The text between the generation prompt and ``<|im_end|>``: the text, then one block per tool call."""
        parts: list[str] = []
        text = _plain_text(msg)
        if text:
            parts.append(text)
        # A call whose arguments did not parse was stored with `{}` and its text under this key
        # (agentscope.context's repair): render the text the policy generated, so the next prompt extends it.
        invalid = msg.metadata.get(_INVALID_ARGUMENTS_KEY)
        raw = cast("dict[str, Any]", invalid) if isinstance(invalid, dict) else {}
        parts.extend(render_tool_call(call, raw.get(call.id)) for call in msg.tool_calls)
        return "\n".join(parts)

    def generation_prompt(self) -> str:
        """What opens the assistant's turn: ``<|im_start|>assistant\\n``."""
        return IM_START + "assistant\n"

    def system_prompt_of(self, messages: Sequence[Msg]) -> tuple[str | None, Sequence[Msg]]:
        """The leading system message's text (None when there is none) and the messages after it."""
        if messages and messages[0].role == "system":
            return messages[0].text, messages[1:]
        return None, messages

    def render(
        self,
        messages: Sequence[Msg],
        tools: Sequence[ToolSchema] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> str:
        """A whole conversation as prompt text."""
        system, rest = self.system_prompt_of(messages)
        text = self.render_system(system, tools) + "".join(self.render_message(m) for m in rest)
        return text + self.generation_prompt() if add_generation_prompt else text

    # ------------------------------------------------------------------ parsing

    def parse_completion(self, text: str) -> list[ContentBlock]:
        """Content blocks from generated text; never raises.

        Text outside ``<tool_call>`` sections becomes one :class:`TextBlock` (stripped; none when empty). Each
        section becomes a :class:`ToolUseBlock` with a fresh id. A section that is not a JSON object with a string
        ``name`` and an object ``arguments`` (an unterminated section at the end included) still becomes a
        :class:`ToolUseBlock`: its ``name`` is recovered when it can be, ``input`` is empty and ``raw_input`` holds
        the arguments as generated (the whole section when the arguments cannot be told apart), so the toolkit
        reports the problem to the model as a tool error.
        """
        calls: list[ContentBlock] = []
        texts: list[str] = []
        position = 0
        for match in _TOOL_CALL_RE.finditer(text):
            texts.append(text[position : match.start()])
            position = match.end()
            calls.append(_parse_call(match.group(1).strip()))
        texts.append(text[position:])
        joined = "".join(texts).strip()
        blocks: list[ContentBlock] = [TextBlock(text=joined)] if joined else []
        return blocks + calls


def tool_dict(tool: ToolSchema) -> dict[str, Any]:
    """A tool schema as it is listed in the system prompt (the OpenAI function-tool shape)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _compact_signature(tool: ToolSchema) -> str:
    """``name(arg: type, ...): description``, the parameters in their schema's order."""
    properties: object = tool.parameters.get("properties")
    args: list[str] = []
    if isinstance(properties, dict):
        for name, spec in cast("dict[str, object]", properties).items():
            kind = cast("dict[str, object]", spec).get("type", "any") if isinstance(spec, dict) else "any"
            args.append(f"{name}: {kind}")
    text = f"{tool.name}({', '.join(args)})"
    return f"{text}: {tool.description}" if tool.description else text


def render_tool_call(call: ToolUseBlock, invalid_arguments: object = None) -> str:
    """``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` (malformed arguments verbatim: the call's
    ``raw_input``, or ``invalid_arguments``, the text a repaired history keeps beside the call)."""
    raw_text = call.raw_input if call.raw_input is not None else invalid_arguments
    if isinstance(raw_text, str) and not call.input:
        raw = raw_text
        inner = raw if raw.lstrip().startswith('{"name"') else _call_json(call.name, raw)
    else:
        inner = _call_json(call.name, json.dumps(call.input, ensure_ascii=False))
    return f"{TOOL_CALL_OPEN}\n{inner}\n{TOOL_CALL_CLOSE}"


def _call_json(name: str, arguments: str) -> str:
    return '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": ' + arguments + "}"


def _plain_text(msg: Msg) -> str:
    if isinstance(msg.content, str):
        return msg.content
    parts: list[str] = []
    for block in msg.content:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif block.type == "image":
            parts.append("[image]")
    return "\n".join(parts)


def _parse_call(inner: str) -> ToolUseBlock:
    call_id = f"call_{new_id()[:24]}"
    value: JsonValue = None
    with contextlib.suppress(ValueError, RecursionError):  # RecursionError: nested past Python's stack
        value = json.loads(inner)
    if isinstance(value, dict):
        name = value.get("name")
        arguments = value.get("arguments", {})
        if isinstance(arguments, str):  # some models emit the arguments as a JSON string
            with contextlib.suppress(ValueError, RecursionError):
                arguments = cast(JsonValue, json.loads(arguments))
        if isinstance(name, str) and isinstance(arguments, dict) and json_value_problem(arguments) is None:
            return ToolUseBlock(id=call_id, name=name, input=arguments)
    found = _NAME_RE.search(inner)
    name_text = ""
    if found is not None:
        try:
            name_text = str(json.loads(f'"{found.group(1)}"'))
        except ValueError:
            name_text = found.group(1)
    shape = _CALL_SHAPE_RE.match(inner)
    raw = shape.group(1) if shape is not None else inner
    return ToolUseBlock(id=call_id, name=name_text, input={}, raw_input=raw)
