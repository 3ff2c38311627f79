"""Tracing: every agent invocation, model call and tool call as an OpenTelemetry-style span, in a local store.

Turn it on with ``agentscope.init()`` (or :func:`init`): spans go to the SQLite trace store at
``.agentscope/traces.db`` (the studio reads it: ``agentscope studio``), to an OpenTelemetry collector over OTLP
(``otlp_endpoint=``, extra ``otlp``), or to your own :class:`SpanExporter`. Span names and attributes follow the
OpenTelemetry GenAI semantic conventions::

    invoke_agent {agent}      kind=agent  gen_ai.agent.name, gen_ai.input.messages, gen_ai.output.messages
      chat {model}            kind=model  gen_ai.request.model, gen_ai.usage.input_tokens / output_tokens, ...
      execute_tool {tool}     kind=tool   gen_ai.tool.name, gen_ai.tool.call.id / arguments / result

Other work (sandbox execs, RL episodes, training steps) uses :func:`span` or :func:`traced` with
``kind="env"`` or ``"train"``, and :func:`record_metric` for metric curves (``rollout/tokens_per_s``).

With tracing off, instrumented code pays one global check and nothing else. With it on, a span costs a few
microseconds on the event loop; encoding and writing happen in a background thread, in batches.
"""

from agentscope.tracing._exporters import (
    FinishedSpan,
    FunctionExporter,
    InMemoryExporter,
    SpanExporter,
    StoreExporter,
)
from agentscope.tracing._otlp import OTLPExporter
from agentscope.tracing._records import ExportBatch, MetricRecord, RunRecord, SpanRecord
from agentscope.tracing._runtime import (
    Blob,
    Json,
    Messages,
    Span,
    SpanKind,
    current_span,
    span,
    start_span,
    traced,
)
from agentscope.tracing._schema import SCHEMA_VERSION
from agentscope.tracing._store import RunFilter, TraceStore
from agentscope.tracing._tracer import (
    DEFAULT_TRACE_STORE,
    RunStatus,
    Tracer,
    aflush,
    flush,
    get_tracer,
    init,
    log_metrics,
    record_metric,
    shutdown,
)

__all__ = [
    "DEFAULT_TRACE_STORE",
    "SCHEMA_VERSION",
    "Blob",
    "ExportBatch",
    "FinishedSpan",
    "FunctionExporter",
    "InMemoryExporter",
    "Json",
    "Messages",
    "MetricRecord",
    "OTLPExporter",
    "RunFilter",
    "RunRecord",
    "RunStatus",
    "Span",
    "SpanExporter",
    "SpanKind",
    "SpanRecord",
    "StoreExporter",
    "TraceStore",
    "Tracer",
    "aflush",
    "current_span",
    "enabled",
    "flush",
    "get_tracer",
    "init",
    "log_metrics",
    "record_metric",
    "shutdown",
    "span",
    "start_span",
    "traced",
]


def enabled() -> bool:
    """True while tracing is on (a tracer is installed)."""
    from agentscope.tracing import _runtime

    return _runtime.ON
