"""Where tracing's cost goes, in instructions per agent step, per thread (deterministic, unlike wall time).

Runs the workload of ``agent_steps.py`` under valgrind's callgrind (``--separate-threads=yes``) four times:
tracing off and on (SQLite store), with 0 and with N agents, and reports per agent step the instructions of the
main thread (the event loop: the agent, plus making spans when on) and of the tracer's writer thread (encoding
and SQLite). The 0-agent runs cancel start-up and warm-up. Needs ``valgrind`` (``apt-get install valgrind``);
takes a few minutes.

    .venv/bin/python benchmarks/tracing/instructions.py [--n 300] [--k 5]

Reading it: on a GIL-bound interpreter the event loop runs only while no other thread holds the GIL, so with
tracing on it pays its own extra instructions plus the writer's GIL-held share (everything but the time inside
``sqlite3_step``, which releases the GIL): on/off steps/s ~ main_off / (main_on + writer_gil).
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


def _workload(mode: str, n: int, k: int) -> None:
    """Run inside valgrind: warm up, then N agents with tracing ``mode`` (``off`` or ``on``)."""
    sys.path.insert(0, str(HERE))
    from agent_steps import workload  # type: ignore[import-not-found]

    import agentscope
    from agentscope import tracing

    asyncio.run(workload(50, k, 50))
    if mode == "on":
        agentscope.init(Path(tempfile.mkdtemp()) / "traces.db", project="bench")
        asyncio.run(workload(50, k, 50))
    if n:
        asyncio.run(workload(n, k, 200))
    if mode == "on":
        tracing.shutdown()


def _thread_totals(prefix: Path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for part in sorted(prefix.parent.glob(prefix.name + "-*")):
        for line in part.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                totals[part.name.rsplit("-", 1)[1]] = int(line.split()[1])
                break
    return totals


def _measure(mode: str, n: int, k: int, out: Path) -> dict[str, int]:
    prefix = out / f"callgrind.{mode}.{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            sys.executable,
            __file__,
            "--run",
            mode,
            "--n",
            str(n),
            "--k",
            str(k),
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
    parser.add_argument("--run", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _workload(args.run, args.n, args.k)
        return
    steps = args.n * (args.k + 1)
    result: dict[str, float] = {"n": args.n, "k": args.k}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for mode in ("off", "on"):
            base, full = _measure(mode, 0, args.k, out), _measure(mode, args.n, args.k, out)
            main_thread = (full["01"] - base["01"]) / steps
            result[f"main_thread_k_per_step_{mode}"] = round(main_thread / 1000, 1)
            if mode == "on":
                # The writer is the busiest thread besides the main one (tool calls run in short-lived workers).
                writer = max(v for key, v in full.items() if key != "01") - max(
                    v for key, v in base.items() if key != "01"
                )
                result["writer_thread_k_per_step"] = round(writer / steps / 1000, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
