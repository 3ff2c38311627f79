"""Export spans to an OpenTelemetry collector over OTLP (``pip install -e '.[otlp]'``).

Our spans already carry OpenTelemetry ids (128-bit trace, 64-bit span) and GenAI attribute names; this exporter
turns each encoded span into an OpenTelemetry SDK ``ReadableSpan`` and hands it to a ``BatchSpanProcessor`` in front
of the OTLP/HTTP exporter, so a slow collector delays neither the event loop nor the SQLite store. Structured
attribute values (messages, tool arguments) are sent as JSON strings, blob references resolved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentscope.tracing._records import ExportBatch, SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter as OTelSpanExporter

__all__ = ["OTLPExporter"]

_MAX_ATTRIBUTE_CHARS = 256 * 1024


def _require_otlp() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http import trace_exporter
    except ImportError as exc:
        raise ImportError(
            "exporting traces over OTLP needs the OTLP exporter: pip install -e '.[otlp]'"
        ) from exc
    return trace_exporter


class OTLPExporter:
    """Sends spans to an OTLP/HTTP endpoint (``http://collector:4318`` or the full ``.../v1/traces`` URL).

    Args:
        endpoint: Collector address; ``/v1/traces`` is appended when the URL has no path.
        headers: HTTP headers (authentication).
        timeout_s: Per-request timeout.
        resource: Extra resource attributes (``service.name`` defaults to ``agentscope``).
        exporter: An OpenTelemetry SDK span exporter to use instead of OTLP/HTTP (tests pass an in-memory one).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        resource: Mapping[str, str] | None = None,
        exporter: OTelSpanExporter | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            if endpoint is None:
                raise ValueError("OTLPExporter needs an endpoint (or an exporter)")
            module = _require_otlp()
            otel_exporter: OTelSpanExporter = module.OTLPSpanExporter(
                endpoint=_traces_url(endpoint), headers=dict(headers or {}), timeout=timeout_s
            )
        else:
            otel_exporter = exporter
        self.endpoint = endpoint
        """Where spans go."""
        self.process_spec: dict[str, Any] | None = (
            None
            if exporter is not None
            else {
                "endpoint": endpoint,
                "headers": dict(headers or {}),
                "timeout_s": timeout_s,
                "resource": dict(resource or {}),
            }
        )
        """How a writer process rebuilds this exporter (None when it wraps an exporter object)."""
        self._resource_attributes: dict[str, str] = {"service.name": "agentscope", **dict(resource or {})}
        self._resources: dict[str, Resource] = {}
        self._processor = BatchSpanProcessor(otel_exporter, schedule_delay_millis=500)

    def export(self, batch: ExportBatch) -> None:
        if not batch.spans:
            return
        resource = self._resource_for(batch)
        for record in batch.spans:
            self._processor.on_end(self._convert(record, batch, resource))

    def _resource_for(self, batch: ExportBatch) -> Any:
        from opentelemetry.sdk.resources import Resource

        resource = self._resources.get(batch.run.id)
        if resource is None:
            resource = Resource.create(
                {
                    **self._resource_attributes,
                    "agentscope.project": batch.run.project,
                    "agentscope.run.id": batch.run.id,
                    "agentscope.run.name": batch.run.name,
                }
            )
            self._resources[batch.run.id] = resource
        return resource

    def _convert(self, record: SpanRecord, batch: ExportBatch, resource: Any) -> ReadableSpan:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        trace_id = int(record.trace_id, 16)
        context = SpanContext(trace_id, int(record.span_id, 16), is_remote=False, trace_flags=TraceFlags(1))
        parent = (
            None
            if record.parent_id is None
            else SpanContext(
                trace_id, int(record.parent_id, 16), is_remote=record.is_root, trace_flags=TraceFlags(1)
            )
        )
        attributes: dict[str, Any] = {"agentscope.span.kind": record.kind}
        raw: dict[str, Any] = json.loads(record.attributes)
        for key, value in raw.items():
            if (
                value is not None
            ):  # (stored null: None, or a NaN or infinity; OpenTelemetry has no null attribute)
                attributes[key] = _attribute(value, batch)
        status = Status(StatusCode.UNSET)
        if record.status == "error":
            status = Status(StatusCode.ERROR, record.status_message)
        elif record.status == "ok":
            status = Status(StatusCode.OK)
        return ReadableSpan(
            name=record.name,
            context=context,
            parent=parent,
            resource=resource,
            attributes=attributes,
            kind=SpanKind.CLIENT if record.kind == "model" else SpanKind.INTERNAL,
            status=status,
            start_time=record.start_ns,
            end_time=record.end_ns,
            instrumentation_scope=InstrumentationScope("agentscope"),
        )

    def shutdown(self) -> None:
        self._processor.shutdown()


def _traces_url(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _attribute(value: Any, batch: ExportBatch) -> Any:
    """An attribute value OTLP accepts: primitives and lists of one primitive type as they are, else JSON text."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        items: list[Any] = value  # type: ignore[assignment]
        if items and all(isinstance(v, str) for v in items):
            return items
        if items and all(isinstance(v, bool | int | float) and not isinstance(v, bool) for v in items):
            return items
    text = json.dumps(_resolve(value, batch), ensure_ascii=False)
    return text if len(text) <= _MAX_ATTRIBUTE_CHARS else text[:_MAX_ATTRIBUTE_CHARS]


def _resolve(value: Any, batch: ExportBatch) -> Any:
    if isinstance(value, dict):
        mapping: dict[str, Any] = value  # type: ignore[assignment]
        digest = mapping.get("$blob")
        if isinstance(digest, str):
            data = batch.blobs.get(digest) or batch.resolve(digest)
            return mapping if data is None else _resolve(json.loads(data), batch)
        return {k: _resolve(v, batch) for k, v in mapping.items()}
    if isinstance(value, list):
        items: list[Any] = value  # type: ignore[assignment]
        return [_resolve(v, batch) for v in items]
    return value
