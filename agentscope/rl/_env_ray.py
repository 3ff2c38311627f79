"""Environment workers as Ray actors (``env.backend: ray``): the episodes are played out of the training process.

Each worker is an async Ray actor (:class:`_EnvWorkerActor`) holding an
:class:`~agentscope.rl.envs.EnvCluster` of its share of ``env.slots``, built from the run's config exactly as the
in-process backend builds it (same environment and agent factories, same limits). Its agents talk to the run's
rollout servers over HTTP (a :class:`~agentscope.rl.rollout.RemoteRolloutServer` per server, behind a router), so
tokens never pass through the training process on their way; the finished trajectory (token ids, log-probs,
versions) comes back as the Ray object the call returns.

The training process keeps :class:`RayEnvCluster`, which the scheduler uses as it uses an ``EnvCluster``
(``run``, ``abort``, ``stats``; also ``run_episode`` and ``live``): it deals episodes to the workers, each call carrying the servers'
current addresses and policy versions (a restarted rollout server serves elsewhere; a worker's router sends new
episodes to the newest weights), and reads each worker's live episodes and counters every ``_POLL_S``. A worker
that dies ends its episodes in flight as ``failed_infra`` (their sessions are dropped on every server); Ray
restarts it, and its slots take new episodes once it is back. Episodes are counted by the driver from what comes
back (every episode does, a lost one as ``failed_infra``); the workers' time integrals (``env/slot_s``,
``env/busy_s``) and environment restarts are read from them and carried over a worker's restart (a new process id).
A worker counts as dead when its process id changed, not when a call merely failed to reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from agentscope.exceptions import ModelError
from agentscope.message import new_id
from agentscope.rl._types import Task, Trajectory
from agentscope.rl.envs import LiveEpisode, TrajectorySink

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig
    from agentscope.rl.envs import EnvCluster
    from agentscope.rl.rollout import RemoteRolloutServer

__all__ = ["RayEnvCluster"]

logger = logging.getLogger(__name__)

_POLL_S = 0.5
"""How often the driver reads the workers' live episodes and counters."""
_RESTART_TIMEOUT_S = 300.0
"""Longest a slot waits for its dead worker to come back before it gives the worker up."""
_WORKER_COUNTERS = ("env/slot_s", "env/busy_s", "env/restarts")
"""What the driver reads from the workers and adds up (episodes it counts itself, from what comes back)."""


