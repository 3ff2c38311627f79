"""The Anthropic Messages API request, both ways: Msg list -> request body, and request body -> Msg list.

The answer side (response and stream -> :class:`~agentscope.types.ChatResponse` and back) is in
:mod:`agentscope.formatters._anthropic_response`.

Mapping (:func:`format_anthropic_messages`):

- ``system`` messages, wherever they are, are taken out and joined (blank line between) into the ``system``
  prompt.
- ``assistant`` messages -> ``assistant`` turns; everything else (``user``, ``tool``) -> ``user`` turns.
  Consecutive turns of the same role are merged, and in a ``user`` turn the ``tool_result`` blocks come first,
  as the API requires.
- Blocks: text -> ``text`` (empty text is dropped: the API rejects it); image -> ``image`` with a ``base64``
  or ``url`` source (``data:`` URLs are sent as base64); thinking -> ``thinking`` with its ``signature``
  (thinking without a signature, e.g. from another provider, is dropped: the API would reject it); tool use ->
  ``tool_use`` (unparsable arguments are sent as ``{}``); tool result -> ``tool_result`` with ``is_error``,
  images included.
- The Messages API has no speaker name field. With ``prefix_names=True`` the text of named messages is
  prefixed with ``"<name>: "`` so that the agents of a multi-agent conversation can be told apart.

Structured output: the Messages API has no JSON-schema response format, so :func:`format_anthropic_request`
emulates ``response_format`` with a forced tool. A tool named after the format (a pydantic class's name, or the
schema's ``title``, else ``response``) whose ``input_schema`` is the format's schema is added, and ``tool_choice``
is set to ``{"type": "tool", "name": ...}``; the caller's ``tool_choice`` is overridden for that call. A schema
that is not an object schema is wrapped as ``{"value": <schema>}`` for the tool. The returned
:class:`AnthropicFormatTool` tells the answer decoders which tool call is the answer. Anthropic does not allow a
forced tool together with extended thinking, so do not combine the two.

The way back (:func:`parse_anthropic_request`) inverts the mapping: the ``system`` prompt becomes one system
message, a ``user`` turn's ``tool_result`` blocks become one ``tool`` message (each result named after the call it
answers) followed by a ``user`` message with the rest, ``redacted_thinking`` blocks are kept in the assistant
message's ``metadata["redacted_thinking"]``, and ``disable_parallel_tool_use`` becomes ``parallel_tool_calls=False``.
Merged turns come back merged, names prefixed into the text stay there, and a structured-output tool comes back as
the tool and tool choice it is on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from pydantic import JsonValue

from agentscope._json import as_list, as_object
from agentscope.formatters._common import (
    ChatRequest,
    parse_data_url,
    resolve_response_format,
    sampling_settings,
    tool_arguments_from_value,
    tool_schema,
)
from agentscope.message import (
    Base64Source,
    ContentBlock,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from agentscope.types import ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = [
    "AnthropicFormatTool",
    "AnthropicPayload",
    "format_anthropic_messages",
    "format_anthropic_request",
    "format_anthropic_tool_choice",
    "format_anthropic_tools",
    "parse_anthropic_request",
]

_FORMAT_TOOL_DESCRIPTION: Final = "Give your final answer by calling this tool; its input is the answer."


@dataclass(frozen=True, slots=True)
class AnthropicPayload:
    """The conversation part of a Messages API request."""

    system: str | None
    """The system prompt, or None when the conversation has no system message."""
    messages: list[dict[str, Any]]
    """Alternating ``user`` / ``assistant`` turns."""


def format_anthropic_messages(messages: Sequence[Msg], *, prefix_names: bool = False) -> AnthropicPayload:
    """Format messages for the ``system`` and ``messages`` fields of a Messages API request.

    Args:
        messages: The conversation, oldest first.
        prefix_names: Prefix the text of named messages with ``"<name>: "`` (the API has no name field).
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []

    for msg in messages:
        if msg.role == "system":
            if msg.text:
                system.append(msg.text)
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        prefix = f"{msg.name}: " if prefix_names and msg.name else ""
        for block in msg.blocks:
            if isinstance(block, TextBlock):
                if block.text:
                    blocks.append({"type": "text", "text": prefix + block.text})
                    prefix = ""
            elif isinstance(block, ImageBlock):
                blocks.append(_image(block))
            elif isinstance(block, ThinkingBlock):
                if role == "assistant" and block.signature:
                    blocks.append(
                        {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
                    )
            elif isinstance(block, ToolUseBlock):
                if role == "assistant":
                    blocks.append(
                        {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                    )
            else:
                results.append(_tool_result(block))
        _append(out, role, blocks)
        _append(out, "user", results)

    for turn in out:
        if turn["role"] == "user":
            content: list[dict[str, Any]] = turn["content"]
            content.sort(key=lambda b: b["type"] != "tool_result")  # stable: results first, order kept
    return AnthropicPayload("\n\n".join(system) if system else None, out)


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, URLSource):
        inline = parse_data_url(source.url)
        if inline is None:
            return {"type": "image", "source": {"type": "url", "url": source.url}}
        source = inline
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": source.media_type, "data": source.data},
    }


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.id}
    if isinstance(block.output, str):
        if block.output:
            result["content"] = block.output
    else:
        parts: list[dict[str, Any]] = []
        for part in block.output:
            if isinstance(part, ImageBlock):
                parts.append(_image(part))
            elif part.text:
                parts.append({"type": "text", "text": part.text})
        if parts:
            result["content"] = parts
    if block.is_error:
        result["is_error"] = True
    return result


