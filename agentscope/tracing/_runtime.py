"""The hot path: spans, the current span, and the wrappers that agents, models and tools call.

Everything here is cheap by construction. Instrumented code checks one module global (``ON``) before doing anything
else; when tracing is off that is the whole cost. When it is on, starting a span is a few attribute stores, a
context-variable set and two clock reads; finishing one appends it to the tracer's queue. Attribute values are kept
as the objects they are (messages, responses, tool calls) and encoded to JSON later, in the tracer's writer thread,
off the event loop.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeAlias, TypeVar, cast, overload

if TYPE_CHECKING:
    from agentscope.message import Msg, ToolResultBlock, ToolUseBlock

__all__ = [
    "ON",
    "Blob",
    "Json",
    "Messages",
    "Span",
    "SpanKind",
    "current_span",
    "span",
    "start_span",
    "traced",
]

SpanKind: TypeAlias = Literal["agent", "model", "tool", "env", "train"]
"""What a span measures: an agent invocation, a model call, a tool call, an environment step or sandbox exec, or a
training step (RL episodes are ``env``)."""

SpanStatus: TypeAlias = Literal["unset", "ok", "error"]
"""OpenTelemetry's span status codes."""

ON: bool = False
"""True while a tracer is installed (``agentscope.init``). The single check instrumented code makes."""

_submit: Callable[[object], None] | None = None
"""Where finished spans go (the installed tracer's queue); set together with ``ON``."""

SAMPLE_ALL = 1 << 64
_sample_below: int = SAMPLE_ALL
"""A trace is recorded when the low 64 bits of its id are below this (``sample_rate * 2**64``; set on install)."""
_LOW64 = (1 << 64) - 1

_current: ContextVar[Span | None] = ContextVar("agentscope_current_span", default=None)

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
        "raw",
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
        self.raw: tuple[Any, ...] | None = None
        """Objects an instrumentation wrapper recorded, turned into name and attributes off the loop."""
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
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            _restore(self._token)
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


def switch_on(submit: Callable[[object], None], sample_below: int) -> None:
    """Make instrumented code record: finished spans go to ``submit``; traces are sampled below ``sample_below``."""
    global ON, _submit, _sample_below
    _submit = submit
    _sample_below = sample_below
    ON = True  # pyright: ignore[reportConstantRedefinition] - the switch itself; read as a constant elsewhere


def switch_off() -> None:
    """Make instrumented code record nothing (the state before any tracer is installed)."""
    global ON, _submit, _sample_below
    ON = False  # pyright: ignore[reportConstantRedefinition]
    _submit = None
    _sample_below = SAMPLE_ALL


