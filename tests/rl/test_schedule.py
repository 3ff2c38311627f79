"""The Scheduler in virtual time: sync and async over the real EnvCluster and DataManager, with a fake trainer."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from types import EllipsisType
from typing import Any

import anyio
import pytest

from agentscope.exceptions import ConfigError, ModelError
from agentscope.message import Msg, ToolResultBlock
from agentscope.rl import Task, Trajectory
from agentscope.rl._config import ScheduleConfig, load_config
from agentscope.rl._schedule import Scheduler, StepReport, TaskSampler
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.envs import (
    EnvCluster,
    Environment,
    EnvResult,
    Observation,
    ScriptedRollout,
    react_agent_factory,
)
from agentscope.testing import ScriptItem, run_virtual, tool_call
from agentscope.tools import Toolkit


class TimedEnv(Environment):
    """One tool whose call takes ``task.metadata['delay']`` seconds; success decided by a seeded coin."""

    def __init__(self, rng: random.Random, starts: list[float] | None = None, success_p: float = 0.5) -> None:
        super().__init__()
        self.rng = rng
        self.starts = starts
        self.success_p = success_p
        self.task: Task | None = None

    async def reset(self, task: Task) -> Observation:
        self.task = task
        if self.starts is not None:
            self.starts.append(anyio.current_time())
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
        success = self.rng.random() < self.success_p
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

    def __init__(self, rollout: ScriptedRollout | None, sync_s: float, refuses: Collection[int] = ()) -> None:
        self.rollout = rollout
        self.sync_s = sync_s
        self.refuses = set(refuses)
        """Versions this server fails to take (a timeout, a refusal)."""
        self.log: list[tuple[int, float, float]] = []

    async def update_weights(self, state_dict: Any, version: int) -> None:
        start = anyio.current_time()
        await anyio.sleep(self.sync_s)
        if version in self.refuses:
            raise ModelError(f"version {version} refused")
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
    data_staleness: int | EllipsisType | None = ...,
    train_s: float = 5.0,
    sync_s: float = 1.0,
    servers: int = 1,
    refuses: Sequence[Collection[int]] = (),
    drop_zero_variance: bool = False,
    success_p: float = 0.5,
) -> dict[str, Any]:
    reports: list[StepReport] = []
    starts: list[float] = []

    async def main() -> dict[str, Any]:
        rollout = ScriptedRollout(policy, latency_s=1.0)
        rng = random.Random(0)
        cluster = EnvCluster(
            lambda: TimedEnv(rng, starts, success_p),
            react_agent_factory,
            rollout,
            slots=slots,
            model_factory=rollout.model,
        )
        store = TrajectoryStore(":memory:")
        data = DataManager(
            store,
            DataConfig(
                group_size=group_size,
                batch_groups=batch_groups,
                max_staleness=config.max_staleness if data_staleness is ... else data_staleness,
                drop_zero_variance=drop_zero_variance,
                success_replay=False,
            ),
        )
        trainer = FakeTrainer(train_s)
        fleet = [
            Server(rollout if i == 0 else None, sync_s, refuses[i] if i < len(refuses) else ())
            for i in range(servers)
        ]

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
            "starts": starts,
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


def staleness(out: dict[str, Any]) -> list[int]:
    """Versions between the policy that made each trained trajectory's oldest token and the one trained on."""
    return [step - 1 - t.min_version for step, _, batch in out["trainer"].batches for t in batch]


def test_sync_wave_trains_only_the_current_policy() -> None:
    # Half the groups of two have zero reward variance and are dropped, so every step needs more groups than
    # the batch and some waves leave groups over: they must be discarded, never trained a version late.
    out = run_schedule(
        ScheduleConfig(mode="sync-wave", steps=6), tasks(lambda i: 2.0 + i % 3), drop_zero_variance=True
    )
    trained_once(out)
    batches = out["trainer"].batches
    assert [step for step, _, _ in batches] == [1, 2, 3, 4, 5, 6]
    assert all(len(batch) == 4 for _, _, batch in batches)
    for step, _, batch in batches:  # every token of every trained trajectory: the policy of this step
        assert {v for t in batch for v in t.policy_versions} == {step - 1}
    assert set(staleness(out)) == {0}
    report = out["reports"][-1].metrics
    assert report["sched/discarded_groups"] > 0  # the scenario does leave groups over
    discarded = [t for t, _ in out["rows"] if t.status == "dropped_stale"]
    assert report["sched/discarded_trajectories"] == len(discarded) == report["data/dropped_stale"]
    assert all(s is None for t, s in out["rows"] if t.status == "dropped_stale")
    # Waves: every slot starts at once (4 groups of 2 in 8 slots), and nothing starts until all have ended.
    waves = sorted(set(out["starts"]))
    assert len(waves) == report["sched/waves"] >= 7
    assert all(out["starts"].count(t) == 8 for t in waves)
    assert [v for v, _, _ in out["servers"][0].log] == [1, 2, 3, 4, 5, 6]
    assert out["scheduler"].server_versions == [6]
    # nothing is generated while the trainer works (5 s a step) or the weights load (1 s)
    for _, start, _ in batches:
        assert not [t for t in out["starts"] if start <= t < start + 6.0]


