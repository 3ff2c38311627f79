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

The agent core makes the three GenAI spans with :func:`agent_call`, :func:`model_call`, :func:`tool_execute` and
:func:`tool_stream` (an agent or toolkit of your own can too), each behind a check of the switch
(:mod:`agentscope.tracing.switch`): ``if switch.ON: return await tracing.tool_execute(call, execute)``. With
tracing off, instrumented code pays that one module-attribute read and nothing else. With it on, a span costs a
few microseconds on the event loop; encoding and writing happen in a background thread, in batches, or with
``init(writer="process")`` in a writer process of their own.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from agentscope.tracing._exporters import (
        FinishedSpan,
        FunctionExporter,
        InMemoryExporter,
        SpanExporter,
        StoreExporter,
    )
    from agentscope.tracing._genai import agent_call, first_chunk, model_call, tool_execute, tool_stream
    from agentscope.tracing._otlp import OTLPExporter
    from agentscope.tracing._records import ExportBatch, MetricRecord, RunRecord, SpanRecord
    from agentscope.tracing._schema import SCHEMA_VERSION
    from agentscope.tracing._spans import (
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
    from agentscope.tracing._store import Row, RunFilter, TraceStore
    from agentscope.tracing._tracer import (
        DEFAULT_TRACE_STORE,
        RunStatus,
        Tracer,
        WriterMode,
        aflush,
        flush,
        get_tracer,
        init,
        log_metrics,
        record_metric,
        shutdown,
    )
    from agentscope.tracing._writer import WriterError


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
    "Row",
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
    "WriterError",
    "WriterMode",
    "aflush",
    "agent_call",
    "current_span",
    "enabled",
    "first_chunk",
    "flush",
    "get_tracer",
    "init",
    "log_metrics",
    "model_call",
    "record_metric",
    "shutdown",
    "span",
    "start_span",
    "tool_execute",
    "tool_stream",
    "traced",
]


_LAZY = {
    "FinishedSpan": "_exporters",
    "FunctionExporter": "_exporters",
    "InMemoryExporter": "_exporters",
    "SpanExporter": "_exporters",
    "StoreExporter": "_exporters",
    "OTLPExporter": "_otlp",
    "ExportBatch": "_records",
    "MetricRecord": "_records",
    "RunRecord": "_records",
    "SpanRecord": "_records",
    "agent_call": "_genai",
    "first_chunk": "_genai",
    "model_call": "_genai",
    "tool_execute": "_genai",
    "tool_stream": "_genai",
    "Blob": "_spans",
    "Json": "_spans",
    "Messages": "_spans",
    "Span": "_spans",
    "SpanKind": "_spans",
    "current_span": "_spans",
    "span": "_spans",
    "start_span": "_spans",
    "traced": "_spans",
    "SCHEMA_VERSION": "_schema",
    "Row": "_store",
    "RunFilter": "_store",
    "TraceStore": "_store",
    "DEFAULT_TRACE_STORE": "_tracer",
    "RunStatus": "_tracer",
    "Tracer": "_tracer",
    "aflush": "_tracer",
    "flush": "_tracer",
    "get_tracer": "_tracer",
    "init": "_tracer",
    "log_metrics": "_tracer",
    "record_metric": "_tracer",
    "shutdown": "_tracer",
    "WriterMode": "_tracer",
    "WriterError": "_writer",
}
"""Public name -> the private module defining it. Loaded on first use, so that the agent core, which imports only
the hot path (``switch``, ``_spans`` and ``_genai``), does not load the store, SQLite or the exporters until
tracing is used."""


__getattr__ = _lazy_exports(__name__, _LAZY, extras={"_otlp": "otlp"})


def enabled() -> bool:
    """True while tracing is on (a tracer is installed)."""
    from agentscope.tracing import switch

    return switch.ON