def sample_threshold(rate: float) -> int:
    """The ``_sample_below`` value that records a fraction ``rate`` of traces (by trace id, like OpenTelemetry's
    ``TraceIdRatioBased``: every process that sees a trace id makes the same decision)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample_rate must be between 0 and 1, got {rate!r}")
    return SAMPLE_ALL if rate >= 1.0 else int(rate * SAMPLE_ALL)


def _restore(token: Token[Span | None]) -> None:
    try:  # noqa: SIM105 - contextlib.suppress costs more on this hot path
        _current.reset(token)
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
    span = _new_span(kind, name)
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
    return _rng.getrandbits(128) or 1, None


def current_span() -> Span | None:
    """The span current in this task or thread, or None (always None while tracing is off)."""
    return _current.get() if ON else None


def start_span(name: str, kind: SpanKind, attributes: Mapping[str, object] | None = None) -> Span:
    """Start a span that is a child of the current one, without making it current. Call :meth:`Span.end`.

    While tracing is off this returns the no-op span.
    """
    if not ON:
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
    if not ON:
        yield NOOP_SPAN
        return
    current = _user_span(name, kind, attributes)
    token = _current.set(current)
    if current is UNSAMPLED:
        try:
            yield current
        finally:
            _restore(token)
        return
    try:
        yield current
    except BaseException as exc:
        current.record_exception(exc)
        raise
    finally:
        _restore(token)
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
                if not ON:
                    return await af(*args, **kwargs)
                with span(span_name, kind):
                    return await af(*args, **kwargs)

            return cast("Callable[_P, _R]", async_wrapper)

        @functools.wraps(f)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not ON:
                return f(*args, **kwargs)
            with span(span_name, kind):
                return f(*args, **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate


# ---------------------------------------------------------------------- instrumentation of the agent core
#
# Called only when ``ON`` is true; the seams (AgentBase.__call__, ReActAgent._call_model, Toolkit.execute and
# Toolkit.stream) check ``ON`` themselves and call straight through otherwise.
#
# On the event loop these wrappers only record the objects involved (``Span.raw``: the call, the response, the
# messages); :func:`expand` turns them into the span's name and GenAI attributes later, in the writer thread.


def _new_span(kind: SpanKind, name: str = "") -> Span | None:
    """A child of the current span, or a new root (where the sampler decides whether its trace is recorded).

    :data:`UNSAMPLED` for the root of a trace the sampler leaves out (the caller makes it current), None inside
    such a trace (nothing to do). The agent core's wrappers leave ``name`` empty: :func:`expand` fills it in later
    from ``Span.raw``.
    """
    parent = _current.get()
    if parent is not None:
        if parent is UNSAMPLED:
            return None
        return Span(name, kind, parent.trace_id, _getrandbits(64), parent.span_id, {}, False)
    trace_id, parent_id = _ambient_parent()
    if trace_id & _LOW64 >= _sample_below:
        return UNSAMPLED
    return Span(name, kind, trace_id, _getrandbits(64), parent_id, {}, True)


async def _unsampled(awaitable: Awaitable[_R]) -> _R:
    """Await ``awaitable`` with :data:`UNSAMPLED` current, so that nothing under it is recorded either."""
    token = _current.set(UNSAMPLED)
    try:
        return await awaitable
    finally:
        _current.reset(token)


async def agent_call(
    agent: Any, invoke: Callable[..., Awaitable[Msg]], msg: Msg | Sequence[Msg] | None, kwargs: dict[str, Any]
) -> Msg:
    """Run ``invoke(msg, **kwargs)`` (an agent's reply) inside an ``invoke_agent {name}`` span."""
    current = _new_span("agent")
    if current is None:
        return await invoke(msg, **kwargs)
    if current is UNSAMPLED:
        return await _unsampled(invoke(msg, **kwargs))
    current.raw = (agent.name, agent.id, agent.description, msg, None)
    token = _current.set(current)
    try:
        reply = await invoke(msg, **kwargs)
    except BaseException as exc:
        _current.reset(token)
        current.record_exception(exc)
        current.end()
        raise
    _current.reset(token)
    current.raw = (agent.name, agent.id, agent.description, msg, reply)
    current.end()
    return reply


async def model_call(
    model: Any,
    call: Callable[[], Awaitable[Any]],
    messages: Sequence[Msg],
    tools: Sequence[Any],
    tool_choice: str | None,
    settings: Mapping[str, Any] | None,
    streaming: bool,
) -> Any:
    """Run ``call()`` (one model call returning a ChatResponse) inside a ``chat {model}`` span."""
    current = _new_span("model")
    if current is None:
        return await call()
    if current is UNSAMPLED:
        return await _unsampled(call())
    current.raw = (model, tuple(messages), tools, tool_choice, settings, streaming, None)
    token = _current.set(current)
    try:
        response = await call()
    except BaseException as exc:
        _current.reset(token)
        current.record_exception(exc)
        current.end()
        raise
    _current.reset(token)
    current.raw = (model, current.raw[1], tools, tool_choice, settings, streaming, response)  # type: ignore[index]
    current.end()
    return response


async def tool_execute(call: ToolUseBlock, execute: Callable[[ToolUseBlock], Awaitable[Any]]) -> Any:
    """Run ``execute(call)`` (returns a ToolResponse) inside an ``execute_tool {name}`` span."""
    current = _new_span("tool")
    if current is None:
        return await execute(call)
    if current is UNSAMPLED:
        return await _unsampled(execute(call))
    current.raw = (call, None)
    token = _current.set(current)
    try:
        response = await execute(call)
    except BaseException as exc:
        _current.reset(token)
        _fail_tool_span(current, exc)
        raise
    _current.reset(token)
    current.raw = (call, response)
    current.end()
    return response


async def tool_stream(
    call: ToolUseBlock, stream: AsyncIterator[Any], result_type: type[ToolResultBlock]
) -> AsyncIterator[Any]:
    """Relay ``stream`` (a toolkit's stream of pieces, then a ToolResultBlock) inside an ``execute_tool`` span.

    The span is current only while the tool runs (while the next piece is pulled), never across a ``yield``: the
    consumer's code between pieces is not the tool's.
    """
    current = _new_span("tool") or UNSAMPLED
    recording = current is not UNSAMPLED
    if recording:
        current.raw = (call, None)
    result: ToolResultBlock | None = None
    try:
        while True:
            token = _current.set(current)
            try:
                item = await stream.__anext__()
            except StopAsyncIteration:
                break
            finally:
                _restore(token)
            if isinstance(item, result_type):
                result = item
            yield item
    except GeneratorExit:
        if recording:
            current.attributes["agentscope.tool.closed_early"] = True
            current.end()
        raise
    except BaseException as exc:
        _fail_tool_span(current, exc)
        raise
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    if recording:
        current.raw = (call, result)
        current.end()


def first_chunk() -> None:
    """Record on the current model span how long its stream took to send anything
    (``gen_ai.response.time_to_first_chunk``, seconds since the span started). For streaming callers."""
    current = _current.get()
    if current is not None and current.kind == "model" and current is not UNSAMPLED:
        current.attributes["gen_ai.response.time_to_first_chunk"] = (_time_ns() - current.start_ns) / 1e9


def _fail_tool_span(target: Span, exc: BaseException) -> None:
    if target is UNSAMPLED:
        return
    from agentscope.exceptions import ApprovalRequired

    if isinstance(exc, ApprovalRequired):
        target.attributes["agentscope.tool.approval_required"] = True
        target.attributes["agentscope.tool.approval_reason"] = exc.reason
    else:
        target.record_exception(exc)
    target.end()


# ---------------------------------------------------------------------- expansion (writer thread)

PROVIDERS = {"OpenAIChatModel": "openai", "AnthropicChatModel": "anthropic"}
"""``gen_ai.provider.name`` of our model classes (others are named by their class)."""

CONTENT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "agentscope.prompt_token_ids",
        "agentscope.completion_token_ids",
        "agentscope.logprobs",
    }
)
"""Attributes that hold what was said (messages, tool arguments and results, token ids): left out of every span
when a tracer runs with ``capture_content=False``, as OpenTelemetry's GenAI conventions allow."""

