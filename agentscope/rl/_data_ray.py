"""The data manager as a Ray actor (``data.placement: ray``): its own process, the owner of the run's store.

The actor (:class:`_DataManagerActor`) opens the store itself (``trajectories.db`` in the run directory, on the
driver's node: SQLite wants a local disk; or the PostgreSQL namespace of ``data.url``) and runs a
:class:`~agentscope.rl.data.DataManager` over it, the same class the in-process backend uses, so curation, batches
and every decision written to the store are the same for the same seed. The training process keeps
:class:`RayDataManager`, which the scheduler uses through its :class:`~agentscope.rl._schedule.DataPort`:

- ``put`` sends the trajectory (token ids, log-probs: Ray stores a large argument in its object store) and
  ``next_batch`` gets the batch back as the call's Ray object. These are the only calls a training step makes.
  (With ``env.backend: ray`` a trajectory still passes through the training process on its way from the worker:
  the scheduler's sink reads its group; handing the worker's object on unread is left for later.)
- The scheduler's synchronous reads cost no round trip: every reply carries a snapshot (ready groups, metrics,
  the next group size of the task it touched), numbered by the actor, and the proxy keeps the newest. A new group
  is named and sized here from that snapshot, and its size travels with its trajectories. In the sync modes every
  reply is in before the next read, so the scheduler reads what it would read in process; in async mode a read
  may miss a ``put`` still in flight, as it may miss an episode still playing.
- ``resume``, ``recover``, the checkpointed cursor (``checkpoint_state``) and ``aclose`` are calls too.

The actor is not restarted (``max_restarts=0``): its queue and open groups live in memory, and the only correct
way back is the one a crashed driver takes. When it dies, every call fails and :meth:`RayDataManager.watch` (a call
the actor answers only when it closes, awaited beside the scheduler's work) fails the run at once, with a
:class:`DataManagerLost` naming the data manager and saying to ``--resume``: nothing stored is lost (the store is
durable), and the resume undoes what came after the checkpoint as after any crash.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
from pydantic import JsonValue

from agentscope.exceptions import AgentScopeError, ConfigError, UsageError
from agentscope.message import new_id
from agentscope.rl._files import STORE_FILE
from agentscope.rl._schedule import DataPort
from agentscope.rl._types import Trajectory
from agentscope.rl.data import DataConfig, DataManager, ResumeReport, open_store

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig

__all__ = ["DataManagerLost", "DataService", "RayDataManager", "data_actor_name", "open_data_manager"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 30.0


class DataService(DataPort, Protocol):
    """The data manager as the runner sees it: the scheduler's port, plus resume, the checkpointed cursor and
    closing (:class:`~agentscope.rl.data.DataManager` in process, :class:`RayDataManager` on Ray)."""

    async def resume(self, state: Mapping[str, JsonValue] | None, *, step: int, version: int) -> ResumeReport:
        """Go on from the checkpoint of ``step`` (see :meth:`DataManager.resume`)."""
        ...

    async def recover(self) -> int:
        """Rebuild the ready queue from the store; returns the groups queued."""
        ...

    async def checkpoint_state(self) -> dict[str, JsonValue]:
        """The cursor to checkpoint (see :meth:`DataManager.state_dict`)."""
        ...

    async def aclose(self) -> None:
        """Close the store (and the actor)."""
        ...


class DataManagerLost(AgentScopeError):
    """The data manager's actor died: the run cannot go on, and ``--resume`` continues it."""


async def open_data_manager(config: RLConfig, run_dir: Path) -> DataService:
    """The run's data manager, where ``data.placement`` says: in this process, or a Ray actor (started on this
    thread: call it from the main thread, see :func:`~agentscope.rl._rollout_ray.ensure_ray`)."""
    if config.data.placement == "ray":
        from agentscope.rl._rollout_ray import ensure_ray, local_cpus

        if importlib.util.find_spec("ray") is None:  # pragma: no cover - depends on the environment
            raise ConfigError("data.placement: ray needs Ray: pip install -e '.[scale]'")
        ensure_ray(local_cpus(config))
        return await RayDataManager.start(config.data, run_dir)
    return DataManager(open_store(config.data, run_dir), config.data)


