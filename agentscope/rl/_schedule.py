"""The schedule: how generation (environment cluster + rollout service) and training share time.

One :class:`Scheduler` runs both modes over the same components:

- ``sync``: open a batch's worth of groups (more by the observed share that curation drops), play them (a
  finished episode's slot takes the next episode of the round at once), curate, train, publish the weights to
  every rollout server, repeat. A batch still short of groups is topped up by another round before training.
- ``async``: the cluster plays episodes continuously from an endless task feed while the trainer takes a batch
  whenever the data manager has one within ``max_staleness``. Generation is throttled to the trainer's pace (at
  most ``max_ahead`` batches of groups launched but not yet trained), episodes that can no longer be trained are
  aborted, and weights reach the rollout servers either all at once (``global``) or one server after another in
  the background (``rolling``, DART's per-worker sync) every ``publish_every`` steps.

The scheduler only awaits: it never sleeps on its own and reads time from the event loop, so it runs unchanged
on :class:`~agentscope.rl._virtual_time.VirtualTimeEventLoop` inside the schedule simulator
(``benchmarks/rl_schedule``) with simulated servers, environments and trainer.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from pydantic import JsonValue

from agentscope.rl._config import ScheduleConfig
from agentscope.rl._types import Task, Trajectory
from agentscope.rl.data import DataManager
from agentscope.rl.envs import EnvCluster, LiveEpisode

__all__ = ["Scheduler", "StepReport", "TaskSampler", "TrainerPort", "WeightReceiver"]


class TrainerPort(Protocol):
    """The trainer as the scheduler sees it."""

    async def train(self, batch: list[Trajectory], *, step: int) -> dict[str, float]:
        """One update on ``batch``; returns its metrics (``train/policy_loss``...)."""
        ...

    async def weights(self) -> Any:
        """A snapshot of the current weights for the rollout servers."""
        ...


class WeightReceiver(Protocol):
    """A rollout server that takes new weights."""

    async def update_weights(self, state_dict: Any, version: int) -> None:
        """Serve ``state_dict`` as policy ``version`` from now on."""
        ...


@dataclass(slots=True)
class StepReport:
    """What one trainer step did, for the run's logging and checkpoints."""

    step: int
    """Trainer step just finished (1-based)."""
    version: int
    """Trainer's policy version after the step."""
    batch: list[Trajectory]
    """The trajectories trained on."""
    metrics: dict[str, float] = field(default_factory=dict[str, float])
    """Trainer, data, environment and schedule metrics."""