_SETTING_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
}


def expand(span: Span, capture_content: bool = True) -> None:
    """Turn a wrapper span's recorded objects (``span.raw``) into its name and GenAI attributes.

    Runs in the tracer's writer thread, once the span has ended. Attributes set directly on the span (errors) are
    kept. Without ``capture_content`` the :data:`CONTENT_ATTRIBUTES` are left out, and so is the tool output that
    a failed tool call's status message would quote.
    """
    raw = span.raw
    if raw is not None:
        span.raw = None
        if span.kind == "model":
            _expand_model(span, *raw)
        elif span.kind == "tool":
            _expand_tool(span, *raw, capture_content=capture_content)
        else:
            _expand_agent(span, *raw)
    if not capture_content:
        _drop_content(span)


def _drop_content(span: Span) -> None:
    attributes = span.attributes
    for key in CONTENT_ATTRIBUTES.intersection(attributes):
        del attributes[key]
    payloads = span.payloads
    if payloads:
        for key in CONTENT_ATTRIBUTES.intersection(payloads):
            del payloads[key]


def _expand_agent(span: Span, name: str, agent_id: str, description: str, msg: Any, reply: Any) -> None:
    span.name = f"invoke_agent {name}"
    attributes: dict[str, object] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": name,
        "gen_ai.agent.id": agent_id,
    }
    if description:
        attributes["gen_ai.agent.description"] = description
    payloads: dict[str, object] = {}
    if msg is not None:
        payloads["gen_ai.input.messages"] = Messages(
            cast("Sequence[Msg]", msg) if isinstance(msg, Sequence) else (msg,)
        )
    if reply is not None:
        payloads["gen_ai.output.messages"] = Messages((reply,))
        if reply.metadata.get("interrupted"):
            attributes["agentscope.interrupted"] = True
    attributes.update(span.attributes)
    span.attributes = attributes
    span.payloads = payloads


