"""Span data as JSON (``_fastjson.dumps``): orjson's bytes are pydantic-core's, for every model it writes as its
``__dict__`` and for every value it writes itself; anything else goes to pydantic-core; NaN is ``null`` either way."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import sqlite3
from typing import Any, cast

import pytest
from pydantic import BaseModel, field_serializer
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
from agentscope.tracing import _fastjson
from agentscope.tracing._fastjson import PLAIN_MODELS, dumps
from agentscope.types import ChatResponse, ChatUsage, ToolResponse, ToolSchema

_SAMPLES: list[BaseModel] = [
    Base64Source(media_type="image/png", data="aGVsbG8="),
    URLSource(url="https://example.com/a.png"),
    ImageBlock(source=URLSource(url="file:///tmp/a.png")),
    ImageBlock(source=Base64Source(media_type="image/png", data="aGk=")),
    TextBlock(text='quotes " and \\ and \n\t\x01 and é ✓ \u2028 and 😀'),
    ThinkingBlock(thinking="hmm", signature="sig"),
    ToolUseBlock(id="c1", name="add", input={"a": 1, "b": [2.5, None, True], "c": {"d": "e"}}),
    ToolUseBlock(id="c2", name="add", raw_input="{not json"),
    ToolResultBlock(id="c1", name="add", output="3"),
    ToolResultBlock(id="c1", name="see", output=[TextBlock(text="x"), ImageBlock(source=URLSource(url="u"))]),
    ChatUsage(input_tokens=3, output_tokens=4),
    ChatResponse(
        content=[TextBlock(text="hi"), ToolUseBlock(id="c", name="t", input={})],
        usage=ChatUsage(input_tokens=1),
        finish_reason="tool_calls",
        prompt_token_ids=[1, 2, 3],
        completion_token_ids=[4],
        logprobs=[-0.25, -1e-9, -123.5],
        policy_version=7,
        metadata={"k": [1, {"x": 1e300}]},
    ),
    ToolResponse(content=[TextBlock(text="3")], structured={"sum": 3, "parts": [1, 2]}, is_error=False),
    ToolSchema(name="add", description="Add.", parameters={"type": "object", "properties": {"a": {}}}),
    Msg(role="assistant", name="agent", content=[ToolUseBlock(id="c", name="t", input={"q": "x"})]),
    Msg(role="user", content="plain text", metadata={"usage": {"n": 1}, "f": 0.1}),
]


def _serializers(schema: object) -> list[object]:
    """Every custom serialisation in a core schema (``Annotated[..., PlainSerializer]`` fields included)."""
    if isinstance(schema, dict):
        items = cast("dict[str, Any]", schema)
        found: list[object] = [items["serialization"]] if "serialization" in items else []
        return found + [s for value in items.values() for s in _serializers(value)]
    if isinstance(schema, list):
        return [s for value in cast("list[Any]", schema) for s in _serializers(value)]
    return []


def test_every_plain_model_serialises_as_its_dict() -> None:
    """Each listed model has nothing that makes its JSON differ from its ``__dict__``'s."""
    for cls in PLAIN_MODELS:
        assert _serializers(cls.__pydantic_core_schema__) == [], cls
        options = {
            "ser_json_timedelta",
            "ser_json_bytes",
            "ser_json_inf_nan",
            "use_enum_values",
            "serialize_by_alias",
        }
        assert not options & set(cls.model_config), cls
        decorators = cls.__pydantic_decorators__
        assert not decorators.field_serializers, cls
        assert not decorators.model_serializers, cls
        assert not cls.__pydantic_computed_fields__, cls
        assert cls.model_config.get("extra") != "allow", cls
        for name, field in cls.model_fields.items():
            assert field.alias in (None, name), (cls, name)
            assert field.serialization_alias in (None, name), (cls, name)
            assert not field.exclude, (cls, name)
    assert {type(sample) for sample in _SAMPLES} >= PLAIN_MODELS


@pytest.mark.parametrize("sample", _SAMPLES, ids=lambda s: type(s).__name__)
def test_models_give_pydantic_cores_bytes(sample: BaseModel) -> None:
    assert dumps(sample) == to_json(sample) == sample.model_dump_json().encode()
    assert dumps([sample, {"nested": (sample,)}]) == to_json([sample, {"nested": (sample,)}])
    assert dumps(sample.__dict__) == to_json(sample)


def test_primitives_give_pydantic_cores_bytes() -> None:
    values: list[Any] = [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        0.1,
        -0.0,
        1e16,
        1.5e-7,
        1.7976931348623157e308,
        "",
        "".join(chr(c) for c in range(0x250)),
        "\u2028\u2029\ufeff😀",
        [],
        {},
        (1, "a", None),
        {"a": [{"b": (True, 2.0)}]},
    ]
    for value in values:
        assert dumps(value) == to_json(value), value


class _Colour(enum.Enum):
    RED = "red"


class _Mine(BaseModel):
    value: int

    @field_serializer("value")
    def _twice(self, value: int) -> int:
        return value * 2


class _MyText(TextBlock):
    """A subclass of a listed model: not listed itself."""


@dataclasses.dataclass
class _Point:
    x: int


class _Tag(str):
    pass


def test_what_orjson_would_write_differently_goes_to_pydantic_core(monkeypatch: pytest.MonkeyPatch) -> None:
    fallbacks: list[object] = []

    def spy(value: object, **kwargs: Any) -> bytes:
        fallbacks.append(value)
        return to_json(value, **kwargs)

    monkeypatch.setattr(_fastjson, "to_json", spy)
    for sample in _SAMPLES:
        dumps({"x": [sample]})
    assert fallbacks == []  # every listed model, and plain data, go through orjson
    values: list[Any] = [
        _Mine(value=2),  # a model with its own serializer: 4, not 2
        _MyText(text="sub"),
        _Point(1),
        datetime.datetime(2026, 12, 7, 20, 0, tzinfo=datetime.UTC),
        _Tag("tag"),
        b"bytes",
        2**64,  # beyond orjson's 64 bits
        {1: "int key"},
        {"x": {2, 3}},
        object(),  # only repr can write it
        [_Colour.RED, TextBlock(text="t"), _Mine(value=1)],
    ]
    for value in values:
        fallbacks.clear()
        assert dumps(value) == to_json(value, fallback=repr, inf_nan_mode="null"), value
        assert fallbacks == [value], value
    assert json.loads(dumps({"m": _Mine(value=2)})) == {"m": {"value": 4}}


def test_non_finite_floats_are_null_on_both_paths() -> None:
    for value in (math.nan, math.inf, -math.inf):
        assert dumps(value) == b"null"
        assert dumps({"v": value, "x": object()}).startswith(b'{"v":null,')  # the pydantic-core path
        assert (
            dumps({"v": [value], "t": TextBlock(text="a")}) == b'{"v":[null],"t":{"type":"text","text":"a"}}'
        )
    sqlite = sqlite3.connect(":memory:")
    row = sqlite.execute("SELECT json_extract(?, '$.v')", (dumps({"v": math.nan}).decode(),)).fetchone()
    assert row == (None,)


def test_an_interrupt_while_orjson_asks_for_a_model_is_raised_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(value: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(_fastjson, "_plain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dumps([TextBlock(text="t")])