def format_anthropic_tools(tools: Sequence[ToolSchema]) -> list[dict[str, Any]]:
    """Format tool schemas for the ``tools`` field (``name``, ``description``, ``input_schema``)."""
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


def format_anthropic_tool_choice(
    tool_choice: ToolChoice | None, *, parallel_tool_calls: bool | None = None
) -> dict[str, Any] | None:
    """Map a tool choice to Anthropic's: ``auto``, ``none``, ``required`` -> ``any``, a name -> ``tool``.

    ``parallel_tool_calls=False`` adds ``disable_parallel_tool_use`` (with ``auto`` when no choice is given).
    Returns None when there is nothing to send.
    """
    choice: dict[str, Any]
    if tool_choice is None:
        if parallel_tool_calls is not False:
            return None
        choice = {"type": "auto"}
    elif tool_choice in ("auto", "none"):
        choice = {"type": tool_choice}
    elif tool_choice == "required":
        choice = {"type": "any"}
    else:
        choice = {"type": "tool", "name": tool_choice}
    if parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


@dataclass(frozen=True, slots=True)
class AnthropicFormatTool:
    """The forced tool that emulates a response format (see the module docstring)."""

    name: str
    """The tool's name; its call is the answer."""
    wrapped: bool
    """True when the schema was wrapped as ``{"value": schema}``."""

    def text(self, tool_input: Any) -> str:
        """The answer as JSON text: the tool's input, unwrapped when the schema was wrapped."""
        value = as_object(tool_input).get("value") if self.wrapped else tool_input
        return json.dumps(value, ensure_ascii=False)


