"""Studio API latency over a 10,000-span trace made by real agents.

One trace: a ``rollout batch`` span (kind env) holding 1,000 ReActAgent invocations (each: 4 tool rounds, so
1 agent + 5 model + 4 tool spans), 10,001 spans in all, written through the real tracer into a SQLite store, plus
10,000 points of a metric. Then the studio app answers the requests its pages make, served over real HTTP by
uvicorn on 127.0.0.1, each endpoint ``--repeat`` times; p50/p95/max in milliseconds are printed as JSON.

    .venv/bin/python benchmarks/tracing/studio_latency.py [--agents 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2

import agentscope
from agentscope import tracing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_steps import BenchModel, add


async def make_trace(agents: int, k: int) -> None:
    from agentscope.agents import ReActAgent
    from agentscope.message import Msg
    from agentscope.tools import Toolkit

    toolkit = Toolkit()
    toolkit.register(add)
    model = BenchModel(k)
    with tracing.span("rollout batch", "env", {"agentscope.batch.size": agents}):
        limiter = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with limiter:
                agent = ReActAgent(
                    f"agent{i}", "You add numbers with the tool.", model, toolkit=toolkit, max_iters=k + 2
                )
                await agent(Msg(role="user", content=f"Task {i}: what is 1 + 2?"))

        await asyncio.gather(*(one(i) for i in range(agents)))
    for step in range(10_000):
        tracing.record_metric("rollout/tokens_per_s", 1000.0 + step % 97, step=step)
    await tracing.aflush()


def serve(path: Path, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    from agentscope.studio import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(path), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.db"
        started = time.perf_counter()
        agentscope.init(path, project="bench", run_name="ten-thousand-spans")
        asyncio.run(make_trace(args.agents, args.k))
        tracing.shutdown()
        build_s = time.perf_counter() - started
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server, thread = serve(path, port)
        try:
            result = measure(f"http://127.0.0.1:{port}", args.repeat)
        finally:
            server.should_exit = True
            thread.join(10)
        result["build_s"] = round(build_s, 2)
        result["store_mb"] = round(sum(p.stat().st_size for p in Path(tmp).glob("traces.db*")) / 1e6, 1)
    print(json.dumps(result, indent=1))
    return result


def measure(base: str, repeat: int) -> dict[str, Any]:
    with httpx2.Client(base_url=base, timeout=60) as c:
        (run,) = c.get("/api/runs").json()["runs"]
        (trace,) = c.get(f"/api/runs/{run['id']}/traces").json()["traces"]
        trace_id = trace["trace_id"]
        first = c.get(f"/api/traces/{trace_id}/tree", params={"limit": 500})  # also warms the tree cache
        cold_tree_ms = first.elapsed.total_seconds() * 1000
        total = first.json()["total"]
        rows = first.json()["spans"]
        agent = next(r for r in rows if r["kind"] == "agent")
        model = next(r for r in rows if r["kind"] == "model")
        requests: dict[str, tuple[str, dict[str, Any]]] = {
            "runs list": ("/api/runs", {}),
            "run detail": (f"/api/runs/{run['id']}", {}),
            "traces of run": (f"/api/runs/{run['id']}/traces", {}),
            "tree page 1 (500 spans)": (f"/api/traces/{trace_id}/tree", {"limit": 500}),
            "tree page at 9,500": (f"/api/traces/{trace_id}/tree", {"offset": 9500, "limit": 500}),
            # The studio's pages pass the trace (the span is found through its index entries); an API caller
            # that gives only the span id makes the store read every span.
            "span detail (model call)": (f"/api/spans/{model['span_id']}", {"trace_id": trace_id}),
            "span detail, span id only": (f"/api/spans/{model['span_id']}", {}),
            "conversation of one agent": (
                f"/api/traces/{trace_id}/conversation",
                {"agent_span_id": agent["span_id"]},
            ),
            "spans search (q=Task 999)": ("/api/spans", {"trace_id": trace_id, "q": "Task 999", "limit": 50}),
            "errors in trace": ("/api/spans", {"trace_id": trace_id, "status": "error"}),
            "latency stats of run": (f"/api/runs/{run['id']}/stats", {}),
            "metric series (10,000 points)": (f"/api/runs/{run['id']}/metrics", {"max_points": 1000}),
        }
        latencies: dict[str, dict[str, float]] = {}
        for label, (path, params) in requests.items():
            times: list[float] = []
            for _ in range(repeat):
                t = time.perf_counter()
                response = c.get(path, params=params)
                times.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, (path, response.text)
            times.sort()
            latencies[label] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 2),
                "max_ms": round(times[-1], 2),
            }
    return {"spans_in_trace": total, "cold_tree_first_page_ms": round(cold_tree_ms, 1), "latency": latencies}


if __name__ == "__main__":
    main()
