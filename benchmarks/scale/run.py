"""The same RL run with its rollout servers in process, in processes of their own, and as Ray actors, and with
every service on Ray.

Trains ``CONFIG`` (default: the quick start) for ``--seconds`` of RL per cell with ``rollout.backend`` set to each
backend in turn (``ray-all``: every service a Ray actor), interleaved over ``--rounds`` (so a slow minute of the
machine hits every backend alike), with the warm start cached once and shared (``policy.cache_dir``), held-out
evaluation off. Per cell it reads the run's
``metrics.jsonl``: trained tokens per hour between the first and the last step (``data/trained_tokens``; replay
copies are not trained here), steps and episodes. Prints a Markdown table (recorded by hand in
``benchmarks/RESULTS.md``, section ``scale``, with the machine and the load).

    .venv/bin/python benchmarks/scale/run.py --seconds 150 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import REPO, loadavg, machine, uptime

BACKENDS = ("inprocess", "process", "ray", "ray-all")
"""``rollout.backend`` of each cell; ``ray-all`` puts every service on Ray (rollout servers, one environment worker,
the data manager and the trainer: ``examples/rl/ray.yaml`` with one server and one worker)."""
_ALL_ON_RAY = ("env.backend=ray", "env.workers=1", "data.placement=ray", "trainer.placement=ray")


def _overrides(backend: str) -> list[str]:
    if backend == "ray-all":
        return ["rollout.backend=ray", *_ALL_ON_RAY]
    return [f"rollout.backend={backend}"]


def run_cell(
    config: Path, backend: str, servers: int, seconds: float, out: Path, cache: Path
) -> dict[str, Any]:
    """One ``rl train`` run; what its metrics say."""
    run_dir = out / f"{backend}-{servers}-{int(time.time() * 1000)}"
    command = [
        sys.executable,
        "-m",
        "agentscope.cli",
        "rl",
        "train",
        str(config),
        "--run-dir",
        str(run_dir),
        "--set",
        f"policy.cache_dir={cache}",
        *(arg for override in _overrides(backend) for arg in ("--set", override)),
        "--set",
        f"rollout.servers={servers}",
        "--set",
        f"schedule.time_limit_s={seconds}",
        "--set",
        "schedule.steps=100000",
        "--set",
        "evaluation.before_after=false",
        "--set",
        "trace=false",
    ]
    load_before = loadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ}, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{backend}: rl train failed:\n{proc.stderr[-3000:]}")
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    first, last = metrics[0], metrics[-1]
    span = last["time/wall_s"] - first["time/wall_s"]
    tokens = last["data/trained_tokens"] - first["data/trained_tokens"]
    return {
        "backend": backend,
        "servers": servers,
        "steps": len(metrics),
        "tokens_per_hour": tokens / span * 3600 if span > 0 else 0.0,
        "steps_per_min": (len(metrics) - 1) / span * 60 if span > 0 else 0.0,
        "episodes": last.get("env/episodes", 0.0),
        "first_step_s": first["time/wall_s"],
        "wall_s": wall,
        "load": [load_before, loadavg()[0]],
        "restarts": last.get("rollout/server_restarts", 0.0),
    }


def table(cells: list[dict[str, Any]]) -> str:
    rows = [
        "| backend | servers | trained tokens/hour, median (min-max) | vs in process | steps/min | first step at (s) "
        "| rounds | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["backend"], cell["servers"]), []).append(cell)
    base = {
        servers: statistics.median(c["tokens_per_hour"] for c in group)
        for (backend, servers), group in groups.items()
        if backend == "inprocess"
    }
    for (backend, servers), group in groups.items():
        rates = [c["tokens_per_hour"] for c in group]
        median = statistics.median(rates)
        ratio = median / base[servers] if base.get(servers) else float("nan")
        loads = ", ".join(f"{c['load'][0]:.1f}-{c['load'][1]:.1f}" for c in group)
        rows.append(
            f"| {backend} | {servers} | {median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {ratio:.2f} | "
            f"{statistics.median(c['steps_per_min'] for c in group):.1f} | "
            f"{statistics.median(c['first_step_s'] for c in group):.1f} | {len(group)} | {loads} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "rl" / "quickstart.yaml")
    parser.add_argument("--seconds", type=float, default=150.0, help="RL wall-clock per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", type=int, nargs="+", default=[1])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "_out")
    parser.add_argument("--json", type=Path, help="write every cell here")
    args = parser.parse_args()

    cache = args.out / "policy-cache"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"[scale] {machine()}", file=sys.stderr)
    print(f"[scale] start: {uptime()}", file=sys.stderr)
    print("[scale] the warm start, once (cached for every cell)", file=sys.stderr, flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agentscope.cli",
            "rl",
            "sft",
            str(args.config),
            "--run-dir",
            str(args.out / "sft"),
            "--set",
            f"policy.cache_dir={cache}",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    cells: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for servers in args.servers:
            for backend in args.backends:
                cell = run_cell(args.config, backend, servers, args.seconds, args.out, cache)
                cell["round"] = round_
                cells.append(cell)
                print(f"[scale] {json.dumps(cell)}", file=sys.stderr, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(cells, indent=1))
    print(f"Run {started} to {time.strftime('%H:%M UTC', time.gmtime())}; end: {uptime()}\n")
    print(table(cells))


if __name__ == "__main__":
    main()
