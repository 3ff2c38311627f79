"""verl's FSDP actor worker on its ranks: one in this process, or one Ray actor per rank driven as verl drives them.

:class:`LocalRanks` is one ``ActorRolloutRefWorker`` built in this process over a one-rank process group (what
``trainer.placement: inprocess`` runs). :class:`RayRanks` is verl's own single-controller layout, as its
``RayPPOTrainer`` runs the actor: a ``RayWorkerGroup`` of :class:`RankWorker` actors, one per rank, in one Ray
placement group (a bundle of ``cpus`` CPUs and ``gpus`` GPUs per rank), joined in one process group (gloo on the
CPU, NCCL with GPUs) at the address verl picks on rank 0's node. Calls go through verl's dispatch:
``compute_log_prob`` and ``update_actor`` split the batch into one contiguous chunk per data-parallel rank and
gather the outputs back in order; FSDP2 shards the parameters, gradients and AdamW state over the ranks and
averages the gradients, and verl normalises each rank's loss by the global token count, so N ranks make the same
update as one.

Both expose the same calls (:class:`Ranks`). The full weights and the optimizer state are gathered with
``torch.distributed.checkpoint``'s full state dicts, a collective every rank joins (:class:`RankWorker`'s extra
methods, dispatched to all ranks); rank 0's copy comes back.

Importing this module installs verl's CPU platform when torch sees no GPU (:func:`install_platform`), before
verl's engine modules load: a Ray actor process imports it to build :class:`RankWorker`, so the platform must be in
place at import, not when the class is first used.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

import anyio
import torch
import torch.distributed as dist

from agentscope.rl.trainer._errors import TrainerLostError
from agentscope.rl.trainer._verl_platform import install_platform, process_group_backend

_F = TypeVar("_F", bound=Callable[..., Any])

_COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
"""How long a rank waits in a collective for the others."""

install_platform()  # before verl.workers.engine_workers loads (see the module docstring)

from verl.single_controller.base import decorator as _decorator  # noqa: E402
from verl.single_controller.ray import RayWorkerGroup  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402


def _register(*, dispatch_mode: Any) -> Callable[[_F], _F]:
    """verl's ``register`` (which marks a worker method with how the group dispatches it), typed."""
    return cast(Callable[[_F], _F], _decorator.register(dispatch_mode=dispatch_mode))  # pyright: ignore[reportUnknownMemberType]


_TO_EVERY_RANK: Any = getattr(_decorator.Dispatch, "ONE_TO_ALL")  # noqa: B009 (a member verl adds at import)

__all__ = ["LocalRanks", "RankWorker", "Ranks", "RayRanks", "full_state_dict", "load_trainer_state"]


def full_state_dict(worker: Any) -> dict[str, torch.Tensor]:
    """The actor's full (unsharded) weights on CPU, keyed as the Hugging Face model's. A collective: every rank
    calls it; rank 0 gets the full copy (``cpu_offload``: the other ranks get nothing)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return cast(dict[str, torch.Tensor], get_model_state_dict(worker.actor.engine.module, options=options))


def trainer_state(worker: Any) -> dict[str, Any]:
    """The actor's full optimizer state (keyed by parameter name, on CPU) and its LR scheduler's. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    engine = worker.actor.engine
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {
        "optimizer": get_optimizer_state_dict(engine.module, engine.optimizer, options=options),
        "lr_scheduler": engine.lr_scheduler.state_dict(),
    }


