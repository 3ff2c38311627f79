"""Configuration of the trainer (pydantic only: importing it loads no torch)."""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from agentscope.rl._device import DeviceSpec, TrainDtypeSpec

__all__ = ["TrainerConfig"]


class TrainerConfig(BaseModel):
    """How the trainer turns a batch of trajectories into one update, with verl's algorithms."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lr: float = Field(default=1e-5, gt=0.0)
    """AdamW learning rate (constant)."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """AdamW weight decay."""
    adv_estimator: Literal["grpo", "rloo"] = "grpo"
    """verl advantage estimator (``get_adv_estimator_fn``): group-relative outcome advantages per ``uid``."""
    norm_adv_by_std: bool = True
    """GRPO only: divide by the group's reward std (``False``: Dr. GRPO, mean-centred only)."""
    policy_loss: Literal["vanilla", "gspo"] = "vanilla"
    """verl policy loss (``get_policy_loss_fn``): ``vanilla`` is PPO's clipped objective (with dual clip),
    ``gspo`` the sequence-level ratio of GSPO."""
    clip_ratio: float = Field(default=0.2, gt=0.0)
    """PPO clip range ε: ratios outside [1-ε, 1+ε] stop contributing gradient."""
    clip_ratio_low: float | None = Field(default=None, gt=0.0)
    """Lower clip range (``None``: ``clip_ratio``)."""
    clip_ratio_high: float | None = Field(default=None, gt=0.0)
    """Upper clip range (``None``: ``clip_ratio``; DAPO's clip-higher sets it above ``clip_ratio_low``)."""
    clip_ratio_c: float = Field(default=3.0, gt=1.0)
    """Dual-clip bound for negative advantages (vanilla loss)."""
    loss_agg_mode: Literal[
        "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
    ] = "token-mean"
    """verl ``agg_loss`` mode: how token losses become the batch loss."""
    entropy_coef: float = Field(default=0.0, ge=0.0)
    """Entropy bonus coefficient (0: entropy is only measured)."""
    kl_coef: float = Field(default=0.0, ge=0.0)
    """KL-to-reference loss coefficient; a frozen copy of the initial policy is kept only when > 0."""
    kl_type: Literal["low_var_kl", "k1", "k2", "k3", "kl", "mse", "abs"] = "low_var_kl"
    """verl ``kl_penalty`` estimator for the KL loss."""
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    """Clip the gradient's global norm to this (``None``: measure it, don't clip)."""
    tis_threshold: float | None = Field(default=2.0, gt=0.0)
    """Rollout correction (verl ``rollout_corr_helper``): truncated importance sampling weights
    min(π_train/π_rollout, threshold) on the policy loss, for the gap between the rollout engine's log-probs and
    the trainer's (and for async staleness). ``None`` switches it off."""
    tis_level: Literal["token", "sequence"] = "token"
    """Importance weights per token (biased, low variance) or per sequence (unbiased, high variance)."""
    mini_batches: int = Field(default=1, ge=1)
    """Optimizer steps per batch: the batch is split into this many mini-batches (1: fully on-policy)."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the batch."""
    micro_batch_size: int = Field(default=8, ge=1)
    """Sequences per forward/backward pass (gradient accumulation; the loss is the same for any value)."""
    device: DeviceSpec = "auto"
    """Where the update runs: ``auto`` (the first CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``,
    ``cuda:<index>``. A GPU that torch does not see is an error naming this field. (``backend: torch`` only:
    ``verl_fsdp`` places itself from verl's config, and any value but ``auto`` is an error there.)"""
    dtype: TrainDtypeSpec = "auto"
    """Compute dtype of the forward passes (``torch.autocast``): ``auto`` is bfloat16 on a GPU and float32 on the
    CPU (no float16: it needs loss scaling). Parameters, gradients and AdamW's state stay float32 (mixed
    precision, as verl's FSDP actor does), and
    log-probs are taken from float32 logits. (``backend: torch`` only: ``verl_fsdp`` computes in float32, see
    ``verl_overrides``, and any value but ``auto`` is an error there.)"""
    backend: Literal["torch", "verl_fsdp"] = "torch"
    """Who runs the update. ``torch``: this package's single-process trainer, calling verl's loss and advantage
    functions. ``verl_fsdp``: verl's own FSDP actor worker (``ActorRolloutRefWorker.update_actor``, FSDP2,
    verl's ``ppo_loss``), built from verl's Hydra config with this section mapped onto its keys (the table in
    docs/rl-verl-backend.md); batches go to it as a verl ``DataProto``. Same algorithm and the same update within
    float tolerance, on one rank in this process or on ``ranks`` Ray actors (``placement: ray``). Tested on CPU
    (gloo, one and two ranks); needs ``peft`` and ``psutil`` besides verl."""
    verl_overrides: list[str] = Field(default_factory=list[str])
    """``verl_fsdp`` only: extra verl Hydra overrides (``key=value``, e.g.
    ``actor_rollout_ref.actor.fsdp_config.param_offload=true``), applied after the mapped ones."""
    temperature: float = Field(default=1.0, gt=0.0)
    """Sampling temperature of the rollout: log-probs are ``log_softmax(logits / temperature)``, as in verl. Must
    equal the rollout's, or the importance ratios are off."""

    placement: Literal["inprocess", "ray"] = "inprocess"
    """Where the trainer runs. ``inprocess``: in the training process (the driver), torch in worker threads.
    ``ray``, backend ``torch``: in a Ray actor of its own (placed by ``cpus`` and ``gpus``; the cluster in
    ``RAY_ADDRESS``, else a local one), which loads the policy, trains the batches sent to it as Ray objects,
    returns the weights for the rollout servers through Ray's object store and writes the checkpoints; the driver
    then holds no model to train (the warm start, the evaluation and an in-process rollout engine still load
    theirs there). Not restarted by Ray: a run whose trainer dies fails, naming it, and goes on from its last
    checkpoint with ``--resume``. Same updates as ``inprocess`` for the same seed. ``ray``, backend ``verl_fsdp``:
    verl's layout, as its ``RayPPOTrainer`` runs the actor: ``ranks`` Ray actors (each ``cpus`` CPUs and ``gpus``
    GPUs, in one placement group) hold the FSDP shards and are driven from the driver through verl's
    ``RayWorkerGroup``; the driver keeps a copy of the weights for the rollout and the checkpoints. A rank that
    dies ends the run the same way."""
    ranks: int = Field(default=1, ge=1)
    """``backend: verl_fsdp`` with ``placement: ray`` only: data-parallel ranks of verl's FSDP actor, one Ray
    actor each (FSDP2 shards the parameters, gradients and optimizer state over them; every batch is split into
    ``ranks`` equal chunks, padded with loss-free rows). With ``mini_batches: 1`` the update is the one rank's,
    within float rounding; with more, each rank shuffles and splits its own chunk, as in verl's ``RayPPOTrainer``,
    so the mini-batches hold other rows than one rank's would."""
    cpus: float = Field(default=1.0, gt=0.0)
    """``placement: ray`` only: Ray's CPU reservation for the trainer actor, or for each verl rank (give it
    ``threads`` CPUs; at least 1 for a verl rank)."""
    gpus: float = Field(default=0.0, ge=0.0)
    """``placement: ray`` only: Ray's GPU reservation for the trainer actor (``num_gpus``, a fraction to share
    one), or for each verl rank (0 or 1). Ray shows the actor only the GPUs it reserves, numbered from 0: ``device:
    cuda`` needs ``gpus > 0``, ``cuda:1`` more than 1; with ``device: auto`` the actor trains on its GPU when it
    has one, else on the CPU."""

    @model_validator(mode="after")
    def _placement(self) -> Self:
        """``cpus``/``gpus`` mean something with ``placement: ray`` only, and ``ranks`` with verl's ranks on Ray
        only (a value other than the default is an error without it: compared by value, so that a dumped config
        loads again); a GPU ``device`` in an actor needs ``gpus``; a verl rank reserves at least one CPU and at most
        one GPU (each an error on the field, e.g. ``trainer.gpus``, in ConfigError)."""
        problems: dict[str, str] = {}
        if self.placement == "ray" and self.backend == "verl_fsdp":
            if self.cpus < 1:
                problems["cpus"] = (
                    f"{self.cpus:g}: a verl rank reserves at least 1 CPU (verl finds rank 0's address with a "
                    "task in its bundle, which needs one)"
                )
            if self.gpus not in (0, 1):
                problems["gpus"] = (
                    f"{self.gpus:g}: a verl rank trains on 0 or 1 GPU (set trainer.ranks instead)"
                )
        elif self.placement == "ray":
            needed = int(self.device.partition(":")[2] or 0) + 1 if self.device.startswith("cuda") else 0
            if math.ceil(self.gpus) < needed:  # a fraction of a GPU shows the actor that one GPU
                problems["gpus"] = (
                    f"{self.gpus:g}: device {self.device} needs {needed} GPU(s) reserved for the trainer actor "
                    f"(Ray hides the others from it, numbering its own from 0): set trainer.gpus={needed}"
                )
        else:
            for name in ("cpus", "gpus"):
                if getattr(self, name) != type(self).model_fields[name].default:  # a dumped config reloads
                    problems[name] = (
                        f"{getattr(self, name):g} is used by placement ray only (the trainer actor's "
                        "reservation): set trainer.placement=ray, or remove it"
                    )
        if self.ranks != 1 and (self.placement != "ray" or self.backend != "verl_fsdp"):
            problems["ranks"] = (
                f"{self.ranks}: several ranks are verl's FSDP actor on Ray only: set trainer.backend=verl_fsdp "
                "and trainer.placement=ray, or ranks 1"
            )
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("trainer_placement", "{message}", {"message": message}),
                        loc=(field,),
                        input=getattr(self, field),
                    )
                    for field, message in problems.items()
                ],
            )
        return self

    @model_validator(mode="after")
    def _torch_only_fields(self) -> Self:
        """``device`` and ``dtype`` are read by the torch backend only: with ``verl_fsdp`` a value other than
        ``auto`` would be silently ignored, so it is an error on that field (its dotted name, e.g.
        ``trainer.device``, in ``load_config``'s ConfigError)."""
        if self.backend == "torch":
            return self
        errors: list[InitErrorDetails] = []
        for field, instead in (
            ("device", "verl's worker chooses its device itself"),
            (
                "dtype",
                "set verl's FSDP dtypes with trainer.verl_overrides "
                "(actor_rollout_ref.actor.fsdp_config.mixed_precision, model_dtype)",
            ),
        ):
            value = getattr(self, field)
            if value != "auto":
                message = (
                    f"{value!r} is not used by backend {self.backend} (torch backend only): leave it auto; "
                    f"{instead}"
                )
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("torch_backend_only", "{message}", {"message": message}),
                        loc=(field,),
                        input=value,
                    )
                )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self
