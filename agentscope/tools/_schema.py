"""Turn a Python callable's signature and docstring into a pydantic arguments model and a JSON schema.

Everything here runs once, at registration: the toolkit keeps the validator, the parameter mapping and the
schema, so a call costs one pydantic validation and no model creation.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import logging
import threading
import typing
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticUndefined

from agentscope.exceptions import UsageError
from agentscope.tools._docstring import parse_docstring

__all__ = ["CallKind", "FunctionSpec", "bind_arguments", "build_function_spec", "default_tool_name"]

logger = logging.getLogger("agentscope.tools")


class CallKind(enum.Enum):
    """How the toolkit runs a callable."""

    SYNC = "sync"
    """A plain function: run in a worker thread."""
    ASYNC = "async"
    """A coroutine function: awaited."""
    ASYNC_GEN = "async_gen"
    """An async generator function: streamed, each item one piece of output."""
    SYNC_GEN = "sync_gen"
    """A generator function: streamed, each ``next()`` run in a worker thread."""


class _ToolJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema without per-field titles (noise for a model); warnings logged, not raised."""

    def field_title_should_be_set(self, schema: Any) -> bool:  # schema: pydantic's CoreSchemaOrField
        return False

    def emit_warning(self, kind: Any, detail: str) -> None:  # kind: pydantic's JsonSchemaWarningKind
        logger.debug("tool schema: %s", detail)


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """Everything the toolkit precomputes about a callable."""

    description: str
    """Docstring summary and body (before the first section)."""
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    model: type[BaseModel]
    """Pydantic model that validates the arguments (fields are aliased to the parameter names)."""
    positional: tuple[tuple[str, str | None], ...]
    """Positional-only parameters in order: (parameter name, model field name, or None when preset)."""
    keywords: tuple[tuple[str, str], ...]
    """Other model-provided parameters: (model field name, parameter name)."""
    accepts_extra: bool
    """The callable takes ``**kwargs``: unknown arguments are passed through."""
    kind: CallKind
    """How to run it."""
    param_names: tuple[str, ...]
    """The parameters the model sees, in signature order."""


