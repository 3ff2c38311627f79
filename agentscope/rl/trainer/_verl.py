"""The verl functions the trainer calls, with the types verl leaves out (verl 0.9.1 is only partly annotated).

Every function here calls verl's own implementation; nothing is re-implemented. Importing this module imports
verl (a few seconds: ray, tensordict, hydra).
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict, cast

import torch
import verl.utils.torch_functional as verl_F
from verl.trainer.ppo import core_algos
from verl.trainer.ppo import rollout_corr_helper as rollout_corr
from verl.workers.config.actor import ActorConfig, PolicyLossConfig

__all__ = [
    "ActorConfig",
    "AdvantageFn",
    "GlobalBatchInfo",
    "PolicyLossFn",
    "adv_estimator",
    "agg_loss",
    "entropy_from_logits",
    "kl_penalty",
    "logprobs_from_logits",
    "make_actor_config",
    "masked_mean",
    "policy_loss",
    "rollout_correction",
]


class GlobalBatchInfo(TypedDict):
    """What ``agg_loss`` normalises by (verl's ``ActorConfig.global_batch_info``): the whole mini-batch, so the
    losses of its micro-batches add up to the mini-batch's loss."""

    dp_size: int
    batch_num_tokens: int
    global_batch_size: int
    loss_scale_factor: int | None


class AdvantageFn(Protocol):
    """``core_algos.get_adv_estimator_fn(name)``: ``(advantages, returns)``, each ``[B, R]``."""

    def __call__(
        self, *, token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class PolicyLossFn(Protocol):
    """``core_algos.get_policy_loss_fn(name)``: ``(loss, metrics)`` with metrics ``actor/ppo_kl``,
    ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``."""

    def __call__(
        self,
        *,
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str,
        config: ActorConfig,
        rollout_is_weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...


def adv_estimator(name: str) -> AdvantageFn:
    """verl's registered advantage estimator ``name`` (``grpo``, ``rloo``, ...)."""
    return cast(AdvantageFn, core_algos.get_adv_estimator_fn(name))


def policy_loss(name: str) -> PolicyLossFn:
    """verl's registered policy loss ``name`` (``vanilla``, ``gspo``, ...)."""
    return cast(PolicyLossFn, core_algos.get_policy_loss_fn(name))


def agg_loss(
    loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str, info: GlobalBatchInfo | None = None
) -> torch.Tensor:
    """``core_algos.agg_loss``: token losses → the scalar loss, normalised by ``info`` when given."""
    extra: dict[str, Any] = dict(info) if info is not None else {}
    return cast(
        torch.Tensor,
        core_algos.agg_loss(loss_mat=loss_mat, loss_mask=loss_mask, loss_agg_mode=loss_agg_mode, **extra),
    )


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """``core_algos.kl_penalty``: per-token KL estimate to the reference policy."""
    return cast(
        torch.Tensor,
        core_algos.kl_penalty(
            logprob=cast(torch.FloatTensor, log_prob),
            ref_logprob=cast(torch.FloatTensor, ref_log_prob),
            kl_penalty=kind,
        ),
    )


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``verl.utils.torch_functional.logprobs_from_logits``: log-softmax gathered at ``labels``."""
    return verl_F.logprobs_from_logits(logits, labels)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``verl.utils.torch_functional.entropy_from_logits``: per-position entropy of ``softmax(logits)``."""
    return verl_F.entropy_from_logits(logits)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``verl.utils.torch_functional.masked_mean`` over all positions."""
    return cast(torch.Tensor, verl_F.masked_mean(values, mask))


def rollout_correction(
    *,
    old_log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    level: str | None,
    threshold: float | None,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """``rollout_corr_helper.compute_rollout_correction_and_rejection_mask``: truncated IS weights
    ``min(exp(old - rollout), threshold)`` (``None`` when ``level`` is ``None``) and the ``rollout_corr/...``
    metrics (IS statistics and the trainer/rollout mismatch: ``kl``, ``k3_kl``, perplexities)."""
    proto, _mask, metrics = rollout_corr.compute_rollout_correction_and_rejection_mask(
        old_log_prob=old_log_prob,
        rollout_log_prob=rollout_log_prob,
        response_mask=response_mask,
        rollout_is=level,
        rollout_is_threshold=threshold,
    )
    weights = None if proto is None else cast(torch.Tensor, proto.batch["rollout_is_weights"])
    return weights, {str(k): float(v) for k, v in metrics.items()}


def make_actor_config(
    *,
    clip_ratio: float,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
    loss_agg_mode: str,
    loss_mode: str,
    entropy_coef: float,
    kl_coef: float,
    kl_type: str,
) -> ActorConfig:
    """The ``ActorConfig`` verl's policy losses read (they assert one). Batch sizes are placeholders: this
    trainer splits batches itself and passes the normalisation through ``global_batch_info``."""
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_mini_batch_size=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_ratio,
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        clip_ratio_c=clip_ratio_c,
        loss_agg_mode=loss_agg_mode,
        entropy_coeff=entropy_coef,
        use_kl_loss=kl_coef > 0,
        kl_loss_coef=kl_coef,
        kl_loss_type=kl_type,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
    )