class _EnvWorkerActor:
    """The actor body (``ray.remote`` makes it an async actor in :meth:`RayEnvCluster.__aenter__`): an
    environment cluster whose agents talk to the rollout servers at the addresses each call brings."""

    def __init__(
        self, config_json: str, model_dir: str, tokens: list[str | None], slots: int, index: int
    ) -> None:
        from agentscope.rl._config import RLConfig

        self._config = RLConfig.model_validate_json(config_json)
        self._model_dir = Path(model_dir)
        self._tokens = tokens
        self._slots = slots
        self._index = index
        self._servers: list[RemoteRolloutServer] = []
        self._cluster: EnvCluster | None = None
        self._starting = asyncio.Lock()
        self._early_aborts: dict[str, str] = {}
        """Episodes aborted before they started here, with the reason."""

    async def _ensure(self, servers: Sequence[tuple[str, int]]) -> EnvCluster:
        async with self._starting:
            if self._cluster is None:
                await self._start([url for url, _ in servers])
        for server, (url, version) in zip(self._servers, servers, strict=True):
            if server.base_url != url.rstrip("/"):  # the server was restarted elsewhere
                server.rebind(url)
            server.note_version(version)  # the router sends new episodes to the newest weights
        assert self._cluster is not None
        return self._cluster

    async def _start(self, urls: Sequence[str]) -> None:
        from agentscope.rl._components import (
            build_agent_factory,
            build_env_cluster,
            build_env_factory,
            load_policy_tokenizer,
        )
        from agentscope.rl.rollout import RemoteRolloutServer, RolloutRouter

        config = self._config.model_copy(
            update={"env": self._config.env.model_copy(update={"slots": self._slots})}
        )
        tokenizer = await load_policy_tokenizer(self._model_dir, 1)
        servers = [
            RemoteRolloutServer(url, tokenizer=tokenizer, token=token)
            for url, token in zip(urls, self._tokens, strict=True)
        ]
        try:
            for server in servers:
                try:
                    await server.refresh()
                except ModelError as exc:  # restarting (the router avoids it until it answers): not fatal
                    logger.warning("rollout server %s does not answer yet: %s", server.base_url, exc)
            service = servers[0] if len(servers) == 1 else RolloutRouter(servers)
            self._cluster = build_env_cluster(
                config, service, build_env_factory(config), build_agent_factory(config)
            )
        except BaseException:
            for server in servers:
                await server.aclose()
            raise
        self._servers = servers

    async def run_episode(
        self, task: Task, group_id: str, trajectory_id: str, servers: list[tuple[str, int]]
    ) -> Trajectory:
        """Play one episode (in a free slot of this worker) and return its trajectory. ``servers``: each rollout
        server's address and policy version now, as the driver knows them."""
        cluster = await self._ensure(servers)
        reason = self._early_aborts.pop(trajectory_id, None)
        if reason is not None:  # aborted while this worker was still starting
            return Trajectory(
                trajectory_id=trajectory_id,
                task_id=task.id,
                group_id=group_id,
                status="aborted",
                error=reason,
            )
        return await cluster.run_episode(task, group_id, trajectory_id)

    async def abort(self, trajectory_ids: list[str], reason: str) -> int:
        """Stop these episodes (status ``aborted``); returns how many were live here. One not started yet (this
        worker still starting) ends as ``aborted`` when it would start."""
        wanted = set(trajectory_ids)
        if self._cluster is None:  # still starting: its episodes wait in _ensure
            self._early_aborts.update(dict.fromkeys(wanted, reason))
            return 0
        return self._cluster.abort(lambda episode: episode.trajectory_id in wanted, reason)

    async def snapshot(self) -> tuple[int, list[LiveEpisode], dict[str, float]]:
        """The actor's process id, the live episodes and the cluster's counters."""
        if self._cluster is None:
            return os.getpid(), [], {}
        return os.getpid(), self._cluster.live(), self._cluster.stats()

    async def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    async def close(self) -> None:
        """Close the environments and the HTTP clients (no episode may be running)."""
        if self._cluster is not None:
            await self._cluster.aclose()
        for server in self._servers:
            await server.aclose()


@dataclass(slots=True, eq=False)
class _Dealt:
    """An episode dealt to a worker, as the driver knows it."""

    worker: int
    episode: LiveEpisode
    aborting: bool = False
    """The worker was asked to stop it (it is counted once, as in ``EnvCluster.abort``)."""


@dataclass(slots=True, eq=False)
class _Worker:
    """One environment actor and the driver's view of it."""

    actor: Any
    slots: int
    pid: int | None = None
    """The process id of its incarnation the driver last heard from."""
    earlier: dict[str, float] = field(default_factory=dict[str, float])
    """The counters of its earlier incarnations (a restarted actor counts from 0)."""
    last: dict[str, float] = field(default_factory=dict[str, float])
    """Its counters as last read from the incarnation now serving."""
    deaths: int = 0
    """Times it was restarted (a new process id)."""
    down: bool = False
    """A call to it failed: the next episode waits until it answers (restarted, or reachable again)."""
    gone: bool = False
    """Ray gave up restarting it: its slots take no more episodes."""

    def saw(self, pid: int) -> None:
        """Heard from process ``pid``: a different one than before is a restart (its counters start over)."""
        if self.pid is not None and pid != self.pid:
            self.deaths += 1
            for key in _WORKER_COUNTERS:
                self.earlier[key] = self.earlier.get(key, 0.0) + self.last.get(key, 0.0)
            self.last = {}
        self.pid = pid

    def counters(self) -> dict[str, float]:
        """Its counters over all its incarnations."""
        return {key: self.earlier.get(key, 0.0) + self.last.get(key, 0.0) for key in _WORKER_COUNTERS}


