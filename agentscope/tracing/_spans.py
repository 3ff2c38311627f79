"""The hot path: spans, the current span, and turning recording on and off.

Everything here is cheap by construction. Instrumented code checks one module attribute (``switch.ON``) before
doing anything else; when tracing is off that is the whole cost. When it is on, starting a span is a few attribute
stores, a context-variable set and two clock reads; finishing one appends it to the tracer's queue. Attribute values
are kept as the objects they are (messages, responses, tool calls) and encoded to JSON later, in the tracer's writer
thread, off the event loop. The agent core's GenAI spans (``invoke_agent``, ``chat``, ``execute_tool``) are made by
the wrappers of ``_genai``; ``_expand`` turns what they recorded into attributes, in the writer.

The current span lives in a :class:`~contextvars.ContextVar`, so parent/child relations follow asyncio: a task
inherits the span that was current where it was created (parallel tool calls started in one task group are
siblings under the agent span), and so do worker threads started with ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeAlias, TypeVar, cast, overload

from agentscope.tracing import switch

if TYPE_CHECKING:
    from agentscope.message import Msg

__all__ = [
    "CURRENT",
    "NOOP_SPAN",
    "SAMPLE_ALL",
    "UNSAMPLED",
    "Blob",
    "Json",
    "Messages",
    "Span",
    "SpanKind",
    "SpanStatus",
    "ToolDefinitions",
    "current_span",
    "new_span",
    "new_trace_id",
    "restore",
    "sample_threshold",
    "span",
    "start_span",
    "switch_off",
    "switch_on",
    "traced",
]

SpanKind: TypeAlias = Literal["agent", "model", "tool", "env", "train"]
"""What a span measures: an agent invocation, a model call, a tool call, an environment step or sandbox exec, or a
training step (RL episodes are ``env``)."""

SpanStatus: TypeAlias = Literal["unset", "ok", "error"]
"""OpenTelemetry's span status codes."""

_submit: Callable[[Span], None] | None = None
"""Where finished spans go (the installed tracer's queue); set together with ``switch.ON``."""

SAMPLE_ALL = 1 << 64
_sample_below: int = SAMPLE_ALL
"""A trace is recorded when the low 64 bits of its id are below this (``sample_rate * 2**64``; set on install)."""
_LOW64 = (1 << 64) - 1

CURRENT: ContextVar[Span | None] = ContextVar("agentscope_current_span", default=None)
"""The span current in this task or thread."""

_time_ns = time.time_ns
_rng = random.Random()
"""Our own generator: user code that seeds ``random`` must not make span ids collide across runs."""
_getrandbits = _rng.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)

_P = ParamSpec("_P")
_R = TypeVar("_R")


# ---------------------------------------------------------------------- attribute value wrappers


class Messages(tuple["Msg", ...]):
    """A list of messages as an attribute value (``gen_ai.input.messages``).

    Encoded message by message in the writer thread; each message is encoded once per message id and long ones are
    stored once as blobs, so a growing conversation costs only its new messages per model call.
    """

    __slots__ = ()


class ToolDefinitions(tuple[Any, ...]):
    """The tool schemas offered to a model (``gen_ai.tool.definitions``): stored once per distinct list.

    The schemas must be immutable (``ToolSchema`` is frozen).
    """

    __slots__ = ()