def load_trainer_state(worker: Any, state: Mapping[str, Any]) -> None:
    """Restore :func:`trainer_state` (saved by any number of ranks: the state is full, each rank keeps its shard).
    A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    engine = worker.actor.engine
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(
        engine.module, engine.optimizer, optim_state_dict=state["optimizer"], options=options
    )
    engine.lr_scheduler.load_state_dict(state["lr_scheduler"])


class RankWorker(ActorRolloutRefWorker):
    """verl's ``ActorRolloutRefWorker`` as one rank of :class:`RayRanks`: it joins the ranks' process group (from
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, set by verl's ``RayWorkerGroup``) with the
    backend of its device before verl's worker would pick NCCL, and adds the collectives the checkpointer needs.
    Only rank 0 returns what they gather (the other ranks return ``None``: nothing to send back)."""

    def __init__(self, config: Any, role: str, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        if not dist.is_initialized():
            dist.init_process_group(
                process_group_backend(),
                rank=int(os.environ["RANK"]),
                world_size=int(os.environ["WORLD_SIZE"]),
                # a collective that hangs with no process dead (a peer that dies closes its connections, which
                # fails the others at once) fails after this, not after gloo's default 30 minutes
                timeout=_COLLECTIVE_TIMEOUT,
            )
        super().__init__(config, role)

    @_register(dispatch_mode=_TO_EVERY_RANK)
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """:func:`full_state_dict` (rank 0's; ``None`` elsewhere)."""
        state = full_state_dict(self)
        return state if dist.get_rank() == 0 else None

    @_register(dispatch_mode=_TO_EVERY_RANK)
    def trainer_state(self) -> dict[str, Any] | None:
        """:func:`trainer_state` (rank 0's; ``None`` elsewhere)."""
        state = trainer_state(self)
        return state if dist.get_rank() == 0 else None

    @_register(dispatch_mode=_TO_EVERY_RANK)
    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        """:func:`load_trainer_state` on every rank."""
        load_trainer_state(self, state)

    @_register(dispatch_mode=_TO_EVERY_RANK)
    def pid(self) -> int:
        """This rank's process id."""
        return os.getpid()

    async def watch(self) -> None:
        """Never returns: the controller awaits it to learn at once that this rank's process died (verl's worker
        is an async Ray actor, so this waits beside the calls)."""
        await asyncio.Event().wait()

    @_register(dispatch_mode=_TO_EVERY_RANK)
    def free_address(self) -> tuple[str, str]:
        """This rank's node address and a port free on it: where the ranks of another group placed in the same
        bundles can meet (verl would find one with a task in the bundle, which needs a CPU the ranks hold)."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        host = cast(str, ray.util.get_node_ip_address())  # pyright: ignore[reportUnknownMemberType]
        return host.strip("[]"), str(port)


class _WorkerGroup(RayWorkerGroup):
    """verl's ``RayWorkerGroup``, meeting at ``address`` when given. (verl 0.9.1 takes ``master_addr`` and
    ``master_port`` arguments but its base class's constructor resets them, so it always looks for a port with a
    task in rank 0's bundle; a colocated group's bundles have no CPU free for that task.)"""

    def __init__(self, *args: Any, address: tuple[str, str] | None = None, **kwargs: Any) -> None:
        self._address = address
        super().__init__(*args, **kwargs)

    def _get_master_addr_port(self, pg: Any, bundle_index: int = 0, master_port_range: Any = None) -> None:
        if self._address is None:
            super()._get_master_addr_port(pg, bundle_index=bundle_index, master_port_range=master_port_range)
        else:
            self._master_addr, self._master_port = self._address


class Ranks(Protocol):
    """The actor's ranks, wherever they run."""

    world_size: int
    """How many ranks share the batch (verl pads nothing: a batch must split into this many equal chunks)."""

    def compute_log_prob(self, data: Any) -> Any:
        """verl's ``compute_log_prob`` over ``data`` (a TensorDict), outputs in the rows' order."""
        ...

    def update_actor(self, data: Any) -> Any:
        """verl's ``update_actor`` over ``data``; its output's ``metrics`` (lists over mini-batches)."""
        ...

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The full trained weights on CPU."""
        ...

    def trainer_state(self) -> dict[str, Any]:
        """The full optimizer and LR-scheduler state."""
        ...

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`trainer_state`."""
        ...

    async def watch(self) -> None:
        """Raise :class:`TrainerLostError` the moment a rank dies; never returns while they live."""
        ...

    def close(self) -> None:
        """Release the ranks."""
        ...


class LocalRanks:
    """One rank, in this process (``worker`` is verl's ``ActorRolloutRefWorker`` with its model initialised)."""

    world_size = 1

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def compute_log_prob(self, data: Any) -> Any:
        return self.worker.compute_log_prob(data)

    def update_actor(self, data: Any) -> Any:
        return self.worker.update_actor(data)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return full_state_dict(self.worker)

    def trainer_state(self) -> dict[str, Any]:
        return trainer_state(self.worker)

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        load_trainer_state(self.worker, state)

    async def watch(self) -> None:
        await anyio.sleep_forever()  # nothing of it can die without this process

    def close(self) -> None:
        return None


class RayRanks:
    """``ranks`` :class:`RankWorker` actors in a verl ``RayWorkerGroup`` (see the module docstring), built and
    initialised (each loads the model from verl's config) by the constructor. Call it with Ray connected.

    Args:
        config: verl's ``actor_rollout_ref`` config (as :class:`~agentscope.rl.trainer.VerlFSDPTrainer` composes
            it).
        ranks: the data-parallel ranks.
        cpus: Ray's CPU reservation per rank (at least 1: verl finds rank 0's address with a task in its bundle).
        gpus: GPUs per rank (0 or 1: verl's FSDP worker trains on the one GPU its rank owns).
        threads: torch's threads in each rank (``None``: torch's default).
        name: a label for the ranks in errors and in Ray's actor names.
        place_timeout_s: how long to wait for the cluster to have the resources free.
        shared: another group will be colocated with these ranks (``colocate_with``): each takes half of its
            bundle's GPU.
        colocate_with: ranks already placed (made with ``shared``) whose bundles these share, rank for rank (the
            reference policy's ranks beside the actor's, as verl colocates them): they reserve no CPU of their own
            and the other half of the GPU (the two are called one after the other, never at once).

    Raises:
        TrainerLostError: the cluster did not have the resources free in time, or a rank died while starting.
    """

    def __init__(
        self,
        config: Any,
        *,
        ranks: int,
        cpus: float = 1.0,
        gpus: float = 0.0,
        threads: int | None = None,
        name: str = "verl actor",
        place_timeout_s: float = 60.0,
        shared: bool = False,
        colocate_with: RayRanks | None = None,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool

        self.world_size = ranks
        self.name = name
        self._closed = False
        self._workers: Any = None
        started = time.monotonic()
        address: tuple[str, str] | None = None
        if colocate_with is None:
            bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
            self._group: Any = placement_group([dict(bundle) for _ in range(ranks)], strategy="PACK")
            self._owns_group = True  # removing it kills every actor placed in it, the colocated ones too
            reserved = {"num_cpus": cpus, "num_gpus": gpus / 2 if shared else gpus}
        else:
            self._group = colocate_with._group
            self._owns_group = False
            reserved = {"num_cpus": 0, "num_gpus": gpus / 2}
        try:
            if colocate_with is None and not self._group.wait(place_timeout_s):
                raise TrainerLostError(
                    f"the {ranks} ranks of the {name} were not placed within {place_timeout_s:g} s: the Ray "
                    f"cluster has no {ranks} × ({cpus:g} CPUs, {gpus:g} GPUs) free for them (ray status shows "
                    "what is free); lower trainer.ranks, trainer.cpus or trainer.gpus"
                )
            if colocate_with is not None:
                address = tuple(colocate_with._call("free_address")[0])
            pool = RayResourcePool([ranks], use_gpu=False, max_colocate_count=1)
            pool.pgs = [self._group]  # verl's own pool would wait for its placement group forever
            actor_class = RayClassWithInitArgs(
                ray.remote(RankWorker), config=config, role="actor", threads=threads
            )
            # resources of each actor in its bundle (verl's pool only reserves GPUs, and with use_gpu asks for
            # them by its platform's name, which a CPU-only driver does not know)
            actor_class.update_options({**reserved, "max_restarts": 0})
            self._workers = _WorkerGroup(
                pool,
                actor_class,
                device_name="cpu" if not gpus else "cuda",
                address=address,
                # Ray narrows CUDA_VISIBLE_DEVICES only for actors that reserve GPUs: a rank that reserves none
                # would see every GPU of its node (set before its process starts: torch reads it once)
                worker_env={} if gpus else {"CUDA_VISIBLE_DEVICES": ""},
            )
            self.pids: list[int] = self._call("pid")
            self._call("init_model")
        except BaseException:
            self.close()
            raise
        self.start_s = time.monotonic() - started
        """Seconds from asking for the placement to every rank holding its model."""

    def _lost(self, during: str, exc: BaseException) -> TrainerLostError:
        return TrainerLostError(
            f"a rank of the {self.name} (Ray actors, processes {getattr(self, 'pids', '?')}) died {during}: {exc}. "
            "The run stops; --resume goes on from its last checkpoint"
        )

    def _call(self, method: str, *args: Any) -> Any:
        """``method`` on the ranks through verl's dispatch; a rank that died is a :class:`TrainerLostError`.
        (When a rank dies inside a collective, the others' gloo connections to it close, so they fail too
        rather than wait.)"""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return getattr(self._workers, method)(*args)
        except RayActorError as exc:
            raise self._lost(f"during {method}", exc) from exc
        except RayTaskError as exc:
            if self._dead():  # a live rank failed because its peer died mid-collective
                raise self._lost(f"during {method}", exc) from exc
            raise

    def _actors(self) -> list[Any]:
        return list(cast(list[Any], self._workers.workers))

    def _dead(self) -> bool:
        """Whether a rank's process is gone: its probe fails with ``RayActorError`` within a few seconds. A rank
        busy in a call (a collective waiting for a peer that raised) answers only later: alive."""
        import ray
        from ray.exceptions import RayActorError

        probes: list[Any] = [actor.pid.remote() for actor in self._actors()]
        done = cast(list[Any], ray.wait(probes, num_returns=len(probes), timeout=5)[0])
        for probe in done:
            try:
                ray.get(probe)
            except RayActorError:
                return True
        return False

    async def watch(self) -> None:
        watches = [actor.watch.remote() for actor in self._actors()]
        try:
            await asyncio.gather(*watches)
        except Exception as exc:
            if not self._closed:
                raise self._lost("while the run went on", exc) from exc

    def compute_log_prob(self, data: Any) -> Any:
        return self._call("compute_log_prob", data)

    def update_actor(self, data: Any) -> Any:
        return self._call("update_actor", data)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return self._call("full_state_dict")[0]

    def trainer_state(self) -> dict[str, Any]:
        return self._call("trainer_state")[0]

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        import ray

        self._call("load_trainer_state", ray.put(state))  # once into the object store, not once per rank

    def close(self) -> None:
        """Kill the rank actors and free their placement group (the actors placed in it die with it). Idempotent."""
        import ray
        from ray.util.placement_group import remove_placement_group

        self._closed = True
        try:
            if self._workers is not None:
                for actor in self._actors():
                    ray.kill(actor, no_restart=True)
        finally:
            if self._group is not None and self._owns_group:
                remove_placement_group(self._group)
            self._group = None
