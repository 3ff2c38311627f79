"""Helpers shared by the provider codecs: tool arguments, structured-output schemas, names, images, requests."""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from pydantic import BaseModel, JsonValue

from agentscope._json import as_list, as_object
from agentscope.message import Base64Source, ImageBlock, Msg, ToolResultBlock, ToolUseBlock, URLSource
from agentscope.types import ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = [
    "MAX_ARGUMENT_DEPTH",
    "ChatRequest",
    "JsonSchemaFormat",
    "default_finish_reason",
    "dump_tool_arguments",
    "encode_sse",
    "float_setting",
    "image_url",
    "int_setting",
    "json_value_problem",
    "load_tool_arguments",
    "parse_data_url",
    "parse_tool_arguments",
    "printable_raw_arguments",
    "resolve_response_format",
    "sampling_settings",
    "sanitize_name",
    "text_chunks",
    "tool_arguments_from_value",
    "tool_result_text",
    "tool_schema",
]

_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_N = TypeVar("_N", int, float)


def sanitize_name(name: str) -> str:
    """``name`` fit for provider name fields (``^[a-zA-Z0-9_-]{1,64}$``): other characters become ``_``."""
    cleaned = _NAME_INVALID.sub("_", name)[:64]
    return cleaned or "_"


MAX_ARGUMENT_DEPTH: Final = 64
"""Most levels of nested objects and arrays that tool-call arguments may have (the arguments object is level
1). Deeper arguments are refused: a model has no use for them, and past a few hundred levels Python's JSON
parser, pydantic and every serializer of the conversation fail."""


def load_tool_arguments(raw: str) -> dict[str, JsonValue] | str:
    """Parse a model's tool-call arguments: the JSON object, or a sentence saying why they cannot be used.

    Never raises, whatever ``raw`` holds. Empty text means no arguments (``{}``). Refused, with the reason:
    text that is not JSON, JSON that is not an object, nesting deeper than :data:`MAX_ARGUMENT_DEPTH`,
    strings that are not valid Unicode (lone surrogates such as ``"\\ud800"``) and numbers JSON cannot carry
    (``NaN``, ``Infinity``, ``1e999``). Every accepted object can be stored, traced and sent back to a provider.
    """
    if not raw or raw.isspace():
        return {}
    try:
        value = json.loads(raw)
    except RecursionError:
        return _TOO_DEEP
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        return f"arguments were not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"arguments were not valid JSON: expected a JSON object, got {type(value).__name__}"
    arguments = cast("dict[str, JsonValue]", value)
    problem = json_value_problem(arguments)
    return arguments if problem is None else problem