def _expand_model(
    span: Span,
    model: Any,
    messages: tuple[Msg, ...],
    tools: Sequence[Any],
    tool_choice: str | None,
    settings: Mapping[str, Any] | None,
    streaming: bool,
    response: Any,
) -> None:
    model_name: str = model.model_name
    span.name = f"chat {model_name}"
    attributes: dict[str, object] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDERS.get(type(model).__name__, type(model).__name__),
        "gen_ai.request.model": model_name,
    }
    payloads: dict[str, object] = {"gen_ai.input.messages": Messages(messages)}
    if tools:
        payloads["gen_ai.tool.definitions"] = ToolDefinitions(tools)
    if tool_choice is not None:
        attributes["agentscope.request.tool_choice"] = tool_choice
    if settings:
        for key, value in settings.items():
            if key in _SETTING_ATTRIBUTES:
                attributes[_SETTING_ATTRIBUTES[key]] = value
    if streaming:
        attributes["agentscope.request.stream"] = True
    attributes.update(span.attributes)
    span.attributes = attributes
    span.payloads = payloads
    if response is not None:
        record_response(span, response)


def record_response(target: Span, response: Any) -> None:
    """Put a ChatResponse on a model span: output, usage, finish reason and RL token data (as blobs)."""
    attributes = target.attributes
    payloads = target.payloads
    if payloads is None:
        payloads = target.payloads = {}
    payloads["gen_ai.output.messages"] = Json(response.content)
    if response.model:
        attributes["gen_ai.response.model"] = response.model
    if response.id:
        attributes["gen_ai.response.id"] = response.id
    if response.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [response.finish_reason]
    usage = response.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
    if response.prompt_token_ids is not None:
        payloads["agentscope.prompt_token_ids"] = Blob(response.prompt_token_ids)
    if response.completion_token_ids is not None:
        payloads["agentscope.completion_token_ids"] = Blob(response.completion_token_ids)
    if response.logprobs is not None:
        payloads["agentscope.logprobs"] = Blob(response.logprobs)
    if response.policy_version is not None:
        attributes["agentscope.policy_version"] = response.policy_version


def _expand_tool(span: Span, call: ToolUseBlock, result: Any, *, capture_content: bool = True) -> None:
    span.name = f"execute_tool {call.name}"
    attributes: dict[str, object] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id,
        "gen_ai.tool.type": "function",
    }
    payloads: dict[str, object] = {}
    if call.raw_input is None:
        payloads["gen_ai.tool.call.arguments"] = Json(call.input)
    else:
        attributes["gen_ai.tool.call.arguments"] = call.raw_input
    if result is not None:
        # A ToolResponse (execute) or a ToolResultBlock (stream).
        output = result.content if hasattr(result, "content") else result.output
        payloads["gen_ai.tool.call.result"] = Json(output)
        if result.is_error:
            span.status = "error"
            span.status_message = _preview(output) if capture_content else "the tool returned an error"
            attributes["error.type"] = "tool_error"
    attributes.update(span.attributes)
    span.attributes = attributes
    span.payloads = payloads


def _preview(output: object) -> str:
    if isinstance(output, str):
        return output[:500]
    texts = [getattr(block, "text", "") for block in cast("list[object]", output)]
    return "".join(texts)[:500]
