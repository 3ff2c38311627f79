"""The trainer as a Ray actor (``trainer.placement: ray``): the model lives in a process of its own.

The actor (:class:`_TrainerActor`) loads the policy from the model directory itself, builds the trainer exactly as
the in-process placement does (:func:`~agentscope.rl._components.build_trainer`, same threads), restores the
checkpoint's trainer state and RNGs when the run resumes, and writes the checkpoints itself (an
:class:`~agentscope.rl.trainer.AsyncCheckpointer` on the run directory; the driver sends only the JSON ``extra``:
data cursor, task order, version, config). The driver keeps :class:`RayTrainer`, the scheduler's ``TrainerPort``:
each batch goes to the actor as a Ray object (``ray.put``: the trajectories hold the token arrays) and the weights
for the rollout servers come back through the object store as a state dict. The driver loads no model to train
(the warm start, the evaluation and an in-process rollout engine load theirs, as with the trainer in process).

Ray places the actor by ``trainer.cpus`` and ``trainer.gpus`` and never restarts it (``max_restarts=0``): its
optimizer state is in no other process, so a trainer that dies ends the run at once with a
:class:`~agentscope.rl.trainer.TrainerLostError` naming it (a call that never returns watches for that, so the run
does not wait for its next batch to notice), and ``--resume`` goes on from the last checkpoint. The actor is named
after the run directory (:func:`trainer_actor_name`), so ``ray.get_actor`` finds it from the driver (the name
lives in the driver's Ray namespace).

The actor runs its methods in a few threads (one of them held by the watch call): the driver sends one call at a
time, and the checkpoint's writer is a thread of the actor's process, as in process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread
from pydantic import JsonValue

from agentscope.rl._types import Trajectory
from agentscope.rl.trainer import CheckpointError, TrainerLostError

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig
    from agentscope.rl.trainer import CheckpointState

__all__ = ["RayTrainer", "trainer_actor_name"]

logger = logging.getLogger(__name__)

_CONCURRENCY = 3
"""Threads of the actor: the watch call, the driver's one call at a time, and a spare (``stats`` while closing)."""


def trainer_actor_name(run_dir: Path) -> str:
    """The Ray name of the trainer actor of the run in ``run_dir`` (an absolute path: resolve it first)."""
    return f"agentscope-trainer:{run_dir}"


class _TrainerActor:
    """The actor body (``ray.remote`` makes it an actor class in :meth:`RayTrainer.start`): the trainer of one
    run and its checkpointer."""

    def __init__(self, config_json: str, run_dir: str) -> None:
        from agentscope.rl._config import RLConfig

        self._config = RLConfig.model_validate_json(config_json)
        if self._config.trainer.gpus == 0:
            # Ray narrows CUDA_VISIBLE_DEVICES only for an actor that reserves GPUs: one that reserves none would see
            # every GPU of its node, and device auto would take one that Ray gave to another actor.
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self._run_dir = Path(run_dir)
        self._closed = threading.Event()
        self._trainer: Any = None
        self._tokenizer: Any = None
        self._checkpointer: Any = None

    def start(self, model_dir: str, resume: tuple[dict[str, Any], dict[str, Any]] | None) -> int:
        """Load the policy from ``model_dir``, build the trainer and, resuming, restore ``(trainer_state, rng)``
        of the checkpoint; returns the process id."""
        from transformers import AutoModelForCausalLM

        from agentscope.rl._components import build_trainer, set_torch_threads
        from agentscope.rl.policy import load_tokenizer
        from agentscope.rl.trainer import AsyncCheckpointer, CheckpointState

        set_torch_threads(self._config.threads)
        path = Path(model_dir)
        self._tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        self._trainer = build_trainer(self._config, model, self._tokenizer, path)
        if resume is not None:
            trainer_state, rng = resume
            self._trainer.load_state_dict(trainer_state)
            CheckpointState(
                step=0, path=path, trainer_state=trainer_state, rng=rng, extra={}, created_at=0.0
            ).restore_rng()
        self._checkpointer = AsyncCheckpointer(self._run_dir, keep=self._config.schedule.keep_checkpoints)
        return os.getpid()

    def train(self, batch: list[Trajectory], step: int) -> dict[str, float]:
        """One update on ``batch``; its metrics."""
        from agentscope.rl._components import set_torch_threads

        set_torch_threads(
            self._config.threads
        )  # per thread: torch's intra-op setting is the calling thread's
        return self._trainer.step(batch, step=step)

    def weights(self) -> dict[str, Any]:
        """The policy's weights for the rollout servers (detached CPU copies)."""
        return self._trainer.weights_for_rollout()

    def save(self, step: int, extra: dict[str, JsonValue]) -> None:
        """Snapshot a checkpoint of ``step`` now and write it in the background (as in process)."""
        from agentscope.rl._components import set_torch_threads

        set_torch_threads(self._config.threads)
        self._checkpointer.save(
            step=step,
            model=self._trainer.model,
            tokenizer=self._tokenizer,
            trainer_state=self._trainer.state_dict(),
            extra=extra,
        )

    def stats(self) -> dict[str, float]:
        """The last checkpoint's statistics (``checkpoint/...``)."""
        return {} if self._checkpointer is None else self._checkpointer.stats()

    def wait(self) -> None:
        """Block until the checkpoint being written is complete (raises what failed it)."""
        if self._checkpointer is not None:
            self._checkpointer.wait()

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def watch(self) -> None:
        """Return when the actor is closed: the driver keeps this call pending, and Ray fails it the moment the
        actor's process dies."""
        self._closed.wait()

    def close(self) -> None:
        """Finish the checkpoint being written and end :meth:`watch`."""
        try:
            self.wait()
        finally:
            self._closed.set()


