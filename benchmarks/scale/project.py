"""Projections to 8, 64 and 512 environment workers and 1-8 rollout replicas: the schedule simulator
(``benchmarks/rl_schedule``: our real Scheduler, EnvCluster, ReActAgent and DataManager on virtual time) with the
hop costs measured by ``benchmarks/scale/hops.py``.

    .venv/bin/python benchmarks/scale/project.py                                   # the grid, both env shapes
    .venv/bin/python benchmarks/scale/project.py --workers 64 --replicas 2 --envs slow --minutes 2

The scenario is the quick start's shape, with its parts from measurements (every number is in ``scenario()``
and in the JSON):

- rollout replica: one :class:`TorchEngine` with the quick start policy on one core: ``hops.py``'s decode step at
  batch 1 and 32 (the simulator's concave curve through both), its prefill cost per prompt token, at most 32
  running (``rollout.max_batch``); a weight reload pauses it for the measured ``POST /weights`` by path;
- hops: each model call pays the HTTP hop (measured: latency and one server's calls per second), each finished
  trajectory a Ray actor round trip carrying it, each weight version one publish (``WeightPublisher``); weights
  roll one server at a time while the others serve (``weight_sync: rolling``, the default);
- policy: the quick start's episodes (``benchmarks/scale/_out`` runs: 3.5 model calls an episode, ~15 generated
  tokens a turn, ~55 new prompt tokens a turn), tasks whose success rate gives the same ~74 % of zero-variance
  groups of 8;
- trainer: the quick start's step, ~1 s for its batch of 4 groups x 8 (32 trajectories), measured in process
  beside the rollout engine;
- environments: ``lookup`` (the quick start's SQLite tools, ~10 ms a call) or ``slow`` (a tool call of median 1 s,
  x10 with probability 0.2: the latency real.py injects, a sandbox-like environment).

Schedule: ``async`` with ``max_staleness`` 2 and fixed groups of 8 (the quick start's; ``async-fixed``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

# rl_schedule's run.py, not this folder's (sys.path[0]): inserted ahead of it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rl_schedule"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import machine, uptime
from run import Scenario, schedules, simulate
from sim import HopSpec, PolicySpec, ServerSpec, TrainerSpec

from agentscope.testing import LatencyModel

HERE = Path(__file__).resolve().parent
HOPS = HERE / "hops-2026-12-06.json"
ENVS = {
    "lookup": LatencyModel(median_s=0.01, sigma=0.5, tail_prob=0.0, tail_factor=1.0),
    "slow": LatencyModel(median_s=1.0, sigma=0.5, tail_prob=0.2, tail_factor=10.0),
}


def hop_spec(hops: dict[str, Any]) -> HopSpec:
    """The simulator's hop costs from ``hops.py``'s JSON.

    The front end of a server (uvicorn, the app, chat rendering, JSON both ways) takes one call at a time for
    ``1 / calls_per_s`` (32 episodes at once against an engine that answers at once: what one server process
    takes); the rest of a lone call's extra latency over the in-process call (none when the front end explains
    it all) is client and wire."""
    http = hops["http"]
    frontend = 1.0 / http["http_32"]["calls_per_s"]
    return HopSpec(
        call_s=max(0.0, http["http_1"]["latency_s"]["median"] - frontend),
        frontend_s=frontend,
        trajectory_s=hops["ray"]["trajectory_3000"]["median"],
        publish_s=hops["weights"]["publish_s"]["median"],
    )


def server_spec(hops: dict[str, Any]) -> ServerSpec:
    """One quick start engine: ``t0 (1 + (B - 1) / half)`` through the measured decode steps at batch 1 and 32; a
    prompt token costs ``prefill_token_s`` of engine time, i.e. ``1 / prefill_ratio`` of a decode token at batch
    32."""
    engine = hops["engine"]
    t1, t32 = engine["batch_1"]["decode_step_s"], engine["batch_32"]["decode_step_s"]
    half = 31 / max(t32 / t1 - 1, 1e-3)
    prefill = statistics.median(engine[f"batch_{b}"]["prefill_token_s"] for b in (1, 8, 32))
    return ServerSpec(
        t0=t1,
        half=half,
        max_batch=32,
        prefill_ratio=(t32 / 32) / prefill,
        sync_s=hops["weights"]["reload_path_s"]["median"],
    )


def scenario(
    hops: dict[str, Any], env: str, workers: int, replicas: int, minutes: float, seed: int
) -> Scenario:
    return Scenario(
        slots=workers,
        servers=replicas,
        hours=minutes / 60,
        latency=ENVS[env],
        server=server_spec(hops),
        # quick start runs (benchmarks/scale/_out, 6 runs of 2 min): 3.46 model calls an episode, 15.3 generated
        # tokens a turn (max_tokens 48), 55 new prompt tokens a turn
        policy=PolicySpec(
            mean_tool_calls=2.5,
            max_tool_calls=4,
            completion_median=14.0,
            completion_sigma=0.4,
            completion_max=48,
            prompt_tokens=120,
            obs_tokens=(20, 40),
        ),
        # quick start: train/step_s median 0.92-1.40 s (1.1 over the 6 runs) for 32 trajectories; here 0.3 s + per
        # token, ~1.1 s for a batch of the simulated episodes (~280 tokens each flattened)
        trainer=TrainerSpec(fixed_s=0.3, per_token_s=0.00009),
        group_size=8,
        batch_groups=4,
        tasks=1024,
        task_beta=(
            0.15,
            1.5,
        ),  # mean success 9 %, 73 % of groups of 8 all-fail or all-succeed (quick start: 74 %)
        reset_s=0.01,
        hops=hop_spec(hops),
        seed=seed,
    )


def cell_row(r: dict[str, Any]) -> dict[str, Any]:
    hist = r["staleness_hist"]
    total = sum(hist.values()) or 1
    return {
        "env": r["env"],
        "workers": r["slots"],
        "replicas": r["replicas"],
        "hops": r["hops_on"],
        "seed": r["seed"],
        "simulated_minutes": r["horizon_hours"] * 60,
        "steps": r["steps"],
        "trained_tokens_per_hour": r["trained_tokens_per_hour"],
        "steps_per_hour": r["steps"] / r["train_end_hours"] if r["train_end_hours"] else 0.0,
        "trained_trajectories_per_hour": r["trained_trajectories_per_hour"],
        "rollout_capacity_share": r["rollout_capacity_share"],
        "rollout_busy": r["rollout_utilisation"],
        "rollout_mean_batch": r["rollout_mean_batch"],
        "rollout_paused_share": r["rollout_paused_share"],
        "trainer_utilisation": r["trainer_utilisation"],
        "slot_occupancy": r["env_slot_occupancy"],
        "staleness": {k: v / total for k, v in hist.items()},
        "stale_or_aborted_token_share": r["waste"],
        "zero_variance_share": r["zero_variance_share"],
        "hop_share_of_slot_time": r["hop_share_of_slot_time"],
        "publish_s": r["publish_s"],
        "throttled_s": r["throttled_s"],
        "statuses": r["statuses"],
        "schedule": r["schedule"],
        "real_s": r["real_s"],
    }


def regime(r: dict[str, Any]) -> str:
    """What bounds a cell: the trainer (busy >= 85 %), the rollout replicas (their engines >= 60 % of capacity or
    model calls spending >= 30 % of the episodes' time in the servers' front ends), else the environment workers
    (too few, or too slow, to keep the others busy)."""
    if r["trainer_utilisation"] >= 0.85:
        return "trainer"
    if r["rollout_capacity_share"] >= 0.6 or r["hop_share_of_slot_time"] >= 0.3:
        return "rollout"
    return "env workers"


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| env | workers | replicas | trained tok/h | steps/h | vs no hops | bound by | rollout capacity used "
        "| trainer busy | slots busy | staleness 0/1/2 | stale + aborted tokens | hops, share of episode time "
        "| weight sync: servers paused / publish |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["env"], r.get("schedule", "async-fixed"), r["workers"], r["replicas"], r["seed"])

    base = {key(r): r for r in rows if not r["hops"]}
    for r in rows:
        if not r["hops"]:
            continue
        b = base.get(key(r))
        ratio = f"{r['trained_tokens_per_hour'] / b['trained_tokens_per_hour']:.2f}" if b else "-"
        stale = " / ".join(f"{100 * r['staleness'].get(str(k), 0.0):.0f}" for k in range(3))
        label = r["env"] + r.get("schedule", "async-fixed").removeprefix("async-fixed")
        out.append(
            f"| {label} | {r['workers']} | {r['replicas']} | {r['trained_tokens_per_hour'] / 1e6:.2f} M | "
            f"{r['steps_per_hour']:,.0f} | {ratio} | {regime(r)} | {100 * r['rollout_capacity_share']:.0f} % | "
            f"{100 * r['trainer_utilisation']:.0f} % | {100 * r['slot_occupancy']:.0f} % | {stale} | "
            f"{100 * r['stale_or_aborted_token_share']:.1f} % | {100 * r['hop_share_of_slot_time']:.1f} % | "
            f"{100 * r['rollout_paused_share']:.2f} % / {r['publish_s']:.2f} s |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hops", type=Path, default=HOPS, help="hops.py's JSON")
    parser.add_argument("--envs", default="lookup,slow")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[2.0],
        help="simulated minutes per cell, one per --workers entry (the last one repeats)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--baseline-replicas",
        type=int,
        nargs="*",
        default=[1, 8],
        help="replica counts whose cells also run without hop costs (for 'vs no hops')",
    )
    parser.add_argument("--out", type=Path, default=HERE / "_out" / "projection.json")
    parser.add_argument(
        "--max-ahead",
        type=int,
        help="set schedule.max_ahead (a hard cap on episodes launched and not yet trained; default: unset)",
    )
    parser.add_argument("--table", type=Path, nargs="+", help="only print the table of these results files")
    args = parser.parse_args()
    if args.table:
        print(markdown([row for path in args.table for row in json.loads(path.read_text())["rows"]]))
        return
    hops = json.loads(args.hops.read_text())
    schedule = schedules()["async-fixed"]
    if args.max_ahead is not None:
        schedule = replace(
            schedule,
            name=f"async-fixed, max_ahead {args.max_ahead}",
            config=schedule.config.model_copy(update={"max_ahead": args.max_ahead}),
        )
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict[str, Any]] = []
    scenarios: dict[str, Any] = {}

    def save() -> None:  # after every cell: a long grid cut short keeps what it did
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "started": started,
                    "uptime_end": uptime(),
                    "argv": sys.argv[1:],
                    "hops_file": str(args.hops.relative_to(HERE.parent.parent))
                    if args.hops.is_relative_to(HERE.parent.parent)
                    else str(args.hops),
                    "hop_spec": asdict(hop_spec(hops)),
                    "scenarios": scenarios,
                    "schedule": schedule.name,
                    "rows": rows,
                },
                indent=1,
                default=str,
            )
        )

    for env in args.envs.split(","):
        minutes = args.minutes + [args.minutes[-1]] * (len(args.workers) - len(args.minutes))
        for workers, horizon in zip(args.workers, minutes, strict=False):
            for replicas in args.replicas:
                for seed in args.seeds:
                    for hops_on in (True, False) if replicas in args.baseline_replicas else (True,):
                        s = scenario(hops, env, workers, replicas, horizon, seed)
                        if not hops_on:
                            s = replace(s, hops=HopSpec(), server=replace(s.server, sync_s=0.0))
                        scenarios.setdefault(env, asdict(s))
                        r = simulate(s, schedule)
                        r.update(env=env, replicas=replicas, hops_on=hops_on)
                        row = cell_row(r)
                        rows.append(row)
                        print(
                            f"[project] {env} E={workers} R={replicas} hops={hops_on} "
                            f"tok/h={row['trained_tokens_per_hour'] / 1e6:.2f}M "
                            f"roll={row['rollout_capacity_share']:.0%} trainer={row['trainer_utilisation']:.0%} "
                            f"occ={row['slot_occupancy']:.0%} waste={row['stale_or_aborted_token_share']:.1%} "
                            f"hop={row['hop_share_of_slot_time']:.1%} ({row['real_s']:.0f} s real)",
                            file=sys.stderr,
                            flush=True,
                        )
                        save()
    save()
    print(markdown(rows))


if __name__ == "__main__":
    main()