def data_actor_name(config: DataConfig, run_dir: Path) -> str:
    """The Ray name of the data-manager actor of the store that ``config`` and ``run_dir`` name: one live data
    manager per store in a Ray namespace (a driver's own unless it names one, so this refuses a second start from
    the same driver, not another driver's run). ``run_dir`` must be absolute."""
    where = f"{config.url}#{config.namespace}" if config.store == "postgres" else str(run_dir)
    return f"agentscope-rl-data-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the scheduler reads synchronously, as of one call's reply."""

    seq: int
    """The actor's count of snapshots taken: a higher one is newer."""
    ready: int
    stats: dict[str, float]
    sizes: dict[str, int] = field(default_factory=dict[str, int])
    """The next group size of each task the call touched."""


class _DataManagerActor:
    """The actor body (``ray.remote`` makes it an async actor in :meth:`RayDataManager.start`): a data manager over
    the store it opens."""

    def __init__(self, config_json: str, run_dir: str) -> None:
        config = DataConfig.model_validate_json(config_json)
        self._manager = DataManager(open_store(config, run_dir), config)
        self._seq = 0
        self._closed: asyncio.Event | None = None

    def _snapshot(self, tasks: Collection[str] = ()) -> _Snapshot:
        self._seq += 1
        manager = self._manager
        sizes = {task: manager.group_size_for(task) for task in tasks}
        return _Snapshot(self._seq, manager.ready_groups(), manager.stats(), sizes)

    async def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    async def snapshot(self) -> _Snapshot:
        """The current snapshot."""
        return self._snapshot()

    async def put(self, traj: Trajectory, expected: int | None) -> _Snapshot:
        """:meth:`DataManager.put`; ``expected``: the group's size, as the driver opened it."""
        await self._manager.put(traj, expected=expected)
        return self._snapshot((traj.task_id,))

    async def next_batch(self, policy_version: int, step: int) -> tuple[list[Trajectory] | None, _Snapshot]:
        """:meth:`DataManager.next_batch`."""
        batch = await self._manager.next_batch(policy_version=policy_version, step=step)
        return batch, self._snapshot()

    async def resume(
        self, state: dict[str, JsonValue] | None, step: int, version: int
    ) -> tuple[ResumeReport, _Snapshot]:
        """:meth:`DataManager.resume`; the snapshot sizes every task the cursor has statistics of."""
        report = await self._manager.resume(state, step=step, version=version)
        outcomes = state.get("outcomes") if state is not None else None
        return report, self._snapshot([str(task) for task in outcomes] if isinstance(outcomes, dict) else ())

    async def recover(self) -> tuple[int, _Snapshot]:
        """:meth:`DataManager.recover`."""
        queued = await self._manager.recover()
        return queued, self._snapshot()

    async def checkpoint_state(self) -> dict[str, JsonValue]:
        """:meth:`DataManager.state_dict`."""
        return self._manager.state_dict()

    async def until_closed(self) -> None:
        """Return when :meth:`close` is called (the driver awaits it to learn at once that the actor died)."""
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()

    async def close(self) -> None:
        """Close the store."""
        if self._closed is None:
            self._closed = asyncio.Event()
        try:
            await self._manager.aclose()
        finally:
            self._closed.set()


class _RemoteMethod(Protocol):
    """A Ray actor method (``handle.method``)."""

    def remote(self, *args: Any) -> Any: ...


