"""The OpenAI Chat Completions request, both ways: Msg list -> request body, and request body -> Msg list.

The same format is spoken by OpenAI, vLLM, SGLang and AgentScope's rollout service. The answer side (response and
stream -> :class:`~agentscope.types.ChatResponse` and back) is in :mod:`agentscope.formatters._openai_response`.

Mapping, message by message (:func:`format_openai_messages`):

- ``system`` messages -> ``{"role": "system", "content": <text>}``.
- ``user`` messages -> ``{"role": "user", "content": <text or parts>}``; images become ``image_url`` parts.
- ``assistant`` messages -> ``{"role": "assistant", "content": <text or None>, "tool_calls": [...]}``;
  thinking and image blocks are left out (the API takes neither back).
- each :class:`ToolResultBlock`, in any message -> ``{"role": "tool", "tool_call_id": ..., "content":
  <text>}``. A ``tool`` message can only carry text, so images from tool results go into one ``user`` message
  placed right after the run of ``tool`` messages (which must directly follow the assistant's ``tool_calls``).
  Failed calls (``is_error``) get their text prefixed with ``Error: ``.
- ``tool`` messages without tool-result blocks are sent as ``user`` messages.
- ``name`` is kept on system, user and assistant messages (sanitized to ``^[a-zA-Z0-9_-]{1,64}$``), so the
  model can tell the agents of a multi-agent conversation apart.

The way back (:func:`parse_openai_messages`) inverts this: text content stays a string, a list of parts becomes
text and image blocks, ``reasoning_content`` becomes a thinking block, consecutive ``tool`` messages become one
``tool`` message whose results carry the name of the call they answer (``Error: `` text marks a failed call), and
``developer`` messages count as ``system``. Multiple text blocks come back joined (the request held one string),
thinking sent by us does not come back (it was never sent), and images of tool results come back as the ``user``
message that carried them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from agentscope._json import as_list, as_object
from agentscope.formatters._common import (
    ChatRequest,
    dump_tool_arguments,
    image_url,
    int_setting,
    parse_data_url,
    parse_tool_arguments,
    resolve_response_format,
    sampling_settings,
    sanitize_name,
    tool_result_text,
    tool_schema,
)
from agentscope.message import (
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
    "format_openai_messages",
    "format_openai_request",
    "format_openai_response_format",
    "format_openai_tool_choice",
    "format_openai_tools",
    "openai_tool_use",
    "parse_openai_messages",
    "parse_openai_request",
]

_IMAGES_FOLLOW = "(image output follows in the next message)"
_ERROR_PREFIX = "Error: "
_SAMPLING_KEYS: Final = ("temperature", "top_p", "max_tokens", "stop", "seed")


def format_openai_messages(messages: Sequence[Msg], *, include_names: bool = True) -> list[dict[str, Any]]:
    """Format messages for the ``messages`` field of a Chat Completions request.

    Args:
        messages: The conversation, oldest first.
        include_names: Send each message's ``name`` (OpenAI's ``name`` field). Turn off for servers that
            reject it.
    """
    out: list[dict[str, Any]] = []
    pending_images: list[dict[str, Any]] = []

    for msg in messages:
        name = sanitize_name(msg.name) if include_names and msg.name else None
        content = msg.content
        if isinstance(content, str):
            if pending_images:
                out.append(_images_message(pending_images))
            out.append(_message("user" if msg.role == "tool" else msg.role, content, name))
            continue

        texts: list[str] = []
        parts: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        has_image = False
        for block in content:
            if isinstance(block, TextBlock):
                texts.append(block.text)
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ImageBlock):
                has_image = True
                parts.append({"type": "image_url", "image_url": {"url": image_url(block)}})
            elif isinstance(block, ToolUseBlock):
                tool_calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": dump_tool_arguments(block)},
                    }
                )
            elif isinstance(block, ToolResultBlock):
                out.append(_tool_message(block, pending_images))
            # Thinking blocks are not sent back.

        if msg.role == "assistant":
            if not texts and not tool_calls:
                continue
            if pending_images:
                out.append(_images_message(pending_images))
            message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
            if name:
                message["name"] = name
            if tool_calls:
                message["tool_calls"] = tool_calls
            out.append(message)
            continue

        if not parts:
            continue
        if pending_images:
            out.append(_images_message(pending_images))
        role = "user" if msg.role == "tool" else msg.role
        if has_image and role == "user":
            out.append(_message(role, parts, name))
        else:
            out.append(_message(role, "\n".join(texts), name))

    if pending_images:
        out.append(_images_message(pending_images))
    return out


def _message(role: str, content: str | list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": content}
    if name:
        message["name"] = name
    return message


def _tool_message(block: ToolResultBlock, pending_images: list[dict[str, Any]]) -> dict[str, Any]:
    text = tool_result_text(block)
    if not isinstance(block.output, str):
        images = [part for part in block.output if isinstance(part, ImageBlock)]
        if images:
            if not pending_images:
                pending_images.append({"type": "text", "text": "Images returned by tools:"})
            pending_images.append({"type": "text", "text": f"[{block.name} (call {block.id})]"})
            pending_images.extend({"type": "image_url", "image_url": {"url": image_url(i)}} for i in images)
            text = f"{text}\n{_IMAGES_FOLLOW}" if text else _IMAGES_FOLLOW
    if block.is_error:
        text = _ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": block.id, "content": text}


def _images_message(pending_images: list[dict[str, Any]]) -> dict[str, Any]:
    message = {"role": "user", "content": list(pending_images)}
    pending_images.clear()
    return message


def format_openai_tools(tools: Sequence[ToolSchema]) -> list[dict[str, Any]]:
    """Format tool schemas for the ``tools`` field (``{"type": "function", "function": {...}}`` each)."""
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        }
        for tool in tools
    ]


def format_openai_tool_choice(tool_choice: ToolChoice) -> str | dict[str, Any]:
    """``auto``, ``none`` and ``required`` as they are; a tool name as ``{"type": "function", ...}``."""
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    return {"type": "function", "function": {"name": tool_choice}}


def format_openai_response_format(response_format: ResponseFormat) -> dict[str, Any]:
    """The ``response_format`` for a model class or JSON schema.

    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``;

    ``strict`` is true only when the schema meets OpenAI's strict-mode rules (see
    :func:`~agentscope.formatters.resolve_response_format`).
    """
    resolved = resolve_response_format(response_format)
    return {
        "type": "json_schema",
        "json_schema": {"name": resolved.name, "schema": resolved.schema, "strict": resolved.strict},
    }


def format_openai_request(
    model: str,
    messages: Sequence[Msg],
    *,
    tools: Sequence[ToolSchema] | None = None,
    tool_choice: ToolChoice | None = None,
    response_format: ResponseFormat | None = None,
    settings: ModelSettings | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """A complete Chat Completions request body.

    ``settings`` map to ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed`` and, when tools are
    offered, ``parallel_tool_calls``; ``extra_body`` is merged in last, verbatim; ``timeout_s`` is not part of
    the body. A stream asks for the usage chunk (``stream_options.include_usage``).
    """
    body: dict[str, Any] = {"model": model, "messages": format_openai_messages(messages)}
    values = cast("Mapping[str, Any]", settings or {})
    if tools:
        body["tools"] = format_openai_tools(tools)
        if "parallel_tool_calls" in values:
            body["parallel_tool_calls"] = values["parallel_tool_calls"]
    if tool_choice is not None:
        body["tool_choice"] = format_openai_tool_choice(tool_choice)
    if response_format is not None:
        body["response_format"] = format_openai_response_format(response_format)
    for key in _SAMPLING_KEYS:
        if key in values:
            body[key] = values[key]
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    extra = values.get("extra_body")
    if extra:
        body.update(extra)
    return body


# -- request -> messages ----------------------------------------------------------------------------------------

_REQUEST_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "parallel_tool_calls",
        "stream",
        "stream_options",
    }
)


def parse_openai_request(body: Mapping[str, Any], *, images_as_text: bool = False) -> ChatRequest:
    """A Chat Completions request body decoded: messages, tools, tool choice, response format and settings.

    The inverse of :func:`format_openai_request` (see the module docstring for what comes back exactly). Raises
    ValueError, naming the field, for a request that cannot be decoded (a missing ``messages`` list, an unknown
    role or content part, a tool without a name, a setting of the wrong type...): a server answers it with 400.

    Args:
        body: The parsed JSON body.
        images_as_text: For text-only consumers: every image part becomes the text ``[image]`` (its URL is not
            checked), as it does in system, assistant and tool messages, which hold text only. False decodes the
            images of user messages into image blocks.
    """
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise ValueError("messages must be a list of message objects")
    model = body.get("model")
    return ChatRequest(
        messages=parse_openai_messages(cast("list[Any]", raw_messages), images_as_text=images_as_text),
        model=None if model is None else str(model),
        tools=_parse_tools(body.get("tools")),
        tool_choice=_parse_tool_choice(body.get("tool_choice")),
        response_format=_parse_response_format(body.get("response_format")),
        settings=_parse_settings(body),
        stream=bool(body.get("stream")),
        extra={k: v for k, v in body.items() if k not in _REQUEST_KEYS},
    )


def parse_openai_messages(items: Sequence[Any], *, images_as_text: bool = False) -> list[Msg]:
    """Chat Completions ``messages`` back into :class:`Msg` objects (see :func:`parse_openai_request`).

    Tool-call arguments are parsed as a model's are (:func:`~agentscope.formatters.parse_tool_arguments`):
    malformed ones are kept in ``raw_input``, for the toolkit to report. Raises ValueError for an unknown role.
    """
    out: list[Msg] = []
    names: dict[str, str] = {}
    previous_tool = False
    for index, item in enumerate(items):
        message = as_object(item)
        role = message.get("role")
        name = message.get("name")
        name = name if isinstance(name, str) and name else None
        if role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            text = _content_text(message.get("content"), index)
            is_error = text.startswith(_ERROR_PREFIX)
            result = ToolResultBlock(
                id=call_id,
                name=names.get(call_id, ""),
                output=text[len(_ERROR_PREFIX) :] if is_error else text,
                is_error=is_error,
            )
            last = out[-1] if out else None
            if previous_tool and last is not None and isinstance(last.content, list):
                last.content.append(result)
            else:
                out.append(Msg(role="tool", content=[result]))
            previous_tool = True
            continue
        previous_tool = False
        if role == "assistant":
            blocks: list[ContentBlock] = []
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                blocks.append(ThinkingBlock(thinking=reasoning))
            text = _content_text(message.get("content"), index)
            if text:
                blocks.append(TextBlock(text=text))
            for raw_call in as_list(message.get("tool_calls")):
                call = as_object(raw_call)
                function = as_object(call.get("function"))
                block = openai_tool_use(call.get("id"), function.get("name"), function.get("arguments"))
                names[block.id] = block.name
                blocks.append(block)
            out.append(Msg(role="assistant", name=name, content=blocks))
        elif role in ("system", "developer"):
            text = _content_text(message.get("content"), index)
            out.append(Msg(role="system", name=name, content=text))
        elif role == "user":
            content = _user_content(message.get("content"), index, images_as_text)
            out.append(Msg(role="user", name=name, content=content))
        else:
            raise ValueError(f"messages[{index}]: unknown message role {role!r}")
    return out


def openai_tool_use(call_id: Any, name: Any, arguments: Any) -> ToolUseBlock:
    """A tool call as the wire carries it (``arguments`` a JSON string, or an object some servers send)."""
    if not isinstance(arguments, str):
        arguments = "" if arguments is None else json.dumps(arguments)
    parsed, raw = parse_tool_arguments(arguments)
    return ToolUseBlock(id=str(call_id or ""), name=str(name or ""), input=parsed, raw_input=raw)


_IMAGE_PARTS: Final = frozenset({"image_url", "input_image", "image"})
_IMAGE_TEXT: Final = "[image]"
"""What an image part becomes in text: in system, assistant and tool messages (which hold text only), and in user
messages with ``images_as_text``."""


def _parts(content: Any, index: int, images_as_text: bool) -> list[TextBlock | ImageBlock]:
    blocks: list[TextBlock | ImageBlock] = []
    for position, raw_part in enumerate(as_list(content)):
        part = as_object(raw_part)
        kind = part.get("type")
        if kind == "text":
            blocks.append(TextBlock(text=str(part.get("text") or "")))
        elif kind in _IMAGE_PARTS:
            if images_as_text:
                blocks.append(TextBlock(text=_IMAGE_TEXT))
            else:
                blocks.append(_image(part, f"messages[{index}].content[{position}]"))
        else:
            raise ValueError(f"messages[{index}].content[{position}]: unsupported content part type {kind!r}")
    return blocks


def _image(part: dict[str, Any], where: str) -> ImageBlock:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = cast("dict[str, Any]", url).get("url")
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}: image part without a URL")
    inline = parse_data_url(url)
    return ImageBlock(source=inline if inline is not None else URLSource(url=url))


def _content_text(content: Any, index: int) -> str:
    """Message content as text: a string, or its parts' text joined with newlines (images as ``[image]``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(b.text for b in _parts(content, index, True) if isinstance(b, TextBlock))


