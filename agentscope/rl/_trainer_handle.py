"""The trainer of a run wherever ``trainer.placement`` puts it, behind one interface the runner uses.

:class:`TrainerHandle` is the scheduler's ``TrainerPort`` (``train``, ``weights``) plus what the runner does
around it: checkpoints (``save``, ``stats``, ``wait``), noticing a trainer that died (``watch``) and closing
(``aclose``). :func:`open_trainer` gives the one ``trainer.placement`` names: :class:`InProcessTrainer` (the model
in this process, torch in worker threads, checkpoints written by this process; with ``backend: verl_fsdp`` and
``placement: ray``, verl's ranks are Ray actors this process drives) or
:class:`~agentscope.rl._trainer_ray.RayTrainer` (backend ``torch`` on Ray: all of it in a Ray actor; this process
loads the tokenizer only).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from pydantic import JsonValue

from agentscope.rl._components import TorchTrainer, build_trainer, load_policy_model, load_policy_tokenizer
from agentscope.rl._config import RLConfig
from agentscope.rl._schedule import TrainerPort

if TYPE_CHECKING:
    from agentscope.rl.trainer import AsyncCheckpointer, CheckpointState, Trainer, VerlFSDPTrainer

__all__ = ["InProcessTrainer", "TrainerHandle", "open_trainer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class TrainerHandle(TrainerPort, Protocol):
    """The trainer as the runner sees it (see the module docstring)."""

    async def save(self, *, step: int, extra: Mapping[str, JsonValue]) -> None:
        """Checkpoint ``step``: the weights, the trainer's state, the RNGs, and ``extra`` (the driver's state:
        data cursor, task order, version, config). Returns once the snapshot is taken; written in the
        background."""
        ...

    async def stats(self) -> dict[str, float]:
        """The last checkpoint's statistics (``checkpoint/...``)."""
        ...

    async def wait(self) -> None:
        """Wait for the checkpoint being written (raises what failed it)."""
        ...

    async def watch(self) -> None:
        """Raise when the trainer is lost (:class:`~agentscope.rl.trainer.TrainerLostError`); never returns for a
        trainer that cannot be lost on its own."""
        ...

    async def aclose(self) -> None:
        """Let the checkpoint being written finish and release the trainer."""
        ...


class InProcessTrainer(TorchTrainer):
    """The trainer driven from this process (``trainer.placement: inprocess``, or verl's ranks on Ray): a
    :class:`TorchTrainer` that also checkpoints ``model`` with an :class:`~agentscope.rl.trainer.AsyncCheckpointer`
    and watches the ranks that can die on their own."""

    def __init__(
        self,
        trainer: Trainer | VerlFSDPTrainer,
        model: Any,
        tokenizer: Any,
        checkpointer: AsyncCheckpointer,
        threads: int | None,
    ) -> None:
        super().__init__(trainer, threads)
        self.model = model
        self.tokenizer = tokenizer
        self.checkpointer = checkpointer

    async def save(self, *, step: int, extra: Mapping[str, JsonValue]) -> None:
        def save() -> None:
            # the trainer's state in the thread too: verl's ranks gather the full optimizer state for it
            self.checkpointer.save(
                step=step,
                model=self.model,
                tokenizer=self.tokenizer,
                trainer_state=self.trainer.state_dict(),
                extra=extra,
            )

        await anyio.to_thread.run_sync(save)

    async def stats(self) -> dict[str, float]:
        return self.checkpointer.stats()

    async def wait(self) -> None:
        await anyio.to_thread.run_sync(self.checkpointer.wait)

    async def watch(self) -> None:
        watch = getattr(self.trainer, "watch", None)  # verl_fsdp: its ranks, Ray actors with placement ray
        if watch is None:
            await anyio.sleep_forever()  # nothing of it can die without this process
        else:
            await watch()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.wait()
            finally:
                await anyio.to_thread.run_sync(_close, self.trainer)


async def open_trainer(
    config: RLConfig, root: Path, model_dir: Path, checkpoint: CheckpointState | None
) -> tuple[TrainerHandle, Any]:
    """The trainer of ``trainer.placement`` over the policy in ``model_dir`` (resuming: with ``checkpoint``'s
    trainer state and RNGs restored), checkpointing under ``root``; and the policy's tokenizer (the rollout's).

    Raises:
        CheckpointError: resuming, and the checkpoint's model, tokenizer or trainer state does not load.
        TrainerLostError: ``placement: ray``, and the actor (or a verl rank) could not be placed or died while
            starting.
    """
    if config.trainer.placement == "ray" and config.trainer.backend == "torch":
        from agentscope.rl._trainer_ray import RayTrainer

        tokenizer = await _loading(checkpoint, model_dir, load_policy_tokenizer(model_dir, config.threads))
        return await RayTrainer(config, root).start(model_dir, checkpoint), tokenizer
    from agentscope.rl.trainer import AsyncCheckpointer

    if config.trainer.placement == "ray":  # verl's ranks as Ray actors, driven from here (verl_fsdp)
        from agentscope.rl._rollout_ray import ensure_ray, local_cpus

        ensure_ray(local_cpus(config))  # on this thread: see ensure_ray
    model, tokenizer = await _loading(checkpoint, model_dir, load_policy_model(model_dir, config.threads))

    built: list[Trainer | VerlFSDPTrainer] = []

    def make() -> tuple[Trainer | VerlFSDPTrainer, AsyncCheckpointer]:
        built.append(build_trainer(config, model, tokenizer, model_dir))  # trainer.backend's
        if checkpoint is not None:
            built[0].load_state_dict(checkpoint.trainer_state)
            checkpoint.restore_rng()
        return built[0], AsyncCheckpointer(root, keep=config.schedule.keep_checkpoints)

    try:
        trainer, checkpointer = await anyio.to_thread.run_sync(make)
    except BaseException:
        if built:  # verl's ranks on Ray hold a placement group: free it even while being cancelled
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(_close, built[0])
                except Exception:  # the start's own error is the one to report
                    logger.warning("closing the trainer after its start failed also failed", exc_info=True)
        raise
    return InProcessTrainer(trainer, model, tokenizer, checkpointer, config.threads), tokenizer


def _close(trainer: Any) -> None:
    """Release what ``trainer`` holds outside this process (verl's ranks as Ray actors); nothing for the others."""
    close = getattr(trainer, "close", None)
    if close is not None:
        close()


async def _loading(checkpoint: CheckpointState | None, model_dir: Path, load: Awaitable[_T]) -> _T:
    """``await load``; resuming, a failure is the checkpoint's (a CheckpointError naming it)."""
    from agentscope.rl.trainer import CheckpointError

    try:
        return await load
    except Exception as exc:  # safetensors, JSON and tokenizer errors alike
        if checkpoint is None:
            raise
        raise CheckpointError(f"{model_dir}: the model or tokenizer cannot be loaded: {exc}") from exc
