"""Where tracing's cost goes, in instructions per agent step, per thread (deterministic, unlike wall time).

Runs the workload of ``agent_steps.py`` under valgrind's callgrind (``--separate-threads=yes
--trace-children=yes``) four times: tracing off and on (SQLite store), with 0 and with N agents, and reports per
agent step the instructions of the main thread (the event loop: the agent, plus making spans when on) and of the
tracer's thread (with ``--writer thread``: encoding and SQLite; with ``--writer process``: serialising each batch
and sending it) and, with ``--writer process``, of the writer process (all its threads: decoding, encoding,
SQLite). The 0-agent runs cancel start-up and warm-up. Needs ``valgrind`` (``apt-get install valgrind``); takes a
few minutes.

    .venv/bin/python benchmarks/tracing/instructions.py [--n 300] [--k 5] [--writer thread|process]

Reading it: on a GIL-bound interpreter the event loop runs only while no other thread holds the GIL, so with
tracing on it pays its own extra instructions plus the tracer thread's GIL-held share (with the writer thread:
everything but the time inside ``sqlite3_step``, which releases the GIL; with a writer process: all of the
app-side thread, whose work is Python or ``to_json`` under the GIL, the socket write being a system call):
on/off steps/s ~ main_off / (main_on + tracer_thread_gil). The writer process runs on another core, if there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _workload(mode: str, n: int, k: int, writer: str) -> None:
    """Run inside valgrind: warm up, then N agents with tracing ``mode`` (``off`` or ``on``)."""
    sys.path.insert(0, str(HERE))
    from agent_steps import workload  # type: ignore[import-not-found]

    import agentscope
    from agentscope import tracing

    asyncio.run(workload(50, k, 50))
    if mode == "on":
        agentscope.init(Path(tempfile.mkdtemp()) / "traces.db", project="bench", writer=writer)  # type: ignore[arg-type]
        asyncio.run(workload(50, k, 50))
    if n:
        asyncio.run(workload(n, k, 200))
    if mode == "on":
        tracing.shutdown()


def _thread_totals(prefix: Path) -> dict[str, int]:
    """Instructions per thread (``01`` the main one) of the benchmark's process, and in all of the writer
    process (``writer``) when there was one."""
    totals: dict[str, int] = {}
    for part in sorted(prefix.parent.glob(prefix.name + ".*-*")):
        writer = False
        for line in part.read_text().splitlines():
            if line.startswith("cmd:"):
                writer = "agentscope.tracing._writer" in line
            elif line.startswith(("summary:", "totals:")):
                count = int(line.split()[1])
                if writer:
                    totals["writer"] = totals.get("writer", 0) + count
                else:
                    totals[part.name.rsplit("-", 1)[1]] = count
                break
    return totals


def _measure(mode: str, n: int, k: int, writer: str, out: Path) -> dict[str, int]:
    prefix = out / f"callgrind.{mode}.{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            "--trace-children=yes",
            f"--callgrind-out-file={prefix}.%p",
            sys.executable,
            __file__,
            "--run",
            mode,
            "--n",
            str(n),
            "--k",
            str(k),
            "--writer",
            writer,
        ],
        check=True,
        capture_output=True,
    )
    return _thread_totals(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--writer", choices=["thread", "process"], default="thread")
    parser.add_argument("--run", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _workload(args.run, args.n, args.k, args.writer)
        return
    steps = args.n * (args.k + 1)
    result: dict[str, float | str] = {"n": args.n, "k": args.k, "writer": args.writer}
    others: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for mode in ("off", "on"):
            base = _measure(mode, 0, args.k, args.writer, out)
            full = _measure(mode, args.n, args.k, args.writer, out)
            main_thread = (full["01"] - base["01"]) / steps
            result[f"main_thread_k_per_step_{mode}"] = round(main_thread / 1000, 1)
            # Every other thread of the app: tool calls run in worker threads (many, short-lived), with tracing
            # off and on alike; what "on" adds to them is the tracer's thread.
            others[mode] = sum(v for key, v in full.items() if key not in ("01", "writer")) - sum(
                v for key, v in base.items() if key not in ("01", "writer")
            )
            if "writer" in full:
                writer = full["writer"] - base["writer"]
                result["writer_process_k_per_step"] = round(writer / steps / 1000, 1)
    tracer = round((others["on"] - others["off"]) / steps / 1000, 1)
    result["tracer_thread_k_per_step"] = tracer
    if args.writer == "process":
        # All of the tracer thread's work is under the GIL (Python and to_json; the socket write is a system call).
        # With the writer thread, its GIL-held share needs its profile (sqlite3_step releases the GIL).
        off, on = result["main_thread_k_per_step_off"], result["main_thread_k_per_step_on"]
        assert isinstance(off, float)
        assert isinstance(on, float)
        result["predicted_on_off"] = round(off / (on + tracer), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
