"""The helpers both trainer backends share (``agentscope.rl.trainer._common``): the pad token, verl's advantage
estimator and rollout correction with the config's settings, and the step metrics around the update."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from verl.trainer.ppo import core_algos

from agentscope.rl import Trajectory, Turn
from agentscope.rl.trainer import TrainerConfig, build_batch
from agentscope.rl.trainer import _common as common
from agentscope.rl.trainer import _verl as verl


def outcome(group: str, reward: float, completion: int) -> Trajectory:
    turn = Turn(
        prompt_ids=[5, 6],
        completion_ids=[7] * completion,
        logprobs=[-1.0] * completion,
        version_head=0,
        version_tail=0,
    )
    return Trajectory(task_id="t", group_id=group, reward=reward, turns=[turn])


def test_the_pad_token_falls_back_to_eos_then_0() -> None:
    assert common.pad_token_id(SimpleNamespace(pad_token_id=3, eos_token_id=4)) == 3
    assert common.pad_token_id(SimpleNamespace(pad_token_id=0, eos_token_id=4)) == 0  # 0 is a pad token
    assert common.pad_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=4)) == 4
    assert common.pad_token_id(SimpleNamespace(eos_token_id=4)) == 4
    assert common.pad_token_id(object()) == 0


@pytest.mark.parametrize(("estimator", "norm"), [("grpo", True), ("grpo", False), ("rloo", True)])
def test_advantages_are_verls_estimator_with_the_configs_options(estimator: str, norm: bool) -> None:
    base = build_batch([outcome("a", 1.0, 2), outcome("a", 0.0, 3), outcome("a", 0.5, 1)], pad_token_id=0)
    config = TrainerConfig(adv_estimator=estimator, norm_adv_by_std=norm)  # pyright: ignore[reportArgumentType]
    advantages, returns = common.compute_advantages(verl.adv_estimator(estimator), config, base)
    options = {"norm_adv_by_std_in_grpo": norm} if estimator == "grpo" else {}
    expected = core_algos.get_adv_estimator_fn(estimator)(
        token_level_rewards=base["token_level_rewards"],
        response_mask=base["response_mask"],
        index=base["uid"],
        **options,
    )
    assert torch.equal(advantages, expected[0])
    assert torch.equal(returns, expected[1])


def test_rollout_correction_follows_tis_threshold_and_level() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    old = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    rollout = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    for level in ("token", "sequence"):
        config = TrainerConfig(tis_threshold=1.5, tis_level=level)  # pyright: ignore[reportArgumentType]
        weights, metrics = common.rollout_correction(
            config, old_log_prob=old, rollout_log_prob=rollout, response_mask=mask
        )
        expected, expected_metrics = verl.rollout_correction(
            old_log_prob=old, rollout_log_prob=rollout, response_mask=mask, level=level, threshold=1.5
        )
        assert weights is not None
        assert expected is not None
        assert torch.equal(weights, expected)
        assert metrics == expected_metrics
    weights, metrics = common.rollout_correction(
        TrainerConfig(tis_threshold=None), old_log_prob=old, rollout_log_prob=rollout, response_mask=mask
    )
    assert weights is None  # switched off: no weights, the mismatch is still measured
    assert "rollout_corr/kl" in metrics


def test_tis_metrics_rename_verls_and_default_to_no_correction() -> None:
    corr = {
        "rollout_corr/rollout_is_mean": 1.1,
        "rollout_corr/rollout_is_ratio_fraction_high": 0.25,
        "rollout_corr/kl": 0.01,
        "rollout_corr/k3_kl": 0.02,
        "rollout_corr/other": 9.0,
    }
    assert common.tis_metrics(corr) == {
        "train/tis_ratio_mean": 1.1,
        "train/tis_clipped_fraction": 0.25,
        "train/rollout_kl": 0.01,
        "train/rollout_k3_kl": 0.02,
    }
    assert common.tis_metrics({}) == {
        "train/tis_ratio_mean": 1.0,
        "train/tis_clipped_fraction": 0.0,
        "train/rollout_kl": 0.0,
        "train/rollout_k3_kl": 0.0,
    }


def test_batch_metrics() -> None:
    base = build_batch([outcome("a", 1.0, 2), outcome("a", 0.0, 3)], pad_token_id=0)
    advantages = torch.tensor([[2.0, 2.0, 0.0], [-1.0, -1.0, -1.0]])
    metrics = common.batch_metrics({**base, "advantages": advantages}, trajectories=2)
    assert metrics == {
        "train/reward_mean": 0.5,
        "train/advantage_abs_mean": pytest.approx(7 / 5),
        "train/samples": 2.0,
        "train/trajectories": 2.0,
        "train/response_tokens": 5.0,
    }
    no_tokens = {**base, "advantages": advantages, "response_mask": torch.zeros_like(base["response_mask"])}
    assert common.batch_metrics(no_tokens, trajectories=2)["train/advantage_abs_mean"] == 0.0


def test_both_backends_use_the_shared_helpers() -> None:
    from agentscope.rl.trainer import _trainer, _verl_fsdp

    for module in (_trainer, _verl_fsdp):
        for name in (
            "pad_token_id",
            "compute_advantages",
            "rollout_correction",
            "batch_metrics",
            "tis_metrics",
        ):
            assert getattr(module, name) is getattr(common, name), (module.__name__, name)
