"""Msg list -> Anthropic Messages API payload.

Mapping:

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentscope.formatters._common import parse_data_url
from agentscope.message import (
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)

if TYPE_CHECKING:
    from agentscope.models import ToolChoice, ToolSchema

__all__ = [
    "AnthropicPayload",
    "format_anthropic_messages",
    "format_anthropic_tool_choice",
    "format_anthropic_tools",
]


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
