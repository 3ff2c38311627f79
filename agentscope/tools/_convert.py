"""Conversions: what a tool returns -> :class:`ToolResponse` -> the :class:`ToolResultBlock` a model sees."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import pydantic_core
from pydantic import BaseModel, JsonValue, ValidationError

from agentscope.message import ImageBlock, TextBlock, ToolResultBlock
from agentscope.types import ToolResponse

__all__ = [
    "error_response",
    "format_validation_error",
    "merge_responses",
    "shorten",
    "to_response",
    "to_result_block",
]

_MAX_ERRORS = 6


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_response(message: str) -> ToolResponse:
    """A response that reports a failure to the model."""
    return ToolResponse(content=[TextBlock(text=message)], is_error=True)


def _is_block_list(value: list[Any] | tuple[Any, ...]) -> bool:
    return bool(value) and all(isinstance(v, TextBlock | ImageBlock) for v in value)


def _json(value: Any) -> ToolResponse:
    try:
        structured = cast(JsonValue, pydantic_core.to_jsonable_python(value))
    except pydantic_core.PydanticSerializationError:
        return ToolResponse(content=[TextBlock(text=str(value))])
    text = pydantic_core.to_json(structured).decode()
    return ToolResponse(content=[TextBlock(text=text)], structured=structured)


def to_response(value: object) -> ToolResponse:
    """Convert a tool's return value (or one streamed item) to a :class:`ToolResponse`.

    ``str`` -> text; ``ToolResponse`` -> itself; a text or image block, or a non-empty list of them -> that
    content; ``None`` -> no content; a pydantic model or any JSON-compatible value (dict, list, number, bool,
    dataclass...) -> ``structured`` plus its JSON text; anything else -> ``str(value)``.
    """
    if isinstance(value, str):
        return ToolResponse(content=[TextBlock(text=value)])
    if isinstance(value, ToolResponse):
        return value
    if value is None:
        return ToolResponse()
    if isinstance(value, TextBlock | ImageBlock):
        return ToolResponse(content=[value])
    if isinstance(value, list | tuple):
        items = cast("list[Any] | tuple[Any, ...]", value)
        if _is_block_list(items):
            return ToolResponse(content=list(cast("Iterable[TextBlock | ImageBlock]", items)))
    if isinstance(value, BaseModel):
        return ToolResponse(
            content=[TextBlock(text=value.model_dump_json())],
            structured=cast(JsonValue, value.model_dump(mode="json")),
        )
    return _json(value)


def merge_responses(pieces: Sequence[ToolResponse]) -> ToolResponse:
    """One response from the pieces of a streamed output: adjacent text concatenated, images kept in place.

    The JSON text of a structured piece goes on its own line (JSON Lines), not glued to its neighbours.
    ``structured`` is the one piece's structured value, or the list of them when several pieces have one;
    ``is_error`` is set when any piece is an error; metadata dictionaries are merged in order.
    """
    if len(pieces) == 1:
        return pieces[0]
    content: list[TextBlock | ImageBlock] = []
    text: list[str] = []  # text since the last image, not yet in ``content``
    structured: list[JsonValue] = []
    metadata: dict[str, JsonValue] = {}
    is_error = False
    previous_structured = False
    for piece in pieces:
        is_structured = piece.structured is not None
        for block in piece.content:
            if isinstance(block, TextBlock):
                if text and (is_structured or previous_structured) and not text[-1].endswith("\n"):
                    text.append("\n")
                text.append(block.text)
            else:
                if text:
                    content.append(TextBlock(text="".join(text)))
                    text = []
                content.append(block)
        if is_structured:
            structured.append(piece.structured)
        previous_structured = is_structured
        metadata.update(piece.metadata)
        is_error = is_error or piece.is_error
    if text:
        content.append(TextBlock(text="".join(text)))
    return ToolResponse(
        content=content,
        structured=None if not structured else structured[0] if len(structured) == 1 else structured,
        is_error=is_error,
        metadata=metadata,
    )


def to_result_block(call_id: str, name: str, response: ToolResponse) -> ToolResultBlock:
    """The block the model sees: ``output`` is a plain string when the content is only text."""
    content = response.content
    if all(isinstance(b, TextBlock) for b in content):
        output: str | list[TextBlock | ImageBlock] = "".join(cast(TextBlock, b).text for b in content)
    else:
        output = list(content)
    return ToolResultBlock(id=call_id, name=name, output=output, is_error=response.is_error)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def format_validation_error(tool: str, exc: ValidationError, accepted: Sequence[str]) -> str:
    """A short, model-readable account of why the arguments were rejected: one line per problem, named."""
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = err["loc"]
        where = _loc(loc)
        kind = err["type"]
        if kind == "missing":
            line = f"missing required argument '{where}'" if len(loc) == 1 else f"{where}: field required"
        elif kind == "extra_forbidden":
            if len(loc) == 1:
                takes = ", ".join(accepted) if accepted else "no arguments"
                line = f"unexpected argument '{where}' (the tool takes: {takes})"
            else:
                line = f"{where}: unexpected field"
        else:
            line = f"{where}: {err['msg']} (got {shorten(repr(err['input']), 60)})"
        if line not in lines:
            lines.append(line)
    more = len(lines) - _MAX_ERRORS
    shown = lines[:_MAX_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
    return f"Invalid arguments for tool '{tool}':\n- " + "\n- ".join(shown)