class RayEnvCluster:
    """The environment cluster of a run as ``env.workers`` Ray actors (see the module docstring); the scheduler
    uses it as an :class:`~agentscope.rl.envs.EnvCluster`.

    Args:
        config: The run's config (``env`` says how many workers, slots and CPUs).
        model_dir: The policy's directory (its tokenizer counts prompt tokens for the agents' context budget).
        servers: The run's rollout servers (their current addresses go with every episode).
        max_restarts: Restarts after which Ray leaves a dead worker dead (its slots then stay empty).
    """

    def __init__(
        self,
        config: RLConfig,
        model_dir: Path,
        servers: Sequence[RemoteRolloutServer],
        *,
        max_restarts: int = 5,
    ) -> None:
        if not servers:
            raise ValueError("RayEnvCluster needs at least one rollout server")
        self.config = config
        """The run's config."""
        self.model_dir = model_dir
        """Where the workers load the policy's tokenizer from."""
        self.servers = list(servers)
        """The rollout servers the workers' agents call."""
        self.max_restarts = max_restarts
        """Restarts of one worker after which Ray leaves it dead."""
        self.slots = config.env.slots
        """Episodes played at once, over all workers."""
        workers = config.env.workers
        self._shares = [
            self.slots // workers + (1 if i < self.slots % workers else 0) for i in range(workers)
        ]
        self._workers: list[_Worker] = []
        self._dealt: dict[str, _Dealt] = {}
        self._counts: dict[str, float] = {}
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at: float | None = None

    async def __aenter__(self) -> RayEnvCluster:
        from agentscope.rl import _rollout_ray
        from agentscope.rl._rollout_ray import ensure_ray, local_cpus

        place_timeout_s = _rollout_ray.PLACE_TIMEOUT_S

        ray = ensure_ray(local_cpus(self.config))  # on this thread: see ensure_ray
        model_dir = await anyio.to_thread.run_sync(self.model_dir.resolve)
        actor_class = ray.remote(_EnvWorkerActor)
        tokens = [server.connection()[1] for server in self.servers]
        try:
            for index, share in enumerate(self._shares):
                actor = actor_class.options(
                    num_cpus=self.config.env.worker_cpus,
                    max_restarts=self.max_restarts,
                    max_task_retries=0,  # an episode is never replayed behind the scheduler's back
                    max_concurrency=share + 8,
                ).remote(self.config.model_dump_json(), str(model_dir), tokens, share, index)
                self._workers.append(_Worker(actor, share))
            for index, worker in enumerate(self._workers):  # placed and started before the first episode
                with anyio.move_on_after(place_timeout_s) as placing:
                    worker.saw(await worker.actor.pid.remote())
                if placing.cancelled_caught:
                    raise RuntimeError(
                        f"environment worker {index} was not placed within {place_timeout_s:g} s: the Ray "
                        f"cluster has no {self.config.env.worker_cpus:g} CPUs free for it (ray status shows "
                        "what is free); lower env.worker_cpus or env.workers"
                    )
        except BaseException:
            await self.aclose()
            raise
        self._started_at = anyio.current_time()
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the EnvCluster interface

    async def run(self, tasks: AsyncIterator[tuple[Task, str]], sink: TrajectorySink) -> None:
        """Play ``(task, group_id)`` pairs from ``tasks`` on every worker's slots until it is exhausted, sending
        every finished trajectory to ``sink`` (as :meth:`EnvCluster.run`).

        Raises:
            RuntimeError: every worker died for good (Ray gave up restarting them).
        """
        pull_lock = anyio.Lock()

        async def slot(worker: int) -> None:
            while not self._workers[worker].gone:
                async with pull_lock:
                    try:
                        task, group_id = await anext(tasks)
                    except StopAsyncIteration:
                        return
                await sink(await self.run_episode(task, group_id, worker=worker))

        async with anyio.create_task_group() as tg:
            for index, share in enumerate(self._shares):
                for _ in range(share):
                    tg.start_soon(slot, index)
        if all(worker.gone for worker in self._workers):
            raise RuntimeError(
                f"every environment worker died for good ({self.max_restarts} restarts each): see the Ray logs"
            )

    async def run_episode(self, task: Task, group_id: str, *, worker: int | None = None) -> Trajectory:
        """Play one episode of ``task`` on ``worker`` (default: the least loaded one Ray has not given up on)
        and return its trajectory; ``failed_infra`` when the worker died under it or is gone.

        Raises:
            RuntimeError: the cluster is not running.
        """
        if not self._workers:
            raise RuntimeError("the cluster is not running: enter it first")
        if worker is None:
            worker = self._least_loaded()
        trajectory_id = new_id()
        episode = LiveEpisode(
            task=task, group_id=group_id, trajectory_id=trajectory_id, started_at=anyio.current_time()
        )
        self._dealt[trajectory_id] = _Dealt(worker, episode)
        servers = [(server.connection()[0], server.version) for server in self.servers]
        try:
            if self._workers[worker].down:  # a call to it failed: wait until it answers (Ray restarts it)
                await self._wait_restarted(worker)
            trajectory: Trajectory = await self._workers[worker].actor.run_episode.remote(
                task, group_id, trajectory_id, servers
            )
        except Exception as exc:
            from ray.exceptions import RayActorError

            if not isinstance(exc, RayActorError) and not self._workers[worker].gone:
                raise
            trajectory = self._lost(worker, episode, exc)
        except BaseException:  # cancelled here: awaiting a Ray call does not stop it there
            self._background(_quietly(self._workers[worker].actor.abort.remote([trajectory_id], "cancelled")))
            raise
        finally:
            del self._dealt[trajectory_id]
        self._count(trajectory)
        return trajectory

    async def worker_pids(self) -> list[int]:
        """The workers' process ids (waiting for any that Ray is restarting)."""
        return [await _when_up(worker.actor.pid) for worker in self._workers]

    def live(self) -> list[LiveEpisode]:
        """Episodes in progress, as last read from the workers (at most ``_POLL_S`` old)."""
        return [dealt.episode for dealt in self._dealt.values()]

    def abort(
        self, predicate: Callable[[LiveEpisode], bool], reason: str = "aborted by the scheduler"
    ) -> int:
        """Stop the live episodes ``predicate`` picks (as :meth:`EnvCluster.abort`; an episode already asked to
        stop is not picked again); returns how many. Each worker stops its own at once, in the background."""
        picked: dict[int, list[str]] = {}
        for trajectory_id, dealt in self._dealt.items():
            if not dealt.aborting and predicate(dealt.episode):
                dealt.aborting = True
                picked.setdefault(dealt.worker, []).append(trajectory_id)
        for worker, ids in picked.items():
            self._background(_quietly(self._workers[worker].actor.abort.remote(ids, reason)))
        return sum(len(ids) for ids in picked.values())

    def stats(self) -> dict[str, float]:
        """As :meth:`EnvCluster.stats`: ``env/episodes`` and ``env/episodes_<status>`` counted here from what came
        back (an episode lost with its worker as ``failed_infra``), the workers' time integrals and environment
        restarts added up over their incarnations; plus ``env/workers`` (not given up on) and
        ``env/worker_deaths`` (restarts of workers)."""
        out: dict[str, float] = {"env/episodes": 0.0}
        for worker in self._workers:
            for key, value in worker.counters().items():
                out[key] = out.get(key, 0.0) + value
        out.update(self._counts)
        wall = 0.0 if self._started_at is None else anyio.current_time() - self._started_at
        capacity = self.slots * wall
        out["env/wall_s"] = wall
        out["env/slot_occupancy"] = out.get("env/slot_s", 0.0) / capacity if capacity > 0 else 0.0
        out["env/utilisation"] = out.get("env/busy_s", 0.0) / capacity if capacity > 0 else 0.0
        out["env/live"] = float(len(self._dealt))
        out["env/workers"] = float(sum(not worker.gone for worker in self._workers))
        out["env/worker_deaths"] = float(sum(worker.deaths for worker in self._workers))
        return out

    async def aclose(self) -> None:
        """Stop polling, close the workers' environments and remove the actors."""
        with anyio.CancelScope(shield=True):
            poller, self._poller = self._poller, None
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            with anyio.move_on_after(10):  # session drops and aborts under way
                await asyncio.gather(*self._tasks, return_exceptions=True)
            workers, self._workers = self._workers, []
            if not workers:
                return
            import ray

            async def close(worker: _Worker) -> None:
                with contextlib.suppress(Exception), anyio.move_on_after(30):
                    await worker.actor.close.remote()
                ray.kill(worker.actor, no_restart=True)

            async with anyio.create_task_group() as tg:
                for worker in workers:
                    tg.start_soon(close, worker)

    # ------------------------------------------------------------------ internals

    def _least_loaded(self) -> int:
        load = [0] * len(self._workers)
        for dealt in self._dealt.values():
            load[dealt.worker] += 1
        candidates = [i for i, worker in enumerate(self._workers) if not worker.gone] or list(
            range(len(load))
        )
        return min(candidates, key=lambda i: load[i] / self._workers[i].slots)

    def _count(self, trajectory: Trajectory) -> None:
        for key in ("env/episodes", f"env/episodes_{trajectory.status}"):
            self._counts[key] = self._counts.get(key, 0.0) + 1

    def _lost(self, worker: int, episode: LiveEpisode, exc: BaseException) -> Trajectory:
        """The trajectory of an episode whose worker could not be reached or died: ``failed_infra``, with no
        turns. Its sessions are dropped on every server and, should the worker still be playing it (a call that
        merely failed to reach it), it is aborted there."""
        self._workers[worker].down = True
        self._background(_quietly(self._workers[worker].actor.abort.remote([episode.trajectory_id], "lost")))
        for server in self.servers:  # in the background: a slot never waits on a slow server for this
            self._background(server.drop_session(episode.trajectory_id))
        logger.warning("environment worker %d lost episode %s: %s", worker, episode.trajectory_id, exc)
        return Trajectory(
            trajectory_id=episode.trajectory_id,
            task_id=episode.task.id,
            group_id=episode.group_id,
            status="failed_infra",
            error=f"environment worker {worker} died or could not be reached: {type(exc).__name__}",
            metrics={"env/episode_s": anyio.current_time() - episode.started_at},
        )

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_restarted(self, index: int) -> None:
        """Wait until the worker answers again (Ray restarting it, or a passing failure to reach it); mark it
        gone when Ray gives up."""
        worker = self._workers[index]
        try:
            worker.saw(await _when_up(worker.actor.pid))
        except Exception as exc:
            if not worker.gone:
                logger.error("environment worker %d is gone (%s): its slots stay empty", index, exc)
            worker.gone = True
            raise
        worker.down = False

    async def _poll(self) -> None:
        """Keep the live episodes' progress (first version, calls) and the workers' counters fresh."""
        while True:
            await anyio.sleep(_POLL_S)
            for index, worker in enumerate(self._workers):
                try:
                    with anyio.fail_after(10):
                        pid, episodes, stats = await worker.actor.snapshot.remote()
                except Exception:  # dead or restarting: its episodes end through run_episode
                    logger.debug("environment worker %d: no snapshot", index, exc_info=True)
                    continue
                worker.saw(pid)
                if stats:
                    worker.last = stats
                for seen in episodes:
                    dealt = self._dealt.get(seen.trajectory_id)
                    if dealt is not None:
                        dealt.episode.first_version = seen.first_version
                        dealt.episode.model_calls = seen.model_calls
                        dealt.episode.tool_calls = seen.tool_calls


class _RemoteMethod(Protocol):
    """A Ray actor method (``handle.method``)."""

    def remote(self, *args: Any) -> Any: ...


async def _when_up(method: _RemoteMethod) -> Any:
    """Call an actor method taking no arguments, retrying while Ray restarts the actor (calls to a restarting
    actor fail at once with ``ActorUnavailableError``); ``ActorDiedError`` once Ray gave up on it, TimeoutError
    past ``_RESTART_TIMEOUT_S``."""
    from ray.exceptions import ActorUnavailableError

    with anyio.fail_after(_RESTART_TIMEOUT_S):
        while True:
            try:
                return await method.remote()
            except ActorUnavailableError:
                await anyio.sleep(0.2)


async def _quietly(ref: Any) -> None:
    try:
        await ref
    except Exception:  # the worker died: its episodes end as failed_infra anyway
        logger.debug("a background call to an environment worker failed", exc_info=True)