def json_value_problem(value: object) -> str | None:
    """Why ``value`` (parsed JSON, e.g. tool-call arguments) is unusable as tool-call arguments, or ``None``.

    Checks the nesting depth, that every string is valid Unicode and that every number is finite, without
    recursion (the value may be nested deeper than Python's stack).
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_ARGUMENT_DEPTH:
                return _TOO_DEEP
            if isinstance(item, dict):
                for key, child in cast("dict[object, object]", item).items():
                    if isinstance(key, str) and not _valid_unicode(key):
                        return _BAD_UNICODE
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in cast("list[object]", item))
        elif isinstance(item, str):
            if not _valid_unicode(item):
                return _BAD_UNICODE
        elif isinstance(item, float) and not math.isfinite(item):
            return "arguments contain a number JSON cannot carry (NaN or infinity)"
    return None


_TOO_DEEP: Final = (
    f"arguments are nested too deeply (more than {MAX_ARGUMENT_DEPTH} levels of objects and arrays)"
)
_BAD_UNICODE: Final = "arguments contain invalid Unicode (a lone surrogate such as \\ud800)"


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_raw_arguments(raw: str) -> str:
    """``raw`` with lone surrogates replaced by U+FFFD, so that it can be stored and sent as UTF-8."""
    if _valid_unicode(raw):
        return raw
    return raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse_tool_arguments(raw: str) -> tuple[dict[str, JsonValue], str | None]:
    """Parse a model's tool-call arguments; never raises (see :func:`load_tool_arguments` for what is refused).

    Returns ``(arguments, None)`` when ``raw`` is a usable JSON object (or empty, meaning no arguments), and
    ``({}, raw)`` otherwise, so that the caller can keep the raw text in
    :attr:`~agentscope.message.ToolUseBlock.raw_input` and the toolkit reports the problem to the model (lone
    surrogates in ``raw`` become U+FFFD there, so that the message can still be stored and sent).
    """
    loaded = load_tool_arguments(raw)
    if isinstance(loaded, str):
        return {}, printable_raw_arguments(raw)
    return loaded, None


def tool_arguments_from_value(value: object) -> tuple[dict[str, JsonValue], str | None]:
    """Arguments a provider sent already parsed (Anthropic's ``input``): like :func:`parse_tool_arguments`.

    Returns ``(value, None)`` for a usable JSON object, else ``({}, raw)`` with ``raw`` the value as JSON text
    (or a note, when even that cannot be written), for the toolkit to report.
    """
    if isinstance(value, dict):
        arguments = cast("dict[str, JsonValue]", value)
        if json_value_problem(arguments) is None:
            return arguments, None
    try:
        raw = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):
        raw = f"(arguments nested too deeply to show: more than {MAX_ARGUMENT_DEPTH} levels)"
    return {}, printable_raw_arguments(raw)


def dump_tool_arguments(block: ToolUseBlock) -> str:
    """A tool call's arguments as the model produced them: ``raw_input`` when parsing failed, else JSON."""
    if block.raw_input is not None and not block.input:
        return block.raw_input
    return json.dumps(block.input, ensure_ascii=False)


def tool_result_text(block: ToolResultBlock) -> str:
    """The text of a tool result (image parts left out)."""
    if isinstance(block.output, str):
        return block.output
    return "\n".join(part.text for part in block.output if not isinstance(part, ImageBlock))


def image_url(block: ImageBlock) -> str:
    """The image as a URL: the URL itself, or a ``data:`` URL for inline data."""
    source = block.source
    if isinstance(source, URLSource):
        return source.url
    return f"data:{source.media_type};base64,{source.data}"


def parse_data_url(url: str) -> Base64Source | None:
    """A ``data:<media type>;base64,<data>`` URL as a :class:`Base64Source`, or None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return Base64Source(media_type=header[: -len(";base64")] or "application/octet-stream", data=data)


@dataclass(frozen=True, slots=True)
class JsonSchemaFormat:
    """A structured-output format resolved to what providers need."""

    name: str
    """A name for the format (``^[a-zA-Z0-9_-]{1,64}$``)."""
    schema: dict[str, Any]
    """The JSON schema."""
    strict: bool
    """Whether the schema meets OpenAI's strict-mode rules (every property required, no extra properties)."""


def resolve_response_format(response_format: ResponseFormat) -> JsonSchemaFormat:
    """Turn a pydantic model class or a JSON schema into a :class:`JsonSchemaFormat`.

    A dict may be a bare JSON schema (its ``title`` names it) or an OpenAI-style wrapper
    ``{"name": ..., "schema": ..., "strict": ...}``, whose values are used as given.
    Object schemas that do not say otherwise get ``additionalProperties: false``; ``strict`` is then true
    when every object lists all its properties as required. Results for model classes are cached.
    """
    if isinstance(response_format, dict):
        if isinstance(response_format.get("schema"), dict) and "name" in response_format:
            schema: dict[str, Any] = response_format["schema"]
            strict = response_format.get("strict")
            resolved = _from_schema(str(response_format["name"]), schema)
            if isinstance(strict, bool):
                return JsonSchemaFormat(resolved.name, resolved.schema, strict)
            return resolved
        return _from_schema(str(response_format.get("title") or "response"), response_format)
    return _from_model(response_format)


@functools.lru_cache(maxsize=256)
def _from_model(model: type[BaseModel]) -> JsonSchemaFormat:
    return _from_schema(model.__name__, model.model_json_schema())


def _from_schema(name: str, schema: dict[str, Any]) -> JsonSchemaFormat:
    schema = copy.deepcopy(schema)
    strict = _close_objects(schema)
    return JsonSchemaFormat(sanitize_name(name), schema, strict)


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def _close_objects(node: Any) -> bool:
    """Close open object schemas (``additionalProperties: false``) in place; True if all are strict-ready."""
    if not isinstance(node, dict):
        return True
    schema: dict[str, Any] = node  # pyright: ignore[reportUnknownVariableType]
    strict = True
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, dict):
        schema.setdefault("additionalProperties", False)
        if schema["additionalProperties"] is not False:
            strict = False
        required = schema.get("required")
        names = set(as_object(properties))
        if names and (not isinstance(required, list) or names - set(as_list(required))):
            strict = False
    children: list[Any] = [schema.get(key) for key in _SUBSCHEMAS]
    for key in _SUBSCHEMA_MAPS:
        children.extend(as_object(schema.get(key)).values())
    for key in _SUBSCHEMA_LISTS:
        children.extend(as_list(schema.get(key)))
    for child in children:
        strict = _close_objects(child) and strict
    return strict


