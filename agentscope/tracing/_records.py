"""What the tracer hands its exporters: encoded spans, metrics and run rows, and the encoder that makes them.

Encoding happens in the tracer's writer thread (or its writer process, on the spans ``_wire`` rebuilds). Attribute
values become one JSON object per span; any value whose JSON is longer than :data:`BLOB_MIN_BYTES` (and every
:class:`~agentscope.tracing.Blob`) is stored once in the blob table under its content hash and replaced by a
reference ``{"$blob": "<hash>", "size": n}``. Message lists are encoded message by message, each message once per
message id, so the prompt of the tenth model call of a conversation costs only the messages the first nine did not
already contain, and a long system prompt sent with every call is stored once. The encoded prompt of a
conversation's last call is kept too (by its first message), so the next call, which sends the same messages plus a
few new ones, only looks up the new ones.

One encoder for every span: a span of the generic API is encoded from its attribute dicts, the agent core's spans
(``AgentSpan``, ``ModelSpan``, ``ToolSpan``) from their fields by their expander (``_expand``); both write each
value through the same methods (:meth:`Encoder.value`, :meth:`~Encoder.json`, :meth:`~Encoder.messages`,
:meth:`~Encoder.tools`, :meth:`~Encoder.blob`), so a value is encoded one way whichever span carries it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from agentscope.tracing._expand import EXPANDERS, drop_content
from agentscope.tracing._fastjson import dumps
from agentscope.tracing._spans import Blob, Json, Messages, Span, ToolDefinitions

__all__ = [
    "BLOB_MIN_BYTES",
    "MESSAGE_INLINE_BYTES",
    "Encoder",
    "ExportBatch",
    "MetricRecord",
    "RunRecord",
    "SpanRecord",
    "blob_ref",
]

BLOB_MIN_BYTES = 2048
"""Attribute values whose JSON is longer than this go to the blob table."""

MESSAGE_INLINE_BYTES = 200
"""Messages whose JSON is longer than this go to the blob table: a conversation resent with every model call is
stored once, message by message, whatever its length."""

_PREVIEW_CHARS = 200
_CACHE_LIMIT = 50_000
_CONVERSATIONS = 4096
_CONTENTS = 1024
"""Content blocks kept (by identity) for reuse: a model's answer comes back as the next call's input within a few
hundred spans. Few, because the cache keeps them, images included, alive."""
_SHORT = 64
_RESOLVE_CACHE_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class RunRecord:
    """A run: one ``agentscope.init`` (one process, or one training job)."""

    id: str
    """Random hex id."""
    project: str
    """Project the run belongs to."""
    name: str
    """Human-readable run name."""
    started_ns: int
    """Start, nanoseconds since the epoch."""
    status: str = "running"
    """``running``, ``finished`` or ``failed``; ``lost`` once the store has found its process gone."""
    ended_ns: int | None = None
    """End, when it ended."""
    config: dict[str, Any] = field(default_factory=dict[str, Any])
    """Free-form JSON: command line, host, user config."""


@dataclass(slots=True)
class SpanRecord:
    """A finished span, encoded."""

    run_id: str
    trace_id: str
    """32 hex digits."""
    span_id: str
    """16 hex digits."""
    parent_id: str | None
    kind: str
    name: str
    start_ns: int
    end_ns: int
    status: str
    """``unset``, ``ok`` or ``error``."""
    status_message: str | None
    attributes: str
    """JSON object; large values are blob references."""
    is_root: bool
    """No span of this tracer is the parent."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    agent_name: str | None = None


@dataclass(slots=True)
class MetricRecord:
    """One point of a metric series (``rollout/tokens_per_s`` at step 12)."""

    run_id: str
    name: str
    step: int
    value: float
    time_ns: int


@dataclass(slots=True)
class ExportBatch:
    """What one writer cycle hands every exporter."""

    run: RunRecord
    """The run the spans belong to (its status may have changed)."""
    spans: list[SpanRecord]
    metrics: list[MetricRecord]
    blobs: dict[str, bytes]
    """Blobs first seen in this batch, by content hash."""
    resolve: Callable[[str], bytes | None]
    """A blob's payload by hash, for blobs referenced but stored by an earlier batch (None when forgotten)."""


def blob_ref(digest: str, size: int, preview: str | None = None) -> dict[str, Any]:
    """The reference that replaces a large value: ``{"$blob": hash, "size": n[, "preview": ...]}``."""
    ref: dict[str, Any] = {"$blob": digest, "size": size}
    if preview is not None:
        ref["preview"] = preview
    return ref


