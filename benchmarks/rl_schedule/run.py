"""The schedule simulator: our real Scheduler, EnvCluster, ReActAgent and DataManager in virtual time.

    .venv/bin/python benchmarks/rl_schedule/run.py                 # both scenarios, every schedule (~minutes)
    .venv/bin/python benchmarks/rl_schedule/run.py --slots 32 --hours 0.5 --schedules dart,sync-batch

Only the servers, environments and trainer are simulated (see sim.py); the code that decides what runs when is
the code ``agentscope rl train`` runs: ``agentscope.rl._schedule.Scheduler`` over ``agentscope.rl.envs.EnvCluster``
(playing each episode with a real ``ReActAgent``) and ``agentscope.rl.data.DataManager`` with its SQLite store.
The event loop is ``agentscope.rl._virtual_time.VirtualTimeEventLoop``: ``asyncio.sleep`` jumps the clock.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim import (
    Lockstep,
    PolicySpec,
    ServerSpec,
    SimEnv,
    SimModel,
    SimRollout,
    SimServer,
    SimTrainer,
    TrainerSpec,
    sim_tasks,
)

from agentscope.rl import Trajectory
from agentscope.rl._config import ScheduleConfig
from agentscope.rl._schedule import Scheduler, StepReport, TaskSampler
from agentscope.rl._virtual_time import run_virtual
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.envs import EnvCluster, LatencyModel, react_agent_factory


@dataclass
class Scenario:
    slots: int = 32
    servers: int = 2
    hours: float = 1.0
    latency: LatencyModel = field(
        default_factory=lambda: LatencyModel(median_s=2.0, sigma=0.5, tail_prob=0.2, tail_factor=10.0)
    )
    server: ServerSpec = field(default_factory=ServerSpec)
    policy: PolicySpec = field(default_factory=PolicySpec)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    group_size: int = 4
    batch_groups: int = 16
    tasks: int = 256
    seed: int = 0


@dataclass
class Schedule:
    name: str
    config: ScheduleConfig
    lockstep: bool = False
    adaptive: bool = False
    note: str = ""


def schedules(max_staleness: int = 2) -> dict[str, Schedule]:
    big = 10**9
    return {
        "sync-batch": Schedule(
            "sync-batch",
            ScheduleConfig(mode="sync", steps=big, weight_sync="global"),
            lockstep=True,
            note="turn-level lockstep rollout, then train, then global weight sync",
        ),
        "trajectory-async": Schedule(
            "trajectory-async",
            ScheduleConfig(mode="sync", steps=big, weight_sync="global"),
            note="per-trajectory rollout (slots refill within the batch), synchronous training",
        ),
        "one-step-off": Schedule(
            "one-step-off",
            ScheduleConfig(
                mode="async", steps=big, max_staleness=1, max_ahead=1, weight_sync="global", abort_stale=False
            ),
            note="generation of batch n+1 overlaps training on batch n; global sync",
        ),
        "bounded-async": Schedule(
            "bounded-async",
            ScheduleConfig(
                mode="async",
                steps=big,
                max_staleness=max_staleness,
                max_ahead=max_staleness + 1,
                weight_sync="global",
                abort_stale=False,
            ),
            note=f"AReaL-style: continuous generation, at most (k+1) batches ahead, staleness <= k={max_staleness}, global sync",
        ),
        "dart": Schedule(
            "dart",
            ScheduleConfig(
                mode="async", steps=big, max_staleness=max_staleness, weight_sync="rolling", abort_stale=True
            ),
            adaptive=True,
            note="our default async: at most k batches ahead, rolling per-server sync, abort of untrainable episodes, adaptive rollouts",
        ),
        "dart-global": Schedule(
            "dart-global",
            ScheduleConfig(
                mode="async", steps=big, max_staleness=max_staleness, weight_sync="global", abort_stale=True
            ),
            adaptive=True,
            note="ablation: dart with a global weight sync instead of the rolling one",
        ),
        "dart-fixed": Schedule(
            "dart-fixed",
            ScheduleConfig(
                mode="async", steps=big, max_staleness=max_staleness, weight_sync="rolling", abort_stale=True
            ),
            note="ablation: dart without adaptive rollouts (every group of 4)",
        ),
        "dart-unthrottled": Schedule(
            "dart-unthrottled",
            ScheduleConfig(
                mode="async",
                steps=big,
                max_staleness=max_staleness,
                weight_sync="rolling",
                abort_stale=False,
                max_ahead=1000,
            ),
            adaptive=True,
            note="ablation: dart without the throttle and without aborts",
        ),
    }


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "p10": q(0.1),
        "p50": q(0.5),
        "p90": q(0.9),
        "max": ordered[-1],
    }


def simulate(scenario: Scenario, schedule: Schedule) -> dict[str, Any]:
    tasks = sim_tasks(scenario.tasks, random.Random(scenario.seed + 1))
    horizon = scenario.hours * 3600
    steps: list[StepReport] = []
    step_times: list[float] = []

    async def main() -> dict[str, Any]:
        servers = [SimServer(scenario.server, f"server{i}") for i in range(scenario.servers)]
        rollout = SimRollout(
            servers,
            scenario.policy,
            random.Random(scenario.seed + 2),
            Lockstep() if schedule.lockstep else None,
        )
        env_rng = random.Random(scenario.seed + 3)
        cluster = EnvCluster(
            lambda: SimEnv(scenario.latency, env_rng),
            lambda model, toolkit: react_agent_factory(
                model, toolkit, max_iters=scenario.policy.max_tool_calls + 2
            ),
            rollout,
            slots=scenario.slots,
            model_factory=lambda sid: SimModel(rollout, sid),
        )
        store = TrajectoryStore(":memory:")
        data = DataManager(
            store,
            DataConfig(
                group_size=scenario.group_size,
                batch_groups=scenario.batch_groups,
                max_staleness=schedule.config.max_staleness if schedule.config.mode == "async" else None,
                adaptive_rollouts=schedule.adaptive,
                min_rollouts=2,
                max_rollouts=6,
            ),
        )
        trainer = SimTrainer(scenario.trainer)

        async def on_step(report: StepReport) -> None:
            steps.append(report)
            step_times.append(anyio.current_time())

        scheduler = Scheduler(
            schedule.config,
            cluster=cluster,
            data=data,
            trainer=trainer,
            servers=servers,
            sampler=TaskSampler(tasks, seed=scenario.seed),
            on_step=on_step,
        )
        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(server.serve)
            with anyio.move_on_after(horizon):
                await scheduler.run()
            wall = anyio.current_time()
            env_stats = cluster.stats()
            server_stats = [s.stats(wall) for s in servers]
            sched_stats = scheduler.stats()
            tg.cancel_scope.cancel()
        rows = [row async for row in store.iter_all()]
        await store.aclose()
        return {
            "wall": wall,
            "env": env_stats,
            "servers": server_stats,
            "sched": sched_stats,
            "rows": rows,
            "trainer_busy": trainer.busy_s,
        }

    started = time.perf_counter()
    out = run_virtual(main)
    real_s = time.perf_counter() - started
    rows: list[tuple[Trajectory, int | None]] = out["rows"]
    hours = out["wall"] / 3600

    original = [t for t, _ in rows if not t.metrics.get("data/replayed")]
    generated_tokens = sum(t.num_generated_tokens for t in original)
    trained = [(t, s) for t, s in rows if s is not None]
    trained_tokens = sum(t.num_generated_tokens for t, _ in trained)
    by_status: dict[str, int] = {}
    tokens_by_status: dict[str, int] = {}
    for t in original:
        by_status[t.status] = by_status.get(t.status, 0) + 1
        tokens_by_status[t.status] = tokens_by_status.get(t.status, 0) + t.num_generated_tokens
    # Waste: generated tokens the schedule threw away (too stale, or aborted because they would be).
    wasted = tokens_by_status.get("dropped_stale", 0) + tokens_by_status.get("aborted", 0)
    replayed = sum(1 for t, _ in trained if t.metrics.get("data/replayed"))
    # Success-replay copies are exempt from the bound (they replay an old success on purpose): left out here.
    staleness = [float((s - 1) - t.min_version) for t, s in trained if not t.metrics.get("data/replayed")]
    hist: dict[str, int] = {}
    for value in staleness:
        hist[str(int(value))] = hist.get(str(int(value)), 0) + 1
    servers = out["servers"]
    return {
        "schedule": schedule.name,
        "note": schedule.note,
        "slots": scenario.slots,
        "hours": hours,
        "real_seconds": real_s,
        "steps": len(steps),
        "trained_trajectories_per_hour": len(trained) / hours,
        "trained_tokens_per_hour": trained_tokens / hours,
        "generated_trajectories": len(original),
        "generated_tokens": generated_tokens,
        "length_generated": _dist(
            [
                float(t.num_generated_tokens)
                for t in original
                if t.status in ("ok", "truncated", "dropped_stale", "dropped_zero_variance", "aborted")
            ]
        ),
        "length_trained": _dist([float(t.num_generated_tokens) for t, _ in trained]),
        "env_slot_occupancy": out["env"]["env/slot_occupancy"],
        "env_utilisation": out["env"]["env/utilisation"],
        "rollout_utilisation": statistics.fmean(s["utilisation"] for s in servers),
        "rollout_batch_occupancy": statistics.fmean(s["batch_occupancy"] for s in servers),
        "rollout_mean_batch": statistics.fmean(s["mean_batch"] for s in servers),
        "rollout_paused_share": statistics.fmean(s["paused_share"] for s in servers),
        "trainer_utilisation": out["trainer_busy"] / out["wall"],
        "staleness": _dist(staleness),
        "staleness_hist": dict(sorted(hist.items())),
        "waste": wasted / generated_tokens if generated_tokens else 0.0,
        "replayed_trained": replayed,
        "statuses": by_status,
        "zero_variance_share": tokens_by_status.get("dropped_zero_variance", 0) / generated_tokens
        if generated_tokens
        else 0.0,
        "throttled_s": out["sched"]["sched/throttled_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slots", type=int, nargs="*", default=[32, 128])
    parser.add_argument(
        "--hours", type=float, nargs="*", default=[2.0, 1.0], help="simulated hours per --slots entry"
    )
    parser.add_argument(
        "--schedules", default="sync-batch,trajectory-async,one-step-off,bounded-async,dart,dart-unthrottled"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_out" / "results.json")
    args = parser.parse_args()
    catalogue = schedules()
    results: list[dict[str, Any]] = []
    hours = args.hours + [args.hours[-1]] * (len(args.slots) - len(args.hours))
    for slots, horizon in zip(args.slots, hours, strict=False):
        scenario = replace(Scenario(), slots=slots, hours=horizon, seed=args.seed)
        for name in args.schedules.split(","):
            result = simulate(scenario, catalogue[name])
            results.append(result)
            print(
                f"E={slots:<4} {name:<17} steps={result['steps']:<4} traj/h={result['trained_trajectories_per_hour']:7.0f} "
                f"tok/h={result['trained_tokens_per_hour'] / 1e6:6.2f}M occ={result['env_slot_occupancy']:.1%} "
                f"envutil={result['env_utilisation']:.1%} trainer={result['trainer_utilisation']:.1%} roll={result['rollout_utilisation']:.1%}/"
                f"{result['rollout_batch_occupancy']:.1%} waste={result['waste']:.1%} "
                f"stale={result['staleness_hist']} len(gen/trained p50)={result['length_generated'].get('p50', 0):.0f}/"
                f"{result['length_trained'].get('p50', 0):.0f} ({result['real_seconds']:.0f}s real)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"scenario": asdict(Scenario()), "results": results}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