class Json:
    """Any JSON-serialisable value (pydantic models included), encoded in the writer thread."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


class Blob(Json):
    """A value always stored by reference in the blob table (token id arrays, log-probs, images)."""

    __slots__ = ()


_DEFERRED = (Json, Messages, ToolDefinitions)


# ---------------------------------------------------------------------- spans


class Span:
    """One timed operation. Use :func:`span` (a context manager) or :func:`start_span` to make one.

    Attributes may be set until the span ends; values are JSON-compatible data, or :class:`Json`,
    :class:`Blob` and :class:`Messages` wrappers for data that is encoded later.
    """

    __slots__ = (
        "_token",
        "attributes",
        "end_ns",
        "is_root",
        "kind",
        "name",
        "parent_id",
        "payloads",
        "span_id",
        "start_ns",
        "status",
        "status_message",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        attributes: dict[str, object],
        is_root: bool,
    ) -> None:
        self.name = name
        """Operation name, e.g. ``chat gpt-4o`` (GenAI convention: ``{operation} {target}``)."""
        self.kind: SpanKind = kind
        """What the span measures."""
        self.trace_id = trace_id
        """128-bit trace id (W3C / OpenTelemetry)."""
        self.span_id = span_id
        """64-bit span id."""
        self.parent_id = parent_id
        """The parent's span id, None for a trace's root."""
        self.is_root = is_root
        """True when no span of ours is the parent (the parent, if any, belongs to another tracer)."""
        self.attributes = attributes
        """Plain attribute values by name (``gen_ai.*`` and ``agentscope.*``): JSON-compatible data."""
        self.payloads: dict[str, object] | None = None
        """Attributes whose values are encoded later (:class:`Json`, :class:`Blob`, :class:`Messages`), or None."""
        self.status: SpanStatus = "unset"
        """``unset``, ``ok`` or ``error``."""
        self.status_message: str | None = None
        """What went wrong, for ``error``."""
        self.start_ns = _time_ns()
        """Start, nanoseconds since the epoch."""
        self.end_ns = 0
        """End, nanoseconds since the epoch; 0 while running."""
        self._token: Token[Span | None] | None = None

    # -------------------------------------------------------------- mutators

    def set_attribute(self, key: str, value: object) -> None:
        """Set one attribute: JSON-compatible data, or a :class:`Json`/:class:`Blob`/:class:`Messages` wrapper."""
        if isinstance(value, _DEFERRED):
            if self.payloads is None:
                self.payloads = {}
            self.payloads[key] = value
        else:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        """Set several attributes (see :meth:`set_attribute`)."""
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, status: SpanStatus, message: str | None = None) -> None:
        """Set the status (``error`` with a message saying what went wrong)."""
        self.status = status
        self.status_message = message

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span failed by ``exc``: status ``error``, ``error.type`` and the message."""
        self.status = "error"
        text = str(exc)
        self.status_message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        self.attributes["error.type"] = _error_type(exc)

    def end(self) -> None:
        """Finish the span and hand it to the tracer. Ending twice does nothing."""
        if self.end_ns:
            return
        self.end_ns = _time_ns()
        submit = _submit
        if submit is not None:
            submit(self)

    # -------------------------------------------------------------- context manager: current while inside

    def __enter__(self) -> Span:
        self._token = CURRENT.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            restore(self._token)
            self._token = None
        if exc is not None:
            self.record_exception(exc)
        self.end()

    @property
    def recording(self) -> bool:
        """False for the stand-in span handed out while tracing is off."""
        return True

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 hex digits, as stored and shown in the studio."""
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 hex digits."""
        return f"{self.span_id:016x}"

    def __repr__(self) -> str:
        return f"Span({self.name!r}, kind={self.kind!r}, span_id={self.span_id:016x})"


class _NoopSpan(Span):
    """Handed out by :func:`span` while tracing is off: accepts everything, records nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("noop", "env", 0, 0, None, {}, True)

    def set_attribute(self, key: str, value: object) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        pass

    def set_status(self, status: SpanStatus, message: str | None = None) -> None:
        pass

    def record_exception(self, exc: BaseException) -> None:
        pass

    def end(self) -> None:
        pass

    def __enter__(self) -> Span:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        pass

    @property
    def recording(self) -> bool:
        return False


NOOP_SPAN: Span = _NoopSpan()
"""The span returned while tracing is off."""

UNSAMPLED: Span = _NoopSpan()
"""The current span inside a trace the sampler left out: its spans, children included, are not recorded."""


def switch_on(submit: Callable[[Span], None], sample_below: int) -> None:
    """Make instrumented code record: finished spans go to ``submit``; traces are sampled below ``sample_below``."""
    global _submit, _sample_below
    _submit = submit
    _sample_below = sample_below
    switch.ON = True


def switch_off() -> None:
    """Make instrumented code record nothing (the state before any tracer is installed)."""
    global _submit, _sample_below
    switch.ON = False
    _submit = None
    _sample_below = SAMPLE_ALL


def sample_threshold(rate: float) -> int:
    """The ``_sample_below`` value that records a fraction ``rate`` of traces (by trace id, like OpenTelemetry's
    ``TraceIdRatioBased``: every process that sees a trace id makes the same decision)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample_rate must be between 0 and 1, got {rate!r}")
    return SAMPLE_ALL if rate >= 1.0 else int(rate * SAMPLE_ALL)


def restore(token: Token[Span | None]) -> None:
    try:  # noqa: SIM105 - contextlib.suppress costs more on this hot path
        CURRENT.reset(token)
    except (ValueError, RuntimeError):
        # Closed from another context (an async generator finalised elsewhere): that context is gone anyway.
        pass


def _error_type(exc: BaseException) -> str:
    if _is_cancellation(exc):
        return "cancelled"
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module in ("builtins", "asyncio.exceptions") else f"{module}.{name}"


