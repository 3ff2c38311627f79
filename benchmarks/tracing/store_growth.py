"""What writing spans to the SQLite trace store costs as the store grows: time-ordered trace ids and an index led by
the trace id (schema version 3) against random trace ids and an index on span ids alone (version 2, the design
before), and each change alone.

Each arm writes ``--traces`` traces into a new store through :meth:`TraceStore.write`, in batches of ``--batch``
traces, the shape of a traced ``agentscope serve`` request (5 spans: the HTTP request, the agent, two model calls
and a tool call; attribute JSON of 40-420 bytes per span, as the encoder writes them for the serve benchmark's
agent). Span ids are random 64-bit ids in every arm, as the tracer makes them. Arms:

- ``before``: trace ids of 128 random bits (the tracer's until schema 3) and version 2's indexes
  (``spans_span_id`` on ``span_id``, no ``spans_trace_span``);
- ``after``: :func:`agentscope.tracing._spans.new_trace_id` and the store as it is;
- ``random-ids-v3``: random trace ids, version 3's indexes (what traces started under an OpenTelemetry context,
  whose ids come from elsewhere, cost);
- ``time-ids-v2``: time-ordered trace ids, version 2's indexes.

Reported per arm: the process CPU and wall-clock time per batch at several store sizes (median of the batches
around each), and the mean over all batches. The arms rotate over ``--rounds``.

    .venv/bin/python benchmarks/tracing/store_growth.py [--traces 200000 --batch 1000 --rounds 2] [--arms before after]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from agentscope.tracing import TraceStore
from agentscope.tracing._records import ExportBatch, RunRecord, SpanRecord
from agentscope.tracing._spans import new_trace_id

_REQUEST = '{"http.route":"/v1/chat/completions","http.response.status_code":200}'
_AGENT = (
    '{"gen_ai.operation.name":"invoke_agent","gen_ai.agent.name":"bench","gen_ai.agent.id":"%s",'
    '"gen_ai.input.messages":[{"role":"user","name":"user","content":"What is 1 + 2? Use the add tool."}],'
    '"gen_ai.output.messages":[{"role":"assistant","name":"bench","content":"The answer is 3."}]}'
)
_MODEL = (
    '{"gen_ai.operation.name":"chat","gen_ai.provider.name":"ScriptedModel","gen_ai.request.model":"scripted",'
    '"gen_ai.response.finish_reasons":["tool_calls"],"gen_ai.input.messages":[{"$blob":"%s","size":312},'
    '{"role":"user","name":"user","content":"What is 1 + 2? Use the add tool."}],'
    '"gen_ai.tool.definitions":{"$blob":"0f4c1d7e5a9b3c2d1e0f4c1d7e5a9b3c","size":402},'
    '"gen_ai.output.messages":[{"type":"tool_use","id":"call_1","name":"add","input":{"a":1,"b":2}}]}'
)
_TOOL = (
    '{"gen_ai.operation.name":"execute_tool","gen_ai.tool.name":"add","gen_ai.tool.call.id":"call_1",'
    '"gen_ai.tool.type":"function","gen_ai.tool.call.arguments":{"a":1,"b":2},"gen_ai.tool.call.result":'
    '[{"type":"text","text":"3"}]}'
)


def _random_trace_id() -> int:
    return random.getrandbits(128) or 1


def _trace(trace_id: int, run_id: str) -> list[SpanRecord]:
    """One traced request's five spans, encoded as the tracer encodes them."""
    trace = f"{trace_id:032x}"
    ids = [f"{random.getrandbits(64):016x}" for _ in range(5)]
    now = time.time_ns()
    blob = f"{random.getrandbits(128):032x}"

    def record(i: int, parent: int | None, kind: str, name: str, attributes: str, **kw: Any) -> SpanRecord:
        return SpanRecord(
            run_id,
            trace,
            ids[i],
            None if parent is None else ids[parent],
            kind,
            name,
            now + i * 1000,
            now + 10_000 - i * 1000,
            "ok",
            None,
            attributes,
            parent is None,
            **kw,
        )

    return [
        record(0, None, "env", "POST /v1/chat/completions", _REQUEST),
        record(1, 0, "agent", "invoke_agent bench", _AGENT % ids[1], agent_name="bench"),
        record(2, 1, "model", "chat scripted", _MODEL % blob, input_tokens=40, output_tokens=12),
        record(3, 1, "tool", "execute_tool add", _TOOL),
        record(4, 1, "model", "chat scripted", _MODEL % blob, input_tokens=60, output_tokens=6),
    ]