def _unwrap_target(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose annotations, docstring and kind describe ``func``."""
    target: Any = func
    while isinstance(target, functools.partial):
        target = cast("functools.partial[Any]", target).func
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)) and not (
        isinstance(target, type)
    ):
        target = target.__call__  # a callable object: its bound __call__ has the signature and docstring
    return cast("Callable[..., Any]", target)


def default_tool_name(func: Callable[..., Any]) -> str:
    """The name a callable is registered under when none is given."""
    target: Any = func
    while isinstance(target, functools.partial):
        target = cast("functools.partial[Any]", target).func
    name = getattr(target, "__name__", None)
    if not isinstance(name, str):
        name = type(target).__name__
    return name


def _call_kind(func: Callable[..., Any], target: Callable[..., Any]) -> CallKind:
    for candidate in (func, target, inspect.unwrap(target)):
        if inspect.isasyncgenfunction(candidate):
            return CallKind.ASYNC_GEN
        if inspect.iscoroutinefunction(candidate):
            return CallKind.ASYNC
        if inspect.isgeneratorfunction(candidate):
            return CallKind.SYNC_GEN
    return CallKind.SYNC


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])


def _field(default: Any, alias: str, description: str | None) -> Any:
    """A ``Field``; without a description keyword when there is none (an explicit None would win over an
    ``Annotated[..., Field(description=...)]``)."""
    if description:
        return Field(default, alias=alias, description=description)
    return Field(default, alias=alias)


def _doc_for(func: Callable[..., Any], target: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(target)
    if doc is None and target is not func:
        doc = inspect.getdoc(func)
    return doc


_SPECS: weakref.WeakKeyDictionary[
    Callable[..., Any], dict[tuple[bool, str, frozenset[str]], FunctionSpec]
] = weakref.WeakKeyDictionary()
"""Specs already built, per function (a bound method's by its ``__func__``: every instance shares it), name and
preset names. An environment that registers its bound methods on a fresh toolkit per episode would otherwise
build a pydantic model and its JSON schema for each of them every episode (~1 ms a tool)."""
_SPECS_LOCK = threading.Lock()


def build_function_spec(func: Callable[..., Any], *, name: str, preset: Collection[str]) -> FunctionSpec:
    """Inspect ``func`` once: its arguments model, JSON schema, description and how to call it.

    Plain functions and methods are inspected once per name and preset: later calls get the same spec, with its
    own copy of the JSON schema. So a function changed after its first registration (its docstring, defaults or
    annotations) keeps the description it had then.

    Raises:
        UsageError: the callable cannot be described (unresolvable annotations, a type pydantic cannot
            validate, a preset argument it does not take).
    """
    bound = inspect.ismethod(func)
    owner: Any = func.__func__ if bound else func
    if not inspect.isfunction(owner):
        return _build_function_spec(func, name=name, preset=preset)
    key = (bound, name, frozenset(preset))
    with _SPECS_LOCK:
        known = _SPECS.get(owner)
        spec = None if known is None else known.get(key)
    if spec is None:
        spec = _build_function_spec(func, name=name, preset=preset)
        with _SPECS_LOCK:
            _SPECS.setdefault(owner, {})[key] = spec
    # a copy: a schema is a plain dict, and one toolkit's tool must not see another's changes to it
    return dataclasses.replace(spec, parameters=copy.deepcopy(spec.parameters))


def _build_function_spec(func: Callable[..., Any], *, name: str, preset: Collection[str]) -> FunctionSpec:
    if not callable(func):
        raise UsageError(f"cannot register {func!r} as a tool: it is not callable")
    target = _unwrap_target(func)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot register tool {name!r}: its signature cannot be read ({exc})") from exc
    try:
        hints = typing.get_type_hints(inspect.unwrap(target), include_extras=True)
    except Exception as exc:
        raise UsageError(
            f"cannot register tool {name!r}: its type annotations cannot be resolved "
            f"({type(exc).__name__}: {exc}); define the types it uses at module level"
        ) from exc
    parsed = parse_docstring(_doc_for(func, target))

    fields: dict[str, Any] = {}
    positional: list[tuple[str, str | None]] = []
    keywords: list[tuple[str, str]] = []
    param_names: list[str] = []
    accepts_extra = False
    known: set[str] = set()
    for index, (pname, param) in enumerate(sig.parameters.items()):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # *args cannot be expressed in a JSON object; it stays empty
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_extra = True
            continue
        known.add(pname)
        field_name = f"p{index}"
        if pname in preset:
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                positional.append((pname, None))
            continue
        annotation: Any = hints.get(pname, Any)
        description = parsed.params.get(pname)
        if isinstance(param.default, FieldInfo):
            # ``x: int = Field(3, ...)``: keep the user's field (default, constraints), add the alias.
            if param.default.description or _has_description(annotation):
                description = None
            annotation = Annotated[annotation, param.default]
            field_info = _field(PydanticUndefined, pname, description)
        else:
            default = PydanticUndefined if param.default is inspect.Parameter.empty else param.default
            if _has_description(annotation):
                description = None
            field_info = _field(default, pname, description)
        fields[field_name] = (annotation, field_info)
        param_names.append(pname)
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append((pname, field_name))
        else:
            keywords.append((field_name, pname))

    unknown = [p for p in preset if p not in known]
    if unknown and not accepts_extra:
        raise UsageError(f"cannot register tool {name!r}: preset_kwargs names unknown parameter(s) {unknown}")

    config = ConfigDict(extra="allow" if accepts_extra else "forbid", arbitrary_types_allowed=False)
    try:
        model = create_model(f"{name}_arguments", __config__=config, **fields)
        parameters = model.model_json_schema(schema_generator=_ToolJsonSchema)
    except (PydanticUserError, TypeError, ValueError, NameError) as exc:
        raise UsageError(
            f"cannot register tool {name!r}: its parameters cannot be turned into a JSON schema "
            f"({type(exc).__name__}: {exc}); preset such parameters with preset_kwargs or change their types"
        ) from exc
    parameters.pop("title", None)
    parameters.setdefault("properties", {})
    if accepts_extra:
        parameters.pop("additionalProperties", None)

    return FunctionSpec(
        description=parsed.description,
        parameters=parameters,
        model=model,
        positional=tuple(positional),
        keywords=tuple(keywords),
        accepts_extra=accepts_extra,
        kind=_call_kind(func, target),
        param_names=tuple(param_names),
    )


def bind_arguments(
    spec: FunctionSpec, values: Mapping[str, Any], extra: Mapping[str, Any] | None, preset: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments for one call, from validated field values and preset values."""
    args: list[Any] = [values[f] if f is not None else preset[p] for p, f in spec.positional]
    kwargs: dict[str, Any] = {pname: values[fname] for fname, pname in spec.keywords}
    if extra:
        kwargs.update(extra)
    if preset:
        if spec.positional:
            positional_names = {p for p, _ in spec.positional}
            kwargs.update({k: v for k, v in preset.items() if k not in positional_names})
        else:
            kwargs.update(preset)
    return args, kwargs
