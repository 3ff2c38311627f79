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
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread

from agentscope.exceptions import ModelConnectionError, ModelError
from agentscope.message import Msg
from agentscope.models import ChatResponse, ModelSettings, ToolSchema
from agentscope.rl.rollout import RemoteRolloutServer, WeightPublisher

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig
    from agentscope.rl.policy import TokenizerLike

__all__ = ["RayRolloutServer", "ensure_ray"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 300.0


def ensure_ray(num_cpus: int | None = None) -> Any:
    """``ray``, connected: to the cluster in ``RAY_ADDRESS`` when set, else a local one (dashboard off)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError("rollout.backend: ray needs Ray: pip install -e '.[scale]'") from exc
    if not ray.is_initialized():
        import os

        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


class _RolloutServerActor:
    """The actor body (made a Ray actor class in :func:`_actor_class`): serves one rollout server in a thread."""

    def __init__(
        self,
        config_json: str,
        model_dir: str,
        index: int,
        version: int,
        weights_dir: str,
        driver_ip: str,
    ) -> None:
        from agentscope.rl._config import RLConfig

        self._config = RLConfig.model_validate_json(config_json)
        self._ready = threading.Event()
        self._url: str | None = None
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        newest = WeightPublisher(weights_dir).versions()  # a restarted actor starts from the newest weights
        weights = WeightPublisher(weights_dir).path(newest[-1]) if newest else None
        self._version = newest[-1] if newest else version
        host = "127.0.0.1" if _node_ip() == driver_ip else _node_ip()
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
                host=host,
                ready=ready,
                until=self._stop.wait,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by url()
            self._error = exc
            self._ready.set()

    def url(self) -> str:
        """The server's address, once it serves (raises what stopped it from starting)."""
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TimeoutError(f"the rollout server did not serve within {_START_TIMEOUT_S:g} s")
        if self._url is None:
            raise RuntimeError(f"the rollout server failed to start: {self._error!r}")
        return self._url

    def pid(self) -> int:
        """The actor's process id."""
        import os

        return os.getpid()

    def stop(self) -> None:
        """Stop serving (the actor stays until it is killed)."""
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
        max_restarts: Restarts after which Ray leaves a dead server dead (its calls fail).
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
        super().__init__("http://127.0.0.1:0", publisher, tokenizer=tokenizer, version=version)
        self.config = config
        self.model_dir = model_dir
        self.index = index
        self.num_cpus = num_cpus if num_cpus is not None else float(config.rollout.threads or 1)
        self.max_restarts = max_restarts
        self.restarts = 0
        """How many times the driver found the actor restarted."""
        self._initial_version = version
        self._actor: Any = None
        self._recovering: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RayRolloutServer(index={self.index}, url={self.base_url!r})"

    @property
    def actor(self) -> Any:
        """The Ray actor handle (None before entering)."""
        return self._actor

    async def __aenter__(self) -> RayRolloutServer:
        publisher = self.publisher
        assert publisher is not None

        def connect() -> tuple[
            Any, str, str
        ]:  # blocking: starting Ray, resolving paths (workers have their own cwd)
            return ensure_ray(), str(publisher.root.resolve()), str(self.model_dir.resolve())

        ray, weights_dir, model_dir = await anyio.to_thread.run_sync(connect)
        actor_class = ray.remote(_RolloutServerActor)
        self._actor = actor_class.options(
            num_cpus=self.num_cpus,
            max_restarts=self.max_restarts,
            max_task_retries=-1,
            name=None,
        ).remote(
            self.config.model_dump_json(),
            model_dir,
            self.index,
            self._initial_version,
            weights_dir,
            _node_ip(),
        )
        try:
            self.rebind(await self._actor.url.remote())
            await self.refresh()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._recovering is not None:
            self._recovering.cancel()
        await self.aclose()
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
        """Ask Ray for the (restarted) actor's address until it answers one that serves."""
        old = self.base_url
        try:
            url = await self._actor.url.remote()  # queued by Ray until the actor is back (max_task_retries)
        except Exception:  # the actor is gone for good: its calls keep failing
            logger.exception("rollout server %d did not come back", self.index)
            return
        if url != old:
            self.rebind(url)
            self.restarts += 1
            self._version = 0  # the restarted actor reports its own
            try:
                await self.refresh()
                await self._catch_up()
            except ModelError:
                logger.exception("rollout server %d came back but does not answer", self.index)

    async def _catch_up(self) -> None:
        """Load the newest published version if one appeared while the actor restarted."""
        publisher = self.publisher
        if publisher is None:
            return

        def newest() -> tuple[int, str] | None:
            versions = publisher.versions()
            return (versions[-1], str(publisher.path(versions[-1]).resolve())) if versions else None

        found = await anyio.to_thread.run_sync(newest)
        if found is not None and found[0] > self._version:
            await self._request(
                "POST", "/weights", json={"version": found[0], "path": found[1]}, allow=(409,)
            )
            self._version = found[0]

    async def wait_recovered(self) -> None:
        """Wait for a rebind in progress (if any) to end."""
        if self._recovering is not None:
            await asyncio.shield(self._recovering)

    def stats(self) -> dict[str, float]:
        """The server's stats, plus ``rollout/server_restarts``."""
        stats = super().stats()
        stats["rollout/server_restarts"] = float(self.restarts)
        return stats
