"""The Scheduler in virtual time: sync and async over the real EnvCluster and DataManager, with a fake trainer."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from agentscope.message import Msg, ToolResultBlock
from agentscope.rl import Task, Trajectory
from agentscope.rl._config import ScheduleConfig
from agentscope.rl._schedule import Scheduler, StepReport, TaskSampler
from agentscope.rl._virtual_time import run_virtual
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.envs import (
    EnvCluster,
    Environment,
    EnvResult,
    Observation,
    ScriptedRollout,
    react_agent_factory,
)
from agentscope.testing import ScriptItem, tool_call
from agentscope.tools import Toolkit


class TimedEnv(Environment):
    """One tool whose call takes ``task.metadata['delay']`` seconds; success decided by a seeded coin."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.task: Task | None = None

    async def reset(self, task: Task) -> Observation:
        self.task = task
        toolkit = Toolkit()
        toolkit.register(self.work)
        return Observation(msg=Msg(role="user", content=task.prompt), toolkit=toolkit)

    async def work(self) -> str:
        """Do the work."""
        assert self.task is not None
        delay = self.task.metadata["delay"]
        assert isinstance(delay, float)
        await anyio.sleep(delay)
        return "done"

    async def evaluate(self, reply: Msg) -> EnvResult:
        success = self.rng.random() < 0.5
        return EnvResult(reward=float(success), success=success)


def policy(messages: list[Msg]) -> ScriptItem:
    return "finished" if messages[-1].blocks_of(ToolResultBlock) else tool_call("work")


class FakeTrainer:
    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.batches: list[tuple[int, float, list[Trajectory]]] = []

    async def train(self, batch: list[Trajectory], *, step: int) -> dict[str, float]:
        self.batches.append((step, anyio.current_time(), batch))
        await anyio.sleep(self.step_s)
        return {"train/policy_loss": 0.5}

    async def weights(self) -> Any:
        return {"step": len(self.batches)}


class Server:
    """A rollout server stand-in that takes ``sync_s`` to load weights (and feeds the ScriptedRollout)."""

    def __init__(self, rollout: ScriptedRollout | None, sync_s: float) -> None:
        self.rollout = rollout
        self.sync_s = sync_s
        self.log: list[tuple[int, float, float]] = []

    async def update_weights(self, state_dict: Any, version: int) -> None:
        start = anyio.current_time()
        await anyio.sleep(self.sync_s)
        if self.rollout is not None:
            await self.rollout.update_weights(state_dict, version)
        self.log.append((version, start, anyio.current_time()))


def tasks(delays: Callable[[int], float], n: int = 16) -> list[Task]:
    return [Task(id=f"t{i}", prompt=f"task {i}", metadata={"delay": delays(i)}) for i in range(n)]


def run_schedule(
    config: ScheduleConfig,
    task_list: list[Task],
    *,
    slots: int = 8,
    group_size: int = 2,
    batch_groups: int = 2,
    max_staleness: int | None = 2,
    train_s: float = 5.0,
    sync_s: float = 1.0,
    servers: int = 1,
) -> dict[str, Any]:
    reports: list[StepReport] = []

    async def main() -> dict[str, Any]:
        rollout = ScriptedRollout(policy, latency_s=1.0)
        rng = random.Random(0)
        cluster = EnvCluster(
            lambda: TimedEnv(rng), react_agent_factory, rollout, slots=slots, model_factory=rollout.model
        )
        store = TrajectoryStore(":memory:")
        data = DataManager(
            store,
            DataConfig(
                group_size=group_size,
                batch_groups=batch_groups,
                max_staleness=max_staleness,
                drop_zero_variance=False,
                success_replay=False,
            ),
        )
        trainer = FakeTrainer(train_s)
        fleet = [Server(rollout if i == 0 else None, sync_s) for i in range(servers)]

        async def on_step(report: StepReport) -> None:
            reports.append(report)

        scheduler = Scheduler(
            config,
            cluster=cluster,
            data=data,
            trainer=trainer,
            servers=fleet,
            sampler=TaskSampler(task_list, seed=0),
            on_step=on_step,
        )
        await scheduler.run()
        rows = [row async for row in store.iter_all()]
        await store.aclose()
        return {
            "time": anyio.current_time(),
            "rows": rows,
            "trainer": trainer,
            "servers": fleet,
            "scheduler": scheduler,
            "cluster": cluster.stats(),
        }

    out = run_virtual(main)
    out["reports"] = reports
    return out


def trained_once(out: dict[str, Any]) -> None:
    """Every trained trajectory appears in exactly one batch, at the step the store marked."""
    seen: dict[str, int] = {}
    for step, _, batch in out["trainer"].batches:
        for trajectory in batch:
            assert trajectory.trajectory_id not in seen
            seen[trajectory.trajectory_id] = step
    stored = {t.trajectory_id: s for t, s in out["rows"] if s is not None}
    assert stored == seen