class RayDataManager:
    """The data manager of a run as a Ray actor (see the module docstring); build it with :meth:`start`.

    Args:
        config: The data section of the run's config.
        run_dir: The run directory (absolute), where the SQLite store is.
        actor: The actor's handle.
        pid: The actor's process id.
    """

    def __init__(self, config: DataConfig, run_dir: Path, actor: Any, pid: int) -> None:
        self._config = config
        self.run_dir = run_dir
        """The run directory."""
        self.pid = pid
        """The actor's process id."""
        self._actor: Any = actor
        self._seq = 0
        self._ready = 0
        self._stats: dict[str, float] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # task id -> (snapshot seq, next group size)
        self._expected: dict[str, list[int]] = {}  # group id -> [size, members sent]
        self._lost: DataManagerLost | None = None

    @classmethod
    async def start(cls, config: DataConfig, run_dir: Path) -> RayDataManager:
        """Start the actor (Ray must be connected) and wait until it runs.

        Raises:
            UsageError: another live data manager serves the same store in this driver's Ray namespace.
            RuntimeError: the actor was not placed within ``PLACE_TIMEOUT_S`` (no ``data.cpus`` free).
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from agentscope.rl import _rollout_ray
        from agentscope.rl._rollout_ray import wait_placed

        place_timeout_s = _rollout_ray.PLACE_TIMEOUT_S

        # Absolute: Ray's workers have a working directory of their own.
        root = await anyio.to_thread.run_sync(run_dir.resolve)
        name = data_actor_name(config, root)
        options: dict[str, Any] = {
            "num_cpus": config.cpus,
            "max_restarts": 0,  # its queue is in memory: the way back is --resume
            "max_task_retries": 0,
            "name": name,
        }
        if config.store == "sqlite":  # the file is on this node's disk
            node = ray.get_runtime_context().get_node_id()
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        try:
            actor_class = ray.remote(_DataManagerActor).options(**options)
            actor: Any = actor_class.remote(config.model_dump_json(), str(root))
        except ValueError as exc:  # the name is taken
            raise UsageError(
                f"another data manager already serves this run's store (actor {name!r}): {exc}"
            ) from None

        async def started() -> tuple[int, _Snapshot]:  # it fails when the store would not open
            return await actor.pid.remote(), await actor.snapshot.remote()

        unplaced = RuntimeError(
            f"the data manager's actor was not placed within {place_timeout_s:g} s: the Ray cluster has no "
            f"{config.cpus:g} CPUs free for it (ray status shows what is free); lower data.cpus"
        )
        pid, snapshot = await wait_placed(ray, actor, started(), timeout_s=place_timeout_s, unplaced=unplaced)
        manager = cls(config, root, actor, pid)
        manager._take(snapshot)
        return manager

    def __repr__(self) -> str:
        return f"RayDataManager(pid={self.pid}, run_dir={str(self.run_dir)!r})"

    # ------------------------------------------------------------------ the scheduler's port

    @property
    def config(self) -> DataConfig:
        """The curation settings."""
        return self._config

    @property
    def actor(self) -> Any:
        """The actor's handle (None once closed)."""
        return self._actor

    def ready_groups(self) -> int:
        """Curated groups waiting to be trained, as of the newest reply."""
        self._check()
        return self._ready

    def group_size_for(self, task_id: str) -> int:
        """The next group size of ``task_id``, as of the newest reply that touched the task
        (:meth:`DataManager.group_size_for` there); ``group_size`` for a task the manager has no statistics of."""
        self._check()
        known = self._sizes.get(task_id)
        return known[1] if known is not None else self._config.group_size

    def open_group(self, task_id: str, group_id: str | None = None) -> tuple[str, int]:
        """Name and size a group of ``task_id`` here (no round trip); its size goes with its trajectories."""
        self._check()
        gid = group_id or new_id()
        size = self.group_size_for(task_id)
        self._expected[gid] = [size, 0]
        return gid, size

    async def put(self, traj: Trajectory) -> None:
        """Send a finished episode to the manager (it stores it, and curates its group when complete)."""
        launch = self._expected.get(traj.group_id)
        expected = None
        if launch is not None:
            expected = launch[0]
            launch[1] += 1
            if launch[1] >= launch[0]:
                del self._expected[traj.group_id]
        self._take(await self._call(self._method("put"), traj, expected))

    async def next_batch(self, *, policy_version: int, step: int) -> list[Trajectory] | None:
        """:meth:`DataManager.next_batch`, in the actor; the batch comes back as the call's Ray object."""
        batch, snapshot = await self._call(self._method("next_batch"), policy_version, step)
        self._take(snapshot)
        return batch

    def stats(self) -> dict[str, float]:
        """The manager's metrics as of the newest reply."""
        self._check()
        return dict(self._stats)

    async def watch(self) -> None:
        """Return when the actor closes; raise :class:`DataManagerLost` as soon as it dies."""
        await self._call(self._method("until_closed"))

    # ------------------------------------------------------------------ the runner's

    async def resume(self, state: Mapping[str, JsonValue] | None, *, step: int, version: int) -> ResumeReport:
        """:meth:`DataManager.resume`, in the actor."""
        cursor = dict(state) if state is not None else None
        report, snapshot = await self._call(self._method("resume"), cursor, step, version)
        self._take(snapshot)
        return report

    async def recover(self) -> int:
        """:meth:`DataManager.recover`, in the actor."""
        queued, snapshot = await self._call(self._method("recover"))
        self._take(snapshot)
        return queued

    async def checkpoint_state(self) -> dict[str, JsonValue]:
        """The cursor to checkpoint (:meth:`DataManager.state_dict`, taken in the actor)."""
        return await self._call(self._method("checkpoint_state"))

    async def aclose(self) -> None:
        """Close the store and remove the actor.

        Raises:
            DataManagerLost: the actor had died, so that a run ends with that error whatever surfaced first.
        """
        with anyio.CancelScope(shield=True):
            actor, self._actor = self._actor, None
            if actor is not None:
                import ray

                if self._lost is None:
                    try:
                        with anyio.fail_after(_CLOSE_TIMEOUT_S):
                            await actor.close.remote()
                    except Exception:  # it is killed next either way
                        logger.warning("closing the data manager's store failed", exc_info=True)
                ray.kill(actor, no_restart=True)
        if self._lost is not None:
            raise self._lost

    # ------------------------------------------------------------------ internals

    def _method(self, name: str) -> _RemoteMethod:
        self._check()
        return getattr(self._actor, name)

    def _check(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._actor is None:
            raise RuntimeError("the data manager is closed")

    def _take(self, snapshot: _Snapshot) -> None:
        # Replies to concurrent calls may come back in any order: the newest snapshot wins.
        for task, size in snapshot.sizes.items():  # a size changes only with a put of its task (or a resume)
            if snapshot.seq > self._sizes.get(task, (-1, 0))[0]:
                self._sizes[task] = (snapshot.seq, size)
        if snapshot.seq > self._seq:
            self._seq, self._ready, self._stats = snapshot.seq, snapshot.ready, snapshot.stats

    async def _call(self, method: _RemoteMethod, *args: Any) -> Any:
        from ray.exceptions import RayActorError

        try:
            return await method.remote(*args)
        except RayActorError as exc:
            raise self._lose(exc) from exc

    def _lose(self, exc: BaseException) -> DataManagerLost:
        if self._lost is None:
            store = (
                f"the PostgreSQL namespace {self._config.namespace!r}"
                if self._config.store == "postgres"
                else str(self.run_dir / STORE_FILE)
            )
            self._lost = DataManagerLost(
                f"the data manager (the Ray actor of data.placement: ray, process {self.pid}) died: "
                f"{type(exc).__name__}. Every trajectory it stored is kept in {store}: continue the run with "
                "--resume"
            )  # not logged: the run's error says it (rl train prints it as its one error line)
        return self._lost
