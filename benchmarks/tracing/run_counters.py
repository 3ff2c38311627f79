"""What a batch of spans costs the SQLite trace store when its run already holds many traces (a long-served run).

A traced ``agentscope serve`` is one run whose traces are its requests: about a thousand a second. This writes
batches of ``--batch`` traced requests (5 spans each: the HTTP request's, then the agent, two model calls and a tool
call under it, with 70-760 bytes of attribute JSON, the sizes the serve benchmark's spans have) into a store whose run
already holds N traces, for each N of ``--sizes``, and reports the median CPU milliseconds per batch. The N traces
are inserted straight into the ``traces`` table (what the counters read), so the store's span tables stay small and
only the run's size differs between the cells.

    .venv/bin/python benchmarks/tracing/run_counters.py [--sizes 0 100000 1000000] [--batch 20] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from agentscope.tracing import TraceStore
from agentscope.tracing._records import ExportBatch, RunRecord, SpanRecord
from agentscope.tracing._spans import new_trace_id

_SHAPE = (("env", 70), ("agent", 320), ("model", 550), ("tool", 230), ("model", 760))
"""A traced serve request's spans: kind, bytes of attribute JSON."""


def _request(run_id: str, serial: int) -> list[SpanRecord]:
    trace_id = f"{new_trace_id():032x}"
    return [
        SpanRecord(
            run_id,
            trace_id,
            f"{serial * 8 + i:016x}",
            None if i == 0 else f"{serial * 8:016x}",
            kind,
            kind,
            i,
            i + 1,
            "ok",
            None,
            json.dumps({"x": "y" * (size - 10)}),
            i == 0,
        )
        for i, (kind, size) in enumerate(_SHAPE)
    ]


def measure(traces: int, batch: int, repeat: int) -> float:
    """Median CPU ms per batch of ``batch`` requests into a store whose run holds ``traces`` traces."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.db"
        run = RunRecord("run", "bench", "serve", time.time_ns())
        with TraceStore(path) as store:
            store.write(ExportBatch(run, [], [], {}, lambda _: None))
            conn = sqlite3.connect(path)
            with conn:
                conn.executemany(
                    "INSERT INTO traces (trace_id, run_id, start_ns, end_ns) VALUES (?, 'run', 0, 0)",
                    ((f"{i:032x}",) for i in range(traces)),
                )
            conn.close()
            times: list[float] = []
            for r in range(repeat):
                spans = [s for k in range(batch) for s in _request(run.id, r * batch + k)]
                started = time.process_time()
                store.write(ExportBatch(run, spans, [], {}, lambda _: None))
                times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=20, help="requests per batch (5 spans each)")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    for traces in args.sizes:
        ms = measure(traces, args.batch, args.repeat)
        print(
            json.dumps(
                {"traces_in_run": traces, "batch_requests": args.batch, "cpu_ms_per_batch": round(ms, 2)}
            )
        )


if __name__ == "__main__":
    main()
