"""The trainer: one policy-gradient update per batch, with verl's own algorithm functions.

One step (:meth:`Trainer.step`), as verl's PPO trainer does it on a single process:

1. :func:`build_batch` flattens the trajectories into verl's layout.
2. Old-log-prob pass (no grad) under the current weights (and the reference policy's, when ``kl_coef > 0``).
3. Advantages: ``verl.trainer.ppo.core_algos.get_adv_estimator_fn("grpo" | "rloo")`` per group (``uid``).
4. Rollout correction: ``verl.trainer.ppo.rollout_corr_helper.compute_rollout_correction_and_rejection_mask``
   gives truncated importance-sampling weights ``min(π_train / π_rollout, threshold)`` that multiply the policy
   loss (the rollout engine's log-probs differ from the trainer's, and in async mode they come from older
   weights) plus the mismatch diagnostics.
5. Update: per micro-batch, ``get_policy_loss_fn("vanilla" | "gspo")`` (which aggregates with ``agg_loss`` over
   the whole mini-batch, through ``ActorConfig.global_batch_info``, so micro-batching does not change the
   loss), optional entropy bonus and ``kl_penalty`` loss, backward; then gradient clipping and an AdamW step.

Torch work is synchronous: call :meth:`Trainer.step` from a worker thread (``anyio.to_thread.run_sync``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from agentscope.rl._device import resolve_device, resolve_dtype
from agentscope.rl._types import Trajectory
from agentscope.rl.trainer import _verl as verl
from agentscope.rl.trainer._batch import Batch, TrainBatch, build_batch
from agentscope.rl.trainer._checkpoint import copy_state_dict
from agentscope.rl.trainer._common import (
    batch_metrics,
    compute_advantages,
    pad_token_id,
    rollout_correction,
    step_metrics,
    tis_metrics,
)
from agentscope.rl.trainer._config import TrainerConfig

__all__ = ["Trainer", "actor_config", "clone_state_dict", "sequence_log_probs"]


def actor_config(config: TrainerConfig) -> verl.ActorConfig:
    """The verl ``ActorConfig`` that verl's policy losses read (clip ranges, aggregation, loss mode)."""
    return verl.make_actor_config(
        clip_ratio=config.clip_ratio,
        clip_ratio_low=config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio,
        clip_ratio_high=config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio,
        clip_ratio_c=config.clip_ratio_c,
        loss_agg_mode=config.loss_agg_mode,
        loss_mode=config.policy_loss,
        entropy_coef=config.entropy_coef,
        kl_coef=config.kl_coef,
        kl_type=config.kl_type,
    )