def test_sync_wave_leaves_over_a_random_choice_of_groups_not_the_slowest() -> None:
    # A wave of 4 groups, all kept by curation; the batch takes 2 and the other 2 are discarded. Taken in the
    # order they finished, the discarded ones would always be the wave's slowest.
    out = run_schedule(
        ScheduleConfig(mode="sync-wave", steps=8), tasks(lambda i: 1.0 + 3.0 * i, n=32), batch_groups=2
    )
    rows = out["rows"]
    assert len([t for t, _ in rows if t.status == "dropped_stale"]) == 8 * 4
    fairly = 0
    for version in range(8):
        wave = [(t.metrics["env/episode_s"], s) for t, s in rows if t.min_version == version]
        trained = [seconds for seconds, s in wave if s is not None]
        discarded = [seconds for seconds, s in wave if s is None]
        assert len(trained) == len(discarded) == 4
        fairly += max(trained) > min(discarded)
    assert fairly >= 3


def test_sync_refill_trains_groups_left_over_one_step_late() -> None:
    out = run_schedule(
        ScheduleConfig(mode="sync-refill", steps=6, weight_sync="global"),
        tasks(lambda i: 2.0 + i % 3),
        drop_zero_variance=True,
    )
    trained_once(out)
    batches = out["trainer"].batches
    assert [step for step, _, _ in batches] == [1, 2, 3, 4, 5, 6]
    # Rounds oversample by the share curation drops; the groups a round leaves over are trained next step.
    late = staleness(out)
    assert set(late) == {0, 1}
    assert out["reports"][-1].metrics["sched/discarded_groups"] == 0
    # Per-trajectory refill: a finished episode's slot takes the round's next episode while the others play.
    assert any(out["starts"].count(t) < 8 for t in set(out["starts"]))
    assert [v for v, _, _ in out["servers"][0].log] == [1, 2, 3, 4, 5, 6]


def test_sync_is_read_as_the_on_policy_sync_wave() -> None:
    config = ScheduleConfig.model_validate({"mode": "sync", "max_staleness": 2})
    assert config.mode == "sync-wave"
    assert config.max_staleness == 0  # the data manager gets bound 0 (RLConfig copies it)
    assert load_config(None, ["schedule.mode=sync"]).data.max_staleness == 0
    assert load_config(None, ["schedule.mode=sync-refill"]).data.max_staleness == 2
    with pytest.raises(
        ConfigError, match=r"schedule\.publish_every: sync-wave trains only on the current policy"
    ):
        load_config(None, ["schedule.mode=sync-wave", "schedule.publish_every=2"])
    with pytest.raises(ConfigError, match="'sync-wave', 'sync-refill' or 'async'"):
        load_config(None, ["schedule.mode=lockstep"])


def test_sync_wave_refuses_a_data_manager_that_keeps_stale_groups() -> None:
    with pytest.raises(ValueError, match="max_staleness must be 0, not 2"):
        run_schedule(ScheduleConfig(mode="sync-wave", steps=1), tasks(lambda i: 1.0), data_staleness=2)


def test_async_mode_overlaps_and_respects_staleness() -> None:
    task_list = tasks(lambda i: 2.0 + 10.0 * (i % 4 == 0))
    sync = run_schedule(ScheduleConfig(mode="sync-refill", steps=6, weight_sync="global"), task_list)
    async_ = run_schedule(ScheduleConfig(mode="async", steps=6, max_staleness=2), task_list)
    trained_once(async_)
    assert async_["time"] < sync["time"]
    assert max(staleness(async_)) <= 2
    assert async_["cluster"]["env/slot_occupancy"] > sync["cluster"]["env/slot_occupancy"]


def run_long_tails(config: ScheduleConfig) -> dict[str, Any]:
    """One task in four takes ten times as long; 8 slots, groups of 2, batches of 2 groups, a fast trainer."""
    return run_schedule(
        config,
        tasks(lambda i: 20.0 if i % 4 == 0 else 2.0),
        slots=8,
        group_size=2,
        batch_groups=2,
        train_s=0.5,
    )


def test_async_throttle_keeps_the_slots_busy_while_the_trainer_keeps_up() -> None:
    # One task in four takes ten times as long: most groups wait for one long member while their others are
    # done, and a window of 2 batches (8 episodes) launched ahead is full most of the time. But the trainer is
    # waiting for data then: generation is the bottleneck, and the throttle must not idle the slots.
    out = run_long_tails(ScheduleConfig(mode="async", steps=12, max_staleness=2))
    trained_once(out)
    assert out["scheduler"].window_episodes == 2 * 2 * 2  # max_staleness batches of 2 groups of 2
    assert out["cluster"]["env/slot_occupancy"] > 0.9
    assert max(staleness(out)) <= 2