def format_anthropic_request(
    model: str,
    messages: Sequence[Msg],
    *,
    tools: Sequence[ToolSchema] | None = None,
    tool_choice: ToolChoice | None = None,
    response_format: ResponseFormat | None = None,
    settings: ModelSettings | None = None,
    stream: bool = False,
    max_tokens: int = 4096,
) -> tuple[dict[str, Any], AnthropicFormatTool | None]:
    """A complete Messages API request body, and the forced tool that emulates ``response_format`` (if any).

    ``settings`` map to ``temperature``, ``top_p``, ``max_tokens`` (else ``max_tokens``, which the API requires),
    ``stop_sequences`` (from ``stop``) and ``tool_choice.disable_parallel_tool_use`` (from
    ``parallel_tool_calls=False``); ``seed`` is not supported by the API and is ignored; ``extra_body`` is merged
    in last, verbatim.
    """
    values = cast("Mapping[str, Any]", settings or {})
    payload = format_anthropic_messages(messages)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": values.get("max_tokens", max_tokens),
        "messages": payload.messages,
    }
    if payload.system is not None:
        body["system"] = payload.system
    tool_list = format_anthropic_tools(tools) if tools else []
    format_tool: AnthropicFormatTool | None = None
    if response_format is not None:
        resolved = resolve_response_format(response_format)
        schema = resolved.schema
        wrapped = schema.get("type") != "object"
        if wrapped:
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        format_tool = AnthropicFormatTool(resolved.name, wrapped)
        tool_list.append(
            {"name": resolved.name, "description": _FORMAT_TOOL_DESCRIPTION, "input_schema": schema}
        )
        tool_choice = resolved.name
    if tool_list:
        body["tools"] = tool_list
        choice = format_anthropic_tool_choice(
            tool_choice, parallel_tool_calls=values.get("parallel_tool_calls")
        )
        if choice is not None:
            body["tool_choice"] = choice
    elif tool_choice == "none":
        body["tool_choice"] = {"type": "none"}
    for key in ("temperature", "top_p"):
        if key in values:
            body[key] = values[key]
    if "stop" in values:
        body["stop_sequences"] = values["stop"]
    if stream:
        body["stream"] = True
    extra = values.get("extra_body")
    if extra:
        body.update(extra)
    return body, format_tool


# -- request -> messages ----------------------------------------------------------------------------------------

_REQUEST_KEYS: Final = frozenset(
    {
        "model",
        "system",
        "messages",
        "tools",
        "tool_choice",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
    }
)


def parse_anthropic_request(body: Mapping[str, Any]) -> ChatRequest:
    """A Messages API request body decoded: messages, tools, tool choice and settings.

    The inverse of :func:`format_anthropic_request` (see the module docstring for what comes back exactly). Raises
    ValueError, naming the field, for a request that cannot be decoded (a missing ``messages`` list, an unknown
    role or block type, an image without a source, a tool without a name, a setting of the wrong type...): a
    server answers it with 400.
    """
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise ValueError("messages must be a list of message objects")
    messages: list[Msg] = []
    system = _system_text(body.get("system"))
    if system is not None:
        messages.append(Msg(role="system", content=system))
    messages.extend(_parse_messages(cast("list[Any]", raw_messages)))
    tool_choice, parallel = _parse_tool_choice(body.get("tool_choice"))
    settings = _parse_settings(body)
    if parallel is False:
        settings["parallel_tool_calls"] = False
    model = body.get("model")
    return ChatRequest(
        messages=messages,
        model=None if model is None else str(model),
        tools=_parse_tools(body.get("tools")),
        tool_choice=tool_choice,
        settings=settings,
        stream=bool(body.get("stream")),
        extra={k: v for k, v in body.items() if k not in _REQUEST_KEYS},
    )


def _system_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n\n".join(str(as_object(b).get("text") or "") for b in cast("list[Any]", value))
    raise ValueError(f"system must be a string or a list of text blocks, got {value!r:.100}")


