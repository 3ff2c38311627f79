"""Our trainer config as verl Hydra overrides, and verl's own ``ppo_trainer`` config composed with them.

:func:`verl_overrides` is the mapping (documented as a table in ``docs/rl-verl-backend.md``);
:func:`compose_verl_config` composes verl's ``verl/trainer/config/ppo_trainer.yaml`` with Hydra, as verl's
``main_ppo`` does, so a key verl renames fails at composition instead of being ignored. The ``verl_fsdp`` trainer
backend builds verl's actor worker from ``config.actor_rollout_ref`` of that composition.

Importing this module loads no verl, Hydra or torch; the functions import them when called.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentscope.rl.trainer._config import TrainerConfig

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["ENGINE_OVERRIDES", "compose_verl_config", "hydra_value", "verl_config_dir", "verl_overrides"]

ENGINE_OVERRIDES: tuple[str, ...] = (
    # FSDP2 (``fully_shard``): verl's FSDP1 wrapping passes sync_module_states=True, which torch refuses for CPU
    # parameters, so FSDP1 needs a GPU; FSDP2 runs on CPU with gloo too.
    "actor_rollout_ref.actor.strategy=fsdp2",
    # Full fp32, as the torch backend trains (verl's default mixed precision computes in bf16 under autocast).
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    "actor_rollout_ref.actor.fsdp_config.model_dtype=fp32",
    # Padded batches through PyTorch attention: packing (remove-padding) needs FlashAttention's varlen kernels.
    "actor_rollout_ref.model.use_remove_padding=false",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    # No torch.compile of the entropy function (a C++ toolchain and minutes of compiling on CPU).
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    # Entropy is always measured (train/entropy), as in the torch backend; it enters the loss only when
    # entropy_coef > 0.
    "actor_rollout_ref.actor.calculate_entropy=true",
    # A constant learning rate, as the torch backend's AdamW.
    "actor_rollout_ref.actor.optim.lr_scheduler_type=constant",
    "actor_rollout_ref.actor.optim.lr_warmup_steps=0",
    # Rollouts come from agentscope's rollout service, not a verl rollout worker; verl's config requires a name.
    "actor_rollout_ref.rollout.name=hf",
)
"""Overrides that fit verl's FSDP actor to this backend (device, precision, attention), whatever the config;
:attr:`TrainerConfig.verl_overrides` comes after them and can change any."""


def hydra_value(value: object) -> str:
    """``value`` in Hydra's override grammar: ``null``, ``true``/``false``, numbers (``inf`` for infinity) and
    single-quoted strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def verl_overrides(
    config: TrainerConfig,
    *,
    model_path: str | Path,
    group_size: int | None = None,
    batch_groups: int | None = None,
    seed: int | None = None,
) -> list[str]:
    """verl Hydra overrides (``key=value``) that make verl's ``ppo_trainer`` config train as ``config`` does.

    Args:
        config: the trainer config; every algorithm field maps onto a verl key (the table in
            ``docs/rl-verl-backend.md``).
        model_path: the policy's Hugging Face directory (``actor_rollout_ref.model.path``).
        group_size: rollouts per task (``data.group_size`` → ``actor_rollout_ref.rollout.n``), when known.
        batch_groups: groups per batch (``data.batch_groups`` → ``data.train_batch_size``, and the PPO mini-batch
            size ``batch_groups / trainer.mini_batches``, in prompts as verl counts it), when known.
        seed: the run's seed (the actor's data-loader and FSDP seeds), when known.

    Returns:
        :data:`ENGINE_OVERRIDES`, then the mapped keys, then ``config.verl_overrides``: later ones win.
    """
    clip_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    clip_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    actor = "actor_rollout_ref.actor"
    mapped: dict[str, object] = {
        "actor_rollout_ref.model.path": str(model_path),
        f"{actor}.optim.lr": config.lr,
        f"{actor}.optim.weight_decay": config.weight_decay,
        f"{actor}.optim.clip_grad": config.max_grad_norm if config.max_grad_norm is not None else math.inf,
        "algorithm.adv_estimator": config.adv_estimator,
        "algorithm.norm_adv_by_std_in_grpo": config.norm_adv_by_std,
        f"{actor}.policy_loss.loss_mode": config.policy_loss,
        f"{actor}.clip_ratio": config.clip_ratio,
        f"{actor}.clip_ratio_low": clip_low,
        f"{actor}.clip_ratio_high": clip_high,
        f"{actor}.clip_ratio_c": config.clip_ratio_c,
        f"{actor}.loss_agg_mode": config.loss_agg_mode,
        f"{actor}.entropy_coeff": config.entropy_coef,
        f"{actor}.use_kl_loss": config.kl_coef > 0,
        f"{actor}.kl_loss_coef": config.kl_coef,
        f"{actor}.kl_loss_type": config.kl_type,
        "algorithm.rollout_correction.rollout_is": config.tis_level
        if config.tis_threshold is not None
        else None,
        f"{actor}.ppo_epochs": config.epochs,
        f"{actor}.shuffle": config.mini_batches > 1,
        f"{actor}.ppo_micro_batch_size_per_gpu": config.micro_batch_size,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": config.micro_batch_size,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": config.micro_batch_size,
        "actor_rollout_ref.rollout.temperature": config.temperature,
    }
    if config.tis_threshold is not None:
        mapped["algorithm.rollout_correction.rollout_is_threshold"] = config.tis_threshold
    if group_size is not None:
        mapped["actor_rollout_ref.rollout.n"] = group_size
    if batch_groups is not None:
        mapped["data.train_batch_size"] = batch_groups
        mapped[f"{actor}.ppo_mini_batch_size"] = max(1, batch_groups // config.mini_batches)
    if seed is not None:
        mapped[f"{actor}.data_loader_seed"] = seed
        mapped[f"{actor}.fsdp_config.seed"] = seed
    return [
        *ENGINE_OVERRIDES,
        *(f"{key}={hydra_value(value)}" for key, value in mapped.items()),
        *config.verl_overrides,
    ]


def verl_config_dir() -> Path:
    """verl's Hydra config directory (``verl/trainer/config``) of the installed verl."""
    import verl

    return Path(verl.__file__).resolve().parent / "trainer" / "config"


def compose_verl_config(overrides: list[str], config_name: str = "ppo_trainer") -> DictConfig:
    """verl's ``config_name`` config composed with ``overrides`` by Hydra (as ``verl.trainer.main_ppo`` composes
    it): an override of a key verl does not have fails here (``ConfigCompositionException``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
        composed: Any = compose(config_name=config_name, overrides=overrides)
    return composed
