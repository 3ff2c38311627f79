"""Rollout servers as Ray actors (``rollout.backend: ray``): placed by Ray, restarted by Ray, reached over HTTP.

Each server is an actor (:class:`_RolloutServerActor`) that runs :func:`serve_rollout_server` (the service the
in-process backend builds for that server index: same engine, sampling and seed) on an event loop of its own and
reports its address. Ray places it by resources (``num_cpus``: the server's torch threads) and restarts it when
its process dies; a restarted actor starts from the newest weights file the run published. The training process
talks to it as to any remote rollout server (:class:`RayRolloutServer`, a
:class:`~agentscope.rl.rollout.RemoteRolloutServer`): chat and weights over HTTP, token arrays as JSON. Episodes
in flight on a server that dies fail as ``failed_infra``; once the actor is back, the driver rebinds to its new
address.

The actor binds 127.0.0.1 when it runs on the driver's node, else the node's address (the rollout app has no
authentication: keep the cluster's network private). Weight files are read by path, so on several machines
``DIR/weights`` must be on a shared disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread

from agentscope.exceptions import ModelConnectionError, ModelError
from agentscope.message import Msg
from agentscope.models import ChatResponse, ModelSettings, ToolSchema
from agentscope.rl.rollout import RemoteRolloutServer, WeightPublisher

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig
    from agentscope.rl.policy import TokenizerLike

__all__ = ["PLACE_TIMEOUT_S", "RayRolloutServer", "ensure_ray", "local_cpus", "wait_placed"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_START_TIMEOUT_S = 300.0
PLACE_TIMEOUT_S = 120.0
"""Longest the data manager's, the trainer's or an environment worker's actor may wait to be placed and to start
(read at each start, so a test may lower it here)."""
_WATCH_EVERY_S = 1.0


_INIT_LOCK = threading.Lock()
"""Servers start at once, each connecting from a worker thread: one of them starts Ray, the others wait (two
``ray.init`` at once would start two local clusters, and the second takes the first one's place)."""


def ensure_ray(num_cpus: int | None = None) -> Any:
    """``ray``, connected: to the cluster in ``RAY_ADDRESS`` when set, else a local one (dashboard off).

    Thread-safe and blocking, but call it from a thread that lives as long as the process (the main thread): the
    processes of a local cluster are killed when the thread that started them exits."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError("the Ray backends need Ray: pip install -e '.[scale]'") from exc
    with _INIT_LOCK:
        if not ray.is_initialized():
            _init(ray, num_cpus)
    return ray


def local_cpus(config: RLConfig) -> int:
    """CPUs a local Ray cluster of this run declares: the machine's, or what the run's actors reserve when that
    is more (Ray's CPUs are a placement budget: on one machine, an actor that finds none free waits forever)."""
    wanted = config.data.cpus if config.data.placement == "ray" else 0.0
    if config.rollout.backend == "ray":
        wanted += config.rollout.servers * float(config.rollout.threads or 1)
    if config.env.backend == "ray":
        wanted += config.env.workers * config.env.worker_cpus
    if config.trainer.placement == "ray":
        wanted += config.trainer.cpus * config.trainer.ranks  # verl_fsdp: one actor per rank
    return max(os.cpu_count() or 1, math.ceil(wanted))


async def wait_placed(
    ray: Any, actor: Any, started: Awaitable[_T], *, timeout_s: float, unplaced: BaseException
) -> _T:
    """Await ``started`` (calls to a new ``actor`` that answer once it runs), at most ``timeout_s``; past that, the
    cluster has not the resources free to place it, and ``unplaced`` is raised. Whenever this fails (not placed,
    its constructor raised, or cancelled), the actor is killed first: never closed, since an actor not placed yet
    answers no call, and one that was only starting has nothing to finish."""
    try:
        with anyio.move_on_after(timeout_s):
            return await started
        raise unplaced
    except BaseException:
        ray.kill(actor, no_restart=True)
        raise


def _init(ray: Any, num_cpus: int | None) -> None:
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


class _RolloutServerActor:
    """The actor body (``ray.remote`` makes it an actor class in :meth:`RayRolloutServer.__aenter__`): serves one
    rollout server in a thread."""

    def __init__(
        self,
        config_json: str,
        model_dir: str,
        index: int,
        version: int,
        weights_dir: str,
        driver_ip: str,
        token: str,
    ) -> None:
        from agentscope.rl._config import RLConfig

        self._config = RLConfig.model_validate_json(config_json)
        self._token = token
        self._stopping = False
        self._ready = threading.Event()
        self._url: str | None = None
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # A restarted actor starts from the newest weights the run published (never from an older version).
        newest = WeightPublisher(weights_dir).newest()
        weights = newest[1] if newest is not None and newest[0] > version else None
        self._version = newest[0] if weights is not None and newest is not None else version
        host = "127.0.0.1" if _node_ip() == driver_ip else _node_ip()
        self._weights_dir = Path(weights_dir)
        self._thread = threading.Thread(
            target=self._serve, args=(Path(model_dir), index, weights, host), daemon=True
        )
        self._thread.start()

    def _serve(self, model_dir: Path, index: int, weights: Path | None, host: str) -> None:
        from agentscope.rl._rollout_process import serve_rollout_server

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(line: str) -> None:
                import json

                from agentscope.rl._rollout_process import READY_PREFIX

                self._url = str(json.loads(line.removeprefix(READY_PREFIX))["url"])
                self._ready.set()

            await serve_rollout_server(
                self._config,
                model_dir,
                index=index,
                version=self._version,
                weights=weights,
                weights_dir=self._weights_dir,
                host=host,
                token=self._token,
                ready=ready,
                until=self._stop.wait,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by where() before the server serves
            self._error = exc
        if self._url is not None and not self._stopping:
            # It served, then stopped on its own: end the process, so that Ray restarts the actor (a live actor
            # whose server is gone would never be replaced).
            logger.error(
                "the rollout server stopped serving (%r); exiting for Ray to restart it", self._error
            )
            os._exit(1)
        self._ready.set()

    def where(self) -> tuple[str, int]:
        """The server's address and the actor's process id, once it serves (raises what stopped it from
        starting). A different process id means Ray restarted the actor."""
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TimeoutError(f"the rollout server did not serve within {_START_TIMEOUT_S:g} s")
        if self._url is None:
            raise RuntimeError(f"the rollout server failed to start: {self._error!r}")
        return self._url, os.getpid()

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def stop(self) -> None:
        """Stop serving (the actor stays until it is killed)."""
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def _node_ip() -> str:
    import ray.util

    get_ip = cast("Callable[[], str]", ray.util.get_node_ip_address)  # pyright: ignore[reportUnknownMemberType]
    return get_ip()


class RayRolloutServer(RemoteRolloutServer):
    """Rollout server ``index`` of a run, as a Ray actor that Ray places and restarts (see the module docstring).

    Args:
        config: The run's config.
        model_dir: The policy the server starts from (a path every node can read).
        index: Which server of the run (its seed).
        version: The policy version of ``model_dir``.
        publisher: The run's weight publisher (updates, and the newest weights after a restart).
        tokenizer: The policy's tokenizer (for ``count_tokens``).
        num_cpus: Ray's CPU reservation for the actor (default: ``rollout.threads``, else 1).
        max_restarts: Restarts after which Ray leaves a dead server dead (its calls fail; the router avoids it).
    """

    def __init__(
        self,
        config: RLConfig,
        model_dir: Path,
        *,
        index: int,
        version: int,
        publisher: WeightPublisher,
        tokenizer: TokenizerLike | None = None,
        num_cpus: float | None = None,
        max_restarts: int = 5,
    ) -> None:
        token = secrets.token_urlsafe(24)
        super().__init__("http://127.0.0.1:0", publisher, tokenizer=tokenizer, version=version, token=token)
        self.config = config
        self.model_dir = model_dir
        self.index = index
        self.num_cpus = num_cpus if num_cpus is not None else float(config.rollout.threads or 1)
        self.max_restarts = max_restarts
        self._secret = token
        self._initial_version = version
        self._actor: Any = None
        self._actor_pid: int | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RayRolloutServer(index={self.index}, url={self.base_url!r})"

    @property
    def actor(self) -> Any:
        """The Ray actor handle (None before entering)."""
        return self._actor

    @property
    def available(self) -> bool:
        """Answering, and not being found again after a restart (see :attr:`RemoteRolloutServer.available`)."""
        recovering = self._recovering is not None and not self._recovering.done()
        return not recovering and super().available

    async def __aenter__(self) -> RayRolloutServer:
        publisher = self.publisher
        assert publisher is not None

        def paths() -> tuple[str, str]:  # absolute: Ray's workers have a working directory of their own
            return str(publisher.root.resolve()), str(self.model_dir.resolve())

        try:
            # On this thread, blocking for the seconds Ray takes to start, never on a worker thread: a local
            # Ray's GCS and raylet die with the *thread* that started them (PR_SET_PDEATHSIG), and an idle worker
            # thread is retired after a few seconds, which killed the cluster in the middle of runs.
            ray = ensure_ray(local_cpus(self.config))
            weights_dir, model_dir = await anyio.to_thread.run_sync(paths)
            actor_class = ray.remote(_RolloutServerActor)
            self._actor = actor_class.options(
                num_cpus=self.num_cpus, max_restarts=self.max_restarts, max_task_retries=-1
            ).remote(
                self.config.model_dump_json(),
                model_dir,
                self.index,
                self._initial_version,
                weights_dir,
                _node_ip(),
                self._secret,
            )
            url, self._actor_pid = await self._actor.where.remote()
            self.rebind(url)
            await self.refresh()
        except BaseException:
            await self._shutdown()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        """Notice a restart of the actor even when no request from here fails (the agents may talk to the server
        from elsewhere: environment actors), by asking Ray for its process id now and then."""
        while self._actor is not None:
            await anyio.sleep(_WATCH_EVERY_S)
            if self._actor is None or (self._recovering is not None and not self._recovering.done()):
                continue
            try:
                with anyio.fail_after(_START_TIMEOUT_S):
                    pid = await self._actor.pid.remote()  # waits while Ray restarts it
            except Exception:  # gone for good, or slow: the next round asks again
                logger.debug("rollout server %d: no process id", self.index, exc_info=True)
                continue
            if pid != self._actor_pid:
                self._recover()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        with anyio.CancelScope(shield=True):
            for attribute in ("_recovering", "_watcher"):
                task: asyncio.Task[None] | None = getattr(self, attribute)
                setattr(self, attribute, None)
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            try:
                await self.aclose()
            finally:
                actor, self._actor = self._actor, None
                if actor is not None:
                    import ray

                    try:
                        with anyio.fail_after(30):
                            await actor.stop.remote()
                    except Exception:  # it is killed next either way
                        logger.debug("stopping rollout server %d failed", self.index, exc_info=True)
                    ray.kill(actor, no_restart=True)

    async def chat(
        self,
        session_id: str | None,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """As :meth:`RemoteRolloutServer.chat`; a refused connection starts finding the restarted actor."""
        try:
            return await super().chat(session_id, messages, tools=tools, settings=settings)
        except ModelConnectionError:
            self._recover()
            raise

    async def update_weights(self, state_dict: Any, version: int) -> None:
        """As :meth:`RemoteRolloutServer.update_weights`; while the actor is down the update is left to its
        restart (which loads the newest published version), and the driver rebinds once it is back."""
        try:
            await super().update_weights(state_dict, version)
        except ModelConnectionError:
            logger.warning(
                "rollout server %d is down: it will load version %d when it restarts", self.index, version
            )
            self._recover()

    def _recover(self) -> None:
        if self._actor is None or (self._recovering is not None and not self._recovering.done()):
            return
        self._recovering = asyncio.get_running_loop().create_task(self._rebind_when_back())

    async def _rebind_when_back(self) -> None:
        """Ask Ray where the (restarted) actor serves; rebind and catch up when it is a new process."""
        try:
            (
                url,
                pid,
            ) = await self._actor.where.remote()  # queued by Ray until the actor is back (max_task_retries)
        except Exception:  # the actor is gone for good: its calls keep failing, and the router avoids it
            logger.exception("rollout server %d did not come back", self.index)
            return
        if pid == self._actor_pid:
            return  # the same process: a transient refusal, nothing was lost
        self._actor_pid = pid
        self.rebind(url)
        self.restarts += 1
        try:
            answer = await self._request("GET", "/weights")
            self._version = int(answer.json()["version"])  # the restarted actor's own (possibly older)
            await self.catch_up()
        except (ModelError, ValueError, KeyError, TypeError):
            logger.exception("rollout server %d came back but does not answer", self.index)

    async def wait_recovered(self) -> None:
        """Wait for a rebind in progress (if any) to end."""
        if self._recovering is not None:
            await asyncio.shield(self._recovering)