def _parse_messages(items: list[Any]) -> list[Msg]:
    out: list[Msg] = []
    names: dict[str, str] = {}
    for index, item in enumerate(items):
        turn = as_object(item)
        role = turn.get("role")
        content = turn.get("content")
        if role not in ("user", "assistant"):
            raise ValueError(f"messages[{index}]: unknown message role {role!r}")
        if isinstance(content, str):
            out.append(Msg(role=role, content=content))
            continue
        if not isinstance(content, list):
            raise ValueError(f"messages[{index}].content must be a string or a list of content blocks")
        blocks: list[ContentBlock] = []
        results: list[ContentBlock] = []
        redacted: list[JsonValue] = []
        for position, raw_block in enumerate(cast("list[Any]", content)):
            where = f"messages[{index}].content[{position}]"
            block = as_object(raw_block)
            kind = block.get("type")
            if kind == "text":
                blocks.append(TextBlock(text=str(block.get("text") or "")))
            elif kind == "image":
                blocks.append(_decode_image(block, where))
            elif kind == "thinking" and role == "assistant":
                signature = block.get("signature")
                blocks.append(
                    ThinkingBlock(
                        thinking=str(block.get("thinking") or ""),
                        signature=signature if isinstance(signature, str) else None,
                    )
                )
            elif kind == "redacted_thinking" and role == "assistant":
                redacted.append(str(block.get("data") or ""))
            elif kind == "tool_use" and role == "assistant":
                arguments, raw = tool_arguments_from_value(block.get("input"))
                call = ToolUseBlock(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    input=arguments,
                    raw_input=raw,
                )
                names[call.id] = call.name
                blocks.append(call)
            elif kind == "tool_result" and role == "user":
                results.append(_decode_tool_result(block, names, where))
            else:
                raise ValueError(f"{where}: unsupported {role} content block type {kind!r}")
        if results:
            out.append(Msg(role="tool", content=results))
        if blocks or redacted or not results:
            msg = Msg(role=role, content=blocks)
            if redacted:
                msg.metadata["redacted_thinking"] = redacted
            out.append(msg)
    return out


def _decode_image(block: dict[str, Any], where: str) -> ImageBlock:
    source = as_object(block.get("source"))
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type")
        return ImageBlock(
            source=Base64Source(
                media_type=media_type
                if isinstance(media_type, str) and media_type
                else "application/octet-stream",
                data=source["data"],
            )
        )
    if kind == "url" and isinstance(source.get("url"), str) and source["url"]:
        return ImageBlock(source=URLSource(url=source["url"]))
    raise ValueError(f"{where}: image without a base64 or url source")


def _decode_tool_result(block: dict[str, Any], names: dict[str, str], where: str) -> ToolResultBlock:
    call_id = str(block.get("tool_use_id") or "")
    content = block.get("content")
    output: str | list[TextBlock | ImageBlock]
    if content is None or isinstance(content, str):
        output = content or ""
    else:
        output = []
        for position, raw_part in enumerate(as_list(content)):
            part = as_object(raw_part)
            if part.get("type") == "text":
                output.append(TextBlock(text=str(part.get("text") or "")))
            elif part.get("type") == "image":
                output.append(_decode_image(part, f"{where}.content[{position}]"))
            else:
                raise ValueError(
                    f"{where}.content[{position}]: unsupported tool result part {part.get('type')!r}"
                )
    return ToolResultBlock(
        id=call_id, name=names.get(call_id, ""), output=output, is_error=block.get("is_error") is True
    )


def _parse_tools(value: Any) -> list[ToolSchema]:
    tools: list[ToolSchema] = []
    for index, item in enumerate(as_list(value)):
        tool = as_object(item)
        tools.append(
            tool_schema(
                tool.get("name"), tool.get("description"), tool.get("input_schema"), f"tools[{index}]"
            )
        )
    return tools


def _parse_tool_choice(value: Any) -> tuple[ToolChoice | None, bool | None]:
    """The tool choice and whether parallel calls are allowed (None: not said)."""
    if value is None:
        return None, None
    choice = as_object(value)
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind in ("auto", "none"):
        return kind, parallel
    if kind == "any":
        return "required", parallel
    name = choice.get("name")
    if kind == "tool" and isinstance(name, str) and name:
        return name, parallel
    raise ValueError(
        'tool_choice must be {"type": "auto" | "none" | "any"} or {"type": "tool", "name": ...}, '
        f"got {value!r:.100}"
    )


def _parse_settings(body: Mapping[str, Any]) -> ModelSettings:
    settings = sampling_settings(body, max_tokens_keys=("max_tokens",))
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in cast("list[Any]", stop)):
            raise ValueError(f"stop_sequences must be a list of strings, got {stop!r:.100}")
        settings["stop"] = cast("list[str]", stop)
    return settings