@dataclass(slots=True)
class ChatRequest:
    """A provider request decoded back into the arguments of :meth:`~agentscope.models.ChatModel.generate`.

    What :func:`~agentscope.formatters.parse_openai_request` and
    :func:`~agentscope.formatters.parse_anthropic_request` return: the inverse of the request formatters.
    """

    messages: list[Msg]
    """The conversation, oldest first."""
    model: str | None = None
    """The model the request names, if any."""
    tools: list[ToolSchema] = field(default_factory=list[ToolSchema])
    """Tools offered to the model (empty when none)."""
    tool_choice: ToolChoice | None = None
    """The tool choice, when the request sets one."""
    response_format: ResponseFormat | None = None
    """A JSON schema the answer must match (OpenAI's ``{"name", "schema", "strict"}`` wrapper), if any."""
    settings: ModelSettings = field(default_factory=lambda: cast("ModelSettings", {}))
    """Sampling settings the request sets (``timeout_s`` and ``extra_body`` never)."""
    stream: bool = False
    """Whether the client asked for server-sent events."""
    extra: dict[str, Any] = field(default_factory=dict[str, Any])
    """Top-level fields the codec does not map (``session_id``, provider options...), as they came."""


def default_finish_reason(response: ChatResponse) -> str:
    """``response.finish_reason``, else ``tool_calls`` when it calls tools and ``stop`` otherwise."""
    if response.finish_reason:
        return response.finish_reason
    return "tool_calls" if response.tool_calls else "stop"


def text_chunks(text: str, size: int | None) -> list[str]:
    """``text`` cut into pieces of ``size`` characters for streaming (``None``: one piece; ``""``: none)."""
    if size is None:
        return [text] if text else []
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def encode_sse(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event: ``data`` (a mapping is sent as compact JSON), with an ``event:`` line if named."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def sampling_settings(body: Mapping[str, Any], *, max_tokens_keys: tuple[str, ...]) -> ModelSettings:
    """``temperature``, ``top_p`` and ``max_tokens`` (from the first of ``max_tokens_keys`` set) of a request body,
    each checked: ValueError names a field that is not a number."""
    settings = cast("ModelSettings", {})
    temperature = float_setting(body, "temperature")
    if temperature is not None:
        settings["temperature"] = temperature
    top_p = float_setting(body, "top_p")
    if top_p is not None:
        settings["top_p"] = top_p
    key = next((k for k in max_tokens_keys if body.get(k) is not None), None)
    max_tokens = None if key is None else int_setting(body, key)
    if max_tokens is not None:
        settings["max_tokens"] = max_tokens
    return settings


def float_setting(body: Mapping[str, Any], key: str) -> float | None:
    """``body[key]`` as a float (None when absent or null), or ValueError naming the field."""
    return _setting(body, key, float)


def int_setting(body: Mapping[str, Any], key: str) -> int | None:
    """``body[key]`` as an int (None when absent or null), or ValueError naming the field."""
    return _setting(body, key, int)


def _setting(body: Mapping[str, Any], key: str, kind: Callable[[Any], _N]) -> _N | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} must be a number, got {value!r:.100}") from None


def tool_schema(name: Any, description: Any, parameters: Any, where: str) -> ToolSchema:
    """A tool of a request as a :class:`~agentscope.types.ToolSchema`; ValueError when it has no name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: each tool needs a name")
    return ToolSchema(
        name=name,
        description=str(description or ""),
        parameters=as_object(parameters) or {"type": "object", "properties": {}},
    )
