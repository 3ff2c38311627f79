"""What both trainer backends (:class:`~agentscope.rl.trainer.Trainer` and
:class:`~agentscope.rl.trainer.VerlFSDPTrainer`) do alike around the update: the pad token, verl's advantage
estimator and rollout correction called with the config's settings, and the metrics they report before and after
it. One implementation, so that the two backends cannot drift apart."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from agentscope.rl.trainer import _verl as verl
from agentscope.rl.trainer._config import TrainerConfig

__all__ = [
    "batch_metrics",
    "compute_advantages",
    "pad_token_id",
    "rollout_correction",
    "step_metrics",
    "tis_metrics",
]


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's ``pad_token_id``, else its ``eos_token_id``, else 0."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return int(pad) if pad is not None else 0


def compute_advantages(
    adv_fn: verl.AdvantageFn, config: TrainerConfig, batch: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)`` of ``batch`` (:func:`build_batch`'s) by verl's estimator ``adv_fn`` per ``uid``,
    with ``norm_adv_by_std_in_grpo`` from ``config`` under GRPO."""
    options = {"norm_adv_by_std_in_grpo": config.norm_adv_by_std} if config.adv_estimator == "grpo" else {}
    return adv_fn(
        token_level_rewards=batch["token_level_rewards"],
        response_mask=batch["response_mask"],
        index=batch["uid"],
        **options,
    )


def rollout_correction(
    config: TrainerConfig,
    *,
    old_log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """verl's rollout correction with ``config``'s ``tis_level`` and ``tis_threshold``: the truncated IS weights
    (None when ``tis_threshold`` is None) and the ``rollout_corr/...`` metrics."""
    return verl.rollout_correction(
        old_log_prob=old_log_prob,
        rollout_log_prob=rollout_log_prob,
        response_mask=response_mask,
        level=config.tis_level if config.tis_threshold is not None else None,
        threshold=config.tis_threshold,
    )


def batch_metrics(batch: Mapping[str, Any], trajectories: int) -> dict[str, float]:
    """What a step reports of its batch before the update: ``train/reward_mean``, ``train/advantage_abs_mean``
    (0 without loss tokens), ``train/samples``, ``train/trajectories``, ``train/response_tokens``."""
    response_mask: torch.Tensor = batch["response_mask"]
    return {
        "train/reward_mean": float(batch["token_level_rewards"].sum(dim=1).mean().item()),
        "train/advantage_abs_mean": float(verl.masked_mean(batch["advantages"].abs(), response_mask).item())
        if bool(response_mask.any())
        else 0.0,
        "train/samples": float(response_mask.shape[0]),
        "train/trajectories": float(trajectories),
        "train/response_tokens": float(response_mask.sum().item()),
    }


def tis_metrics(corr: Mapping[str, float]) -> dict[str, float]:
    """verl's ``rollout_corr/...`` metrics under the trainer's names (``train/tis_ratio_mean``,
    ``train/tis_clipped_fraction``, ``train/rollout_kl``, ``train/rollout_k3_kl``); absent ones as no correction
    and no mismatch (1, 0, 0, 0)."""
    return {
        "train/tis_ratio_mean": corr.get("rollout_corr/rollout_is_mean", 1.0),
        "train/tis_clipped_fraction": corr.get("rollout_corr/rollout_is_ratio_fraction_high", 0.0),
        "train/rollout_kl": corr.get("rollout_corr/kl", 0.0),
        "train/rollout_k3_kl": corr.get("rollout_corr/k3_kl", 0.0),
    }


def step_metrics(*, started: float, prepared: float, lr: float, step: int | None) -> dict[str, float]:
    """What a step reports of itself at its end: ``train/prepare_s`` (``started`` to ``prepared``, from
    ``time.perf_counter``), ``train/step_s`` (``started`` to now), ``train/lr`` and, when given, ``train/step``."""
    metrics = {
        "train/prepare_s": prepared - started,
        "train/step_s": time.perf_counter() - started,
        "train/lr": lr,
    }
    if step is not None:
        metrics["train/step"] = float(step)
    return metrics