ARMS = {
    "before": ("random", 2),
    "after": ("time", 3),
    "random-ids-v3": ("random", 3),
    "time-ids-v2": ("time", 2),
}
"""Arm -> (trace ids, schema whose indexes the store has)."""


def _arm(name: str, traces: int, batch_traces: int, marks: list[int]) -> dict[str, Any]:
    """Write ``traces`` traces into a new store; CPU and wall ms per batch at the store sizes in ``marks``."""
    ids, schema = ARMS[name]
    make_id = _random_trace_id if ids == "random" else new_trace_id
    run = RunRecord(id="bench", project="bench", name=name, started_ns=time.time_ns())
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix=f"store-growth-{name}-") as tmp:
        path = Path(tmp) / "traces.db"
        store = TraceStore(path)
        if schema == 2:  # version 2's indexes
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("DROP INDEX spans_trace_span")
            conn.execute("CREATE INDEX spans_span_id ON spans (span_id)")
            conn.close()
        written = 0
        while written < traces:
            spans = [s for _ in range(batch_traces) for s in _trace(make_id(), run.id)]
            batch = ExportBatch(run=run, spans=spans, metrics=[], blobs={}, resolve=lambda _digest: None)
            cpu, wall = time.process_time(), time.perf_counter()
            store.write(batch)
            cpu_ms.append((time.process_time() - cpu) * 1000)
            wall_ms.append((time.perf_counter() - wall) * 1000)
            written += batch_traces
        store.close()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())

    def around(mark: int) -> dict[str, float]:
        """Medians of the 5 batches that end nearest to ``mark`` traces (the first batch, which creates the
        store's pages, left out)."""
        last = min(mark // batch_traces, len(cpu_ms)) - 1
        window = slice(max(1, last - 4), last + 1) if last >= 1 else slice(0, 1)
        return {"cpu_ms": statistics.median(cpu_ms[window]), "wall_ms": statistics.median(wall_ms[window])}

    return {
        "arm": name,
        "trace_ids": ids,
        "indexes_of_schema": schema,
        "batches": len(cpu_ms),
        "mean_cpu_ms": statistics.fmean(cpu_ms),
        "mean_wall_ms": statistics.fmean(wall_ms),
        "at": {str(mark): around(mark) for mark in marks},
        "store_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="Traces per written batch (5 spans each).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_out" / "store_growth.json")
    args = parser.parse_args()
    marks = sorted({args.batch * 5, args.traces // 4, args.traces // 2, args.traces})
    results: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        shift = round_ % len(args.arms)
        for name in args.arms[shift:] + args.arms[:shift]:  # each arm goes first in some round
            result = _arm(name, args.traces, args.batch, marks)
            result["round"] = round_ + 1
            results.append(result)
            cells = ", ".join(f"{int(m):,} traces {v['cpu_ms']:.1f} ms" for m, v in result["at"].items())
            print(
                f"round {round_ + 1} {name}: CPU per batch of {args.batch * 5:,} spans: "
                f"mean {result['mean_cpu_ms']:.1f} ms; at {cells}",
                flush=True,
            )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
        },
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip(),
        "args": vars(args) | {"out": str(args.out)},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(report["uptime"])


if __name__ == "__main__":
    main()