def test_sync_mode_is_on_policy_and_publishes_every_step() -> None:
    out = run_schedule(
        ScheduleConfig(mode="sync", steps=4, weight_sync="global"), tasks(lambda i: 2.0 + i % 3)
    )
    trained_once(out)
    batches = out["trainer"].batches
    assert [step for step, _, _ in batches] == [1, 2, 3, 4]
    for step, _, batch in batches:
        assert len(batch) == 4
        # generated by the weights of the previous step (the oversampled leftovers by one before)
        assert all(step - 1 - t.min_version in (0, 1) for t in batch)
    assert [v for v, _, _ in out["servers"][0].log] == [1, 2, 3, 4]
    assert out["scheduler"].server_versions == [4]
    assert out["reports"][-1].metrics["sched/step"] == 4
    # nothing is generated while the trainer works: the env slots sit idle for every 5 s step
    assert out["cluster"]["env/slot_occupancy"] < 0.5


def test_async_mode_overlaps_and_respects_staleness_and_throttle() -> None:
    task_list = tasks(lambda i: 2.0 + 10.0 * (i % 4 == 0))
    sync = run_schedule(ScheduleConfig(mode="sync", steps=6, weight_sync="global"), task_list)
    async_ = run_schedule(ScheduleConfig(mode="async", steps=6, max_staleness=2), task_list, max_staleness=2)
    trained_once(async_)
    assert async_["time"] < sync["time"]
    for step, _, batch in async_["trainer"].batches:
        assert all(step - 1 - t.min_version <= 2 for t in batch)
    window = async_["scheduler"].window_groups
    assert window == 2 * 2  # max_ahead defaults to max_staleness batches
    for report in async_["reports"]:
        assert report.metrics["sched/groups_generating"] + report.metrics["data/ready_groups"] <= window
    assert async_["cluster"]["env/slot_occupancy"] > sync["cluster"]["env/slot_occupancy"]


def test_async_aborts_episodes_that_can_no_longer_be_trained() -> None:
    # One task in four takes 1000 s: far beyond max_staleness x the 5 s trainer step.
    task_list = tasks(lambda i: 1000.0 if i % 4 == 0 else 1.0)
    config = ScheduleConfig(mode="async", steps=12, max_staleness=1, max_ahead=4)
    aborting = run_schedule(config, task_list, max_staleness=1)
    keeping = run_schedule(config.model_copy(update={"abort_stale": False}), task_list, max_staleness=1)
    trained_once(aborting)
    aborted = [t for t, _ in aborting["rows"] if t.status == "aborted"]
    assert aborted
    assert all(t.task_id in {"t0", "t4", "t8", "t12"} for t in aborted)
    # (episodes aborted at the last step may be cut off by the end of the run before they are stored)
    assert aborting["reports"][-1].metrics["sched/aborted"] >= len(aborted)
    assert not [t for t, _ in keeping["rows"] if t.status == "aborted"]
    assert aborting["time"] < keeping["time"]  # slots are not held by doomed episodes


@pytest.mark.parametrize("weight_sync", ["global", "rolling"])
def test_weight_sync_global_is_a_barrier_and_rolling_is_one_server_at_a_time(weight_sync: str) -> None:
    out = run_schedule(
        ScheduleConfig(mode="async", steps=3, weight_sync=weight_sync),  # type: ignore[arg-type]
        tasks(lambda i: 1.0),
        servers=2,
        sync_s=4.0,
        train_s=20.0,
    )
    first, second = out["servers"]
    assert [v for v, _, _ in first.log][-1] == 3
    assert [v for v, _, _ in second.log][-1] == 3
    pairs = list(zip(first.log, second.log, strict=False))
    if weight_sync == "global":
        assert all(a[1] == b[1] for a, b in pairs)  # both start together
    else:
        assert all(b[1] >= a[2] for a, b in pairs)  # the second starts when the first is done
    trained_once(out)


def test_task_sampler_epochs_and_state() -> None:
    task_list = tasks(lambda i: 1.0, n=5)
    sampler = TaskSampler(task_list, seed=3)
    first = [sampler.next().id for _ in range(5)]
    assert sorted(first) == sorted(t.id for t in task_list)
    state = sampler.state_dict()
    following = [sampler.next().id for _ in range(7)]
    again = TaskSampler(task_list, seed=3)
    again.load_state_dict(state)
    assert [again.next().id for _ in range(7)] == following
    assert TaskSampler(task_list, seed=3).next().id == first[0]
    with pytest.raises(ValueError, match="empty"):
        TaskSampler([])