def _user_content(content: Any, index: int, images_as_text: bool) -> str | list[ContentBlock]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = _parts(content, index, images_as_text)
    if all(isinstance(b, TextBlock) for b in parts):
        return "\n".join(b.text for b in parts if isinstance(b, TextBlock))
    blocks: list[ContentBlock] = [*parts]
    return blocks


def _parse_tools(value: Any) -> list[ToolSchema]:
    tools: list[ToolSchema] = []
    for index, item in enumerate(as_list(value)):
        function = as_object(as_object(item).get("function"))
        where = f"tools[{index}].function"
        tools.append(
            tool_schema(function.get("name"), function.get("description"), function.get("parameters"), where)
        )
    return tools


def _parse_tool_choice(value: Any) -> ToolChoice | None:
    if value is None or value in ("auto", "none", "required"):
        return value
    name = as_object(as_object(value).get("function")).get("name")
    if isinstance(name, str) and name:
        return name
    raise ValueError(
        f"tool_choice must be 'auto', 'none', 'required' or "
        f'{{"type": "function", "function": {{"name": ...}}}}, got {value!r:.100}'
    )


def _parse_response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    spec = as_object(value)
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    wrapper = as_object(spec.get("json_schema"))
    if kind == "json_schema" and isinstance(wrapper.get("schema"), dict):
        decoded: dict[str, Any] = {
            "name": str(wrapper.get("name") or "response"),
            "schema": wrapper["schema"],
        }
        if isinstance(wrapper.get("strict"), bool):
            decoded["strict"] = wrapper["strict"]
        return decoded
    raise ValueError(
        'response_format must be {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}, '
        f"json_object or text, got {value!r:.100}"
    )


def _parse_settings(body: Mapping[str, Any]) -> ModelSettings:
    settings = sampling_settings(body, max_tokens_keys=("max_completion_tokens", "max_tokens"))
    stop = body.get("stop")
    if stop is not None:
        settings["stop"] = [stop] if isinstance(stop, str) else [str(s) for s in as_list(stop)]
    seed = int_setting(body, "seed")
    if seed is not None:
        settings["seed"] = seed
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise ValueError(f"parallel_tool_calls must be true or false, got {parallel!r:.100}")
        settings["parallel_tool_calls"] = parallel
    return settings
