"""The wire form of spans between the app and a writer process (``Tracer(writer="process")``).

App side (:class:`WireEncoder`): each span is encoded when it ends, in the thread that ends it (under one
lock), into the JSON of a tuple of primitives and the pydantic objects it holds (messages, content blocks,
responses), made by orjson where it writes pydantic-core's bytes (``_fastjson``); the tracer's drain thread
joins the waiting bytes into frames. Encoded at once, a span frees what it holds (the agent, its messages, the
model's response) when its call ends: queued as objects until the next export, they lived up to a second under
load, long enough for the cycle collector to scan and promote them at every collection (70-120 us of GC per
agent step against 25 untraced, in ``benchmarks/tracing/agent_steps.py``). A message, response or tool call
goes as its ``__dict__``, and so do its content blocks (orjson asks ``_fastjson`` for them): the same JSON as
the models', without their schemas. The span ids go as integers (64 bits, which orjson writes), the 128-bit
trace id as hex.
A conversation's messages are sent once: per conversation (keyed by its first message's id) the encoder remembers
the ids already sent, and a later model call of it sends how many of its messages the writer already holds and only
the new ones. A tool list is sent once and then referred to by number.

Writer side (:class:`WireDecoder`, in the writer process): the batch becomes spans again, of the same classes
(``AgentSpan``, ``ModelSpan``, ``ToolSpan``, ``Span``) with the same fields, so the one
:class:`~agentscope.tracing._records.Encoder` and its expanders write exactly the attributes the writer thread
writes. Messages, tool calls, responses and tool results become light objects (``_wire_objects``) with the
attributes the encoder reads (their content blocks stay the dicts they arrived as, which serialise to the same
JSON), not pydantic models: validating them again cost the writer more than a tenth of its work, for values the
app's models had validated.

Both sides keep the same caches. The sender says in the stream when it empties one (a model span's last field), and
the writer empties its own there; a frame marked ``reset`` starts both afresh (after a lost frame or a new writer
process). Spans encoded before a reset still go: the writer rebuilds each on its own, and one that refers to
messages or tools it never got (they went to a writer that died) is skipped and counted, not its whole frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from operator import attrgetter
from threading import get_ident
from typing import Any, cast

from pydantic_core import from_json, to_json

from agentscope.message import Msg, ToolResultBlock
from agentscope.tracing._fastjson import dumps
from agentscope.tracing._genai import AgentSpan, ModelSpan, ToolSpan
from agentscope.tracing._spans import Blob, Json, Messages, Span, ToolDefinitions
from agentscope.tracing._wire_objects import Agent, Message, Model, Response, ToolCall, ToolResult

__all__ = ["WireBatch", "WireDecoder", "WireEncoder"]

logger = logging.getLogger("agentscope.tracing")

# ``map`` over these runs in C: a list comprehension is a function call on Python 3.11.
_ID = attrgetter("id")
_FIELDS = attrgetter("__dict__")

_CONVERSATIONS = 4096
_TOOL_LISTS = 1024

_GENERIC, _AGENT, _MODEL, _TOOL = 0, 1, 2, 3
_JSON, _BLOB, _MESSAGES, _TOOLS = 0, 1, 2, 3
_RESULT_BLOCK, _RESPONSE = 1, 2
_CLEAR_CONVERSATIONS, _CLEAR_TOOL_LISTS = 1, 2
"""Bits of a model span's last field: the sender emptied that cache before this span; the writer does the same."""


WireBatch = tuple[int, bool, list[Span], list[tuple[str, int, float, int]], dict[str, Any] | None, int]
"""A decoded batch: sequence number, reset, spans, metric points (name, step, value, time), run row or None, and
how many of its spans could not be rebuilt."""


def _head(span: Span) -> tuple[object, ...]:
    """What every wire span carries after its kind code (``WireDecoder._span`` reads it back): its ids, times,
    status and own attributes (``_model`` and ``_tool`` write the same fields inline). The trace id goes as hex
    (orjson writes integers of up to 64 bits); the span ids, of 64 bits, as they are."""
    return (
        f"{span.trace_id:032x}",
        span.span_id,
        span.parent_id,
        span.start_ns,
        span.end_ns,
        span.status,
        span.status_message,
        span.is_root,
        span.attributes,
    )


