"""Agent-steps/s with tracing off and on (SQLite trace store), alternating in one process.

The workload is the in-process one of ``benchmarks/agent_overhead``: N ReActAgents, at most C at once, each doing
K tool rounds against a bare in-process ``ChatModel`` (no recording), with a sync ``add`` tool run in a worker
thread. "on" runs with ``agentscope.init(trace_store=<tmp>/traces.db)`` installed; its time includes waiting for
the writer thread to have written every span (``aflush``), so nothing is left unpaid.

    .venv/bin/python benchmarks/tracing/agent_steps.py [--n 1000] [--k 5] [--concurrency 200] [--rounds 5]
        [--model-latency-ms 0] [--sample-rate 1.0] [--no-content] [--writer thread|process|both]

Each round also reports the time this process spent in the cycle collector (``gc.callbacks``): spans kept alive
until the writer gets to them are scanned (and promoted) by every collection meanwhile.

``--sample-rate`` and ``--no-content`` pass ``sample_rate`` / ``capture_content=False`` to ``agentscope.init``;
``--writer`` its ``writer`` (``both``: each round runs off, on with the writer thread and on with the writer
process, reported as ``on`` and ``on_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Round:
    """What one run of the workload measured, in seconds."""

    wall_s: float
    """From the first agent's start until the tracer had written everything (``aflush``)."""
    cpu_s: float
    """This process's CPU time, all threads."""
    flush_wait_s: float
    """The part of ``wall_s`` spent waiting for the tracer after the last agent had finished."""
    writer_cpu_s: float | None
    """The writer process's CPU time over the same interval (None without one): its start-up, before the round,
    and its shutdown, after it, are not counted."""
    gc_s: float
    """Time this process spent in the cycle collector (``gc.callbacks``), all generations."""


class _GcClock:
    """Adds up the time the cycle collector runs in this process (one perf_counter pair per collection)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._started


_GC_CLOCK = _GcClock()
gc.callbacks.append(_GC_CLOCK)


def _writer_cpu_s() -> float | None:
    """CPU seconds the running tracer's writer process has used so far (None with the writer thread)."""
    tracer = tracing.get_tracer()
    writer = getattr(tracer, "_process", None)
    process = getattr(writer, "process", None)
    if process is None:
        return None
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def workload(n: int, k: int, concurrency: int, latency_s: float = 0.0) -> Round:
    """Run N agents (K tool rounds each, at most ``concurrency`` at once) and measure it."""
    model = BenchModel(k, latency_s)
    toolkit = Toolkit()
    toolkit.register(add)
    limiter = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            agent = ReActAgent(f"agent{i % 10}", SYSTEM_PROMPT, model, toolkit=toolkit, max_iters=k + 2)
            reply = await agent(Msg(role="user", content=USER_PROMPT))
            assert reply.text == "The answer is 3.", reply.text

    writer_before = _writer_cpu_s() if tracing.enabled() else None
    gc_before = _GC_CLOCK.total_s
    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    drained = time.perf_counter()
    if tracing.enabled():
        await tracing.aflush()
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    writer_after = _writer_cpu_s() if writer_before is not None else None
    assert model.calls == n * (k + 1), model.calls
    return Round(
        wall_s=end - start,
        cpu_s=cpu,
        flush_wait_s=end - drained,
        writer_cpu_s=None if writer_before is None or writer_after is None else writer_after - writer_before,
        gc_s=_GC_CLOCK.total_s - gc_before,
    )


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
    gc_us: dict[str, list[float]] = {mode: [] for mode in rates}
    flush_ms: dict[str, list[float]] = {mode: [] for mode in writers}
    writer_cpu_us: dict[str, list[float]] = {mode: [] for mode, w in writers.items() if w == "process"}
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
                if mode != "off":
                    agentscope.init(
                        store,
                        project="bench",
                        run_name=f"round-{r}-{mode}",
                        writer=writers[mode],  # type: ignore[arg-type]
                        **options,
                    )
                measured = asyncio.run(
                    workload(args.n, args.k, args.concurrency, args.model_latency_ms / 1000)
                )
                if mode != "off":
                    tracing.shutdown()
                rates[mode].append(steps / measured.wall_s)
                cpu_us[mode].append(measured.cpu_s / steps * 1e6)
                gc_us[mode].append(measured.gc_s / steps * 1e6)
                line = (
                    f"[tracing bench] round {r} {mode:>10}: {steps / measured.wall_s:,.0f} agent-steps/s, "
                    f"{measured.cpu_s / steps * 1e6:.0f} CPU us/step in this process "
                    f"({gc_us[mode][-1]:.0f} of them in garbage collection)"
                )
                if mode in writer_cpu_us:
                    if (
                        measured.writer_cpu_s is None
                    ):  # the tracer's internals moved: say so, do not drop the column
                        raise SystemExit(
                            "writer='process' round, but no writer process found to read its CPU"
                        )
                    writer_cpu_us[mode].append(measured.writer_cpu_s / steps * 1e6)
                    line += f", {writer_cpu_us[mode][-1]:.0f} in the writer process"
                if mode in flush_ms:
                    flush_ms[mode].append(measured.flush_wait_s * 1e3)
                    line += f"; {flush_ms[mode][-1]:.0f} ms of the round waiting for the tracer to catch up"
                print(line, file=sys.stderr)
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
        # CPU of a writer process over the rounds themselves (its start-up and shutdown excluded): best round
        **{
            f"writer_process_cpu_us_per_step_{mode}": round(min(values), 1)
            for mode, values in writer_cpu_us.items()
            if values
        },
        # time in the cycle collector per step, median over rounds (this process only)
        **{f"gc_us_per_step_{mode}": round(statistics.median(values), 1) for mode, values in gc_us.items()},
        "spans_written": spans,
        "store_mb": round(size_mb, 1),
        "writer": args.writer,
    }
    if "on_process" in rates:
        # (process_time counts this process only: the writer process's is writer_process_cpu_us_per_step_*)
        on_process = statistics.median(rates["on_process"])
        result["on_process_steps_per_s"] = round(on_process)
        result["ratio_process"] = round(on_process / off, 3)
        result["ratio_of_best_process"] = round(max(rates["on_process"]) / best_off, 3)
        result["cpu_us_per_step_on_process"] = round(min(cpu_us["on_process"]), 1)
        result["flush_wait_ms_on_process"] = round(statistics.median(flush_ms["on_process"]))
        result["all_on_process"] = [round(x) for x in rates["on_process"]]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
