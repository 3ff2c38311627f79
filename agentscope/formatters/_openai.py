"""Msg list -> OpenAI Chat Completions payload (also what vLLM, SGLang and our rollout service accept).

Mapping, message by message:

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentscope.formatters._common import (
    dump_tool_arguments,
    image_url,
    resolve_response_format,
    sanitize_name,
    tool_result_text,
)
from agentscope.message import ImageBlock, Msg, TextBlock, ToolResultBlock, ToolUseBlock

if TYPE_CHECKING:
    from agentscope.models import ResponseFormat, ToolChoice, ToolSchema

__all__ = [
    "format_openai_messages",
    "format_openai_response_format",
    "format_openai_tool_choice",
    "format_openai_tools",
]

_IMAGES_FOLLOW = "(image output follows in the next message)"


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
        text = f"Error: {text}"
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