def sequence_log_probs(
    model: torch.nn.Module,
    batch: Batch,
    rows: torch.Tensor | slice,
    *,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool = False,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Log-probs (and entropies) of ``batch["responses"][rows]`` under ``model``, as verl computes them.

    ``log_softmax(logits / temperature)`` gathered at the response tokens (``verl_F.logprobs_from_logits``) and
    ``verl_F.entropy_from_logits`` (with gradient only when ``entropy_grad``); the forward pass under
    ``torch.autocast`` to ``autocast`` when given. Columns that are padding in every
    selected row are cut first; the result is ``[b, r]`` with ``r`` the selected rows' longest response
    (returned as the third value).
    """
    attention = batch["attention_mask"][rows]
    responses = batch["responses"][rows]
    prompt_len = batch["prompts"].shape[1]
    response_len = int(attention[:, prompt_len:].sum(dim=1).max().item()) or 1
    first = (
        int(attention[:, :prompt_len].any(dim=0).nonzero()[0].item())
        if attention[:, :prompt_len].any()
        else 0
    )
    end = prompt_len + response_len
    input_ids = batch["input_ids"][rows]
    mixed = torch.autocast(input_ids.device.type, dtype=autocast) if autocast is not None else nullcontext()
    with mixed:
        output = model(
            input_ids=input_ids[:, first:end],
            attention_mask=attention[:, first:end],
            position_ids=batch["position_ids"][rows][:, first:end],
            logits_to_keep=response_len + 1,
            use_cache=False,
        )
    logits = output.logits[:, :-1, :].float() / temperature
    log_probs = verl.logprobs_from_logits(logits, responses[:, :response_len])
    entropy: torch.Tensor | None = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = verl.entropy_from_logits(logits)
    return log_probs, entropy, response_len


def clone_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of ``module``'s state; tensors that share storage (tied weights) stay shared."""
    return copy_state_dict(module, lambda _name, tensor: tensor.detach().to("cpu", copy=True))


class Trainer:
    """Single-process policy-gradient trainer over a Hugging Face causal LM, with verl's algorithms.

    Args:
        model: the policy (e.g. ``AutoModelForCausalLM.from_pretrained(dir)``), moved to ``config.device`` and
            trained in place there; forward passes in ``config.dtype``.
        tokenizer: its tokenizer (for the pad token id); anything with ``pad_token_id`` or ``eos_token_id``.
        config: the algorithm settings.
        ref_model: the reference policy for the KL loss; by default a frozen copy of ``model`` as given, made only
            when ``config.kl_coef > 0``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        config: TrainerConfig | None = None,
        *,
        ref_model: torch.nn.Module | None = None,
    ) -> None:
        self.config = config or TrainerConfig()
        self.model = model.to(resolve_device(self.config.device, "trainer.device"))
        self.tokenizer = tokenizer
        self.pad_token_id: int = pad_token_id(tokenizer)
        self.ref_model: torch.nn.Module | None = None
        if self.config.kl_coef > 0:
            self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(model)).to(self.device)
            self.ref_model.eval()
            self.ref_model.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
        )
        self.actor_config = actor_config(self.config)
        self._adv_fn = verl.adv_estimator(self.config.adv_estimator)
        self._loss_fn = verl.policy_loss(self.config.policy_loss)
        self.steps_done = 0
        """Updates applied so far (restored by :meth:`load_state_dict`)."""
        dtype = resolve_dtype(self.config.dtype, self.device)
        self.autocast: torch.dtype | None = None if dtype == torch.float32 else dtype
        """The forward passes' autocast dtype (None: float32 throughout)."""
        self.fuse_old_log_probs = True
        """With one optimizer step per batch (``epochs == mini_batches == 1``), take the old log-probs from the
        update's own forward pass instead of a separate inference pass (same result, one forward pass fewer)."""

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.model.parameters()).device

    # -- batch preparation -------------------------------------------------------------------------------

    def make_batch(self, trajectories: Sequence[Trajectory]) -> tuple[TrainBatch, dict[str, float]]:
        """The full verl batch for ``trajectories``: :func:`build_batch` plus ``old_log_probs`` (an inference
        pass), ``ref_log_prob`` (KL on), ``advantages``/``returns`` and ``rollout_is_weights`` (TIS on); and the
        rollout-correction metrics (``rollout_corr/...``, verl's names)."""
        batch = self._prepare(trajectories, old_log_prob_pass=True)
        return batch, self._rollout_correction(batch)

    def _prepare(self, trajectories: Sequence[Trajectory], *, old_log_prob_pass: bool) -> TrainBatch:
        config = self.config
        base = build_batch(trajectories, self.pad_token_id, device=self.device)
        advantages, returns = compute_advantages(self._adv_fn, config, base)
        old_log_probs = (
            self._infer_log_probs(self.model, base)
            if old_log_prob_pass
            else torch.zeros_like(base["rollout_log_probs"])  # filled by the update's own forward pass
        )
        batch = TrainBatch(**base, old_log_probs=old_log_probs, advantages=advantages, returns=returns)
        if self.ref_model is not None:
            batch["ref_log_prob"] = self._infer_log_probs(self.ref_model, base)
        return batch

    def _rollout_correction(self, batch: TrainBatch) -> dict[str, float]:
        """verl's truncated IS weights into ``batch`` (when on) and its ``rollout_corr/...`` metrics."""
        if not bool(batch["response_mask"].any()):
            return {}
        weights, metrics = rollout_correction(
            self.config,
            old_log_prob=batch["old_log_probs"],
            rollout_log_prob=batch["rollout_log_probs"],
            response_mask=batch["response_mask"],
        )
        if weights is not None:
            batch["rollout_is_weights"] = weights
        return metrics

    @torch.no_grad()
    def _infer_log_probs(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = torch.zeros_like(batch["rollout_log_probs"])
        size = batch["responses"].shape[0]
        try:
            for rows in self._micro_batches(batch, torch.arange(size, device=self.device)):
                log_probs, _, r = sequence_log_probs(
                    model,
                    batch,
                    rows,
                    temperature=self.config.temperature,
                    with_entropy=False,
                    autocast=self.autocast,
                )
                out[rows, :r] = log_probs
        finally:
            model.train(was_training)
        return out

    def _micro_batches(self, batch: Batch, rows: torch.Tensor) -> list[torch.Tensor]:
        """``rows`` in micro-batches of similar lengths (less padding per forward pass)."""
        lengths = batch["attention_mask"][rows].sum(dim=1)
        ordered = rows[torch.argsort(lengths, descending=True, stable=True)]
        return list(torch.split(ordered, self.config.micro_batch_size))

    # -- the update --------------------------------------------------------------------------------------

    def step(self, trajectories: Sequence[Trajectory], *, step: int | None = None) -> dict[str, float]:
        """Train on one batch of trajectories; return metrics (``train/policy_loss``, ``train/approx_kl``,
        ``train/clipfrac``, ``train/grad_norm``, ``train/entropy``, ``train/tis_ratio_mean``, ...).

        ``step`` is only reported back (``train/step``). Synchronous: run it in a worker thread.
        """
        started = time.perf_counter()
        # With one optimizer step per batch the old policy is the current one: the update's own forward pass
        # gives the old log-probs (detached), and the separate inference pass is skipped.
        fused = self.fuse_old_log_probs and self.config.epochs == 1 and self.config.mini_batches == 1
        batch = self._prepare(trajectories, old_log_prob_pass=not fused)
        corr = {} if fused else self._rollout_correction(batch)
        response_mask = batch["response_mask"]
        prepared = time.perf_counter()
        metrics = batch_metrics(batch, len(trajectories))
        if not bool(response_mask.any()):
            metrics["train/skipped"] = 1.0
            return metrics
        update = self._update(batch, fused=fused)
        if fused:
            corr = self._rollout_correction(batch)  # the metrics, over the old log-probs the update recorded
        self.steps_done += 1
        metrics.update(update)
        metrics.update(tis_metrics(corr))
        metrics.update(step_metrics(started=started, prepared=prepared, lr=self.config.lr, step=step))
        return metrics

    def _update(self, batch: TrainBatch, *, fused: bool = False) -> dict[str, float]:
        """Optimizer steps over the batch (``epochs`` × ``mini_batches``); metrics averaged per token."""
        config = self.config
        size = batch["responses"].shape[0]
        token_sums: dict[str, float] = {}
        token_total = 0.0
        losses: list[float] = []
        grad_norms: list[float] = []
        skipped = 0
        self.model.train()
        generator = torch.Generator().manual_seed(self.steps_done)
        for _ in range(config.epochs):
            order = (
                torch.randperm(size, generator=generator) if config.mini_batches > 1 else torch.arange(size)
            )
            for mini in torch.tensor_split(order.to(self.device), config.mini_batches):
                mask = batch["response_mask"][mini]
                tokens = int(mask.sum().item())
                if tokens == 0:
                    continue
                info: verl.GlobalBatchInfo = {
                    "dp_size": 1,
                    "batch_num_tokens": tokens,
                    "global_batch_size": int((mask.sum(dim=1) > 0).sum().item()),
                    "loss_scale_factor": batch["responses"].shape[1],
                }
                # verl's policy losses read the normalisation from their config: the whole mini-batch.
                self.actor_config.global_batch_info.update(info)
                self.optimizer.zero_grad(set_to_none=True)
                loss = 0.0
                for rows in self._micro_batches(batch, mini):
                    micro_loss, micro_tokens, micro_metrics = self._micro_step(batch, rows, info, fused=fused)
                    loss += micro_loss
                    token_total += micro_tokens
                    for key, value in micro_metrics.items():
                        token_sums[key] = token_sums.get(key, 0.0) + value * micro_tokens
                max_norm = config.max_grad_norm if config.max_grad_norm is not None else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item())
                if math.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    skipped += 1  # as verl does: a non-finite gradient skips the update
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(loss)
                grad_norms.append(grad_norm)
        out = {key: value / max(token_total, 1.0) for key, value in token_sums.items()}
        out["train/policy_loss"] = sum(losses) / max(len(losses), 1)
        out["train/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
        out["train/optimizer_steps"] = float(len(losses) - skipped)
        out["train/nonfinite_grad_steps"] = float(skipped)
        return out

    def _micro_step(
        self, batch: TrainBatch, rows: torch.Tensor, info: verl.GlobalBatchInfo, *, fused: bool
    ) -> tuple[float, float, dict[str, float]]:
        """Forward, verl's losses and backward for one micro-batch: (policy loss part, tokens, token metrics).

        ``fused``: the old log-probs are this forward pass's, detached (recorded in ``batch``), and the TIS
        weights are computed from them here."""
        config = self.config
        log_probs, entropy, r = sequence_log_probs(
            self.model,
            batch,
            rows,
            temperature=config.temperature,
            with_entropy=True,
            entropy_grad=config.entropy_coef > 0,
            autocast=self.autocast,
        )
        assert entropy is not None

        def cut(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[rows][:, :r]

        mask = cut(batch["response_mask"]).bool()
        if fused:
            old_log_probs = log_probs.detach()
            batch["old_log_probs"][rows, :r] = old_log_probs
            weights = None
            if config.tis_threshold is not None and bool(mask.any()):
                weights, _ = rollout_correction(
                    config,
                    old_log_prob=old_log_probs,
                    rollout_log_prob=cut(batch["rollout_log_probs"]),
                    response_mask=mask,
                )
        else:
            old_log_probs = cut(batch["old_log_probs"])
            all_weights = batch.get("rollout_is_weights")
            weights = None if all_weights is None else cut(all_weights)
        pg_loss, pg_metrics = self._loss_fn(
            old_log_prob=old_log_probs,
            log_prob=log_probs,
            advantages=cut(batch["advantages"]),
            response_mask=mask,
            loss_agg_mode=config.loss_agg_mode,
            config=self.actor_config,
            rollout_is_weights=weights,
        )
        loss = pg_loss
        metrics: dict[str, float] = {
            "train/approx_kl": float(pg_metrics["actor/ppo_kl"]),
            "train/clipfrac": float(pg_metrics["actor/pg_clipfrac"]),
            "train/clipfrac_lower": float(pg_metrics["actor/pg_clipfrac_lower"]),
            "train/entropy": float(verl.masked_mean(entropy.detach(), mask).item()),
        }
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * verl.agg_loss(entropy, mask, config.loss_agg_mode, info)
        ref = batch.get("ref_log_prob")
        if ref is not None:
            kld = verl.kl_penalty(log_probs, cut(ref), config.kl_type)
            loss = loss + config.kl_coef * verl.agg_loss(kld, mask, config.loss_agg_mode, info)
            metrics["train/kl_loss"] = float(verl.masked_mean(kld.detach(), mask).item())
        loss.backward()
        return float(pg_loss.detach().item()), float(mask.sum().item()), metrics

    # -- weights and state -------------------------------------------------------------------------------

    def weights_for_rollout(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the policy's weights, for ``RolloutService.update_weights``."""
        return clone_state_dict(self.model)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, steps done and config (the weights are saved by the checkpointer's save_pretrained)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "steps_done": self.steps_done,
            "config": self.config.model_dump(mode="json"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (load the model weights separately, e.g. ``from_pretrained``)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_done = int(state["steps_done"])
