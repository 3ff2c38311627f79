"""The data manager: groups finished episodes, curates them the DART way, and hands the trainer batches.

Life of a trajectory::

    put() ─► stored ─► its group (open until every expected member arrived)
                         │ complete
                         ▼
             curation at completion: failed members set aside; zero-variance check
             (success replay first: a stored success within the staleness bound replaces one failure
             of an all-failure group, at most max_replays_per_task copies per task)
                         │
                         ▼
             ready queue (FIFO) ─► next_batch(): staleness bound, high-entropy step selection,
                                   marked trained_at_step (each sample used once)

Every decision is written to the store (statuses ``dropped_stale`` / ``dropped_zero_variance``, replay copies,
``trained_at_step``), and the store is the source of truth. The cursor in :meth:`DataManager.state_dict` holds
only the task statistics, counters and version history; each decision made after a cursor is taken is tagged
with its step in the store.

Resume (:meth:`DataManager.resume`): after a crash the run goes on from a checkpoint of step C. Every decision
made after C's cursor is undone (training, drops, aborts, replay copies: :meth:`TrajectoryStore.rollback`), and
the ready queue is rebuilt from the trajectories stored but never trained. Policy versions stay monotonic: the
restored weights (version ``v`` at C) are served under a new version above every version in the store, and the
versions between them are *lost*: the weights that made them are gone, so their trajectories have no staleness
relative to the resumed policy and are dropped (``dropped_stale``, counted in ``data/dropped_lost_version``).
Staleness counts updates along the run's actual history, skipping lost versions, so it is never negative.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

import anyio
from pydantic import JsonValue

from agentscope.message import new_id
from agentscope.rl._types import Trajectory, TrajectoryStatus
from agentscope.rl.data._config import DataConfig
from agentscope.rl.data._open import AnyTrajectoryStore
from agentscope.rl.data._rows import TRAINABLE_STATUSES

__all__ = ["DataManager", "ResumeReport", "trajectory_score", "turn_entropy"]

_STATE_VERSION: Final = 2
_OLD_STATE_VERSIONS: Final = (1,)
"""Cursor versions still read (1: no version history)."""
_REPLAYED: Final = "data/replayed"
"""Key in ``Trajectory.metrics`` that marks a success-replay copy (counted apart from fresh episodes)."""
_CLOSED_MEMORY: Final = 100_000
"""Closed group ids remembered, to recognise a member arriving after its group was closed."""
_SCORE_TOLERANCE: Final = 1e-9


def trajectory_score(traj: Trajectory) -> float:
    """The scalar a group-relative advantage compares: the sum of per-turn rewards when any turn has one (what
    :meth:`Trajectory.flatten` places on the tokens), else the episode reward."""
    if any(t.reward is not None for t in traj.turns):
        return sum(t.reward or 0.0 for t in traj.turns)
    return traj.reward


def turn_entropy(logprobs: Sequence[float]) -> float:
    """Entropy estimate of one turn: the mean negative log-prob of its sampled tokens (an unbiased estimate of the
    sampling distribution's per-token entropy). ``0.0`` for an empty turn."""
    return -sum(logprobs) / len(logprobs) if logprobs else 0.0


@dataclass
class _Group:
    group_id: str
    task_id: str
    expected: int
    members: list[Trajectory] = field(default_factory=list[Trajectory])


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """What :meth:`DataManager.resume` found and undid."""

    step: int
    """The checkpoint's step."""
    version: int
    """The policy version the resumed run serves the restored weights as (above every stored version)."""
    lost_versions: tuple[int, int] | None
    """Inclusive range of versions made after the checkpoint by weights now gone (``None``: none)."""
    untrained: int
    """Trajectories trained after the checkpoint, to be trained again."""
    restored: int
    """Trajectories dropped or aborted after the checkpoint, given their stored status back."""
    removed_replays: int
    """Success-replay copies made after the checkpoint, removed."""
    dropped_lost: int
    """Pending trajectories from lost versions, dropped (``dropped_stale``)."""
    requeued_groups: int
    """Groups queued for training again."""

    def describe(self) -> str:
        """One line for a person: what was undone and requeued."""
        lost = (
            f"versions {self.lost_versions[0]}..{self.lost_versions[1]} lost with the steps after the checkpoint "
            f"({self.dropped_lost} of their trajectories dropped), "
            if self.lost_versions is not None
            else ""
        )
        return (
            f"policy version {self.version}; {lost}{self.untrained} trajectories untrained, "
            f"{self.restored} drops undone, {self.removed_replays} replay copies removed, "
            f"{self.requeued_groups} groups re-queued"
        )


@dataclass
class _Counters:
    received: int = 0
    failed: int = 0
    dropped_stale: int = 0
    dropped_lost_version: int = 0
    dropped_zero_variance: int = 0
    replayed: int = 0
    trained: int = 0
    trained_replayed: int = 0
    trained_tokens: int = 0
    """Generated tokens of the fresh episodes trained (replay copies excluded)."""
    trained_replayed_tokens: int = 0
    batches: int = 0
    last_step: int = -1

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class DataManager:
    """Curates trajectories into training batches (see the module docstring).

    Meant for one event loop: :meth:`put` may be called by many episodes at once and :meth:`next_batch` by the
    trainer loop concurrently with them. Launch groups through :meth:`open_group` so the manager knows how many
    members to wait for (a group it was not told about expects :meth:`group_size_for` members).
    """

    def __init__(self, store: AnyTrajectoryStore, config: DataConfig | None = None) -> None:
        self._store = store
        self._config = config or DataConfig()
        self._lock = anyio.Lock()
        self._open: dict[str, _Group] = {}
        self._expected: dict[str, int] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._ready: deque[list[Trajectory]] = deque()
        self._outcomes: dict[str, deque[bool]] = {}
        self._counters = _Counters()
        self._last_batch: dict[str, float] = {}
        self._version = 0
        """The trainer's policy version as far as the manager knows: the last one :meth:`next_batch` was given,
        or the newest that generated a trajectory put since (the trainer is at least there). Success replay
        copies only successes within the staleness bound of it."""
        self._gaps: list[tuple[int, int]] = []
        """Version ranges ``(first, last)`` a resume skipped: ``first..last-1`` are lost, ``last`` serves the
        weights of ``first - 1`` again (no update in between)."""
        self._after_step = 0
        """Step of the newest cursor taken (:meth:`state_dict`) or resumed from: tags every decision made since."""

    @property
    def config(self) -> DataConfig:
        """The curation settings."""
        return self._config

    @property
    def store(self) -> AnyTrajectoryStore:
        """Where every trajectory is kept (SQLite or PostgreSQL)."""
        return self._store

    # -- task statistics and adaptive rollouts ------------------------------------------------------------

    def success_rate(self, task_id: str) -> float | None:
        """The task's success rate over its last ``adaptive_window`` trainable episodes (``None``: not enough
        episodes yet, fewer than ``adaptive_min_episodes``)."""
        outcomes = self._outcomes.get(task_id)
        if outcomes is None or len(outcomes) < self._config.adaptive_min_episodes:
            return None
        return sum(outcomes) / len(outcomes)

    def group_size_for(self, task_id: str) -> int:
        """How many rollouts the next group of ``task_id`` should have.

        ``group_size`` unless adaptive rollouts are on; then ``max_rollouts`` for a task never solved, falling
        linearly with the success rate to ``min_rollouts`` for a task always solved (hard tasks get more
        attempts, so some succeed and the group has a signal; easy ones cost little). A task with too few
        episodes gets ``group_size``.
        """
        config = self._config
        rate = self.success_rate(task_id) if config.adaptive_rollouts else None
        if rate is None:
            return config.group_size
        span = config.max_rollouts - config.min_rollouts
        return config.min_rollouts + round(span * (1.0 - rate))

    def open_group(self, task_id: str, group_id: str | None = None) -> tuple[str, int]:
        """Start a group of ``task_id``: return its id (new unless given) and how many episodes to run for it."""
        gid = group_id or new_id()
        size = self.group_size_for(task_id)
        self._expected[gid] = size
        return gid, size

    # -- versions ----------------------------------------------------------------------------------------

    def _lost(self, version: int) -> bool:
        return any(first <= version < last for first, last in self._gaps)

    def staleness(self, traj: Trajectory, policy_version: int) -> int | None:
        """Updates between the policy that made ``traj``'s oldest token and ``policy_version``, along the run's
        history (versions skipped by a resume are not updates); ``None`` when a version of ``traj`` was lost by
        a resume or is newer than ``policy_version``: it has no place in that history."""
        versions = traj.policy_versions
        if not versions:
            return 0
        if versions[-1] > policy_version or any(self._lost(v) for v in versions):
            return None
        return self._updates(versions[0], policy_version)

    def _updates(self, oldest: int, version: int) -> int:
        """Updates from version ``oldest`` to ``version``: the versions after ``oldest`` up to ``version`` that no
        resume skipped."""
        skipped = sum(max(0, min(last, version) - max(first, oldest + 1) + 1) for first, last in self._gaps)
        return version - oldest - skipped

    def _oldest_within(self, bound: int) -> int:
        """The oldest version at most ``bound`` updates behind the current one."""
        oldest = self._version
        while oldest > 0 and self._updates(oldest - 1, self._version) <= bound:
            oldest -= 1
        return oldest

    # -- intake ------------------------------------------------------------------------------------------

    async def put(self, traj: Trajectory, *, expected: int | None = None) -> None:
        """Store a finished episode (any status); when its group is complete, curate the group.

        ``expected``: the size of its group when the group was opened elsewhere (a driver-side proxy that sized it:
        ``agentscope.rl._data_ray``); a group opened here through :meth:`open_group` keeps the size given then.
        """
        await self._store.add(traj, after_step=self._after_step)
        if not any(self._lost(v) for v in traj.policy_versions):
            self._version = max([self._version, *traj.policy_versions])
        counters = self._counters
        counters.received += 1
        trainable = traj.status in TRAINABLE_STATUSES
        if not trainable:
            counters.failed += 1
        else:
            window = self._outcomes.setdefault(traj.task_id, deque(maxlen=self._config.adaptive_window))
            window.append(traj.success)
        gid = traj.group_id
        if gid in self._closed:
            # Its group was closed already (recovered after a restart, or over-delivered): never trained.
            if trainable:
                await self._store.mark([traj.trajectory_id], status="aborted", after_step=self._after_step)
            return
        group = self._open.get(gid)
        if group is None:
            size = self._expected.pop(gid, None) or expected or self.group_size_for(traj.task_id)
            group = self._open[gid] = _Group(gid, traj.task_id, size)
        group.members.append(traj)
        if len(group.members) >= group.expected:
            del self._open[gid]
            await self._close_group(group.group_id, group.members)

    async def _close_group(self, group_id: str, members: list[Trajectory]) -> None:
        self._closed[group_id] = None
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)
        kept = await self._curate_variance([t for t in members if t.status in TRAINABLE_STATUSES])
        if kept:
            self._ready.append(kept)

    async def _curate_variance(self, members: list[Trajectory]) -> list[Trajectory]:
        """Success replay, then the zero-variance drop; returns the members to train (maybe none)."""
        if not members:
            return []
        config = self._config
        if config.success_replay and len(members) >= 2 and not any(t.success for t in members):
            members = await self._replay_success(members)
        scores = [trajectory_score(t) for t in members]
        zero_variance = max(scores) - min(scores) <= _SCORE_TOLERANCE
        if zero_variance and config.drop_zero_variance:
            await self._drop(members, "dropped_zero_variance")
            return []
        return members

    async def _replay_success(self, members: list[Trajectory]) -> list[Trajectory]:
        """Replace the last failure of an all-failure group with a copy of the task's latest stored success that
        is within the staleness bound, unless the task has had its ``max_replays_per_task`` copies."""
        scores = {trajectory_score(t) for t in members}
        if len(scores) > 1:
            return members  # failures with different rewards: the group has a signal already
        config = self._config
        task_id = members[0].task_id
        cap = config.max_replays_per_task
        if cap is not None and await self._store.count_replays(task_id) >= cap:
            return members
        bound = config.max_staleness
        success = await self._store.latest_success(
            task_id,
            min_version=None if bound is None else self._oldest_within(bound),
            exclude_versions=[(first, last - 1) for first, last in self._gaps if last > first],
        )
        if success is None or self.staleness(success, self._version) is None:
            return members
        replaced = members[-1]
        copy = success.model_copy(
            update={
                "trajectory_id": new_id(),
                "group_id": replaced.group_id,
                "metrics": {**success.metrics, _REPLAYED: 1.0},
            }
        )
        await self._store.add(copy, replay_of=success.trajectory_id, after_step=self._after_step)
        await self._drop([replaced], "dropped_zero_variance")
        self._counters.replayed += 1
        return [*members[:-1], copy]

    async def _drop(self, trajs: Sequence[Trajectory], status: TrajectoryStatus) -> None:
        if not trajs:
            return
        await self._store.mark([t.trajectory_id for t in trajs], status=status, after_step=self._after_step)
        if status == "dropped_stale":
            self._counters.dropped_stale += len(trajs)
        elif status == "dropped_zero_variance":
            self._counters.dropped_zero_variance += len(trajs)

    # -- batches -----------------------------------------------------------------------------------------

    def ready_groups(self) -> int:
        """Curated groups waiting to be trained (the staleness bound is applied only when a batch is formed)."""
        return len(self._ready)

    def open_groups(self) -> int:
        """Groups still waiting for members."""
        return len(self._open)

    async def next_batch(self, *, policy_version: int, step: int) -> list[Trajectory] | None:
        """The next training batch, ``batch_groups`` complete groups (members adjacent), or ``None``.

        Oldest groups first. Members older than ``max_staleness`` versions behind ``policy_version`` are dropped
        (``dropped_stale``; a group left with one member or none is dropped whole), then, if high-entropy step
        selection is on, the batch's low-entropy turns get ``trainable=False`` (copies: the store is unchanged).
        The trajectories returned are marked ``trained_at_step=step``, so each is used once (unless ``use_once`` is
        off: then the groups go back to the end of the queue). ``None`` when fewer than ``batch_groups`` groups
        are ready; the groups checked stay queued.
        """
        async with self._lock:
            config = self._config
            self._version = policy_version
            selected: list[list[Trajectory]] = []
            while self._ready and len(selected) < config.batch_groups:
                group = await self._curate_staleness(self._ready.popleft(), policy_version)
                if group:
                    selected.append(group)
            if len(selected) < config.batch_groups:
                self._ready.extendleft(reversed(selected))
                return None
            batch = [t for group in selected for t in group]
            if config.high_entropy_steps is not None:
                batch = self._select_high_entropy(batch, config.high_entropy_steps)
            await self._store.mark([t.trajectory_id for t in batch], trained_at_step=step)
            if not config.use_once:
                self._ready.extend(selected)  # the stored copies: high-entropy masks are chosen per batch
            self._record_batch(batch, policy_version, step)
            return batch

    async def _curate_staleness(self, group: list[Trajectory], policy_version: int) -> list[Trajectory]:
        bound = self._config.max_staleness
        staleness = [self.staleness(t, policy_version) for t in group]
        lost = [t for t, s in zip(group, staleness, strict=True) if s is None]
        fresh = [
            t
            for t, s in zip(group, staleness, strict=True)
            if s is not None and (bound is None or s <= bound)
        ]
        if len(fresh) == len(group):
            return group
        fresh_ids = {t.trajectory_id for t in fresh}
        stale = [t for t in group if t.trajectory_id not in fresh_ids]
        if len(fresh) < 2 <= len(group):
            stale, fresh = group, []
        self._counters.dropped_lost_version += len(lost)
        await self._drop(stale, "dropped_stale")
        if fresh:
            # A smaller group may have lost its signal: check the variance again (no replay: it was done).
            scores = [trajectory_score(t) for t in fresh]
            if self._config.drop_zero_variance and max(scores) - min(scores) <= _SCORE_TOLERANCE:
                await self._drop(fresh, "dropped_zero_variance")
                return []
        return fresh

    def _select_high_entropy(self, batch: list[Trajectory], fraction: float) -> list[Trajectory]:
        """Keep the ``fraction`` of the batch's turns with the highest entropy trainable; mask the rest."""
        turns = [
            (turn_entropy(turn.logprobs), i, j)
            for i, traj in enumerate(batch)
            for j, turn in enumerate(traj.turns)
            if turn.trainable and turn.completion_ids
        ]
        if not turns:
            return batch
        keep = max(1, math.ceil(fraction * len(turns)))
        masked = {(i, j) for _, i, j in sorted(turns, key=lambda e: e[0], reverse=True)[keep:]}
        self._last_batch["data/entropy_kept_fraction"] = keep / len(turns)
        if not masked:
            return batch
        out: list[Trajectory] = []
        for i, traj in enumerate(batch):
            if not any((i, j) in masked for j in range(len(traj.turns))):
                out.append(traj)
                continue
            turns_copy = [
                turn.model_copy(update={"trainable": False}) if (i, j) in masked else turn
                for j, turn in enumerate(traj.turns)
            ]
            out.append(traj.model_copy(update={"turns": turns_copy}))
        return out

    def _record_batch(self, batch: list[Trajectory], policy_version: int, step: int) -> None:
        counters = self._counters
        replays = [t for t in batch if t.metrics.get(_REPLAYED)]
        counters.trained += len(batch)
        counters.trained_replayed += len(replays)
        counters.trained_replayed_tokens += sum(t.num_generated_tokens for t in replays)
        counters.trained_tokens += sum(t.num_generated_tokens for t in batch if not t.metrics.get(_REPLAYED))
        counters.batches += 1
        counters.last_step = step
        staleness = [
            self.staleness(t, policy_version) or 0 for t in batch
        ]  # never None: lost ones were dropped
        self._last_batch.update(
            {
                "data/staleness": sum(staleness) / len(staleness),
                "data/staleness_max": float(max(staleness)),
                "data/batch_trajectories": float(len(batch)),
                "data/batch_replayed": float(len(replays)),
                "data/batch_success_rate": sum(t.success for t in batch) / len(batch),
            }
        )

    # -- resume ------------------------------------------------------------------------------------------

    async def resume(self, state: Mapping[str, JsonValue] | None, *, step: int, version: int) -> ResumeReport:
        """Go on from the checkpoint of ``step``, whose weights are policy ``version``, after a crash.

        ``state`` is the cursor saved with that checkpoint (:meth:`state_dict`; ``None``: start the statistics
        afresh). Undoes every decision made after the cursor (:meth:`TrajectoryStore.rollback`); when the store
        holds trajectories of versions above ``version`` (made by weights the crash lost), serves the restored
        weights under a version above all of them, so versions never repeat, and drops the trajectories of the
        lost versions; then rebuilds the ready queue (:meth:`recover`). Use the returned ``version`` for the
        trainer and the rollout servers.
        """
        if state is not None:
            self.load_state_dict(state)
        rollback = await self._store.rollback(step)
        newest = await self._store.max_version()
        lost: tuple[int, int] | None = None
        if newest > version:
            lost = (version + 1, newest)
            self._gaps.append((version + 1, newest + 1))
            version = newest + 1
        self._version = version
        self._after_step = step
        dropped_before = self._counters.dropped_lost_version
        requeued = await self.recover()
        return ResumeReport(
            step=step,
            version=version,
            lost_versions=lost,
            untrained=rollback.untrained,
            restored=rollback.restored,
            removed_replays=rollback.removed_replays,
            dropped_lost=self._counters.dropped_lost_version - dropped_before,
            requeued_groups=requeued,
        )

    async def recover(self) -> int:
        """Rebuild the ready queue from the store: every group with trainable, never-trained members.

        :meth:`resume` calls it. Episodes that were running when the process died never arrive, so each group is
        closed with the members stored; members from versions a resume lost are dropped. Returns the number of
        groups queued.
        """
        async with self._lock:
            self._open.clear()
            self._ready.clear()
            groups: dict[str, list[Trajectory]] = {}
            lost: list[Trajectory] = []
            for traj in await self._store.pending():
                if any(self._lost(v) for v in traj.policy_versions):
                    lost.append(traj)
                else:
                    groups.setdefault(traj.group_id, []).append(traj)
            self._counters.dropped_lost_version += len(lost)
            await self._drop(lost, "dropped_stale")
            for group_id, members in groups.items():
                await self._close_group(group_id, members)
            return len(self._ready)

    def state_dict(self) -> dict[str, JsonValue]:
        """The cursor to checkpoint: task statistics, counters and the version history (the queue itself is
        rebuilt from the store).

        Take it right after the step being checkpointed was trained (as the runner does): every decision made
        from now on is tagged in the store as made after this step, so :meth:`resume` from this checkpoint undoes
        it.
        """
        self._after_step = max(self._counters.last_step, 0)
        return {
            "version": _STATE_VERSION,
            "step": self._after_step,
            "outcomes": {task: [int(s) for s in window] for task, window in self._outcomes.items()},
            "counters": dict(self._counters.as_dict()),
            "version_gaps": [[first, last] for first, last in self._gaps],
        }

    async def checkpoint_state(self) -> dict[str, JsonValue]:
        """:meth:`state_dict`, awaitable: what the runner checkpoints, whichever process the manager runs in."""
        return self.state_dict()

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()

    def load_state_dict(self, state: Mapping[str, JsonValue]) -> None:
        """Restore a cursor from :meth:`state_dict`. Clears the in-memory queue: call :meth:`recover` next (or use
        :meth:`resume`, which does both and undoes what happened after the cursor)."""
        if state.get("version") not in (_STATE_VERSION, *_OLD_STATE_VERSIONS):
            raise ValueError(f"unsupported data-manager state version {state.get('version')!r}")
        outcomes = state.get("outcomes")
        counters = state.get("counters")
        if not isinstance(outcomes, dict) or not isinstance(counters, dict):
            raise ValueError("data-manager state lacks 'outcomes' or 'counters'")
        gaps = state.get("version_gaps", [])
        step = state.get("step", 0)
        if (
            not isinstance(gaps, list)
            or not all(
                isinstance(g, list) and len(g) == 2 and all(isinstance(v, int) for v in g) for g in gaps
            )
            or not isinstance(step, int)
        ):
            raise ValueError("data-manager state has malformed 'version_gaps' or 'step'")
        window = self._config.adaptive_window
        self._outcomes = {
            str(task): deque((bool(v) for v in values), maxlen=window)
            for task, values in outcomes.items()
            if isinstance(values, list)
        }
        known = set(vars(_Counters()))
        self._counters = _Counters(
            **{k: int(v) for k, v in counters.items() if k in known and isinstance(v, int | float)}
        )
        self._gaps = [(int(g[0]), int(g[1])) for g in cast(list[list[int]], gaps)]
        self._after_step = step
        self._open.clear()
        self._ready.clear()
        self._last_batch.clear()

    def stats(self) -> dict[str, float]:
        """Metrics under stable names: ``data/staleness``, ``data/dropped_stale``, ``data/ready_groups``, ...

        Success-replay copies are counted apart: ``data/replayed`` copies made, ``data/trained`` every trajectory
        trained = ``data/trained_fresh`` episodes + ``data/trained_replayed`` copies; ``data/trained_tokens`` counts
        the fresh episodes' generated tokens only (``data/trained_replayed_tokens`` the copies').
        """
        counters = self._counters
        rates = [r for r in (self.success_rate(task) for task in self._outcomes) if r is not None]
        out: dict[str, float] = {
            "data/received": float(counters.received),
            "data/failed": float(counters.failed),
            "data/dropped_stale": float(counters.dropped_stale),
            "data/dropped_lost_version": float(counters.dropped_lost_version),
            "data/dropped_zero_variance": float(counters.dropped_zero_variance),
            "data/replayed": float(counters.replayed),
            "data/trained": float(counters.trained),
            "data/trained_fresh": float(counters.trained - counters.trained_replayed),
            "data/trained_replayed": float(counters.trained_replayed),
            "data/trained_tokens": float(counters.trained_tokens),
            "data/trained_replayed_tokens": float(counters.trained_replayed_tokens),
            "data/batches": float(counters.batches),
            "data/ready_groups": float(len(self._ready)),
            "data/open_groups": float(len(self._open)),
        }
        if rates:
            out["data/task_success_rate"] = sum(rates) / len(rates)
        out.update(self._last_batch)
        return out
