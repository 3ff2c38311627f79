"""The schedule modes on the real embedded system, in one invocation: the tiny policy on the arithmetic tool task
with injected environment latency (lognormal, a 10x tail), ``agentscope rl train`` once per mode.

    .venv/bin/python benchmarks/rl_schedule/real.py                  # ~6 minutes on 2 cores
    .venv/bin/python benchmarks/rl_schedule/real.py --steps 12 --modes sync-refill,async

Every run uses examples/rl/smoke.yaml with the same overrides, the same (cached) warm-started policy and the same
task order; only ``schedule.mode`` differs. Throughput is measured over the scheduler's own clock
(``sched/elapsed_s``: from the first episode to the last step), so building the policy does not count. The machine
is shared: each run records the 1-minute load average before and after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).parent / "_out"


def run(mode: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    run_dir = OUT / f"real-{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"schedule.mode={mode}",
        f"schedule.steps={args.steps}",
        "schedule.checkpoint_every=0",
        f"env.slots={args.slots}",
        f"data.batch_groups={args.batch_groups}",
        "data.group_size=4",
        f"env.factory={Path(__file__).parent / 'slow_arith.py'}:SlowArithEnv",
        f"env.kwargs={{step_latency: {{median_s: {args.median}, sigma: 0.5, tail_prob: 0.2, tail_factor: 10.0}}}}",
        "env.step_timeout_s=120",
        "env.episode_timeout_s=600",
        f"policy.cache_dir={cache}",
        "trace=false",
    ]
    command = [sys.executable, "-m", "agentscope.cli", "rl", "train", str(ROOT / "examples/rl/smoke.yaml")]
    command += ["--run-dir", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{result.stderr[-3000:]}")
    wall = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    elapsed = last["sched/elapsed_s"]
    trained = last["data/trained"]
    tokens = last["data/trained_tokens"]
    return {
        "mode": mode,
        "steps": len(metrics),
        "process_wall_s": wall,
        "load_avg_1m": [load_before, load_after],
        "schedule_s": elapsed,
        "trained_trajectories": trained,
        "trained_per_hour": trained / elapsed * 3600,
        "trained_tokens_per_hour": tokens / elapsed * 3600,
        "env_slot_occupancy": last["env/slot_occupancy"],
        "env_utilisation": last["env/utilisation"],
        "trainer_utilisation": last["sched/trainer_utilisation"],
        "staleness_mean": statistics.fmean(m["data/staleness"] for m in metrics),
        "staleness_max": max(m["data/staleness_max"] for m in metrics),
        "tokens_per_s_last": last.get("rollout/tokens_per_s", 0.0),
        "dropped_stale": last.get("data/dropped_stale", 0.0),
        "episodes": last.get("env/episodes", 0.0),
        "discarded_groups": last.get("sched/discarded_groups", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--batch-groups", type=int, default=4)
    parser.add_argument("--median", type=float, default=1.0, help="median env step latency, seconds")
    parser.add_argument("--modes", default="sync-wave,sync-refill,async")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "policy-cache"
    results = [run(mode, args, cache) for mode in args.modes.split(",")]
    for r in results:
        print(
            f"{r['mode']:<12} steps={r['steps']} schedule={r['schedule_s']:.0f}s trained={r['trained_trajectories']:.0f} "
            f"traj/h={r['trained_per_hour']:.0f} tok/h={r['trained_tokens_per_hour']:.0f} "
            f"occ={r['env_slot_occupancy']:.1%} envutil={r['env_utilisation']:.1%} "
            f"trainer={r['trainer_utilisation']:.1%} staleness mean={r['staleness_mean']:.2f} max={r['staleness_max']:.0f} "
            f"load={r['load_avg_1m'][0]:.1f}->{r['load_avg_1m'][1]:.1f}"
        )
    by_mode = {r["mode"]: r for r in results}
    if "async" in by_mode:
        fast = by_mode["async"]
        for mode, r in by_mode.items():
            if mode != "async":
                print(
                    f"async/{mode}: {fast['trained_per_hour'] / r['trained_per_hour']:.2f}x trajectories/h, "
                    f"{fast['trained_tokens_per_hour'] / r['trained_tokens_per_hour']:.2f}x tokens/h"
                )
    (OUT / "real.json").write_text(
        json.dumps({"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