class WireEncoder:
    """Encodes each finished span into wire bytes as it ends, and hands the bytes out in batches.

    :meth:`add` runs in whatever thread ends the span (the event loop, a tool thread); :meth:`frame`,
    :meth:`reset` and :meth:`discard` in the tracer's drain thread. One lock orders them, so the pending bytes are
    always in the order the conversation caches were updated in, which is the order the writer decodes them in.
    A span that fails to encode (or is interrupted) has what the caches recorded for it undone, and the eviction
    bits it would have carried go with the next model span, so both sides keep agreeing.
    """

    def __init__(self, max_pending: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        """The thread holding the lock (a span can end inside our own section: see :meth:`add`)."""
        self._deferred: list[Span] = []
        self._pending: list[bytes] = []
        self._conversations: dict[str, tuple[str, ...]] = {}
        self._tool_lists: dict[tuple[int, ...], tuple[tuple[int, None], Sequence[Any]]] = {}
        self._next_tools = 0  # never reset: a number names one tool list for the whole run
        self._clear = 0
        self._reset = True
        self._closed = False
        self.max_pending = max_pending
        """Spans ending while this many wait to be sent are dropped (counted in :attr:`dropped`): the newest, as
        later spans of a conversation refer to what earlier ones carried."""
        self.dropped = 0
        """Spans not encoded (the writer fell ``max_pending`` behind, or a value could not be serialised), and
        encoded spans dropped unsent (:meth:`discard`)."""

    @property
    def pending(self) -> int:
        """Spans encoded and not yet taken by :meth:`frame`."""
        return len(self._pending)

    def add(self, span: Span) -> None:
        """Encode a finished span now (which frees what it holds) and keep its bytes until the next frame."""
        ident = get_ident()
        if self._owner == ident:
            # Ended inside our own section, in this thread: a garbage collection there finalised a suspended traced
            # coroutine, or a signal handler ran. Encoded when the section ends (waiting for the lock would hang).
            self._deferred.append(span)
            return
        lock = self._lock  # (_enter and _leave, inline: this runs for every span)
        lock.acquire()
        self._owner = ident
        try:
            self._encode(span)
        finally:
            if self._deferred:
                self._leave()
            else:
                self._owner = None
                lock.release()

    def frame(
        self,
        seq: int,
        max_spans: int,
        metrics: Sequence[tuple[str, int, float, int]],
        run: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """Take up to ``max_spans`` pending spans into one frame: how many it carries, and its bytes."""
        tail = to_json(metrics) + b"," + to_json(run, fallback=repr) + b"]"
        self._enter()
        try:
            pending = self._pending
            if len(pending) <= max_spans:
                spans, self._pending = pending, []
            else:
                spans = pending[:max_spans]
                del pending[:max_spans]
            reset, self._reset = self._reset, False
        finally:
            self._leave()
        head = b"[%d,%s,[" % (seq, b"true" if reset else b"false")
        return len(spans), b"".join((head, b",".join(spans), b"],", tail))

    def reset(self) -> None:
        """Forget what the writer holds (it lost a frame, or is a new process): the next frame starts both sides
        afresh. Spans already encoded still go; the writer skips (and counts) those that refer to what it lost."""
        self._enter()
        try:
            self._forget_all()
        finally:
            self._leave()

    def discard(self) -> int:
        """Drop the pending spans unsent (the writer cannot take them now); return how many. What they carried
        for the first time is sent again with later spans."""
        self._enter()
        try:
            lost = len(self._pending)
            self._pending = []
            self.dropped += lost
            self._forget_all()
            return lost
        finally:
            self._leave()

    def close(self) -> None:
        """No more frames will be sent: a span that ends from now on is counted as dropped."""
        self._enter()
        try:
            self._closed = True
        finally:
            self._leave()

    def after_fork(self) -> None:
        """In a forked child: this encoder belongs to the parent's writer; make it refuse spans, with a lock of
        its own (the parent's may have been held by another thread at the fork)."""
        self._lock = threading.Lock()
        self._owner = None
        self._deferred = []
        self._pending = []
        self._closed = True

    def _enter(self) -> None:
        self._lock.acquire()
        self._owner = get_ident()

    def _leave(self) -> None:
        try:
            while self._deferred:
                self._encode(self._deferred.pop(0))
        finally:
            self._owner = None
            self._lock.release()

    def _forget_all(self) -> None:
        self._conversations.clear()
        self._tool_lists.clear()
        self._clear = 0
        self._reset = True

    def _encode(self, span: Span) -> None:
        """:meth:`add`, with the lock held."""
        if self._closed:  # ended after the final frame (a thread that had not yet seen tracing switch off)
            self.dropped += 1
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: said, without a line per span
                logger.warning(
                    "tracing fell behind: %d spans wait for the writer process; %d dropped so far",
                    len(self._pending),
                    self.dropped,
                )
            return
        kind = type(span)
        try:
            # (no typing.cast: it is a call at run time)
            if kind is ModelSpan:
                item = self._model(span)  # pyright: ignore[reportArgumentType]
            elif kind is ToolSpan:
                item = self._tool(span)  # pyright: ignore[reportArgumentType]
            elif kind is AgentSpan:
                item = self._agent(span)  # pyright: ignore[reportArgumentType]
            else:
                item = self._generic(span)
            data = dumps(item)
        except BaseException as exc:
            # What the caches recorded as sent with this span was not sent: forget it, so that the next span of
            # its conversation (or with its tools) carries it again. (The eviction bits stay for the next one.)
            self._forget(span)
            if not isinstance(exc, Exception):
                raise
            self.dropped += 1
            logger.exception("could not encode span %r for the writer process; dropped", span)
            return
        if kind is ModelSpan:
            self._clear = 0  # the eviction bits went with it
        self._pending.append(data)

    def _forget(self, span: Span) -> None:
        if not isinstance(span, ModelSpan):
            return
        model = span
        if model.messages:
            self._conversations.pop(model.messages[0].id, None)
        if model.tools:
            self._tool_lists.pop(tuple(map(id, model.tools)), None)

    # -------------------------------------------------------------- per span

    def _model(self, span: ModelSpan) -> tuple[object, ...]:
        model = span.model
        messages = span.messages
        known = 0
        key: str | None = None
        if messages:
            ids: tuple[str, ...] = tuple(map(_ID, messages))
            key = first = ids[0]
            conversations = self._conversations
            sent = conversations.get(first)
            if sent is not None and len(sent) <= len(ids) and ids[: len(sent)] == sent:
                known = len(sent)
                messages = messages[known:]
            elif sent is None and len(conversations) > _CONVERSATIONS:
                conversations.clear()
                self._clear |= _CLEAR_CONVERSATIONS
            conversations[first] = ids
        tools: object = None
        if span.tools:
            tools = self._tools(span.tools)
        return (  # (the fields of _head, inline: one tuple less to allocate and collect, for every model call)
            _MODEL,
            f"{span.trace_id:032x}",
            span.span_id,
            span.parent_id,
            span.start_ns,
            span.end_ns,
            span.status,
            span.status_message,
            span.is_root,
            span.attributes,
            type(model).__name__,
            model.model_name,
            key,
            known,
            list(map(_FIELDS, messages)),
            tools,
            span.tool_choice,
            span.settings,
            span.streaming,
            None if span.response is None else span.response.__dict__,
            self._clear,
        )

    def _tools(self, tools: Sequence[Any]) -> tuple[int, Sequence[Any] | None]:
        key = tuple(map(id, tools))
        known = self._tool_lists.get(key)
        if known is not None:
            return known[0]
        if len(self._tool_lists) >= _TOOL_LISTS:
            self._tool_lists.clear()
            self._clear |= _CLEAR_TOOL_LISTS
        number = self._next_tools
        self._next_tools += 1
        # The reference sent from now on, made once; and the schemas, held so that their ids cannot be reused.
        self._tool_lists[key] = ((number, None), tools)
        return number, tools

    def _tool(self, span: ToolSpan) -> tuple[object, ...]:
        result = span.result
        return (  # (the fields of _head, inline, as in _model)
            _TOOL,
            f"{span.trace_id:032x}",
            span.span_id,
            span.parent_id,
            span.start_ns,
            span.end_ns,
            span.status,
            span.status_message,
            span.is_root,
            span.attributes,
            span.tool_use.__dict__,
            0 if result is None else _RESULT_BLOCK if type(result) is ToolResultBlock else _RESPONSE,
            None if result is None else result.__dict__,
        )

    def _agent(self, span: AgentSpan) -> tuple[object, ...]:
        agent = span.agent
        msg = span.msg
        reply = span.reply
        single = msg is None or isinstance(msg, Msg)
        return (
            _AGENT,
            *_head(span),
            agent.name,
            agent.id,
            agent.description,
            single,
            None
            if msg is None
            else msg.__dict__
            if single
            else [m.__dict__ for m in cast("Sequence[Msg]", msg)],
            None if reply is None else reply.__dict__,
        )

    def _generic(self, span: Span) -> tuple[object, ...]:
        payloads: list[tuple[str, int, object]] | None = None
        if span.payloads:
            payloads = []
            for key, value in span.payloads.items():
                kind = type(value)
                if kind is Messages:
                    payloads.append((key, _MESSAGES, [m.__dict__ for m in cast(Messages, value)]))
                elif kind is ToolDefinitions:
                    payloads.append((key, _TOOLS, value))
                elif kind is Blob:
                    payloads.append((key, _BLOB, cast(Blob, value).value))
                elif isinstance(value, Json):
                    payloads.append((key, _JSON, value.value))
                else:
                    payloads.append((key, _JSON, value))
        return (
            _GENERIC,
            *_head(span),
            span.name,
            span.kind,
            payloads,
        )


class WireDecoder:
    """Turns the bytes of :class:`WireEncoder` back into spans (writer process)."""

    def __init__(self) -> None:
        self._conversations: dict[str, list[Msg]] = {}
        self._tool_lists: dict[int, list[Any]] = {}
        self._model_classes: dict[str, type[Model]] = {}

    def decode(self, data: bytes) -> WireBatch:
        """One batch: its spans rebuilt, with the caches of the sender."""
        # (pydantic-core, not orjson: orjson reads an integer beyond 64 bits, which the app's fallback writes, as a
        # float, and is no faster on these frames)
        seq, reset, wire, metrics, run = from_json(data)
        if reset:
            self._conversations.clear()
            self._tool_lists.clear()
        spans: list[Span] = []
        skipped = 0
        for item in wire:
            try:
                code = item[0]
                if code == _MODEL:
                    spans.append(self._model(item))
                elif code == _TOOL:
                    spans.append(self._tool(item))
                elif code == _AGENT:
                    spans.append(self._agent(item))
                else:
                    spans.append(self._generic(item))
            except Exception:
                # Encoded before the sender started afresh, against messages or tools this writer never got
                # (they went to a writer process that died), or malformed: this span alone is lost.
                skipped += 1
        return seq, reset, spans, [(m[0], m[1], m[2], m[3]) for m in metrics], run, skipped

    @staticmethod
    def _span(span_class: type[Span], item: list[Any], name: str = "", kind: str = "") -> Any:
        trace_id, span_id, parent_id, start_ns, end_ns, status, status_message, is_root, attributes = item[
            1:10
        ]
        # (no typing.cast: it is a call at run time)
        span = span_class(name, kind, int(trace_id, 16), span_id, parent_id, attributes, is_root)  # pyright: ignore[reportArgumentType]
        span.start_ns = start_ns
        span.end_ns = end_ns
        span.status = status
        span.status_message = status_message
        return span

    def _model(self, item: list[Any]) -> ModelSpan:
        span: ModelSpan = self._span(ModelSpan, item, kind="model")
        class_name, model_name, key, known, new, tools = item[10:16]
        model_class = self._model_classes.get(class_name)
        if model_class is None:
            model_class = self._model_classes[class_name] = type(class_name, (Model,), {"__slots__": ()})
        span.model = model_class(model_name)
        clear = item[20]
        if clear & _CLEAR_CONVERSATIONS:
            self._conversations.clear()
        if clear & _CLEAR_TOOL_LISTS:
            self._tool_lists.clear()
        messages: list[Any] = [Message(m) for m in new]
        if key is not None:
            conversations = self._conversations
            if known:
                held = conversations[key]  # KeyError: sent to a writer that is gone (the span is skipped)
                if len(held) < known:
                    raise ValueError(f"conversation {key} holds {len(held)} messages here, not {known}")
                messages = held[:known] + messages
            conversations[key] = messages
        span.messages = tuple(messages)
        if tools is None:
            span.tools = ()
        else:
            number, schemas = tools
            if schemas is not None:
                self._tool_lists[number] = schemas
            span.tools = self._tool_lists[number]
        span.tool_choice, span.settings, span.streaming, response = item[16:20]
        span.response = None if response is None else Response(response)  # pyright: ignore[reportAttributeAccessIssue]
        return span

    def _tool(self, item: list[Any]) -> ToolSpan:
        span: ToolSpan = self._span(ToolSpan, item, kind="tool")
        span.tool_use = ToolCall(item[10])  # pyright: ignore[reportAttributeAccessIssue]
        result_kind, result = item[11], item[12]
        span.result = (  # pyright: ignore[reportAttributeAccessIssue]
            None
            if result_kind == 0
            else ToolResult(
                result["output" if result_kind == _RESULT_BLOCK else "content"], result["is_error"]
            )
        )
        return span

    def _agent(self, item: list[Any]) -> AgentSpan:
        span: AgentSpan = self._span(AgentSpan, item, kind="agent")
        span.agent = Agent(item[10], item[11], item[12])
        single, msg, reply = item[13], item[14], item[15]
        # (one message as a list of one: the expander writes both the same way)
        span.msg = None if msg is None else [cast(Msg, Message(m)) for m in ([msg] if single else msg)]
        span.reply = None if reply is None else cast(Msg, Message(reply))
        return span

    def _generic(self, item: list[Any]) -> Span:
        span = self._span(Span, item, name=item[10], kind=item[11])
        payloads = item[12]
        if payloads is not None:
            span.payloads = {}
            for key, kind, value in payloads:
                if kind == _MESSAGES:
                    span.payloads[key] = Messages(cast(Msg, Message(m)) for m in value)
                elif kind == _TOOLS:
                    span.payloads[key] = ToolDefinitions(value)
                elif kind == _BLOB:
                    span.payloads[key] = Blob(value)
                else:
                    span.payloads[key] = Json(value)
        return span
