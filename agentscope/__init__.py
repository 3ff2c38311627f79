"""AgentScope: build LLM agents, trace them, serve them, and make them better with reinforcement learning.

``import agentscope`` is kept light: it loads pydantic, httpx2 and anyio-based core modules only when used.
"""

from __future__ import annotations

import typing as _typing

if _typing.TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from agentscope.tracing import SpanExporter, Tracer, WriterMode

__version__ = "0.1.0"

__all__ = ["__version__", "init"]


def init(
    trace_store: str | Path | None = ".agentscope/traces.db",
    *,
    otlp_endpoint: str | None = None,
    project: str = "default",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    exporters: tuple[SpanExporter, ...] = (),
    sample_rate: float = 1.0,
    capture_content: bool = True,
    writer: WriterMode = "thread",
) -> Tracer | None:
    """Turn tracing on: agent invocations, model calls and tool calls become spans in ``trace_store``.

    ``agentscope studio --store .agentscope/traces.db`` shows them. ``otlp_endpoint`` also sends them to an
    OpenTelemetry collector (``pip install -e '.[otlp]'``). Each call starts a new run named ``run_name``
    in ``project``. ``sample_rate`` records that fraction of traces (whole traces, chosen by trace id);
    ``capture_content=False`` leaves messages, tool arguments and results out of the spans. ``writer="process"``
    encodes and writes spans in a writer process instead of a thread of this one (for CPU-bound apps). See
    :func:`agentscope.tracing.init` for the details.
    """
    from agentscope import tracing

    return tracing.init(
        trace_store,
        otlp_endpoint=otlp_endpoint,
        project=project,
        run_name=run_name,
        config=config,
        exporters=exporters,
        sample_rate=sample_rate,
        capture_content=capture_content,
        writer=writer,
    )
