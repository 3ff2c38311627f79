"""What writing spans to the SQLite trace store costs as the store grows: time-ordered trace ids and an index led by
the trace id (schema version 3) against random trace ids and an index on span ids alone (version 2, the design
before).

Each arm writes ``--traces`` traces into a new store through :meth:`TraceStore.write`, in batches of ``--batch``
traces, the shape of a traced ``agentscope serve`` request (5 spans: the HTTP request, the agent, two model calls
and a tool call; attribute JSON of 40-420 bytes per span, as the encoder writes them for the serve benchmark's
agent). Span ids are random 64-bit ids in both arms, as the tracer makes them. The ``before`` arm makes trace ids
the way the tracer did before (128 random bits) and gives the store version 2's indexes (``spans_span_id`` on
``span_id``, no ``spans_trace_span``); the ``after`` arm uses :func:`agentscope.tracing._spans.new_trace_id` and
the store as it is. Reported per arm: the process CPU and wall-clock time per batch at several store sizes, and the
mean over all batches. The arms alternate over ``--rounds``.

    .venv/bin/python benchmarks/tracing/store_growth.py [--traces 200000 --batch 1000 --rounds 2]
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


def _arm(name: str, traces: int, batch_traces: int, marks: list[int]) -> dict[str, Any]:
    """Write ``traces`` traces into a new store; CPU and wall ms per batch at the store sizes in ``marks``."""
    directory = Path(tempfile.mkdtemp(prefix=f"store-growth-{name}-"))
    store = TraceStore(directory / "traces.db")
    if name == "before":  # version 2's indexes
        conn = sqlite3.connect(directory / "traces.db", isolation_level=None)
        conn.execute("DROP INDEX spans_trace_span")
        conn.execute("CREATE INDEX spans_span_id ON spans (span_id)")
        conn.close()
    make_id = _random_trace_id if name == "before" else new_trace_id
    run = RunRecord(id="bench", project="bench", name=name, started_ns=time.time_ns())
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
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
    size = sum(f.stat().st_size for f in directory.iterdir())
    for f in directory.iterdir():
        f.unlink()
    directory.rmdir()

    def around(mark: int) -> dict[str, float]:
        i = min(mark // batch_traces, len(cpu_ms) - 1)
        window = slice(max(0, i - 2), i + 3)  # the 5 batches around the mark
        return {
            "cpu_ms": statistics.median(cpu_ms[window]),
            "wall_ms": statistics.median(wall_ms[window]),
        }

    return {
        "arm": name,
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
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_out" / "store_growth.json")
    args = parser.parse_args()
    marks = sorted({args.batch, args.traces // 4, args.traces // 2, args.traces})
    results: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
            result = _arm(name, args.traces, args.batch, marks)
            result["round"] = round_ + 1
            results.append(result)
            cells = ", ".join(
                f"{int(m):,} traces {v['cpu_ms']:.1f} ms"
                for m, v in ((int(k), v) for k, v in result["at"].items())
            )
            print(
                f"round {round_ + 1} {name}: CPU per batch of {args.batch * 5:,} spans: mean {result['mean_cpu_ms']:.1f} ms; at {cells}",
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
