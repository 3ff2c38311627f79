"""Exporters: where the tracer's writer thread sends each batch of encoded spans and metrics.

An exporter is anything with ``export(batch)`` and ``shutdown()`` (:class:`SpanExporter`), called from the writer
thread only, so it may block. :class:`StoreExporter` writes the SQLite trace store, :class:`InMemoryExporter` keeps
everything in lists (the test double), :class:`FunctionExporter` hands batches to a plain function and
:class:`~agentscope.tracing.OTLPExporter` sends spans to an OpenTelemetry collector.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentscope.tracing._records import ExportBatch, MetricRecord, RunRecord
from agentscope.tracing._store import TraceStore

__all__ = [
    "FinishedSpan",
    "FunctionExporter",
    "InMemoryExporter",
    "SpanExporter",
    "StoreExporter",
    "export_batch",
]

logger = logging.getLogger("agentscope.tracing")


@runtime_checkable
class SpanExporter(Protocol):
    """Receives batches from the tracer's writer thread (never from an event loop: it may block)."""

    def export(self, batch: ExportBatch) -> None:
        """Take one batch. Exceptions are logged by the tracer and the batch is dropped for this exporter."""
        ...

    def shutdown(self) -> None:
        """Flush and release resources; called once, after the last batch."""
        ...


class StoreExporter:
    """Writes batches to a :class:`TraceStore` (opened on first use, in the writer thread)."""

    def __init__(self, store: TraceStore | str | Path) -> None:
        self._store = store if isinstance(store, TraceStore) else None
        self._path = None if isinstance(store, TraceStore) else store
        self._owned = self._store is None

    @property
    def path(self) -> str | Path | None:
        """The store file, when this exporter opens the store itself (None when it was handed a store)."""
        return self._path

    @property
    def store(self) -> TraceStore:
        """The store, opening it first if needed (blocking: file I/O)."""
        if self._store is None:
            assert self._path is not None
            self._store = TraceStore(self._path)
        return self._store

    def export(self, batch: ExportBatch) -> None:
        self.store.write(batch)

    def shutdown(self) -> None:
        if self._owned and self._store is not None:
            self._store.close()


@dataclass(slots=True)
class FinishedSpan:
    """A span as :class:`InMemoryExporter` keeps it: attributes decoded, blob references resolved."""

    run_id: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    name: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str | None
    attributes: dict[str, Any]


class InMemoryExporter:
    """Keeps every span, metric point and run state in memory: the exporter double for tests."""

    def __init__(self) -> None:
        self.spans: list[FinishedSpan] = []
        """Finished spans, in the order they ended."""
        self.metrics: list[MetricRecord] = []
        """Metric points, in the order they were recorded."""
        self.runs: dict[str, RunRecord] = {}
        """Latest state of each run seen."""
        self.blobs: dict[str, bytes] = {}
        """Every blob seen, by hash."""
        self.shut_down = False
        """True after :meth:`shutdown`."""

    def export(self, batch: ExportBatch) -> None:
        self.runs[batch.run.id] = batch.run
        self.blobs.update(batch.blobs)
        self.metrics.extend(batch.metrics)
        for s in batch.spans:
            self.spans.append(
                FinishedSpan(
                    run_id=s.run_id,
                    trace_id=s.trace_id,
                    span_id=s.span_id,
                    parent_id=s.parent_id,
                    kind=s.kind,
                    name=s.name,
                    start_ns=s.start_ns,
                    end_ns=s.end_ns,
                    status=s.status,
                    status_message=s.status_message,
                    attributes=self._resolve(json.loads(s.attributes)),
                )
            )

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            mapping: dict[str, Any] = value  # type: ignore[assignment]
            digest = mapping.get("$blob")
            if isinstance(digest, str) and digest in self.blobs:
                return self._resolve(json.loads(self.blobs[digest]))
            return {k: self._resolve(v) for k, v in mapping.items()}
        if isinstance(value, list):
            items: list[Any] = value  # type: ignore[assignment]
            return [self._resolve(v) for v in items]
        return value

    def by_name(self, name: str) -> list[FinishedSpan]:
        """The spans called ``name``."""
        return [s for s in self.spans if s.name == name]

    def children(self, parent: FinishedSpan) -> list[FinishedSpan]:
        """The direct children of ``parent``, in start order."""
        kids = [s for s in self.spans if s.parent_id == parent.span_id]
        return sorted(kids, key=lambda s: s.start_ns)

    def shutdown(self) -> None:
        self.shut_down = True


class FunctionExporter:
    """Hands each batch to a plain function (``export``), e.g. to forward spans to your own system."""

    def __init__(
        self, export: Callable[[ExportBatch], None], shutdown: Callable[[], None] | None = None
    ) -> None:
        self._export = export
        self._shutdown = shutdown

    def export(self, batch: ExportBatch) -> None:
        self._export(batch)

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown()


def export_batch(exporters: Sequence[SpanExporter], batch: ExportBatch) -> list[Exception]:
    """Hand ``batch`` to every exporter; the errors of those that failed (each logged), so the others still run."""
    errors: list[Exception] = []
    for exporter in exporters:
        try:
            exporter.export(batch)
        except Exception as exc:
            errors.append(exc)
            logger.exception("trace exporter %r failed; %d spans dropped", exporter, len(batch.spans))
    return errors
