"""Our batches go through verl's own functions and give what a hand computation gives."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM
from verl.trainer.ppo import core_algos
from verl.utils.model import compute_position_id_with_mask

from agentscope.rl import Trajectory, Turn
from agentscope.rl.trainer import Trainer, TrainerConfig, build_batch
from agentscope.rl.trainer._trainer import actor_config
from agentscope.rl.trainer._verl import rollout_correction

MakeModel = Callable[..., Qwen2ForCausalLM]
Sample = Callable[..., Trajectory]


def turn(
    prompt: list[int], completion: list[int], logprobs: list[float], reward: float | None = None
) -> Turn:
    return Turn(
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=logprobs,
        version_head=0,
        version_tail=0,
        reward=reward,
    )


def outcome(group: str, reward: float, completion: int = 2) -> Trajectory:
    """A one-turn episode with ``completion`` generated tokens."""
    return Trajectory(
        task_id="t",
        group_id=group,
        reward=reward,
        turns=[turn([5, 6], [7] * completion, [-1.0] * completion)],
    )


def test_build_batch_layout() -> None:
    multi = Trajectory(
        task_id="t",
        group_id="g1",
        reward=2.0,
        turns=[
            turn([5, 6, 7], [8, 9], [-0.1, -0.2]),
            turn([5, 6, 7, 8, 9, 30, 31], [10], [-0.3]),  # 30, 31: the tool's reply
        ],
    )
    rewritten = Trajectory(
        task_id="t",
        group_id="g2",
        reward=1.0,
        turns=[
            turn([5], [11, 12], [-0.4, -0.5]),
            turn([40, 41], [13], [-0.6]),
        ],  # history rewritten: 2 samples
    )
    per_turn = Trajectory(
        task_id="t",
        group_id="g2",
        reward=9.0,  # ignored: the turns carry rewards
        turns=[turn([5], [14], [-0.7], reward=0.25), turn([5, 14, 32], [15, 16], [-0.8, -0.9], reward=0.5)],
    )
    batch = build_batch([multi, rewritten, per_turn], pad_token_id=0)

    assert batch["prompts"].tolist() == [[5, 6, 7], [0, 0, 5], [0, 40, 41], [0, 0, 5]]
    assert batch["responses"].tolist() == [
        [8, 9, 30, 31, 10],
        [11, 12, 0, 0, 0],
        [13, 0, 0, 0, 0],
        [14, 32, 15, 16, 0],
    ]
    assert batch["response_mask"].tolist() == [
        [1, 1, 0, 0, 1],
        [1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 0, 1, 1, 0],
    ]
    assert torch.equal(batch["input_ids"], torch.cat([batch["prompts"], batch["responses"]], dim=1))
    assert batch["attention_mask"][1].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert torch.equal(batch["position_ids"], compute_position_id_with_mask(batch["attention_mask"]))
    assert torch.allclose(batch["rollout_log_probs"][0], torch.tensor([-0.1, -0.2, 0.0, 0.0, -0.3]))
    assert batch["token_level_rewards"].tolist() == [
        [0, 0, 0, 0, 2.0],  # the episode reward on the last response token
        [0, 1.0, 0, 0, 0],  # each sample of a rewritten episode carries the episode reward
        [1.0, 0, 0, 0, 0],
        [0.25, 0, 0, 0.5, 0],  # per-turn rewards where flatten() put them
    ]
    assert batch["uid"].tolist() == ["g1", "g2", "g2", "g2"]
    assert batch["uid"].dtype == np.object_
    assert batch["trajectory_index"].tolist() == [0, 1, 1, 2]

    with pytest.raises(ValueError, match="at least one"):
        build_batch([Trajectory(task_id="t", group_id="g")], pad_token_id=0)


def test_grpo_and_rloo_advantages_match_a_hand_computation() -> None:
    rewards = {"a": [1.0, 0.0, 0.0, 1.0], "b": [0.5, 2.0], "c": [3.0]}
    trajs = [outcome(g, r) for g, rs in rewards.items() for r in rs]
    batch = build_batch(trajs, pad_token_id=0)
    mask = batch["response_mask"]

    grpo, _ = core_algos.get_adv_estimator_fn("grpo")(
        token_level_rewards=batch["token_level_rewards"], response_mask=mask, index=batch["uid"]
    )
    std_a = math.sqrt(sum((r - 0.5) ** 2 for r in rewards["a"]) / 3)  # torch.std: unbiased
    std_b = math.sqrt(((0.5 - 1.25) ** 2 + (2.0 - 1.25) ** 2) / 1)
    eps = 1e-6
    expected = [(r - 0.5) / (std_a + eps) for r in rewards["a"]]
    expected += [(r - 1.25) / (std_b + eps) for r in rewards["b"]]
    expected += [3.0 / (1.0 + eps)]  # a group of one: mean 0, std 1 (verl's rule)
    assert grpo[:, 0].tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(grpo, grpo[:, :1] * mask)  # the same advantage on every generated token, 0 elsewhere
    assert expected[0] == pytest.approx(math.sqrt(3) / 2, rel=1e-5)

    rloo, _ = core_algos.get_adv_estimator_fn("rloo")(
        token_level_rewards=batch["token_level_rewards"], response_mask=mask, index=batch["uid"]
    )
    leave_one_out = []
    for rs in rewards.values():
        for i, r in enumerate(rs):
            others = rs[:i] + rs[i + 1 :]
            leave_one_out.append(r - sum(others) / len(others) if others else r)
    assert rloo[:, 0].tolist() == pytest.approx(leave_one_out, rel=1e-5)


def test_vanilla_clipped_loss_matches_a_hand_computation() -> None:
    config = actor_config(TrainerConfig(clip_ratio=0.2, clip_ratio_c=3.0))
    old = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # ratios e^{lp - old}: 1.5 (clipped for A>0), 0.5 (clipped for A<0), 1.1 (inside), 5.0 (dual-clip for A<0)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0], [5.0, 1.0, 1.0, 1.0]]))
    adv = torch.tensor([[2.0, -1.0, 1.0, 0.0], [-1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)

    loss, metrics = core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode="token-mean",
        config=config,
    )
    # Per token: max(-A r, -A clip(r, 0.8, 1.2)); for A < 0 also min(., -A * 3).
    token_losses = [
        max(-2.0 * 1.5, -2.0 * 1.2),  # -2.4: the clip caps the gain
        max(1.0 * 0.5, 1.0 * 0.8),  # 0.8
        max(-1.0 * 1.1, -1.0 * 1.1),  # -1.1
        min(max(1.0 * 5.0, 1.0 * 1.2), 3.0),  # 3.0: the dual clip
    ]
    assert loss.item() == pytest.approx(sum(token_losses) / 4, rel=1e-6)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 4)  # 1.5 and 0.5 hit the clip
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 4)  # the dual clip
    ratios = torch.tensor([1.5, 0.5, 1.1, 5.0])
    assert metrics["actor/ppo_kl"] == pytest.approx(float(-torch.log(ratios).mean()), rel=1e-6)

    # With TIS weights the token losses are scaled before aggregation.
    weights = torch.tensor([[2.0, 1.0, 0.5, 9.0], [1.0, 9.0, 9.0, 9.0]])
    weighted, _ = core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode="token-mean",
        config=config,
        rollout_is_weights=weights,
    )
    assert weighted.item() == pytest.approx((-2.4 * 2.0 + 0.8 * 1.0 - 1.1 * 0.5 + 3.0 * 1.0) / 4, rel=1e-6)


def test_truncated_importance_weights_match_a_hand_computation() -> None:
    old = torch.tensor([[-1.0, -1.0, -2.0], [-0.5, -3.0, 0.0]])
    rollout = torch.tensor([[-1.0, -2.0, -1.0], [-0.5 - math.log(1.5), -3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    weights, metrics = rollout_correction(
        old_log_prob=old, rollout_log_prob=rollout, response_mask=mask, level="token", threshold=2.0
    )
    assert weights is not None
    # min(exp(old - rollout), 2) on the mask: e^0, e^1 -> 2, e^-1, 1.5, e^0; padding 0.
    expected = torch.tensor([[1.0, 2.0, math.exp(-1)], [1.5, 1.0, 0.0]])
    assert torch.allclose(weights, expected, atol=1e-6)
    assert metrics["rollout_corr/rollout_is_mean"] == pytest.approx(float(expected.sum() / 5), rel=1e-6)
    assert metrics["rollout_corr/rollout_is_ratio_fraction_high"] == pytest.approx(1 / 5)
    # The rollout/trainer mismatch: KL(rollout || train) estimated on the rollout's tokens.
    assert metrics["rollout_corr/kl"] == pytest.approx(float(((rollout - old) * mask).sum() / 5), rel=1e-6)

    seq, _ = rollout_correction(
        old_log_prob=old, rollout_log_prob=rollout, response_mask=mask, level="sequence", threshold=2.0
    )
    assert seq is not None
    assert seq[0].tolist() == pytest.approx([1.0] * 3)  # e^{0 + 1 - 1} = 1
    assert seq[1].tolist() == pytest.approx([1.5, 1.5, 0.0])


def test_make_batch_through_the_model(make_model: MakeModel, sample: Sample, tokenizer: object) -> None:
    model = make_model()
    trajs = [sample(model, group_id="g", reward=float(i % 2), seed=i, turns=1 + i % 3) for i in range(4)]
    # The rollout saw one token with a log-prob 1.0 lower than the trainer's: its TIS weight e^1 is truncated.
    first = trajs[0].turns[0]
    trajs[0].turns[0] = first.model_copy(update={"logprobs": [first.logprobs[0] - 1.0, *first.logprobs[1:]]})
    trainer = Trainer(model, tokenizer, TrainerConfig(micro_batch_size=3, tis_threshold=2.0))
    batch, corr = trainer.make_batch(trajs)

    # old_log_probs from padded micro-batches equal the exact, unpadded log-probs of every generated token.
    mask = batch["response_mask"].bool()
    exact = torch.zeros_like(batch["old_log_probs"])
    for row, traj in enumerate(trajs):
        sample_ = traj.flatten()[0]
        exact[row, : len(sample_.response_logprobs)] = torch.tensor(sample_.response_logprobs)
    exact[0, 0] += 1.0
    assert torch.allclose(batch["old_log_probs"][mask], exact[mask], atol=1e-5)

    weights = batch.get("rollout_is_weights")
    assert weights is not None
    assert weights[0, 0].item() == pytest.approx(2.0)
    others = weights[mask].clone()
    assert torch.allclose(others[1:], torch.ones_like(others[1:]), atol=1e-4)
    assert torch.equal(weights[~mask], torch.zeros_like(weights[~mask]))
    assert corr["rollout_corr/rollout_is_ratio_fraction_high"] > 0
    expected_adv = torch.tensor([-1.0, 1.0, -1.0, 1.0]) * 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert batch["advantages"][:, 0].tolist() == pytest.approx(expected_adv.tolist(), rel=1e-5)
