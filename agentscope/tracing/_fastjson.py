"""JSON bytes of span data, fast: orjson where its JSON is pydantic-core's, pydantic-core for everything else.

The writer process gets every span as the JSON of a tuple of primitives, message fields and content blocks
(``_wire``), made on the app's event loop as each span ends. pydantic-core's ``to_json`` infers the type of each
value as it goes and serialises a model through its schema: about 4.4 us for a typical 1 KB model span. orjson
writes the same bytes in about a third of the time, asking back only for what it does not know: here, the models of
:data:`PLAIN_MODELS`, which go as their ``__dict__``.

What orjson would write differently, or cannot write, makes it fail, and :func:`dumps` then serialises the whole
value with pydantic-core as before: an unlisted model (a user's, or a subclass of ours, which may serialise
differently), a dataclass, a datetime, a subclass of ``str``, ``int``, ``dict`` or ``list``, bytes, an integer
beyond 64 bits, a dict key that is not a string, a value only ``repr`` can write. One difference is left: a field
of a listed model assigned a value of another JSON type after validation (``msg.timestamp = 5``) is written as
that value (``5``), where pydantic-core would write the field's type (``5.0``); the same number either way. Both
paths write NaN and infinities as ``null``: the trace store's JSON must stay JSON (SQLite's ``json_extract``
rejects ``NaN``).
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel
from pydantic_core import to_json

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
from agentscope.types import ChatResponse, ChatUsage, ToolResponse, ToolSchema

__all__ = ["PLAIN_MODELS", "dumps"]

PLAIN_MODELS: frozenset[type[BaseModel]] = frozenset(
    {
        Base64Source,
        ChatResponse,
        ChatUsage,
        ImageBlock,
        Msg,
        TextBlock,
        ThinkingBlock,
        ToolResponse,
        ToolResultBlock,
        ToolSchema,
        ToolUseBlock,
        URLSource,
    }
)
"""Models whose JSON is that of their ``__dict__``: no aliases, no serializers, no computed or extra fields, no
serialisation settings, fields of JSON types only (``tests/tracing/test_fastjson.py`` checks each, down to the
core schema). Exactly these classes: a subclass may add what breaks that."""

_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Hand dataclasses, datetimes and subclasses of the JSON types to :func:`_plain` (which refuses them) instead of
writing them orjson's way, which is not always pydantic-core's."""


def _plain(value: object) -> object:
    if type(value) in PLAIN_MODELS:
        return value.__dict__
    raise TypeError


def dumps(value: object) -> bytes:
    """``value`` as JSON: what ``pydantic_core.to_json(value, fallback=repr, inf_nan_mode="null")`` writes."""
    try:
        return orjson.dumps(value, default=_plain, option=_OPTIONS)
    except TypeError as exc:
        cause = exc.__cause__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None  # (orjson reports whatever ``_plain`` raised as a TypeError: an interrupt too)
        return to_json(value, fallback=repr, inf_nan_mode="null")
