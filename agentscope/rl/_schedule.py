"""The schedule: how generation (environment cluster + rollout service) and training share time.

One :class:`Scheduler` runs three modes over the same components:

- ``sync-wave`` (strictly on-policy): each step plays *waves* of episodes. A wave fills every env slot with
  whole groups at once, and the next wave starts only when every episode of this one has ended; the wave's
  groups reach the data manager when it ends, in a seeded random order (so the groups a step leaves over are not
  its slowest). Waves repeat until the data manager holds a batch. Then train, publish the weights to every
  rollout server, and discard the curated groups the batch did not take (status ``dropped_stale``, counted as
  ``sched/discarded_groups`` and ``sched/discarded_trajectories``): every trained token comes from the policy
  being trained (staleness 0). The data manager's bound must be 0 (``ScheduleConfig`` sets it).
- ``sync-refill`` (per-trajectory refill): each round opens the groups the batch lacks, more by the observed
  share that curation drops, and a finished episode's slot takes the round's next episode at once; a batch
  still short of groups is topped up by another round; then train and publish. Groups beyond the batch stay
  queued and are trained the next step, one version late (staleness 1): not strictly on-policy.
- ``async``: the cluster plays episodes continuously from an endless task feed while the trainer takes a batch
  whenever the data manager has one within ``max_staleness``. Generation is throttled in episodes, and only while
  the trainer trains: then a new group starts only while fewer than ``max_ahead`` episodes are launched and not
  yet trained; while the trainer waits for a batch, generation is the bottleneck and every free slot takes an
  episode at once (groups waiting for one long member no longer idle the slots), unless ``max_ahead`` was set
  (then it is a hard cap). Episodes that can no longer be
  trained are aborted, and weights reach the rollout servers either all at once (``global``) or one server after
  another in the background (``rolling``, DART's per-worker sync) every ``publish_every`` steps.

The scheduler only awaits: it never sleeps on its own and reads time from the event loop, so it runs unchanged
on :class:`~agentscope.testing.VirtualTimeEventLoop` inside the schedule simulator
(``benchmarks/rl_schedule``) with simulated servers, environments and trainer.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from pydantic import JsonValue

from agentscope.exceptions import ModelError
from agentscope.rl._config import ScheduleConfig
from agentscope.rl._types import Task, Trajectory
from agentscope.rl.data import DataConfig
from agentscope.rl.envs import LiveEpisode, TrajectorySink

__all__ = [
    "ClusterPort",
    "DataPort",
    "Scheduler",
    "StepReport",
    "TaskSampler",
    "TrainerPort",
    "WeightReceiver",
]

logger = logging.getLogger(__name__)


class ClusterPort(Protocol):
    """The environment cluster as the scheduler sees it (an ``EnvCluster``, or its Ray actors)."""

    @property
    def slots(self) -> int:
        """Episodes played at once."""
        ...

    async def run(self, tasks: AsyncIterator[tuple[Task, str]], sink: TrajectorySink) -> None:
        """Play the tasks until the iterator ends, each finished episode to ``sink``."""
        ...

    def abort(self, predicate: Callable[[LiveEpisode], bool], reason: str = ...) -> int:
        """Stop the live episodes ``predicate`` picks; returns how many."""
        ...

    def stats(self) -> dict[str, float]:
        """Cumulative measurements (``env/...``)."""
        ...


class DataPort(Protocol):
    """The data manager as the scheduler sees it: a :class:`~agentscope.rl.data.DataManager`, or its proxy when it
    runs in a Ray actor (``agentscope.rl._data_ray``).

    Only :meth:`put` and :meth:`next_batch` reach the manager; the synchronous reads are answered where the
    scheduler runs, so a remote manager costs no round trip per check: a proxy mirrors the ready count, each
    task's next group size and the metrics from the reply to its latest call, and sizes and names a new group
    itself (the size travels with the group's trajectories).
    """

    @property
    def config(self) -> DataConfig:
        """The curation settings (``batch_groups``, ``group_size``, ``max_staleness``...)."""
        ...

    def ready_groups(self) -> int:
        """Curated groups waiting to be trained."""
        ...

    def group_size_for(self, task_id: str) -> int:
        """How many episodes the next group of ``task_id`` should have."""
        ...

    def open_group(self, task_id: str, group_id: str | None = None) -> tuple[str, int]:
        """Start a group of ``task_id``: its id and how many episodes to run for it."""
        ...

    async def put(self, traj: Trajectory) -> None:
        """Store a finished episode; curate its group when it was the last member."""
        ...

    async def next_batch(self, *, policy_version: int, step: int) -> list[Trajectory] | None:
        """The next training batch (``batch_groups`` groups), or ``None`` while too few are ready."""
        ...

    def stats(self) -> dict[str, float]:
        """Metrics (``data/...``)."""
        ...


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
class _Launch:
    """A group whose members are not all finished."""

    size: int
    finished: int = 0


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
        start_version: The policy version of the trainer's weights at ``start_step``, when it differs (a resumed
            run serves its restored weights under a version above every stored one: ``DataManager.resume``).
        on_step: Called after every step (metrics logging, checkpoints); awaited before the next step.
        stats: Extra metrics merged into every step's report (e.g. the rollout service's).
    """

    def __init__(
        self,
        config: ScheduleConfig,
        *,
        cluster: ClusterPort,
        data: DataPort,
        trainer: TrainerPort,
        servers: Sequence[WeightReceiver],
        sampler: TaskSampler,
        start_step: int = 0,
        start_version: int | None = None,
        on_step: Callable[[StepReport], Awaitable[None]] | None = None,
        stats: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("the scheduler needs at least one rollout server")
        if config.mode == "sync-wave" and data.config.max_staleness != 0:
            raise ValueError(
                f"sync-wave trains only the current policy's trajectories: the data manager's max_staleness must "
                f"be 0, not {data.config.max_staleness}"
            )
        self.config = config
        self.cluster = cluster
        self.data = data
        self.trainer = trainer
        self.servers = list(servers)
        self.sampler = sampler
        self.step = start_step
        """Trainer steps done."""
        self.version = start_step if start_version is None else start_version
        """The trainer's policy version (one per step)."""
        self.server_versions = [self.version] * len(self.servers)
        """Policy version each rollout server serves."""
        self._on_step = on_step
        self._extra_stats = stats
        self._changed = anyio.Event()
        self._generating: dict[str, _Launch] = {}  # groups with members not finished yet
        self._starved = False  # async: the trainer waits for a batch
        self._held: Task | None = None  # sync-wave: a task drawn for a wave it did not fit in
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
        self._waves = 0
        self._discarded_groups = 0
        self._discarded_trajectories = 0

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Train until :attr:`finished`: ``config.steps`` steps done or ``config.time_limit_s`` passed."""
        self._started_at = anyio.current_time()
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            if self.config.mode == "sync-wave":
                await self._run_waves()
            elif self.config.mode == "sync-refill":
                await self._run_refill()
            else:
                tg.start_soon(self.cluster.run, self._feed(), self._sink)
                await self._train_loop()
                await self._wait_for(lambda: not self._rolling)  # the last weights reach every server
            tg.cancel_scope.cancel()  # stop generation (episodes in flight are dropped, never stored)

    @property
    def finished(self) -> bool:
        """``config.steps`` steps are done, or ``config.time_limit_s`` has passed since :meth:`run` began."""
        return self.step >= self.config.steps or self._time_left() <= 0

    def _time_left(self) -> float:
        """Seconds until ``config.time_limit_s`` passes (infinite without one)."""
        limit = self.config.time_limit_s
        if limit is None:
            return math.inf
        return max(0.0, limit - (anyio.current_time() - self._started_at))

    @property
    def window_episodes(self) -> int | None:
        """Async throttle: while the trainer trains, a new group starts only while fewer episodes than this are
        launched and not yet trained (None: unlimited). ``max_ahead``, else ``max_staleness`` (at least 1) batches
        of ``group_size`` episodes."""
        ahead = self.config.max_ahead
        if ahead is None:
            staleness = self.config.max_staleness
            if staleness is None:
                return None
            data = self.data.config
            ahead = max(staleness, 1) * data.batch_groups * data.group_size
        return ahead

    def episodes_ahead(self) -> int:
        """Episodes launched and not yet trained: every member of the groups still playing (finished or not), and
        the episodes of the curated groups ready to train (counted at ``group_size`` each)."""
        playing = sum(launch.size for launch in self._generating.values())
        return playing + self.data.ready_groups() * self.data.config.group_size

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
            "sched/episodes_ahead": float(self.episodes_ahead()),
            "sched/waves": float(self._waves),
            "sched/discarded_groups": float(self._discarded_groups),
            "sched/discarded_trajectories": float(self._discarded_trajectories),
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

    def _open_group(self, task: Task | None = None) -> tuple[Task, str, int]:
        task = task or self.sampler.next()
        group_id, size = self.data.open_group(task.id)
        self._generating[group_id] = _Launch(size)
        self._groups_opened += 1
        return task, group_id, size

    def _room(self) -> bool:
        window = self.window_episodes
        if window is None:
            return True
        # A trainer waiting for data means generation is the bottleneck: more episodes cannot queue behind it. A
        # max_ahead that was set is a hard cap all the same (a trainer-bound run that wastes too much as stale).
        if self._starved and self.config.max_ahead is None:
            return True
        return self.episodes_ahead() < window

    async def _feed(self) -> AsyncIterator[tuple[Task, str]]:
        """Endless (task, group id) pairs, a whole group at a time, throttled to the trainer's pace."""
        while True:
            self._throttled_s += await self._wait_for(self._room)
            task, group_id, size = self._open_group()
            for _ in range(size):
                yield task, group_id

    async def _sink(self, trajectory: Trajectory) -> None:
        await self.data.put(trajectory)  # curates the group when this was its last member
        launch = self._generating.get(trajectory.group_id)
        if launch is not None:
            launch.finished += 1
            if launch.finished >= launch.size:
                del self._generating[trajectory.group_id]
        self._notify()

    async def _run_waves(self) -> None:
        batch_groups = self.data.config.batch_groups
        while not self.finished:
            while self.data.ready_groups() < batch_groups:
                await self._wave()
                if self.finished:  # the time limit passed while every group was curated away
                    return
            batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
            if batch is None:
                continue  # groups left from before a resume were too old: play another wave
            await self._train(batch, background_publish=False)

    async def _wave(self) -> None:
        """Fill every slot with whole groups and play them to the end; no slot starts another episode before."""
        slots = self.cluster.slots
        items: list[tuple[Task, str]] = []
        while len(items) < slots:
            task = self._held or self.sampler.next()
            self._held = None
            if items and len(items) + self.data.group_size_for(task.id) > slots:
                self._held = task  # it starts the next wave
                break
            task, group_id, size = self._open_group(task)
            items += [(task, group_id)] * size
        self._waves += 1
        finished: dict[str, list[Trajectory]] = {}

        async def hold(trajectory: Trajectory) -> None:
            finished.setdefault(trajectory.group_id, []).append(trajectory)

        await self.cluster.run(_aiter(items), hold)
        # The data manager queues groups in the order they complete and the batch takes the first: handed over as
        # they finished, the slowest groups would be the ones left over and discarded (a bias to short episodes).
        groups = list(finished.values())
        random.Random(f"{self.sampler.seed}/{self._waves}").shuffle(groups)
        for group in groups:
            for trajectory in group:
                await self._sink(trajectory)

    async def _discard_leftovers(self) -> None:
        """Drop the curated groups the batch did not take: made by the previous policy, they are stale now."""
        groups = self.data.ready_groups()
        if not groups:
            return
        before = self.data.stats().get("data/dropped_stale", 0.0)
        batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
        if batch is not None:  # cannot happen with the bound at 0: every queued token is a version old
            raise RuntimeError("sync-wave: the data manager returned a stale batch (is its max_staleness 0?)")
        self._discarded_groups += groups - self.data.ready_groups()
        self._discarded_trajectories += round(self.data.stats().get("data/dropped_stale", 0.0) - before)

    async def _run_refill(self) -> None:
        batch_groups = self.data.config.batch_groups
        opened = survived = 0
        while not self.finished:
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
                if self.finished:  # the time limit passed while every group was curated away
                    return
            batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
            if batch is not None:
                await self._train(batch, background_publish=False)

    # ------------------------------------------------------------------ training and publishing

    async def _train_loop(self) -> None:
        while not self.finished:
            start = anyio.current_time()
            batch: list[Trajectory] | None = None
            while batch is None:
                changed = self._changed  # taken first: a change during next_batch must not be missed
                batch = await self.data.next_batch(policy_version=self.version, step=self.step + 1)
                if batch is None:
                    if not self._starved:
                        self._starved = True
                        self._notify()  # the throttle opens
                    # The time limit also ends a wait for a batch that never comes (every group curated away).
                    with anyio.move_on_after(self._time_left()):
                        await changed.wait()
                    if self.finished:
                        return
            self._starved = False
            self._trainer_wait_s += anyio.current_time() - start
            self._notify()  # the batch freed room in the generation window
            await self._train(batch, background_publish=self.config.weight_sync == "rolling")

    async def _train(self, batch: list[Trajectory], *, background_publish: bool) -> None:
        start = anyio.current_time()
        metrics = await self.trainer.train(batch, step=self.step + 1)
        self._trainer_busy_s += anyio.current_time() - start
        self.step += 1
        self.version += 1
        if self.step % self.config.publish_every == 0 or self.finished:
            await self._publish(background=background_publish)
        if self.config.mode == "sync-wave":
            await self._discard_leftovers()
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
            failed: list[str] = []
            async with anyio.create_task_group() as tg:
                for index in range(len(self.servers)):
                    tg.start_soon(self._update_server, index, weights, version, failed)
            if len(failed) == len(self.servers):
                raise ModelError(f"no rollout server took policy version {version}: {'; '.join(failed)}")
        self._publish_s += anyio.current_time() - start

    async def _update_server(self, index: int, weights: Any, version: int, failed: list[str]) -> bool:
        """Give server ``index`` the weights; a server that fails keeps its old version (and is retried with the
        next publish: one server's timeout or refusal does not stop the run while another serves)."""
        try:
            await self.servers[index].update_weights(weights, version)
        except ModelError as exc:
            logger.warning("rollout server %d did not take policy version %d: %s", index, version, exc)
            failed.append(f"server {index}: {exc}")
            return False
        self.server_versions[index] = version
        return True

    async def _roll(self) -> None:
        """Bring the servers to the newest published weights one at a time; newer weights supersede older
        ones mid-roll (a server never gets a version that is already outdated). A server that fails is skipped
        until the next version; when every server fails one version, the run fails."""
        try:
            skipped: set[int] = set()
            skipped_for = -1
            failed: list[str] = []
            while self._publish_target is not None:
                weights, version = self._publish_target
                if version != skipped_for:
                    skipped, skipped_for, failed = set[int](), version, []
                behind = [i for i, v in enumerate(self.server_versions) if v < version and i not in skipped]
                if not behind:
                    if len(skipped) == len(self.servers):
                        raise ModelError(
                            f"no rollout server took policy version {version}: {'; '.join(failed)}"
                        )
                    return
                if not await self._update_server(behind[0], weights, version, failed):
                    skipped.add(behind[0])
        finally:
            self._rolling = False
            self._notify()


async def _aiter(items: Sequence[tuple[Task, str]]) -> AsyncIterator[tuple[Task, str]]:
    for item in items:
        yield item
