"""What the tracer hands its exporters: encoded spans, metrics and run rows, and the encoder that makes them.

Encoding happens in the tracer's writer thread. Attribute values become one JSON object per span; any value whose
JSON is longer than :data:`BLOB_MIN_BYTES` (and every :class:`~agentscope.tracing.Blob`) is stored once in the blob
table under its content hash and replaced by a reference ``{"$blob": "<hash>", "size": n}``. Message lists are
encoded message by message, each message once per message id, so the prompt of the tenth model call of a
conversation costs only the messages the first nine did not already contain, and a long system prompt sent with
every call is stored once.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from agentscope.tracing._runtime import Blob, Json, Messages, Span

__all__ = ["BLOB_MIN_BYTES", "Encoder", "ExportBatch", "MetricRecord", "RunRecord", "SpanRecord", "blob_ref"]

BLOB_MIN_BYTES = 2048
"""Attribute values (and single messages) whose JSON is longer than this go to the blob table."""

_PREVIEW_CHARS = 200
_MSG_EXCLUDE = frozenset({"id", "timestamp"})
_CACHE_LIMIT = 50_000
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
    """``running``, ``finished`` or ``failed``."""
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
    """Encodes spans for one tracer (writer thread only; not thread-safe)."""

    def __init__(self, blob_min_bytes: int = BLOB_MIN_BYTES) -> None:
        self.blob_min_bytes = blob_min_bytes
        self.new_blobs: dict[str, bytes] = {}
        """Blobs created since the last :meth:`take_blobs`."""
        self._messages: dict[str, str] = {}
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
        """Encode one finished span."""
        attributes = span.attributes
        parts = [f"{json.dumps(key)}:{self._value(value)}" for key, value in attributes.items()]
        input_tokens = attributes.get("gen_ai.usage.input_tokens")
        output_tokens = attributes.get("gen_ai.usage.output_tokens")
        agent = attributes.get("gen_ai.agent.name")
        return SpanRecord(
            run_id=run_id,
            trace_id=f"{span.trace_id:032x}",
            span_id=f"{span.span_id:016x}",
            parent_id=None if span.parent_id is None else f"{span.parent_id:016x}",
            kind=span.kind,
            name=span.name,
            start_ns=span.start_ns,
            end_ns=span.end_ns,
            status=span.status,
            status_message=span.status_message,
            attributes="{" + ",".join(parts) + "}",
            is_root=span.is_root,
            input_tokens=input_tokens if isinstance(input_tokens, int) else None,
            output_tokens=output_tokens if isinstance(output_tokens, int) else None,
            agent_name=agent if isinstance(agent, str) else None,
        )

    # -------------------------------------------------------------- values

    def _value(self, value: object) -> str:
        kind = type(value)
        if kind is str:
            text: str = value  # type: ignore[assignment]
            if len(text) > self.blob_min_bytes:
                return self._blob(json.dumps(text).encode(), text[:_PREVIEW_CHARS])
            return json.dumps(text)
        if kind is int or kind is float or kind is bool or value is None:
            return json.dumps(value)
        if kind is Messages:
            return "[" + ",".join(self._message(m) for m in value) + "]"  # type: ignore[attr-defined]
        if kind is Blob:
            return self._blob(to_json(value.value, fallback=repr))  # type: ignore[attr-defined]
        data = to_json(value.value if kind is Json else value, fallback=repr)  # type: ignore[attr-defined]
        if len(data) > self.blob_min_bytes:
            return self._blob(data)
        return data.decode()

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
            data = msg.model_dump_json(exclude=_MSG_EXCLUDE).encode()
            fragment = self._blob(data) if len(data) > self.blob_min_bytes else data.decode()
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
        return json.dumps(blob_ref(digest, len(data), preview))

    def _remember(self, digest: str, data: bytes) -> None:
        self._recent[digest] = data
        self._recent_bytes += len(data)
        while self._recent_bytes > _RESOLVE_CACHE_BYTES and self._recent:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)
