"""Agent-steps/s with tracing off and on (SQLite trace store), alternating in one process.

The workload is the in-process one of ``benchmarks/agent_overhead``: N ReActAgents, at most C at once, each doing
K tool rounds against a bare in-process ``ChatModel`` (no recording), with a sync ``add`` tool run in a worker
thread. "on" runs with ``agentscope.init(trace_store=<tmp>/traces.db)`` installed; its time includes waiting for
the writer thread to have written every span (``aflush``), so nothing is left unpaid.

    .venv/bin/python benchmarks/tracing/agent_steps.py [--n 1000] [--k 5] [--concurrency 200] [--rounds 5]
        [--model-latency-ms 0] [--sample-rate 1.0] [--no-content] [--writer thread|process|both]

``--sample-rate`` and ``--no-content`` pass ``sample_rate`` / ``capture_content=False`` to ``agentscope.init``;
``--writer`` its ``writer`` (``both``: each round runs off, on with the writer thread and on with the writer
process, reported as ``on`` and ``on_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel, ChatResponse, ChatUsage
from agentscope.tools import Toolkit

SYSTEM_PROMPT = (
    "You are a calculator agent. Use the add tool for every addition, then answer in one sentence."
)
USER_PROMPT = "What is 1 + 2? Use the tool."


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


class BenchModel(ChatModel):
    """Asks for ``add`` until the conversation holds K tool results, then answers."""

    model_name = "bench"

    def __init__(self, k: int, latency_s: float = 0.0) -> None:
        self.k = k
        self.latency_s = latency_s
        self.calls = 0

    async def generate(self, messages: Sequence[Msg], **_: Any) -> ChatResponse:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        results = sum(
            1
            for m in messages
            if not isinstance(m.content, str)
            for b in m.content
            if isinstance(b, ToolResultBlock)
        )
        usage = ChatUsage(input_tokens=40 + 30 * results, output_tokens=12)
        if results < self.k:
            call = ToolUseBlock(id=f"call_{self.calls}", name="add", input={"a": 1, "b": 2})
            return ChatResponse(content=[call], finish_reason="tool_calls", usage=usage)
        return ChatResponse(content=[TextBlock(text="The answer is 3.")], finish_reason="stop", usage=usage)


async def workload(n: int, k: int, concurrency: int, latency_s: float = 0.0) -> tuple[float, float, float]:
    """Run N agents; return the wall time, the process CPU time (all threads) and the time spent waiting for the
    tracer to write what was left when the last agent finished (included in the wall time), in seconds."""
    model = BenchModel(k, latency_s)
    toolkit = Toolkit()
    toolkit.register(add)
    limiter = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            agent = ReActAgent(f"agent{i % 10}", SYSTEM_PROMPT, model, toolkit=toolkit, max_iters=k + 2)
            reply = await agent(Msg(role="user", content=USER_PROMPT))
            assert reply.text == "The answer is 3.", reply.text

    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    drained = time.perf_counter()
    if tracing.enabled():
        await tracing.aflush()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    assert model.calls == n * (k + 1), model.calls
    return elapsed, cpu, time.perf_counter() - drained


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (a writer process counts once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="off/on pairs (medians are reported)")
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        default=0.0,
        help="simulated model latency (0: the worst case for tracing)",
    )
    parser.add_argument("--sample-rate", type=float, default=1.0, help="fraction of traces recorded")
    parser.add_argument(
        "--no-content", action="store_true", help="trace without messages, tool arguments and results"
    )
    parser.add_argument(
        "--writer",
        choices=["thread", "process", "both"],
        default="thread",
        help="where spans are encoded and written (both: each round runs off, on and on_process)",
    )
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"sample_rate": args.sample_rate, "capture_content": not args.no_content}
    writers: dict[str, str] = (
        {"on": "thread", "on_process": "process"} if args.writer == "both" else {"on": args.writer}
    )
    steps = args.n * (args.k + 1)
    rates: dict[str, list[float]] = {"off": [], **{mode: [] for mode in writers}}
    cpu_us: dict[str, list[float]] = {mode: [] for mode in rates}
    flush_ms: dict[str, list[float]] = {mode: [] for mode in rates}
    writer_cpu_us: dict[str, list[float]] = {mode: [] for mode in rates}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "traces.db"
        asyncio.run(workload(min(args.n, 200), args.k, args.concurrency))  # warm-up, off
        for writer in writers.values():
            agentscope.init(store, project="bench", run_name="warm-up", writer=writer)  # type: ignore[arg-type]
            asyncio.run(workload(min(args.n, 200), args.k, args.concurrency))  # warm-up, on
            tracing.shutdown()
        for r in range(args.rounds):
            order = list(rates) if r % 2 == 0 else list(reversed(rates))
            for mode in order:
                children = _children_cpu_s()
                if mode != "off":
                    agentscope.init(
                        store,
                        project="bench",
                        run_name=f"round-{r}-{mode}",
                        writer=writers[mode],  # type: ignore[arg-type]
                        **options,
                    )
                elapsed, cpu, flush = asyncio.run(
                    workload(args.n, args.k, args.concurrency, args.model_latency_ms / 1000)
                )
                if mode != "off":
                    tracing.shutdown()
                rates[mode].append(steps / elapsed)
                cpu_us[mode].append(cpu / steps * 1e6)
                flush_ms[mode].append(flush * 1e3)
                writer_cpu_us[mode].append((_children_cpu_s() - children) / steps * 1e6)
                print(
                    f"[tracing bench] round {r} {mode:>10}: {steps / elapsed:,.0f} agent-steps/s, "
                    f"{cpu / steps * 1e6:.0f} CPU us/step in this process, "
                    f"{writer_cpu_us[mode][-1]:.0f} in the writer process; "
                    f"{flush * 1e3:.0f} ms of the round waiting for the tracer to catch up",
                    file=sys.stderr,
                )
        with tracing.TraceStore(store) as st:
            runs, _ = st.list_runs()
            spans = sum(run["span_count"] for run in runs)
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("traces.db*")) / 1e6
    off = statistics.median(rates["off"])
    on = statistics.median(rates["on"])
    best_off, best_on = max(rates["off"]), max(rates["on"])
    cpu_off, cpu_on = min(cpu_us["off"]), min(cpu_us["on"])
    result = {
        "n": args.n,
        "k": args.k,
        "concurrency": args.concurrency,
        "model_latency_ms": args.model_latency_ms,
        "sample_rate": args.sample_rate,
        "capture_content": not args.no_content,
        "rounds": args.rounds,
        "off_steps_per_s": round(off),
        "on_steps_per_s": round(on),
        "ratio": round(on / off, 3),
        "best_off_steps_per_s": round(best_off),
        "best_on_steps_per_s": round(best_on),
        "ratio_of_best": round(best_on / best_off, 3),
        "cpu_us_per_step_off": round(cpu_off, 1),
        "cpu_us_per_step_on": round(cpu_on, 1),
        "cpu_ratio": round(cpu_off / cpu_on, 3),
        "all_off": [round(x) for x in rates["off"]],
        "all_on": [round(x) for x in rates["on"]],
        "flush_wait_ms_on": round(statistics.median(flush_ms["on"])),
        "spans_written": spans,
        "store_mb": round(size_mb, 1),
        "writer": args.writer,
    }
    if "on_process" in rates:
        # (process_time counts this process only: the writer process's CPU is writer_process_cpu_us_per_step,
        # counted once it has exited at the round's shutdown)
        on_process = statistics.median(rates["on_process"])
        result["on_process_steps_per_s"] = round(on_process)
        result["ratio_process"] = round(on_process / off, 3)
        result["ratio_of_best_process"] = round(max(rates["on_process"]) / best_off, 3)
        result["cpu_us_per_step_on_process"] = round(min(cpu_us["on_process"]), 1)
        result["writer_process_cpu_us_per_step"] = round(min(writer_cpu_us["on_process"]), 1)
        result["flush_wait_ms_on_process"] = round(statistics.median(flush_ms["on_process"]))
        result["all_on_process"] = [round(x) for x in rates["on_process"]]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