def test_async_max_ahead_set_is_a_hard_cap_even_while_the_trainer_waits() -> None:
    # The scenario above with the default window written out: now it holds while the trainer waits for data.
    out = run_long_tails(ScheduleConfig(mode="async", steps=12, max_staleness=2, max_ahead=8))
    trained_once(out)
    for report in out["reports"]:
        assert report.metrics["sched/episodes_ahead"] < 8 + 2
    assert out["cluster"]["env/slot_occupancy"] < 0.9  # the slots wait for the groups' long members


def test_async_throttle_stops_generation_when_the_trainer_falls_behind() -> None:
    out = run_schedule(
        ScheduleConfig(mode="async", steps=4, max_staleness=2, max_ahead=6),
        tasks(lambda i: 1.0),
        slots=4,
        group_size=2,
        batch_groups=2,
        train_s=100.0,
    )
    trained_once(out)
    window, slots, group = 6, 4, 2
    for report in out["reports"]:
        # While the trainer trains, a group starts only while fewer than `window` episodes are ahead of it.
        assert report.metrics["sched/episodes_ahead"] < window + group
    generated = [t for t, _ in out["rows"] if t.status == "ok"]
    trained = [t for t, s in out["rows"] if s is not None]
    assert len(generated) <= len(trained) + window + slots + group
    assert out["reports"][-1].metrics["sched/throttled_s"] > 250  # it waited for the trainer most of the run


def test_async_aborts_episodes_that_can_no_longer_be_trained() -> None:
    # One task in four takes 1000 s: far beyond max_staleness x the 5 s trainer step.
    task_list = tasks(lambda i: 1000.0 if i % 4 == 0 else 1.0)
    config = ScheduleConfig(mode="async", steps=12, max_staleness=1, max_ahead=16)
    aborting = run_schedule(config, task_list)
    keeping = run_schedule(config.model_copy(update={"abort_stale": False}), task_list)
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


@pytest.mark.parametrize("weight_sync", ["global", "rolling"])
def test_a_server_that_fails_an_update_keeps_serving_and_gets_the_next_version(weight_sync: str) -> None:
    """One server's timeout or refusal does not stop the run: it keeps its version and takes the next one."""
    out = run_schedule(
        ScheduleConfig(mode="async", steps=3, weight_sync=weight_sync),  # type: ignore[arg-type]
        tasks(lambda i: 1.0),
        servers=2,
        refuses=[(), {2}],
        train_s=20.0,
    )
    first, second = out["servers"]
    assert [v for v, _, _ in first.log] == [1, 2, 3]
    assert [v for v, _, _ in second.log] == [1, 3]  # version 2 refused (not logged), then 3 taken
    assert out["scheduler"].server_versions == [3, 3]
    assert len(out["reports"]) == 3


@pytest.mark.parametrize("weight_sync", ["global", "rolling"])
def test_a_version_that_no_server_takes_fails_the_run(weight_sync: str) -> None:
    with pytest.raises(BaseException) as caught:  # the scheduler's task group may wrap it
        run_schedule(
            ScheduleConfig(mode="async", steps=3, weight_sync=weight_sync),  # type: ignore[arg-type]
            tasks(lambda i: 1.0),
            servers=2,
            refuses=[{2}, {2}],
            train_s=20.0,
        )
    assert "no rollout server took policy version 2" in repr(caught.value) or any(
        "no rollout server took policy version 2" in str(e) for e in _leaves(caught.value)
    )


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


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


@pytest.mark.parametrize("mode", ["async", "sync-wave", "sync-refill"])
def test_a_time_limit_ends_training_at_the_first_step_past_it(mode: str) -> None:
    task_list = tasks(lambda i: 2.0)
    full = run_schedule(ScheduleConfig(mode=mode, steps=8, max_staleness=2), task_list)  # type: ignore[arg-type]
    per_step = full["time"] / 8
    limited = run_schedule(
        ScheduleConfig(mode=mode, steps=1000, max_staleness=2, time_limit_s=3.5 * per_step),  # type: ignore[arg-type]
        task_list,
    )
    steps = len(limited["reports"])
    assert 2 <= steps <= 6  # about 3.5 steps' time: the step running when the limit passes finishes
    assert limited["time"] < 7 * per_step
    trained_once(limited)


@pytest.mark.parametrize("mode", ["async", "sync-wave", "sync-refill"])
def test_a_time_limit_ends_a_run_whose_every_group_is_curated_away(mode: str) -> None:
    """A policy that never succeeds, with zero-variance groups dropped: no batch ever forms, and the run still
    ends when its time limit passes instead of waiting for one forever."""
    out = run_schedule(
        ScheduleConfig(mode=mode, steps=1000, max_staleness=2, time_limit_s=60.0),  # type: ignore[arg-type]
        tasks(lambda i: 2.0),
        drop_zero_variance=True,
        success_p=0.0,
    )
    assert out["reports"] == []
    assert 60.0 <= out["time"] < 90.0  # the limit, plus at most the episodes in flight (sync modes)
