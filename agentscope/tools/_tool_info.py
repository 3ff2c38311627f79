"""What a :class:`~agentscope.tools.Toolkit` keeps: its tool groups and registered tools."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agentscope.tools._convert import error_response, format_validation_error
from agentscope.tools._schema import CallKind, FunctionSpec, bind_arguments
from agentscope.types import ToolResponse, ToolSchema

__all__ = ["ToolGroup", "ToolInfo"]


@dataclass(slots=True)
class ToolGroup:
    """A named set of tools that is switched on and off together."""

    name: str
    """Group name."""
    description: str = ""
    """What the group is for (for people, and for the model in :meth:`Toolkit.group_instructions`)."""
    active: bool = False
    """Whether its tools are offered to the model and may be called."""
    instructions: str | None = None
    """How to use the group's tools; added to the system prompt while the group is active."""


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A registered tool: its schema, settings and the callable behind it."""

    name: str
    """Name the model calls it by."""
    description: str
    """Description the model sees."""
    group: str
    """Group it belongs to."""
    func: Callable[..., Any]
    """The registered callable."""
    schema: ToolSchema
    """The tool as the model sees it."""
    timeout_s: float | None
    """Its own timeout; ``None`` uses the toolkit's default."""
    preset_kwargs: Mapping[str, Any]
    """Arguments injected on every call and hidden from the model."""
    streaming: bool
    """True for generator functions (sync or async): each yielded item is one piece of output."""
    inline: bool
    """A sync function that runs on the event loop instead of a worker thread (registered with ``inline=True``)."""
    _spec: FunctionSpec = field(repr=False, compare=False)

    @property
    def is_async(self) -> bool:
        """True when calling :attr:`func` returns a coroutine (it runs on the event loop, not in a thread)."""
        return self._spec.kind is CallKind.ASYNC

    def bind(self, arguments: Any) -> tuple[list[Any], dict[str, Any]] | ToolResponse:
        """The model's arguments validated against the signature and bound, with the preset arguments, as
        ``(args, kwargs)`` for :attr:`func`; or, when they do not fit, the error response the model sees."""
        try:
            validated = self._spec.model.__pydantic_validator__.validate_python(arguments)
        except ValidationError as exc:
            return error_response(format_validation_error(self.name, exc, self._spec.param_names))
        return bind_arguments(
            self._spec, validated.__dict__, validated.__pydantic_extra__, self.preset_kwargs
        )