class RayTrainer:
    """The trainer of a run as a Ray actor (see the module docstring): the scheduler's ``TrainerPort``, plus the
    checkpoints the runner asks for.

    Args:
        config: The run's config (``trainer.cpus`` and ``trainer.gpus`` place the actor).
        run_dir: The run directory (checkpoints are written under it, by the actor: on several machines, a shared
            disk).
    """

    def __init__(self, config: RLConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self._name = trainer_actor_name(run_dir)
        self._actor: Any = None
        self._watch: Any = None
        self._pid: int | None = None
        self._lost: TrainerLostError | None = None

    def __repr__(self) -> str:
        return f"RayTrainer(run_dir={str(self.run_dir)!r}, pid={self._pid})"

    @property
    def actor(self) -> Any:
        """The Ray actor handle (None before :meth:`start` and after :meth:`aclose`)."""
        return self._actor

    @property
    def pid(self) -> int | None:
        """The actor's process id, once started."""
        return self._pid

    async def start(self, model_dir: Path, checkpoint: CheckpointState | None = None) -> RayTrainer:
        """Create the actor, load the policy in ``model_dir`` there and, resuming, restore ``checkpoint``'s
        trainer state and RNGs. Call it on the main thread's event loop (it may start a local Ray cluster).

        Raises:
            CheckpointError: resuming, and the checkpoint's model, tokenizer or trainer state does not load.
            TrainerLostError: the actor was not placed in time, or died while starting.
        """
        from agentscope.rl import _rollout_ray
        from agentscope.rl._rollout_ray import ensure_ray, local_cpus, wait_placed

        place_timeout_s = _rollout_ray.PLACE_TIMEOUT_S

        ray = ensure_ray(local_cpus(self.config))  # on this thread: see ensure_ray
        run_dir, model_path = await anyio.to_thread.run_sync(
            lambda: (self.run_dir.resolve(), model_dir.resolve())
        )
        self._name = trainer_actor_name(run_dir)
        resume = None
        if checkpoint is not None:
            resume = await anyio.to_thread.run_sync(ray.put, (checkpoint.trainer_state, checkpoint.rng))
        trainer = self.config.trainer
        self._actor = (
            ray.remote(_TrainerActor)
            .options(
                num_cpus=trainer.cpus,
                num_gpus=trainer.gpus,
                max_restarts=0,
                max_concurrency=_CONCURRENCY,
                name=self._name,
            )
            .remote(self.config.model_dump_json(), str(run_dir))
        )
        unplaced = TrainerLostError(
            f"the trainer actor was not placed within {place_timeout_s:g} s: the Ray cluster has no "
            f"{trainer.cpus:g} CPUs and {trainer.gpus:g} GPUs free for it (ray status shows what is free); lower "
            "trainer.cpus or trainer.gpus"
        )
        try:
            started = self._call(self._actor.pid)
            self._pid = await wait_placed(
                ray, self._actor, started, timeout_s=place_timeout_s, unplaced=unplaced
            )
        except BaseException:
            self._actor = None  # killed: an actor not placed would never answer close
            raise
        try:
            self._watch = self._actor.watch.remote()
            try:
                await self._call(self._actor.start, str(model_path), resume)
            except TrainerLostError:
                raise
            except Exception as exc:
                if checkpoint is None:
                    raise
                cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the actor's exception
                raise CheckpointError(
                    f"{model_dir}: the model, tokenizer or trainer state cannot be loaded: {cause}"
                ) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    # ------------------------------------------------------------------ the TrainerPort

    async def train(self, batch: list[Trajectory], *, step: int) -> dict[str, float]:
        """One update on ``batch`` in the actor (the batch goes through the object store); its metrics.

        Raises:
            TrainerLostError: the actor died (its process killed, its node lost).
        """
        import ray

        ref = await anyio.to_thread.run_sync(lambda: ray.put(batch))
        return await self._call(self._actor.train, ref, step)

    async def weights(self) -> Any:
        """The policy's weights (a state dict of CPU tensors, through the object store)."""
        return await self._call(self._actor.weights)

    # ------------------------------------------------------------------ checkpoints and lifetime

    async def save(self, *, step: int, extra: Mapping[str, JsonValue]) -> None:
        """Checkpoint ``step`` in the actor: its weights, optimizer, RNGs and ``extra`` (the driver's state)."""
        await self._call(self._actor.save, step, dict(extra))

    async def stats(self) -> dict[str, float]:
        """The last checkpoint's statistics (``checkpoint/...``)."""
        return await self._call(self._actor.stats)

    async def wait(self) -> None:
        """Wait for the checkpoint being written."""
        await self._call(self._actor.wait)

    async def watch(self) -> None:
        """Return once the actor is closed; raise :class:`TrainerLostError` the moment it dies."""
        if self._watch is None:
            return
        try:
            await self._watch
        except Exception as exc:
            raise self._lose(exc) from exc

    async def aclose(self) -> None:
        """Let the checkpoint being written finish, then remove the actor (a dead one is only forgotten)."""
        with anyio.CancelScope(shield=True):
            actor, self._actor = self._actor, None
            if actor is None:
                return
            import ray

            if self._lost is None:
                try:
                    with anyio.fail_after(600):  # a checkpoint of a large model takes its time to write
                        await actor.close.remote()
                except Exception:  # killed next either way
                    logger.warning("closing the trainer actor failed", exc_info=True)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    # ------------------------------------------------------------------ internals

    async def _call(self, method: Any, *args: Any) -> Any:
        """``await method.remote(*args)``; a dead actor becomes :class:`TrainerLostError`."""
        from ray.exceptions import RayActorError

        if self._lost is not None:
            raise self._lost
        if self._actor is None:
            raise TrainerLostError("the trainer actor is not running (closed, or never started)")
        try:
            return await method.remote(*args)
        except RayActorError as exc:
            raise self._lose(exc) from exc

    def _lose(self, exc: BaseException) -> TrainerLostError:
        if self._lost is None:
            lines = cast(str, getattr(exc, "error_msg", None) or str(exc)).strip().splitlines()
            reason = lines[0].rstrip(".") if lines else "?"
            self._lost = TrainerLostError(
                f"the trainer (trainer.placement: ray, actor {self._name!r}, process {self._pid}) died: "
                f"{type(exc).__name__}: {reason}. The run stops here; continue it from its last checkpoint with "
                "--resume"
            )
        return self._lost