class TaskSampler:
    """An endless stream of tasks: every task once per epoch, in a fresh seeded order each epoch."""

    def __init__(self, tasks: Sequence[Task], seed: int = 0) -> None:
        if not tasks:
            raise ValueError("the task set is empty")
        self.tasks = list(tasks)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self) -> Task:
        """The next task."""
        if self.position >= len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._shuffled(self.epoch)
        task = self.tasks[self._order[self.position]]
        self.position += 1
        return task

    def __iter__(self) -> Iterator[Task]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, JsonValue]:
        """Where the stream is (for checkpoints)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, JsonValue]) -> None:
        """Continue from :meth:`state_dict`."""
        epoch, position = state.get("epoch", 0), state.get("position", 0)
        if not isinstance(epoch, int) or not isinstance(position, int):
            raise ValueError(f"bad task sampler state {state!r}")
        self.epoch, self.position = epoch, position
        self._order = self._shuffled(epoch)


class Scheduler:
    """Runs training for ``config.steps`` steps in ``config.mode`` (see the module docstring).

    Args:
        config: The schedule section of the run's config.
        cluster: Plays episodes.
        data: Curates them into batches (its ``batch_groups`` sets the batch size).
        trainer: Trains on batches and hands out weights.
        servers: The rollout servers to publish weights to.
        sampler: Where tasks come from.
        start_step: Steps already done (resume); the trainer's policy version starts here too.
        on_step: Called after every step (metrics logging, checkpoints); awaited before the next step.
        stats: Extra metrics merged into every step's report (e.g. the rollout service's).
    """

    def __init__(
        self,
        config: ScheduleConfig,
        *,
        cluster: EnvCluster,
        data: DataManager,
        trainer: TrainerPort,
        servers: Sequence[WeightReceiver],
        sampler: TaskSampler,
        start_step: int = 0,
        on_step: Callable[[StepReport], Awaitable[None]] | None = None,
        stats: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("the scheduler needs at least one rollout server")
        self.config = config
        self.cluster = cluster
        self.data = data
        self.trainer = trainer
        self.servers = list(servers)
        self.sampler = sampler
        self.step = start_step
        """Trainer steps done."""
        self.version = start_step
        """The trainer's policy version (one per step)."""
        self.server_versions = [start_step] * len(self.servers)
        """Policy version each rollout server serves."""
        self._on_step = on_step
        self._extra_stats = stats
        self._changed = anyio.Event()
        self._generating: dict[str, int] = {}  # group id -> members not finished yet
        self._publish_target: tuple[Any, int] | None = None
        self._rolling = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self._started_at = 0.0
        self._trainer_busy_s = 0.0
        self._trainer_wait_s = 0.0
        self._throttled_s = 0.0
        self._publish_s = 0.0
        self._aborted = 0
        self._groups_opened = 0

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Train until ``config.steps`` steps are done."""
        self._started_at = anyio.current_time()
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            if self.config.mode == "sync":
                await self._run_sync()
            else:
                tg.start_soon(self.cluster.run, self._feed(), self._sink)
                await self._train_loop()
                await self._wait_for(lambda: not self._rolling)  # the last weights reach every server
            tg.cancel_scope.cancel()  # stop generation (episodes in flight are dropped, never stored)

    @property
    def window_groups(self) -> int | None:
        """Async throttle: most groups launched but not yet trained (None: unlimited)."""
        ahead = self.config.max_ahead
        if ahead is None:
            staleness = self.config.max_staleness
            if staleness is None:
                return None
            ahead = max(staleness, 1)
        return ahead * self.data.config.batch_groups

    def stats(self) -> dict[str, float]:
        """Schedule metrics: ``sched/*`` time shares since the run started, the version lag of the servers."""
        elapsed = max(anyio.current_time() - self._started_at, 1e-9)
        return {
            "sched/step": float(self.step),
            "sched/version": float(self.version),
            "sched/server_version_lag": float(self.version - min(self.server_versions)),
            "sched/trainer_utilisation": self._trainer_busy_s / elapsed,
            "sched/trainer_wait_s": self._trainer_wait_s,
            "sched/throttled_s": self._throttled_s,
            "sched/publish_s": self._publish_s,
            "sched/aborted": float(self._aborted),
            "sched/groups_opened": float(self._groups_opened),
            "sched/groups_generating": float(len(self._generating)),
            "sched/elapsed_s": elapsed,
        }

    # ------------------------------------------------------------------ generation

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_for(self, condition: Callable[[], bool]) -> float:
        """Wait until ``condition()`` holds (re-checked on every change); returns the seconds waited."""
        start = anyio.current_time()
        while not condition():
            await self._changed.wait()
        return anyio.current_time() - start

    def _open_group(self) -> tuple[Task, str, int]:
        task = self.sampler.next()
        group_id, size = self.data.open_group(task.id)
        self._generating[group_id] = size
        self._groups_opened += 1
        return task, group_id, size

    def _room(self) -> bool:
        window = self.window_groups
        return window is None or len(self._generating) + self.data.ready_groups() < window

    async def _feed(self) -> AsyncIterator[tuple[Task, str]]:
        """Endless (task, group id) pairs, a whole group at a time, throttled to the trainer's pace."""
        while True:
            self._throttled_s += await self._wait_for(self._room)
            task, group_id, size = self._open_group()
            for _ in range(size):
                yield task, group_id

    async def _sink(self, trajectory: Trajectory) -> None:
        await self.data.put(trajectory)
        left = self._generating.get(trajectory.group_id)
        if left is not None:
            if left <= 1:
                del self._generating[trajectory.group_id]
            else:
                self._generating[trajectory.group_id] = left - 1
        self._notify()

    async def _run_sync(self) -> None:
        batch_groups = self.data.config.batch_groups
        opened = survived = 0
        while self.step < self.config.steps:
            while (ready := self.data.ready_groups()) < batch_groups:
                # Curation drops some groups (zero variance, failures): launch enough that the batch is likely
                # full after one round instead of waiting for the slowest episode of several top-up rounds.
                # Groups beyond the batch are trained next step (staleness 1).
                need = batch_groups - ready
                survival = (survived + 1) / (opened + 1)
                count = min(2 * need, math.ceil(need / max(survival, 1e-3)))
                items: list[tuple[Task, str]] = []
                for _ in range(count):
                    task, group_id, size = self._open_group()
                    items += [(task, group_id)] * size
                await self.cluster.run(_aiter(items), self._sink)
                opened += count
                survived += self.data.ready_groups() - ready
            batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
            if batch is not None:
                await self._train(batch, background_publish=False)

    # ------------------------------------------------------------------ training and publishing

    async def _train_loop(self) -> None:
        while self.step < self.config.steps:
            start = anyio.current_time()
            batch: list[Trajectory] | None = None
            while batch is None:
                changed = self._changed  # taken first: a change during next_batch must not be missed
                batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
                if batch is None:
                    await changed.wait()
            self._trainer_wait_s += anyio.current_time() - start
            self._notify()  # the batch freed room in the generation window
            await self._train(batch, background_publish=self.config.weight_sync == "rolling")

    async def _train(self, batch: list[Trajectory], *, background_publish: bool) -> None:
        start = anyio.current_time()
        metrics = await self.trainer.train(batch, step=self.step + 1)
        self._trainer_busy_s += anyio.current_time() - start
        self.step += 1
        self.version += 1
        if self.step % self.config.publish_every == 0 or self.step == self.config.steps:
            await self._publish(background=background_publish)
        if self.config.mode == "async" and self.config.abort_stale and self.config.max_staleness is not None:
            self._aborted += self.cluster.abort(self._doomed, "can no longer be trained (too stale)")
        report = StepReport(step=self.step, version=self.version, batch=batch, metrics=dict(metrics))
        report.metrics.update(self.data.stats())
        report.metrics.update(self.cluster.stats())
        report.metrics.update(self.stats())
        if self._extra_stats is not None:
            report.metrics.update(self._extra_stats())
        if self._on_step is not None:
            await self._on_step(report)
        self._notify()

    def _doomed(self, episode: LiveEpisode) -> bool:
        """An episode whose first token is already more than ``max_staleness`` versions old can never be
        trained: every later batch is formed at this version or a newer one."""
        bound = self.config.max_staleness
        first = episode.first_version
        return bound is not None and first is not None and self.version - first > bound

    async def _publish(self, *, background: bool) -> None:
        start = anyio.current_time()
        weights = await self.trainer.weights()
        self._publish_target = (weights, self.version)
        if background:
            if not self._rolling and self._task_group is not None:
                self._rolling = True
                self._task_group.start_soon(self._roll)
        else:
            version = self.version
            async with anyio.create_task_group() as tg:
                for index in range(len(self.servers)):
                    tg.start_soon(self._update_server, index, weights, version)
        self._publish_s += anyio.current_time() - start

    async def _update_server(self, index: int, weights: Any, version: int) -> None:
        await self.servers[index].update_weights(weights, version)
        self.server_versions[index] = version

    async def _roll(self) -> None:
        """Bring the servers to the newest published weights one at a time; newer weights supersede older
        ones mid-roll (a server never gets a version that is already outdated)."""
        try:
            while self._publish_target is not None:
                weights, version = self._publish_target
                behind = [i for i, v in enumerate(self.server_versions) if v < version]
                if not behind:
                    return
                await self._update_server(behind[0], weights, version)
        finally:
            self._rolling = False
            self._notify()


async def _aiter(items: Sequence[tuple[Task, str]]) -> AsyncIterator[tuple[Task, str]]:
    for item in items:
        yield item