def _is_cancellation(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


def _user_span(name: str, kind: SpanKind, attributes: Mapping[str, object] | None) -> Span:
    """A new child of the current span (or a new root), or :data:`UNSAMPLED` when its trace is not recorded."""
    span = new_span(kind, None, name)
    if span is None or span is UNSAMPLED:
        return UNSAMPLED
    if attributes:
        span.set_attributes(attributes)
    return span


def _ambient_parent() -> tuple[int, int | None]:
    """Join the caller's OpenTelemetry span, if there is one, else start a new trace.

    Only looked at for root spans, and only when the application has loaded OpenTelemetry's trace API itself.
    """
    otel = sys.modules.get("opentelemetry.trace")
    if otel is not None:
        context = otel.get_current_span().get_span_context()
        if context.is_valid:
            return context.trace_id, context.span_id
    return new_trace_id(), None


def new_trace_id() -> int:
    """A new trace id: the time in milliseconds in its high 48 bits, 80 random bits below.

    Time first, so that the trace store's indexes keyed by trace id grow at their end: with fully random ids every
    span written dirties a page somewhere in the middle of each such index, and writing a batch costs about three
    times as much once the store holds 100,000 traces (``benchmarks/tracing/store_growth.py``). The low 64 bits,
    which the sampler reads, stay uniformly random, as W3C Trace Context's random trace-id flag asks of the low 56.
    """
    return (_time_ns() // 1_000_000) << 80 | _getrandbits(80)


def new_span(kind: SpanKind, span_type: type[Span] | None = None, name: str = "") -> Span | None:
    """A child of the current span, or a new root (where the sampler decides whether its trace is recorded).

    :data:`UNSAMPLED` for the root of a trace the sampler leaves out (the caller makes it current), None inside
    such a trace (nothing to do). The GenAI wrappers pass their span class (``span_type``, default :class:`Span`)
    and leave ``name`` empty: the writer names the span from its fields.
    """
    cls = span_type or Span
    parent = CURRENT.get()
    if parent is not None:
        if parent is UNSAMPLED:
            return None
        return cls(name, kind, parent.trace_id, _getrandbits(64), parent.span_id, {}, False)
    trace_id, parent_id = _ambient_parent()
    if trace_id & _LOW64 >= _sample_below:
        return UNSAMPLED
    return cls(name, kind, trace_id, _getrandbits(64), parent_id, {}, True)


def current_span() -> Span | None:
    """The span current in this task or thread, or None (always None while tracing is off)."""
    return CURRENT.get() if switch.ON else None


def start_span(name: str, kind: SpanKind, attributes: Mapping[str, object] | None = None) -> Span:
    """Start a span that is a child of the current one, without making it current. Call :meth:`Span.end`.

    While tracing is off this returns the no-op span.
    """
    if not switch.ON:
        return NOOP_SPAN
    current = _user_span(name, kind, attributes)
    return NOOP_SPAN if current is UNSAMPLED else current


@contextmanager
def span(name: str, kind: SpanKind, attributes: Mapping[str, object] | None = None) -> Generator[Span]:
    """Time the enclosed block as a span, current inside the block: ``with tracing.span("step", "env") as s:``.

    For the work later parts do (sandbox execs, RL episodes, training steps). An exception escaping the block marks
    the span failed and propagates. While tracing is off, or inside a trace the sampler left out, the block gets a
    span whose ``recording`` is False and nothing is recorded.
    """
    if not switch.ON:
        yield NOOP_SPAN
        return
    current = _user_span(name, kind, attributes)
    token = CURRENT.set(current)
    if current is UNSAMPLED:
        try:
            yield current
        finally:
            restore(token)
        return
    try:
        yield current
    except BaseException as exc:
        current.record_exception(exc)
        raise
    finally:
        restore(token)
        current.end()


@overload
def traced(
    func: Callable[_P, _R], /, *, name: str | None = None, kind: SpanKind = "env"
) -> Callable[_P, _R]: ...
@overload
def traced(
    func: None = None, /, *, name: str | None = None, kind: SpanKind = "env"
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...
def traced(
    func: Callable[_P, _R] | None = None, /, *, name: str | None = None, kind: SpanKind = "env"
) -> Callable[_P, _R] | Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator: run each call of a function (sync or async) inside a span named after it."""

    def decorate(f: Callable[_P, _R]) -> Callable[_P, _R]:
        span_name = name or f.__qualname__
        if inspect.iscoroutinefunction(f):
            af = cast("Callable[_P, Awaitable[Any]]", f)

            @functools.wraps(f)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                if not switch.ON:
                    return await af(*args, **kwargs)
                with span(span_name, kind):
                    return await af(*args, **kwargs)

            return cast("Callable[_P, _R]", async_wrapper)

        @functools.wraps(f)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not switch.ON:
                return f(*args, **kwargs)
            with span(span_name, kind):
                return f(*args, **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate
