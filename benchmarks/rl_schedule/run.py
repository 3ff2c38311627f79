"""The schedule simulator: our real Scheduler, EnvCluster, ReActAgent and DataManager in virtual time.

    .venv/bin/python benchmarks/rl_schedule/run.py              # E=32, 2 simulated hours, 3 seeds, the 3 modes
    .venv/bin/python benchmarks/rl_schedule/run.py --slots 128 --hours 1 --seeds 0 --schedules async,async-unthrottled

Only the servers, environments and trainer are simulated (see sim.py); the code that decides what runs when is
the code ``agentscope rl train`` runs: ``agentscope.rl._schedule.Scheduler`` over ``agentscope.rl.envs.EnvCluster``
(playing each episode with a real ``ReActAgent``) and ``agentscope.rl.data.DataManager`` with its SQLite store.
The event loop is ``agentscope.testing.VirtualTimeEventLoop``: ``asyncio.sleep`` jumps the clock.

Throughput is counted at train end: the policy-generated tokens of the trajectories trained by the last finished
trainer step (success-replay copies excluded: they are old episodes trained again), over the time that step
finished.
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
    HopSpec,
    PolicySpec,
    ServerSpec,
    SimEnv,
    SimModel,
    SimPublisher,
    SimRollout,
    SimServer,
    SimTrainer,
    TrainerSpec,
    sim_tasks,
)

from agentscope.rl import Trajectory
from agentscope.rl._config import ScheduleConfig
from agentscope.rl._schedule import Scheduler, StepReport, TaskSampler
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.envs import EnvCluster, react_agent_factory
from agentscope.testing import LatencyModel, run_virtual


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
    task_beta: tuple[float, float] = (1.2, 1.2)
    """Tasks' success probabilities are drawn from Beta(task_beta)."""
    reset_s: float = 0.2
    """An environment reset."""
    hops: HopSpec = field(default_factory=HopSpec)
    """Costs of process hops (zero: one process; benchmarks/scale/project.py sets measured ones)."""
    seed: int = 0


SCENARIOS: dict[str, Scenario] = {
    "default": Scenario(),
    # Shaped like benchmarks/rl_schedule/real.py (examples/rl/smoke.yaml with injected env latency): one CPU
    # rollout engine serving a tiny policy, short turns, 1-2 calculator calls, a ~1 s trainer step.
    "embedded": Scenario(
        slots=16,
        servers=1,
        latency=LatencyModel(median_s=1.0, sigma=0.5, tail_prob=0.2, tail_factor=10.0),
        server=ServerSpec(t0=0.004, half=16.0, max_batch=16, sync_s=0.3),
        policy=PolicySpec(
            mean_tool_calls=1.3,
            max_tool_calls=2,
            completion_median=25.0,
            completion_sigma=0.4,
            completion_max=48,
            prompt_tokens=100,
            obs_tokens=(10, 20),
        ),
        trainer=TrainerSpec(fixed_s=0.8, per_token_s=0.00005),
        batch_groups=4,
        tasks=32,
    ),
}


@dataclass
class Schedule:
    name: str
    config: ScheduleConfig
    adaptive: bool = False
    note: str = ""


def schedules(max_staleness: int = 2) -> dict[str, Schedule]:
    big = 10**9
    catalogue = [
        Schedule(
            "sync-wave",
            ScheduleConfig(mode="sync-wave", steps=big),
            note="strictly on-policy: waves fill every slot, train, global weight sync, leftover groups discarded",
        ),
        Schedule(
            "sync-refill",
            ScheduleConfig(mode="sync-refill", steps=big, max_staleness=max_staleness, weight_sync="global"),
            note="per-trajectory refill within an oversampled round; leftover groups trained one step late",
        ),
        Schedule(
            "async",
            ScheduleConfig(mode="async", steps=big, max_staleness=max_staleness),
            adaptive=True,
            note="our default async: episode-sized throttle, rolling per-server sync, aborts, adaptive rollouts",
        ),
        # ---- ablations
        Schedule(
            "sync-wave-adaptive",
            ScheduleConfig(mode="sync-wave", steps=big),
            adaptive=True,
            note="sync-wave with adaptive rollouts",
        ),
        Schedule(
            "sync-refill-adaptive",
            ScheduleConfig(mode="sync-refill", steps=big, max_staleness=max_staleness, weight_sync="global"),
            adaptive=True,
            note="sync-refill with adaptive rollouts",
        ),
        Schedule(
            "async-global",
            ScheduleConfig(mode="async", steps=big, max_staleness=max_staleness, weight_sync="global"),
            adaptive=True,
            note="async with a global weight sync instead of the rolling one",
        ),
        Schedule(
            "async-fixed",
            ScheduleConfig(mode="async", steps=big, max_staleness=max_staleness),
            note="async without adaptive rollouts (every group of 4)",
        ),
        Schedule(
            "async-capped",
            ScheduleConfig(mode="async", steps=big, max_staleness=max_staleness, max_ahead=2 * 16 * 4),
            adaptive=True,
            note="async with max_ahead set (2 batches of 16 x 4): a hard cap, also while the trainer waits",
        ),
        Schedule(
            "async-unthrottled",
            ScheduleConfig(
                mode="async", steps=big, max_staleness=max_staleness, abort_stale=False, max_ahead=10**6
            ),
            adaptive=True,
            note="async without the throttle and without aborts",
        ),
    ]
    return {s.name: s for s in catalogue}


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
    tasks = sim_tasks(scenario.tasks, random.Random(scenario.seed + 1), scenario.task_beta)
    horizon = scenario.hours * 3600
    step_times: list[float] = []

    async def main() -> dict[str, Any]:
        hops = scenario.hops
        publisher = SimPublisher(hops.publish_s) if hops.publish_s else None
        servers = [SimServer(scenario.server, f"server{i}", publisher) for i in range(scenario.servers)]
        rollout = SimRollout(servers, scenario.policy, random.Random(scenario.seed + 2), hops)
        env_rng = random.Random(scenario.seed + 3)
        cluster = EnvCluster(
            lambda: SimEnv(scenario.latency, env_rng, scenario.reset_s),
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
                max_staleness=schedule.config.max_staleness,  # 0 for sync-wave (ScheduleConfig sets it)
                adaptive_rollouts=schedule.adaptive,
                min_rollouts=2,
                max_rollouts=6,
            ),
        )
        trainer = SimTrainer(scenario.trainer)
        trajectory_hops = [0]
        if hops.trajectory_s:  # each finished trajectory travels to the data manager first
            put = data.put

            async def put_after_hop(trajectory: Trajectory) -> None:
                await anyio.sleep(hops.trajectory_s)
                trajectory_hops[0] += 1
                await put(trajectory)

            data.put = put_after_hop  # type: ignore[method-assign]

        async def on_step(report: StepReport) -> None:
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
            "call_hop_s": rollout.hop_s,
            "trajectory_hop_s": trajectory_hops[0] * hops.trajectory_s,
            "publish_s": publisher.busy_s if publisher is not None else 0.0,
            "server_tokens": [s.tokens for s in servers],
        }

    started = time.perf_counter()
    out = run_virtual(main)
    real_s = time.perf_counter() - started
    rows: list[tuple[Trajectory, int | None]] = out["rows"]
    steps = len(step_times)
    train_end = step_times[-1] if step_times else out["wall"]
    hours = train_end / 3600

    def replayed(t: Trajectory) -> bool:
        return bool(t.metrics.get("data/replayed"))

    original = [t for t, _ in rows if not replayed(t)]
    generated_tokens = sum(t.num_generated_tokens for t in original)
    # Trained by a finished step (a batch is marked when it is formed, before the step that the horizon may cut).
    trained_all = [(t, s) for t, s in rows if s is not None and s <= steps]
    trained = [(t, s) for t, s in trained_all if not replayed(t)]
    trained_tokens = sum(t.num_generated_tokens for t, _ in trained)
    by_status: dict[str, int] = {}
    tokens_by_status: dict[str, int] = {}
    for t in original:
        by_status[t.status] = by_status.get(t.status, 0) + 1
        tokens_by_status[t.status] = tokens_by_status.get(t.status, 0) + t.num_generated_tokens
    # Waste: generated tokens the schedule threw away: too stale (sync-wave: leftover groups), or aborted.
    wasted = tokens_by_status.get("dropped_stale", 0) + tokens_by_status.get("aborted", 0)
    staleness = [float((s - 1) - t.min_version) for t, s in trained]
    hist: dict[str, int] = {}
    for value in staleness:
        hist[str(int(value))] = hist.get(str(int(value)), 0) + 1
    servers = out["servers"]
    return {
        "schedule": schedule.name,
        "note": schedule.note,
        "slots": scenario.slots,
        "seed": scenario.seed,
        "horizon_hours": out["wall"] / 3600,
        "train_end_hours": hours,
        "real_s": real_s,
        "steps": steps,
        "trained_trajectories": len(trained),
        "trained_tokens": trained_tokens,
        "replay_copies_trained": len(trained_all) - len(trained),
        "trained_trajectories_per_hour": len(trained) / hours if hours else 0.0,
        "trained_tokens_per_hour": trained_tokens / hours if hours else 0.0,
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
        # tokens decoded over what the servers could decode at full batch in the time (prefill counted as work)
        "rollout_capacity_share": sum(out["server_tokens"])
        / (
            out["wall"]
            * scenario.servers
            * scenario.server.max_batch
            / (scenario.server.t0 * (1 + (scenario.server.max_batch - 1) / scenario.server.half))
        ),
        # hops: the share of the env slots' occupied time spent in them (model calls and trajectory trips), and the
        # time spent writing weight versions
        "hop_share_of_slot_time": (out["call_hop_s"] + out["trajectory_hop_s"]) / out["env"]["env/slot_s"]
        if out["env"].get("env/slot_s")
        else 0.0,
        "call_hop_s": out["call_hop_s"],
        "trajectory_hop_s": out["trajectory_hop_s"],
        "publish_s": out["publish_s"],
        "staleness": _dist(staleness),
        "staleness_hist": dict(sorted(hist.items())),
        "waste": wasted / generated_tokens if generated_tokens else 0.0,
        "statuses": by_status,
        "zero_variance_share": tokens_by_status.get("dropped_zero_variance", 0) / generated_tokens
        if generated_tokens
        else 0.0,
        "waves": out["sched"].get("sched/waves", 0.0),
        "discarded_groups": out["sched"].get("sched/discarded_groups", 0.0),
        "throttled_s": out["sched"]["sched/throttled_s"],
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per (slots, schedule): mean and spread over the seeds; per seed, the ratios of async to each sync."""
    keys = (
        "trained_tokens_per_hour",
        "trained_trajectories_per_hour",
        "steps",
        "env_slot_occupancy",
        "env_utilisation",
        "rollout_utilisation",
        "trainer_utilisation",
        "waste",
        "zero_variance_share",
    )
    out: dict[str, dict[str, Any]] = {}
    cells: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["slots"], r["schedule"]), []).append(r)
    for (slots, name), runs in cells.items():
        entry: dict[str, Any] = {k: _spread([float(r[k]) for r in runs]) for k in keys}
        entry["seeds"] = [r["seed"] for r in runs]
        for base in ("sync-wave", "sync-refill"):
            others = {r["seed"]: r for r in cells.get((slots, base), [])}
            ratios = [
                r["trained_tokens_per_hour"] / others[r["seed"]]["trained_tokens_per_hour"]
                for r in runs
                if r["seed"] in others and others[r["seed"]]["trained_tokens_per_hour"]
            ]
            if ratios and name != base:
                entry[f"vs_{base}"] = _spread(ratios)
        out[f"E={slots} {name}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default")
    parser.add_argument("--slots", type=int, nargs="*", default=None, help="default: the scenario's")
    parser.add_argument(
        "--hours", type=float, nargs="*", default=[2.0], help="simulated hours per --slots entry"
    )
    parser.add_argument("--schedules", default="sync-wave,sync-refill,async")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_out" / "results.json")
    args = parser.parse_args()
    catalogue = schedules()
    results: list[dict[str, Any]] = []
    base = SCENARIOS[args.scenario]
    slots_list = args.slots or [base.slots]
    hours = args.hours + [args.hours[-1]] * (len(slots_list) - len(args.hours))
    for slots, horizon in zip(slots_list, hours, strict=False):
        for seed in args.seeds:
            scenario = replace(base, slots=slots, hours=horizon, seed=seed)
            for name in args.schedules.split(","):
                r = simulate(scenario, catalogue[name])
                results.append(r)
                print(
                    f"E={slots:<4} seed={seed} {name:<20} steps={r['steps']:<4} traj/h={r['trained_trajectories_per_hour']:6.0f} "
                    f"tok/h={r['trained_tokens_per_hour'] / 1e6:5.3f}M occ={r['env_slot_occupancy']:.1%} "
                    f"envutil={r['env_utilisation']:.1%} trainer={r['trainer_utilisation']:.1%} "
                    f"roll={r['rollout_utilisation']:.1%}/{r['rollout_batch_occupancy']:.1%} waste={r['waste']:.1%} "
                    f"zv={r['zero_variance_share']:.1%} stale={r['staleness_hist']} waves={r['waves']:.0f} "
                    f"len(gen/trained p50)={r['length_generated'].get('p50', 0):.0f}/{r['length_trained'].get('p50', 0):.0f} "
                    f"({r['real_s']:.0f}s real)",
                    flush=True,
                )
    summary = summarise(results)
    for key, entry in summary.items():
        tok = entry["trained_tokens_per_hour"]
        ratios = " ".join(
            f"{k}={v['mean']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]"
            for k, v in entry.items()
            if k.startswith("vs_")
        )
        print(
            f"{key:<28} tok/h={tok['mean'] / 1e6:.3f}M sd={tok['sd'] / 1e6:.3f}M "
            f"[{tok['min'] / 1e6:.3f}-{tok['max'] / 1e6:.3f}] occ={entry['env_slot_occupancy']['mean']:.1%} {ratios}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"scenario": asdict(base), "args": vars(args), "summary": summary, "results": results},
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