class Encoder:
    """Encodes spans for one tracer (its writer thread or writer process only; not thread-safe)."""

    def __init__(self, blob_min_bytes: int = BLOB_MIN_BYTES, *, capture_content: bool = True) -> None:
        self.blob_min_bytes = blob_min_bytes
        self.capture_content = capture_content
        """False: spans keep names, timings, token counts and errors, not what was said
        (:data:`~agentscope.tracing._expand.CONTENT_ATTRIBUTES`)."""
        self.new_blobs: dict[str, bytes] = {}
        """Blobs created since the last :meth:`take_blobs`."""
        self._keys: dict[str, str] = {}
        self._short: dict[str, str] = {}
        self._tool_lists: dict[tuple[int, ...], tuple[tuple[Any, ...], str]] = {}
        self._messages: dict[str, str] = {}
        self._heads: dict[tuple[str, str | None], str] = {}
        self._contents: dict[int | tuple[int, ...], str] = {}
        self._content_refs: dict[int | tuple[int, ...], object] = {}
        self._conversations: dict[str, tuple[tuple[str, ...], str]] = {}
        self._texts: dict[tuple[str, str | None, str], str] = {}
        self._stored: set[str] = set()
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0

    def take_blobs(self) -> dict[str, bytes]:
        """Hand over the blobs created since the last call."""
        blobs, self.new_blobs = self.new_blobs, {}
        return blobs

    def resolve(self, digest: str) -> bytes | None:
        """A recently created blob's payload."""
        return self._recent.get(digest)

    def encode(self, span: Span, run_id: str) -> SpanRecord:
        """Encode one finished span (the agent core's spans are expanded here: see ``_expand``)."""
        expander = EXPANDERS.get(type(span))
        if expander is not None:
            parts, input_tokens, output_tokens, agent = expander(span, self, self.capture_content)
            text = ",".join(parts)
        else:
            text, input_tokens, output_tokens, agent = self._own_attributes(span)
        parent_id = span.parent_id
        return SpanRecord(
            run_id,
            f"{span.trace_id:032x}",
            f"{span.span_id:016x}",
            None if parent_id is None else f"{parent_id:016x}",
            span.kind,
            span.name,
            span.start_ns,
            span.end_ns,
            span.status,
            span.status_message,
            "{" + text + "}",
            span.is_root,
            input_tokens,
            output_tokens,
            agent,
        )

    def _own_attributes(self, span: Span) -> tuple[str, int | None, int | None, str | None]:
        """A span of the generic API: its attributes as the body of a JSON object, its token counts and agent."""
        if not self.capture_content:
            drop_content(span)
        key = self.key
        attributes = span.attributes
        text = ""
        if attributes:
            data = dumps(attributes)
            if len(data) > self.blob_min_bytes:
                text = ",".join([key(k) + self.value(v) for k, v in attributes.items()])
            else:
                text = data.decode()[1:-1]
        payloads = span.payloads
        if payloads:
            value = self.value
            extra = ",".join([key(k) + value(v) for k, v in payloads.items()])
            text = f"{text},{extra}" if text else extra
        input_tokens = attributes.get("gen_ai.usage.input_tokens")
        output_tokens = attributes.get("gen_ai.usage.output_tokens")
        agent = attributes.get("gen_ai.agent.name")
        return (
            text,
            input_tokens if type(input_tokens) is int else None,
            output_tokens if type(output_tokens) is int else None,
            agent if type(agent) is str else None,
        )

    def key(self, key: str) -> str:
        """An attribute name and its colon, as JSON (cached)."""
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._keys[key] = dumps(key).decode() + ":"
        return prefix

    # -------------------------------------------------------------- values

    def value(self, value: object) -> str:
        """Any JSON-compatible value, or a :class:`Json`/:class:`Blob`/:class:`Messages` wrapper, as JSON."""
        kind = type(value)
        if kind is str:
            text: str = value  # type: ignore[assignment]
            if len(text) <= _SHORT:
                fragment = self._short.get(text)
                if fragment is None:
                    if len(self._short) > _CACHE_LIMIT:
                        self._short.clear()
                    fragment = self._short[text] = dumps(text).decode()
                return fragment
            if len(text) > self.blob_min_bytes:
                return self._blob(dumps(text), text[:_PREVIEW_CHARS])
            return dumps(text).decode()
        if kind is int:
            return str(value)
        if kind is bool:
            return "true" if value else "false"
        if kind is Messages:
            return self.messages(cast(Messages, value))
        if kind is Json:
            return self.json(cast(Json, value).value)
        if kind is ToolDefinitions:
            return self.tools(value)  # type: ignore[arg-type]
        if kind is Blob:
            return self.blob(cast(Blob, value).value)
        data = dumps(value)
        if len(data) > self.blob_min_bytes:
            return self._blob(data)
        return data.decode()

    def json(self, value: object) -> str:
        """What ``value(Json(value))`` gives, without the wrapper."""
        blocks = _model_list(value)
        if blocks is not None:
            fragment = self._content(blocks)
            # The limit is in bytes here, as for the JSON of other non-string values below, which is where the
            # writer process's blocks (dicts) go. A character is 1-4 bytes: a shorter fragment cannot be over it.
            if len(fragment) * 4 > self.blob_min_bytes:
                data = fragment.encode()
                if len(data) > self.blob_min_bytes:
                    return self._blob(data)
            return fragment
        data = dumps(value)
        if len(data) > self.blob_min_bytes:
            return self._blob(data)
        return data.decode()

    def messages(self, messages: Sequence[Any]) -> str:
        """A list of messages as a JSON array: a conversation's (see :meth:`_conversation`), or one message."""
        if len(messages) > 1:
            return self._conversation(messages)
        return "[" + self._message(messages[0]) + "]" if messages else "[]"

    def blob(self, value: object) -> str:
        """A value stored by reference in the blob table, however short."""
        return self._blob(dumps(value))

    def _conversation(self, messages: Sequence[Any]) -> str:
        """A model call's input messages as a JSON array.

        The next call of a conversation sends the same messages again plus a few new ones: the array of the last
        call is kept per conversation (by its first message's id) with the ids of its messages, and only the new
        messages are looked up. (Ids, not the messages: holding the messages of thousands of conversations, images
        included, would keep them all in memory. A message is encoded once per id anyway, see ``_message``.)
        """
        if not messages:
            return "[]"
        message = self._message
        ids = tuple([m.id for m in messages])
        key = ids[0]
        cached = self._conversations.get(key)
        if cached is not None:
            known, text = cached
            n = len(known)
            if n <= len(ids) and ids[:n] == known:
                if n == len(messages):
                    return text + "]"
                text = text + "," + ",".join([message(m) for m in messages[n:]])
            else:
                text = "[" + ",".join([message(m) for m in messages])
        else:
            text = "[" + ",".join([message(m) for m in messages])
            if len(self._conversations) > _CONVERSATIONS:
                self._conversations.clear()
        self._conversations[key] = (ids, text)
        return text + "]"

    def _content(self, blocks: list[Any]) -> str:
        """A list of content blocks as JSON; the same blocks (a model's answer, then the same answer as the next
        call's input) are encoded once. The cache holds the blocks, so their ids cannot be reused meanwhile."""
        key: int | tuple[int, ...] = id(blocks[0]) if len(blocks) == 1 else tuple(map(id, blocks))
        fragment = self._contents.get(key)
        if fragment is not None:
            return fragment
        fragment = dumps(blocks).decode()
        if len(self._contents) > _CONTENTS:
            self._contents.clear()
            self._content_refs.clear()
        self._contents[key] = fragment
        self._content_refs[key] = blocks[0] if len(blocks) == 1 else tuple(blocks)
        return fragment

    def tools(self, tools: Sequence[Any]) -> str:
        """Tool definitions are sent with every model call: one blob per distinct tool list, encoded once.

        Tool schemas are frozen; the cache holds the objects themselves, so their ids cannot be reused meanwhile.
        """
        key = tuple(map(id, tools))
        cached = self._tool_lists.get(key)
        if cached is None:
            if len(self._tool_lists) > 1024:
                self._tool_lists.clear()
            cached = self._tool_lists[key] = (tuple(tools), self._blob(dumps(list(tools))))
        return cached[1]

    def _message(self, msg: Any) -> str:
        fragment = self._messages.get(msg.id)
        if fragment is not None:
            return fragment
        content = msg.content
        text_key: tuple[str, str | None, str] | None = None
        if type(content) is str and not msg.metadata:
            # A system prompt is a new message (new id) in every call, with the same text: key it by the text.
            text_key = (msg.role, msg.name, content)
            fragment = self._texts.get(text_key)
        if fragment is None:
            blocks: Any = content  # (no typing.cast: a call at run time)
            body = dumps(content).decode() if type(content) is str else self._content(blocks)
            head = self._heads.get((msg.role, msg.name))
            if head is None:
                head = self._heads[(msg.role, msg.name)] = (
                    f'{{"role":{json.dumps(msg.role)},"name":{json.dumps(msg.name)},"content":'
                )
            if msg.metadata:
                fragment = f'{head}{body},"metadata":{dumps(msg.metadata).decode()}}}'
            else:
                fragment = f"{head}{body}}}"
            if len(fragment) > MESSAGE_INLINE_BYTES:
                fragment = self._blob(fragment.encode())
            if text_key is not None:
                if len(self._texts) > _CACHE_LIMIT:
                    self._texts.clear()
                self._texts[text_key] = fragment
        if len(self._messages) > _CACHE_LIMIT:
            self._messages.clear()
        self._messages[msg.id] = fragment
        return fragment

    def _blob(self, data: bytes, preview: str | None = None) -> str:
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        if digest not in self._stored:
            if len(self._stored) > _CACHE_LIMIT * 4:
                self._stored.clear()
            self._stored.add(digest)
            self.new_blobs[digest] = data
            self._remember(digest, data)
        return dumps(blob_ref(digest, len(data), preview)).decode()

    def _remember(self, digest: str, data: bytes) -> None:
        self._recent[digest] = data
        self._recent_bytes += len(data)
        while self._recent_bytes > _RESOLVE_CACHE_BYTES and self._recent:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)


def _model_list(value: object) -> list[Any] | None:
    """``value`` when it is a non-empty list of pydantic models (content blocks), else None."""
    if type(value) is list:
        items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]  (no typing.cast: a call at run time)
        if items and isinstance(items[0], BaseModel):
            return items
    return None
