"""Does `agentscope rl train` make the policy better? Success on held-out tasks before and after a run.

Trains ``--config`` (default ``examples/rl/learn.yaml``) into a new run directory, then evaluates the policy the run
started from and the one it ended with, on the training tasks and on the config's ``eval_tasks`` (tasks the run
never trained on), at the training temperature and greedily. Also reports the success rate of the trained batches over
the run (from ``metrics.jsonl``). Writes a JSON report (``--out``) with the machine, date, load and command.

    .venv/bin/python benchmarks/rl_learning/run.py --out benchmarks/rl_learning/_out/learn.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from agentscope.rl import evaluate, load_config, train

ROOT = Path(__file__).resolve().parents[2]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _curve(run_dir: Path, window: int) -> list[dict[str, float]]:
    """Trained-batch success rate per step, and its moving average over ``window`` steps."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [float(r.get("data/batch_success_rate", 0.0)) for r in rows]
    return [
        {
            "step": float(r["step"]),
            "batch_success_rate": rate,
            "moving_average": statistics.fmean(rates[max(0, i + 1 - window) : i + 1]),
        }
        for i, (r, rate) in enumerate(zip(rows, rates, strict=True))
    ]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config, args.set)
    if args.run_dir.exists():
        if not args.fresh:
            raise SystemExit(f"{args.run_dir} exists; pass --fresh to replace it")
        shutil.rmtree(args.run_dir)
    started = time.perf_counter()
    result = await train(config, args.run_dir)
    train_s = time.perf_counter() - started
    assert result.initial_policy is not None
    final = args.run_dir / "checkpoints" / "latest"
    evals: dict[str, dict[str, float]] = {}
    task_sets = {"train": config.tasks, "held_out": config.eval_tasks or config.tasks}
    for split, spec in task_sets.items():
        for label, temperature in (("sampled", config.rollout.temperature), ("greedy", 0.0)):
            for which, checkpoint in (("before", result.initial_policy), ("after", final)):
                report = await evaluate(
                    config, checkpoint, spec, attempts=args.attempts, temperature=temperature
                )
                evals[f"{split}/{label}/{which}"] = {
                    "success_rate": report["success_rate"],
                    "episodes": report["episodes"],
                }
                print(
                    f"{split:8s} {label:7s} {which:6s}: success {report['success_rate']:.3f} "
                    f"over {report['episodes']} episodes",
                    file=sys.stderr,
                )
    return {
        "train_s": train_s,
        "steps": result.steps,
        "trained_trajectories": result.metrics.get("data/trained"),
        "task_sets": task_sets,
        "attempts": args.attempts,
        "eval": evals,
        "curve": _curve(args.run_dir, args.window),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "rl" / "learn.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "rl_learning")
    parser.add_argument("--fresh", action="store_true", help="replace --run-dir if it exists")
    parser.add_argument("--attempts", type=int, default=4, help="episodes per held-out task and policy")
    parser.add_argument("--window", type=int, default=10, help="steps in the moving average of the curve")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here too")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "rl_learning",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "uptime_before": _uptime(),
    }
    report.update(anyio.run(_main, args))
    report["uptime_after"] = _uptime()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
