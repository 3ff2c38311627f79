"""``trainer.backend: verl_fsdp``: our batches as verl ``DataProto``, trained by verl's own FSDP actor worker.

On CPU, one process, gloo: verl's ``ActorRolloutRefWorker`` (role ``actor``, FSDP2) built from verl's Hydra config
composed with :func:`verl_overrides`. The strongest check is equivalence: from the same weights, on the same
batches, the verl backend and the torch backend report the same metrics and end with the same parameters after
several steps (Adam state included), for the default algorithm and for one with KL and entropy terms, two epochs,
a sequence-level loss aggregation, clip-higher, RLOO, sequence-level TIS and weight decay.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import torch
from hydra.errors import ConfigCompositionException
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from agentscope.rl import Trajectory
from agentscope.rl.trainer import Trainer, TrainerConfig
from agentscope.rl.trainer._verl_fsdp import VerlFSDPTrainer, to_data_proto
from agentscope.rl.trainer._verl_hydra import compose_verl_config, verl_overrides

Sample = Callable[..., Trajectory]

EXACT_METRICS = (
    "train/policy_loss",
    "train/approx_kl",
    "train/clipfrac",
    "train/clipfrac_lower",
    "train/grad_norm",
    "train/reward_mean",
    "train/advantage_abs_mean",
    "train/response_tokens",
    "train/optimizer_steps",
    "train/tis_ratio_mean",
    "train/rollout_kl",
)


def batches(
    model: torch.nn.Module, sample: Sample, count: int, *, lone: bool = False
) -> list[list[Trajectory]]:
    """``count`` batches of 2 groups × 2 two-turn episodes (4 rows: each episode is one sample, its second turn
    extends the first), rewards mixed within each group; ``lone`` adds a fifth episode alone in its group."""
    return [
        [
            sample(model, group_id=f"b{b}g{g}", reward=float((g + i) % 2), seed=100 * b + 10 * g + i)
            for g in range(2)
            for i in range(2)
        ]
        + ([sample(model, group_id=f"b{b}lone", reward=1.0, seed=100 * b + 99)] if lone else [])
        for b in range(count)
    ]


# -- the config mapping, against verl's own Hydra config ----------------------------------------------------


def test_overrides_land_in_verls_composed_config(tmp_path: Path) -> None:
    config = TrainerConfig(
        lr=3e-4,
        weight_decay=0.05,
        adv_estimator="rloo",
        norm_adv_by_std=False,
        policy_loss="gspo",
        clip_ratio=0.25,
        clip_ratio_high=0.3,
        clip_ratio_c=4.0,
        loss_agg_mode="seq-mean-token-sum-norm",
        entropy_coef=0.01,
        kl_coef=0.05,
        kl_type="k3",
        max_grad_norm=None,
        tis_threshold=3.0,
        tis_level="sequence",
        mini_batches=2,
        epochs=3,
        micro_batch_size=5,
        temperature=0.7,
        verl_overrides=["actor_rollout_ref.actor.fsdp_config.param_offload=true"],
    )
    overrides = verl_overrides(
        config, model_path=tmp_path / "it's here", group_size=6, batch_groups=4, seed=7
    )
    composed = compose_verl_config(overrides)
    actor = composed.actor_rollout_ref.actor
    assert actor.optim.lr == 3e-4
    assert actor.optim.weight_decay == 0.05
    assert actor.optim.clip_grad == math.inf
    assert actor.optim.lr_scheduler_type == "constant"
    assert composed.algorithm.adv_estimator == "rloo"
    assert composed.algorithm.norm_adv_by_std_in_grpo is False
    assert actor.policy_loss.loss_mode == "gspo"
    assert (actor.clip_ratio, actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (
        0.25,
        0.25,
        0.3,
        4.0,
    )
    assert actor.loss_agg_mode == "seq-mean-token-sum-norm"
    assert actor.entropy_coeff == 0.01
    assert actor.calculate_entropy is True
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type) == (True, 0.05, "k3")
    assert composed.algorithm.rollout_correction.rollout_is == "sequence"
    assert composed.algorithm.rollout_correction.rollout_is_threshold == 3.0
    assert (actor.ppo_epochs, actor.shuffle, actor.ppo_mini_batch_size) == (3, True, 2)
    assert actor.ppo_micro_batch_size_per_gpu == 5
    assert composed.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu == 5
    assert composed.actor_rollout_ref.rollout.temperature == 0.7
    assert composed.actor_rollout_ref.rollout.n == 6
    assert composed.data.train_batch_size == 4
    assert (actor.data_loader_seed, actor.fsdp_config.seed) == (7, 7)
    assert composed.actor_rollout_ref.model.path == str(tmp_path / "it's here")
    assert actor.strategy == "fsdp2"
    assert actor.fsdp_config.mixed_precision == {
        "param_dtype": "fp32",
        "reduce_dtype": "fp32",
        "buffer_dtype": "fp32",
    }
    assert composed.actor_rollout_ref.model.use_remove_padding is False
    assert actor.fsdp_config.param_offload is True  # verl_overrides come last


def test_defaults_and_switches_map_too(tmp_path: Path) -> None:
    composed = compose_verl_config(verl_overrides(TrainerConfig(), model_path=tmp_path))
    actor = composed.actor_rollout_ref.actor
    assert composed.algorithm.adv_estimator == "grpo"
    assert composed.algorithm.norm_adv_by_std_in_grpo is True
    assert actor.optim.clip_grad == 1.0
    assert actor.use_kl_loss is False
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (0.2, 0.2)
    assert composed.algorithm.rollout_correction.rollout_is == "token"
    assert composed.algorithm.rollout_correction.rollout_is_threshold == 2.0
    off = compose_verl_config(verl_overrides(TrainerConfig(tis_threshold=None), model_path=tmp_path))
    assert off.algorithm.rollout_correction.rollout_is is None


def test_a_key_verl_does_not_have_fails_composition(tmp_path: Path) -> None:
    overrides = verl_overrides(TrainerConfig(), model_path=tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose_verl_config([*overrides, "actor_rollout_ref.actor.no_such_key=1"])


# -- the batch as verl's DataProto --------------------------------------------------------------------------


def test_batches_become_data_protos_with_the_keys_verls_actor_reads(
    policy: Qwen2ForCausalLM, sample: Sample
) -> None:
    from verl import DataProto

    from agentscope.rl.trainer import build_batch

    batch = build_batch(batches(policy, sample, 1)[0], pad_token_id=0)
    proto = to_data_proto(batch, temperature=0.9)
    assert isinstance(proto, DataProto)
    assert len(proto) == 4
    for key in ("input_ids", "attention_mask", "position_ids", "prompts", "responses", "response_mask"):
        assert torch.equal(cast(torch.Tensor, proto.batch[key]), batch[key])
    assert cast(list[str], proto.non_tensor_batch["uid"].tolist()) == batch["uid"].tolist()
    assert proto.meta_info["temperature"] == 0.9


# -- equivalence with the torch backend ---------------------------------------------------------------------

ALGORITHMS = {
    "defaults": (TrainerConfig(lr=1e-2, micro_batch_size=4), False),
    "kl-entropy-epochs": (
        TrainerConfig(
            lr=1e-2,
            weight_decay=0.01,
            adv_estimator="rloo",
            clip_ratio_high=0.28,
            loss_agg_mode="seq-mean-token-mean",
            entropy_coef=0.01,
            kl_coef=0.1,
            kl_type="low_var_kl",
            tis_level="sequence",
            epochs=2,
            micro_batch_size=4,
        ),
        False,
    ),
    "gspo-seq-norm": (
        TrainerConfig(
            lr=1e-2,
            policy_loss="gspo",
            clip_ratio_low=3e-4,
            clip_ratio_high=4e-4,
            loss_agg_mode="seq-mean-token-sum-norm",
            norm_adv_by_std=False,
            max_grad_norm=None,
            tis_threshold=None,
            epochs=2,
            micro_batch_size=4,
        ),
        False,
    ),
    # 5 rows in micro-batches of at most 2: the torch backend runs 2 + 2 + 1, verl 2 + 2 + 2 with a loss-free row
    "micro-batched-padded": (TrainerConfig(lr=1e-2, micro_batch_size=2), True),
}


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_updates_equal_the_torch_backends(
    name: str, model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    """Three steps from the same weights on the same batches: same metrics, same parameters (to float
    rounding). With several micro-batches per mini-batch verl averages clipfrac/approx_kl over micro-batches
    unweighted where the torch backend weights them by tokens; they agree here because one epoch starts at ratio
    1 (both 0). The loss and the update do not depend on the micro-batching in either backend. GSPO with a
    sequence-normalised loss and no clipping or TIS covers the remaining mapped switches."""
    config, lone = ALGORITHMS[name]
    reference = Trainer(copy.deepcopy(policy), tokenizer, config)
    under_test = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, config, model_dir=model_dir)
    for i, batch in enumerate(batches(policy, sample, 3, lone=lone)):
        expected = reference.step(batch, step=i)
        got = under_test.step(batch, step=i)
        for key in EXACT_METRICS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (i, key)
        # verl_fsdp: the entropy before the update; torch: averaged over the update's passes (the same with one)
        one_pass = config.epochs == config.mini_batches == 1
        assert got["train/entropy"] == pytest.approx(
            expected["train/entropy"], rel=1e-4 if one_pass else 1e-2
        )
        if config.kl_coef > 0:
            assert got["train/kl_loss"] == pytest.approx(expected["train/kl_loss"], rel=1e-4, abs=1e-7)
    moved = 0.0
    for (key, want), (_, have) in zip(
        reference.model.state_dict().items(), under_test.model.state_dict().items(), strict=True
    ):
        # Measured: identical for the defaults and for GSPO; at most 1.4e-5 with KL/entropy/2 epochs and 1.3e-6
        # micro-batched (both on a k_proj.bias), against moves of 0.03-0.06. The key bias's true gradient is zero (softmax ignores a shift shared by all keys):
        # Adam divides its float noise (~1e-9) by its own size, so rounding there moves by up to lr-sized steps.
        torch.testing.assert_close(have, want, rtol=1e-5, atol=5e-5, msg=key)
        moved = max(moved, float((want - policy.state_dict()[key]).abs().max()))
    assert moved > 1e-3  # the updates did something
    assert under_test.steps_done == 3
    weights = under_test.weights_for_rollout()
    assert weights.keys() == reference.weights_for_rollout().keys()


# -- learning signal, several mini-batches, checkpoints -----------------------------------------------------


def test_training_moves_log_probs_with_the_advantage(
    model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    """The same batch three times: every rewarded row's response log-prob rises, every unrewarded one's falls,
    so the advantage-weighted log-likelihood (minus the policy-gradient loss at ratio 1) rises."""
    trainer = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, TrainerConfig(lr=1e-2), model_dir=model_dir)
    batch = batches(policy, sample, 1)[0]
    proto, _ = trainer.make_proto(batch)
    mask = proto.batch["response_mask"].float()
    advantage = (proto.batch["advantages"] * mask).sum(dim=1) / mask.sum(dim=1)
    before = (proto.batch["old_log_probs"] * mask).sum(dim=1)
    for i in range(3):
        trainer.step(batch, step=i)
    after = (trainer.log_probs(proto) * mask).sum(dim=1)
    moved = after - before
    assert bool((moved[advantage > 0] > 0.05).all()), moved
    assert bool((moved[advantage < 0] < -0.05).all()), moved
    assert float((advantage * after).sum()) > float((advantage * before).sum()) + 0.1


def test_several_mini_batches_pad_to_a_multiple_and_step_each(
    model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    config = TrainerConfig(lr=1e-3, mini_batches=3, epochs=2, micro_batch_size=2)
    trainer = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, config, model_dir=model_dir)
    metrics = trainer.step(batches(policy, sample, 1)[0])  # 4 rows: 3 mini-batches of 2, padded to 6 rows
    assert metrics["train/optimizer_steps"] == 6.0
    assert metrics["train/samples"] == 4.0
    assert math.isfinite(metrics["train/policy_loss"])
    assert metrics["train/clipfrac"] >= 0.0


def test_checkpoint_state_round_trips(
    tmp_path: Path,
    model_dir: Path,
    policy: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    sample: Sample,
) -> None:
    """Train a step, save (weights by save_pretrained, the rest by torch.save as the checkpointer does), restore
    into a fresh trainer from the saved weights: its next step equals the original's next step."""
    config = TrainerConfig(lr=1e-2)
    first, second = batches(policy, sample, 2)
    original = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, config, model_dir=model_dir)
    original.step(first)
    saved = tmp_path / "checkpoint"
    cast(Qwen2ForCausalLM, original.model).save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    torch.save(original.state_dict(), saved / "trainer_state.pt")

    state = torch.load(saved / "trainer_state.pt", weights_only=True)
    assert state["optimizer"]["state"]  # Adam's moments, keyed by parameter name
    restored = VerlFSDPTrainer(Qwen2ForCausalLM.from_pretrained(saved), tokenizer, config, model_dir=saved)
    restored.load_state_dict(state)
    assert restored.steps_done == 1
    expected = original.step(second)
    got = restored.step(second)
    assert got["train/policy_loss"] == pytest.approx(expected["train/policy_loss"], rel=1e-5, abs=1e-7)
    assert got["train/grad_norm"] == pytest.approx(expected["train/grad_norm"], rel=1e-5)
    for (key, want), (_, have) in zip(
        original.model.state_dict().items(), restored.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(have, want, rtol=1e-6, atol=1e-7, msg=key)

    torch_state = Trainer(copy.deepcopy(policy), tokenizer, config).state_dict()
    with pytest.raises(Exception, match="verl_fsdp"):
        restored.load_state_dict(torch_state)
