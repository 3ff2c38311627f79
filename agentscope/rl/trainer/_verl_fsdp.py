"""The ``verl_fsdp`` trainer backend: our batches as verl ``DataProto``, trained by verl's own FSDP actor worker.

One step (:meth:`VerlFSDPTrainer.step`), as verl's ``RayPPOTrainer`` does it (``_compute_old_log_prob``,
``compute_advantage``, ``_update_actor``), on the actor's ranks (:mod:`._verl_ranks`: one in this process, or
``trainer.ranks`` Ray actors in a verl ``RayWorkerGroup`` with ``trainer.placement: ray``):

1. :func:`build_batch` flattens the trajectories into verl's layout; the tensors become a ``DataProto``
   (``uid`` in ``non_tensor_batch``, the temperature in ``meta_info``).
2. Old log-probs: ``ActorRolloutRefWorker.compute_log_prob`` (verl's FSDP engine, forward only); the reference
   policy's when ``kl_coef > 0`` from a second actor worker that never steps (verl's ``ref`` role offloads to
   pinned memory, which needs a GPU).
3. Advantages: ``core_algos.get_adv_estimator_fn`` per ``uid``, as the torch backend computes them.
4. Rollout correction: ``rollout_corr_helper`` gives ``rollout_is_weights`` (truncated IS) and its metrics.
5. Update: ``ActorRolloutRefWorker.update_actor`` on the ``DataProto`` converted as verl converts it
   (``to_tensordict`` then ``left_right_2_no_padding``): verl's ``TrainingWorker.train_mini_batch`` splits it into
   ``mini_batches`` × ``epochs`` optimizer steps and micro-batches, computes verl's ``ppo_loss`` (policy loss,
   entropy bonus, KL loss), clips the gradient and steps AdamW, all inside verl.

The worker is built from verl's Hydra config (``ppo_trainer.yaml``) composed with :func:`verl_overrides` of our
config, so every setting goes through verl's own keys. After each update the trained weights are copied into the
Hugging Face model given to the constructor, which the checkpointer saves and :meth:`weights_for_rollout` copies.

Torch work is synchronous: call :meth:`VerlFSDPTrainer.step` from a worker thread.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import numpy as np
import torch

from agentscope.rl._types import Trajectory
from agentscope.rl.trainer import _verl as verl
from agentscope.rl.trainer._batch import build_batch
from agentscope.rl.trainer._common import (
    batch_metrics,
    compute_advantages,
    pad_token_id,
    rollout_correction,
    step_metrics,
    tis_metrics,
)
from agentscope.rl.trainer._config import TrainerConfig
from agentscope.rl.trainer._errors import CheckpointError
from agentscope.rl.trainer._trainer import clone_state_dict
from agentscope.rl.trainer._verl_hydra import compose_verl_config, verl_overrides
from agentscope.rl.trainer._verl_platform import prepare_verl, worker_environment

if TYPE_CHECKING:
    from agentscope.rl.trainer._verl_ranks import Ranks

__all__ = ["VerlFSDPTrainer", "to_data_proto"]


def to_data_proto(batch: Mapping[str, Any], *, temperature: float) -> Any:
    """A batch in verl's layout (:func:`build_batch`, plus what the trainer adds) as a verl ``DataProto``: tensors
    in ``batch``, numpy arrays (``uid``, ``trajectory_index``) in ``non_tensor_batch``, ``temperature`` in
    ``meta_info`` (verl's actor divides the logits by it)."""
    from verl import DataProto

    tensors = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
    arrays: dict[str, Any] = {key: value for key, value in batch.items() if isinstance(value, np.ndarray)}
    return DataProto.from_dict(tensors=tensors, non_tensors=arrays, meta_info={"temperature": temperature})


def _to_worker_input(proto: Any, **meta: Any) -> Any:
    """``DataProto`` → the TensorDict verl's workers take, converted as ``RayPPOTrainer`` converts it."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data = left_right_2_no_padding(proto.to_tensordict())
    tu.assign_non_tensor(data, **meta)
    return data


def _prints_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """verl ``print``s progress (model size, memory, LR schedule, non-finite gradients) to stdout, where
    ``agentscope rl train`` writes its JSON summary: send it to stderr while verl runs."""
    return contextlib.redirect_stdout(sys.stderr)


def _mean(value: Any) -> float:
    """A verl metric (a number, or a list of them per mini-batch) as one float."""
    if isinstance(value, list | tuple):
        items = [float(v) for v in cast(Sequence[Any], value)]
        return sum(items) / max(len(items), 1)
    return float(value)


class VerlFSDPTrainer:
    """verl's FSDP actor worker (``ActorRolloutRefWorker``, role ``actor``) behind the methods the scheduler and
    the checkpointer use from :class:`~agentscope.rl.trainer.Trainer`.

    Args:
        model: the policy as loaded from ``model_dir``; the trained weights are copied into it after each update
            (the checkpointer saves it).
        tokenizer: its tokenizer (for the pad token id).
        config: the algorithm settings (``backend`` is not read here).
        model_dir: the policy's Hugging Face directory: verl's worker loads the weights it trains from it.
        group_size: ``data.group_size`` (only reported to verl's config as ``rollout.n``).
        batch_groups: ``data.batch_groups`` (verl's ``data.train_batch_size`` and PPO mini-batch size).
        seed: the run's seed (verl's data-loader and FSDP seeds).
        threads: torch's threads in each rank's process (``placement: ray``; ``None``: torch's default).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        config: TrainerConfig | None = None,
        *,
        model_dir: str | Path,
        group_size: int | None = None,
        batch_groups: int | None = None,
        seed: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.config = config or TrainerConfig(backend="verl_fsdp")
        self.model = model
        self.tokenizer = tokenizer
        self.pad_token_id: int = pad_token_id(tokenizer)
        self.overrides = verl_overrides(
            self.config, model_path=model_dir, group_size=group_size, batch_groups=batch_groups, seed=seed
        )
        """The Hydra overrides the worker's config was composed with."""
        self.verl_config = compose_verl_config(self.overrides)
        """verl's ``ppo_trainer`` config composed with :attr:`overrides`."""
        self._adv_fn = verl.adv_estimator(self.config.adv_estimator)
        reference = self.config.kl_coef > 0
        self.ranks: Ranks = self._build_ranks("verl actor", threads, shared=reference)
        """The actor's ranks: :class:`LocalRanks` in this process, or :class:`RayRanks` (``placement: ray``)."""
        self.ref_ranks: Ranks | None = None
        """The reference policy's ranks (``kl_coef > 0``): an actor worker that never steps, in this process or
        in Ray actors colocated with the actor's ranks."""
        if reference:
            try:
                self.ref_ranks = self._build_ranks("verl reference policy", threads, colocate_with=self.ranks)
            except BaseException:
                self.ranks.close()
                raise
        self.steps_done = 0
        """Updates applied so far (restored by :meth:`load_state_dict`)."""

    def _build_ranks(
        self, name: str, threads: int | None, *, shared: bool = False, colocate_with: Ranks | None = None
    ) -> Ranks:
        config = self.config
        if config.placement == "ray":
            from agentscope.rl.trainer._verl_ranks import RayRanks

            with _prints_to_stderr():
                return RayRanks(
                    self.verl_config.actor_rollout_ref,
                    ranks=config.ranks,
                    cpus=config.cpus,
                    gpus=config.gpus,
                    threads=threads,
                    name=name,
                    shared=shared,
                    colocate_with=cast(RayRanks, colocate_with) if colocate_with is not None else None,
                )
        prepare_verl()  # first: verl's engine modules read the platform when they are imported
        from verl.workers.engine_workers import ActorRolloutRefWorker

        from agentscope.rl.trainer._verl_ranks import LocalRanks

        with worker_environment(), _prints_to_stderr():
            worker = ActorRolloutRefWorker(self.verl_config.actor_rollout_ref, role="actor")
            worker.init_model()
        return LocalRanks(worker)

    async def watch(self) -> None:
        """Raise :class:`~agentscope.rl.trainer.TrainerLostError` the moment a rank (or the reference policy's)
        dies; never returns while they live (in this process: never)."""
        async with anyio.create_task_group() as group:
            for ranks in (self.ranks, self.ref_ranks):
                if ranks is not None:
                    group.start_soon(ranks.watch)

    def close(self) -> None:
        """Release the ranks (the Ray actors of ``placement: ray``; the reference policy's first, which live in
        the actor's placement group). Idempotent."""
        try:
            if self.ref_ranks is not None:
                self.ref_ranks.close()
        finally:
            self.ranks.close()

    # -- the update --------------------------------------------------------------------------------------

    def log_probs(self, proto: Any, *, reference: bool = False) -> torch.Tensor:
        """``[B, R]`` log-probs of ``proto``'s responses under the actor (or the reference policy), by verl's
        ``compute_log_prob`` (its engine, forward only)."""
        return self._forward(proto, reference=reference, entropy=False)[0]

    def _forward(
        self, proto: Any, *, reference: bool, entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``compute_log_prob`` over ``proto`` (padded as :func:`_layout` says): ``[B, R]`` log-probs and, when
        ``entropy``, entropies."""
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import no_padding_2_padding

        ranks = self.ref_ranks if reference else self.ranks
        assert ranks is not None
        rows = len(proto)
        total, micro = _layout(rows, ranks.world_size, self.config.micro_batch_size)
        data = _to_worker_input(
            _pad_rows(proto, total),
            calculate_entropy=entropy,
            compute_loss=False,
            micro_batch_size_per_gpu=micro,
        )
        with _prints_to_stderr():
            output = ranks.compute_log_prob(data)
        log_probs = no_padding_2_padding(tu.get(output, "log_probs"), data).float()[:rows]
        entropies = no_padding_2_padding(tu.get(output, "entropy"), data).float()[:rows] if entropy else None
        return log_probs, entropies

    def make_proto(self, trajectories: Sequence[Trajectory]) -> tuple[Any, dict[str, float]]:
        """The ``DataProto`` verl's actor trains on: :func:`build_batch`'s tensors plus ``old_log_probs``,
        ``advantages``/``returns`` (verl's estimator), ``ref_log_prob`` (KL on) and ``rollout_is_weights`` (TIS
        on); and the rollout-correction metrics (``rollout_corr/...``) with ``train/entropy``, the token-mean
        entropy of the policy before the update."""
        config = self.config
        base = build_batch(trajectories, self.pad_token_id)
        advantages, returns = compute_advantages(self._adv_fn, config, base)
        proto = to_data_proto(
            {**base, "advantages": advantages, "returns": returns}, temperature=config.temperature
        )
        old_log_probs, entropy = self._forward(proto, reference=False, entropy=True)
        proto.batch["old_log_probs"] = old_log_probs
        assert entropy is not None
        if self.ref_ranks is not None:
            proto.batch["ref_log_prob"] = self.log_probs(proto, reference=True)
        metrics: dict[str, float] = {}
        if bool(base["response_mask"].any()):
            # the token-mean entropy of the policy before the update, as the torch backend measures it
            entropy_mean = float(verl.masked_mean(entropy, base["response_mask"]).item())
            weights, metrics = rollout_correction(
                config,
                old_log_prob=proto.batch["old_log_probs"],
                rollout_log_prob=base["rollout_log_probs"],
                response_mask=base["response_mask"],
            )
            if weights is not None:
                proto.batch["rollout_is_weights"] = weights
            metrics["train/entropy"] = entropy_mean
        return proto, metrics

    def step(self, trajectories: Sequence[Trajectory], *, step: int | None = None) -> dict[str, float]:
        """Train on one batch of trajectories through verl's actor; return the torch backend's metrics
        (``train/policy_loss``, ``train/approx_kl``, ``train/clipfrac``, ``train/grad_norm``, ``train/entropy``,
        ``train/tis_ratio_mean``, ...). ``step`` is only reported back (``train/step``). Synchronous."""
        started = time.perf_counter()
        proto, corr = self.make_proto(trajectories)
        response_mask = proto.batch["response_mask"]
        prepared = time.perf_counter()
        metrics = batch_metrics(proto.batch, len(trajectories))
        if not bool(response_mask.any()):
            metrics["train/skipped"] = 1.0
            return metrics
        metrics.update(self._update(proto))
        self.steps_done += 1
        self._copy_weights_to_model()
        metrics["train/entropy"] = corr.get("train/entropy", 0.0)
        metrics.update(tis_metrics(corr))
        metrics.update(step_metrics(started=started, prepared=prepared, lr=self.config.lr, step=step))
        return metrics

    def _update(self, proto: Any) -> dict[str, float]:
        """``update_actor`` over ``proto`` (padded with loss-free rows as :func:`_layout` says); verl's metrics
        under the torch backend's names."""
        from verl.utils import tensordict_utils as tu

        config = self.config
        total, micro = _layout(
            len(proto), self.ranks.world_size * config.mini_batches, config.micro_batch_size
        )
        rows_with_tokens = int((proto.batch["response_mask"].sum(dim=1) > 0).sum().item())
        proto = _pad_rows(proto, total)
        data = _to_worker_input(
            proto,
            micro_batch_size_per_gpu=micro,
            calculate_entropy=True,
            # verl normalises seq-mean losses by this; with one mini-batch the rows that have loss tokens, as the
            # torch backend does; with several, verl's own value (rows per mini-batch, as RayPPOTrainer passes).
            global_batch_size=rows_with_tokens
            if config.mini_batches == 1
            else len(proto) // config.mini_batches,  # over all ranks
            num_mini_batch=config.mini_batches,
            epochs=config.epochs,
            seed=self.steps_done,
            dataloader_kwargs={"shuffle": config.mini_batches > 1},
            compute_loss=True,
        )
        with _prints_to_stderr():
            raw = dict(tu.get(self.ranks.update_actor(data), "metrics"))
        reported: Any = raw.get("grad_norm", [])
        grad_norms = [
            float(g) for g in cast(list[Any], reported if isinstance(reported, list) else [reported])
        ]
        nonfinite = sum(1 for g in grad_norms if not np.isfinite(g))
        out = {
            "train/policy_loss": _mean(raw.get("actor/pg_loss", 0.0)),
            "train/approx_kl": _mean(raw.get("actor/ppo_kl", 0.0)),
            "train/clipfrac": _mean(raw.get("actor/pg_clipfrac", 0.0)),
            "train/clipfrac_lower": _mean(raw.get("actor/pg_clipfrac_lower", 0.0)),
            # verl's entropy bonus term, aggregated by loss_agg_mode (the token mean only under token-mean);
            # train/entropy is the token mean, from make_proto
            "train/entropy_loss": _mean(raw.get("actor/entropy_loss", 0.0)),
            "train/grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
            "train/optimizer_steps": float(len(grad_norms) - nonfinite),
            "train/nonfinite_grad_steps": float(nonfinite),
        }
        if "kl_loss" in raw:
            out["train/kl_loss"] = _mean(raw["kl_loss"])
        return out

    # -- weights and state -------------------------------------------------------------------------------

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The actor's full (unsharded) weights on CPU, keyed as the Hugging Face model's (gathered from every
        rank)."""
        return self.ranks.full_state_dict()

    @torch.no_grad()
    def _copy_weights_to_model(self) -> None:
        state = self.full_state_dict()
        result = self.model.load_state_dict(state, strict=False)
        missing, unexpected = cast(list[str], result.missing_keys), cast(list[str], result.unexpected_keys)
        tied: set[str] = set(cast(Any, getattr(self.model, "_tied_weights_keys", None)) or ())
        if unexpected or [key for key in missing if key not in tied]:
            raise RuntimeError(
                f"verl's actor and the model differ: missing {missing}, unexpected {unexpected}"
            )

    def weights_for_rollout(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the trained weights, for ``RolloutService.update_weights``."""
        return clone_state_dict(self.model)

    def state_dict(self) -> dict[str, Any]:
        """verl's optimizer state (full, keyed by parameter name: it loads into any number of ranks), its LR
        scheduler, steps done and config (the weights are saved from the model by the checkpointer's
        save_pretrained)."""
        return {
            "backend": "verl_fsdp",
            **self.ranks.trainer_state(),
            "steps_done": self.steps_done,
            "config": self.config.model_dump(mode="json"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the weights come from ``model_dir``, the checkpoint's model).

        Raises:
            CheckpointError: the state was not saved by this backend (the torch backend's optimizer state is keyed
                by parameter index, not name).
        """
        if state.get("backend") != "verl_fsdp":
            raise CheckpointError("trainer_state.pt was not saved by trainer.backend verl_fsdp")
        self.ranks.load_trainer_state(state)
        self.steps_done = int(state["steps_done"])


def _layout(rows: int, mini_batches: int, micro_batch_size: int) -> tuple[int, int]:
    """(rows after padding, micro-batch size) for ``rows`` in ``mini_batches`` mini-batches of micro-batches of at
    most ``micro_batch_size`` rows.

    Without dynamic batch sizes verl needs every mini-batch to split into equal micro-batches (its
    ``prepare_micro_batches`` asserts divisibility) and the batch into equal mini-batches; the torch backend splits
    unevenly. So a mini-batch of ``m = ceil(rows / mini_batches)`` rows takes ``n = ceil(m / micro_batch_size)``
    micro-batches of ``ceil(m / n)`` rows, and the batch is padded to ``mini_batches * n * ceil(m / n)`` rows:
    fewer than ``mini_batches * (n + 1)`` extra rows, each without loss tokens."""
    per_mini = -(-rows // mini_batches)
    micro_batches = -(-per_mini // micro_batch_size)
    micro = -(-per_mini // micro_batches)
    return mini_batches * micro_batches * micro, micro


def _pad_rows(proto: Any, total: int) -> Any:
    """``proto`` with copies of its first row appended up to ``total`` rows, their loss masked out (no loss
    tokens, no advantage, no reward): they change no loss, gradient or token count."""
    missing = total - len(proto)
    if missing <= 0:
        return proto
    from verl import DataProto

    pad = proto.select_idxs(np.zeros(missing, dtype=np.int64))
    for key in ("response_mask", "advantages", "returns", "token_level_rewards"):
        if key in pad.batch:
            pad.batch[key] = torch.zeros_like(pad.batch[key])
    return DataProto.concat([proto, pad])
