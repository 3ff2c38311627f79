"""The trainer learns: a step on a tiny Qwen2 raises the log-prob of rewarded tokens and lowers the loss."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from transformers import Qwen2ForCausalLM

from agentscope.rl import Trajectory
from agentscope.rl.trainer import Trainer, TrainerConfig
from agentscope.rl.trainer._trainer import sequence_log_probs
from agentscope.rl.trainer._verl import policy_loss

MakeModel = Callable[..., Qwen2ForCausalLM]
Sample = Callable[..., Trajectory]

METRIC_KEYS = {
    "train/policy_loss",
    "train/approx_kl",
    "train/clipfrac",
    "train/grad_norm",
    "train/entropy",
    "train/tis_ratio_mean",
}


def group(model: torch.nn.Module, sample: Sample, rewards: list[float], *, seed: int = 0) -> list[Trajectory]:
    return [sample(model, group_id="g", reward=r, seed=seed + i) for i, r in enumerate(rewards)]


def generated_logprob(model: torch.nn.Module, traj: Trajectory) -> float:
    """Sum of log p(generated token) over the episode under ``model``."""
    total = 0.0
    with torch.no_grad():
        for t in traj.turns:
            ids = torch.tensor([t.prompt_ids + t.completion_ids])
            logits = model(input_ids=ids).logits[0, len(t.prompt_ids) - 1 : -1]
            lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(t.completion_ids).unsqueeze(-1))
            total += float(lp.sum())
    return total


def test_a_step_raises_rewarded_tokens_and_lowers_the_loss(
    make_model: MakeModel, sample: Sample, tokenizer: object
) -> None:
    model = make_model()
    trajs = group(model, sample, [1.0, 0.0, 0.0, 1.0])
    before = [generated_logprob(model, t) for t in trajs]
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2, micro_batch_size=2))
    batch, _ = trainer.make_batch(trajs)
    loss_fn = policy_loss("vanilla")

    def loss_on_fixed_batch() -> float:
        with torch.no_grad():
            log_probs, _, r = sequence_log_probs(
                model, batch, slice(None), temperature=1.0, with_entropy=False
            )
            loss, _ = loss_fn(
                old_log_prob=batch["old_log_probs"][:, :r],
                log_prob=log_probs,
                advantages=batch["advantages"][:, :r],
                response_mask=batch["response_mask"][:, :r].bool(),
                loss_agg_mode="token-mean",
                config=trainer.actor_config,
                rollout_is_weights=None,
            )
        return float(loss)

    trainer.actor_config.global_batch_info.clear()
    loss_before = loss_on_fixed_batch()
    metrics = trainer.step(trajs, step=1)
    trainer.actor_config.global_batch_info.clear()
    loss_after = loss_on_fixed_batch()

    assert metrics.keys() >= METRIC_KEYS
    assert metrics["train/policy_loss"] == pytest.approx(loss_before, abs=1e-5)  # on-policy: ratio 1
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["train/clipfrac"] == 0.0
    assert metrics["train/tis_ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["train/grad_norm"] > 0
    assert metrics["train/entropy"] > 0
    assert metrics["train/step"] == 1.0
    assert trainer.steps_done == 1
    assert loss_after < loss_before
    after = [generated_logprob(model, t) for t in trajs]
    assert after[0] > before[0]
    assert after[3] > before[3]
    assert after[1] < before[1]
    assert after[2] < before[2]


def test_micro_batching_does_not_change_the_update(
    make_model: MakeModel, sample: Sample, tokenizer: object
) -> None:
    trajs = group(make_model(), sample, [1.0, 0.0, 0.5, 0.0, 1.0], seed=10)
    results = []
    for micro in (1, 2, 8):
        model = make_model()
        trainer = Trainer(
            model, tokenizer, TrainerConfig(lr=1e-3, micro_batch_size=micro, max_grad_norm=None)
        )
        metrics = trainer.step(trajs)
        results.append((metrics, [p.detach().clone() for p in model.parameters()]))
    (m1, p1), (m2, p2), (m8, p8) = results
    assert m1["train/policy_loss"] == pytest.approx(m8["train/policy_loss"], abs=1e-6)
    assert m1["train/grad_norm"] == pytest.approx(m8["train/grad_norm"], rel=1e-4)
    assert m2["train/grad_norm"] == pytest.approx(m8["train/grad_norm"], rel=1e-4)
    for a, b in zip(p1, p8, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(p2, p8, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_the_fused_old_log_prob_pass_gives_the_same_update(
    make_model: MakeModel, sample: Sample, tokenizer: object, level: str
) -> None:
    """One optimizer step per batch: the update's forward pass doubles as the old-log-prob pass."""
    trajs = group(make_model(), sample, [1.0, 0.0, 0.0, 1.0, 0.5], seed=50)
    # The rollout engine disagreed with the trainer a little (as a different kernel or an older version does).
    trajs = [
        t.model_copy(
            update={
                "turns": [
                    u.model_copy(update={"logprobs": [x - 0.5 * (i % 3) for i, x in enumerate(u.logprobs)]})
                    for u in t.turns
                ]
            }
        )
        for t in trajs
    ]
    results = []
    for fused in (True, False):
        model = make_model()
        trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2, micro_batch_size=2, tis_level=level))
        trainer.fuse_old_log_probs = fused
        results.append((trainer.step(trajs), [p.detach().clone() for p in model.parameters()]))
    (fused_metrics, fused_params), (plain_metrics, plain_params) = results
    for a, b in zip(fused_params, plain_params, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for key in (
        "train/policy_loss",
        "train/tis_ratio_mean",
        "train/tis_clipped_fraction",
        "train/rollout_kl",
    ):
        assert fused_metrics[key] == pytest.approx(plain_metrics[key], abs=1e-6), key
    assert fused_metrics["train/tis_clipped_fraction"] > 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"adv_estimator": "rloo"},
        {"policy_loss": "gspo", "loss_agg_mode": "seq-mean-token-mean"},
        {"kl_coef": 0.1, "entropy_coef": 0.01},
        {"mini_batches": 2, "epochs": 2, "tis_threshold": None, "tis_level": "sequence"},
        {"norm_adv_by_std": False, "loss_agg_mode": "seq-mean-token-sum-norm", "clip_ratio_high": 0.28},
    ],
)
def test_algorithm_variants_train(
    make_model: MakeModel, sample: Sample, tokenizer: object, overrides: dict[str, object]
) -> None:
    model = make_model()
    trajs = group(model, sample, [1.0, 0.0, 0.0, 1.0], seed=20)
    config = TrainerConfig.model_validate({"lr": 1e-2, **overrides})
    trainer = Trainer(model, tokenizer, config)
    before = generated_logprob(model, trajs[0])
    metrics = trainer.step(trajs)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics.keys() >= METRIC_KEYS
    assert generated_logprob(model, trajs[0]) > before
    if config.kl_coef:
        assert trainer.ref_model is not None
        assert metrics["train/kl_loss"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
        second = trainer.step(trajs)
        assert second["train/kl_loss"] > 0
    if config.mini_batches > 1:
        assert metrics["train/optimizer_steps"] == 4
        assert (
            metrics["train/clipfrac"] > 0 or metrics["train/approx_kl"] != 0
        )  # later updates are off-policy


def test_zero_mask_batch_is_skipped(make_model: MakeModel, tokenizer: object, sample: Sample) -> None:
    model = make_model()
    traj = sample(model, group_id="g", reward=1.0, seed=3)
    masked = traj.model_copy(
        update={"turns": [t.model_copy(update={"trainable": False}) for t in traj.turns]}
    )
    trainer = Trainer(model, tokenizer, TrainerConfig())
    metrics = trainer.step([masked])
    assert metrics["train/skipped"] == 1.0
    assert trainer.steps_done == 0


def test_weights_for_rollout_are_detached_copies(
    make_model: MakeModel, sample: Sample, tokenizer: object
) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2))
    weights = trainer.weights_for_rollout()
    assert weights.keys() == model.state_dict().keys()
    assert all(w.device.type == "cpu" and not w.requires_grad for w in weights.values())
    assert weights["lm_head.weight"] is weights["model.embed_tokens.weight"]  # tied weights stay tied
    frozen = {k: v.clone() for k, v in weights.items()}
    trainer.step(group(model, sample, [1.0, 0.0], seed=30))
    assert all(torch.equal(weights[k], frozen[k]) for k in weights)  # training did not touch the copy
    assert not torch.equal(model.state_dict()["model.norm.weight"], weights["model.norm.weight"])
    # A rollout engine loads them as they are.
    other = make_model(seed=1)
    other.load_state_dict(trainer.weights_for_rollout())
    assert torch.equal(other.state_dict()["model.norm.weight"], model.state_dict()["model.norm.weight"])


def test_state_dict_round_trip(make_model: MakeModel, sample: Sample, tokenizer: object) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2))
    trajs = group(model, sample, [1.0, 0.0], seed=40)
    trainer.step(trajs)
    state = trainer.state_dict()
    assert state["steps_done"] == 1
    assert state["config"]["lr"] == 1e-2

    twin_model = make_model()
    twin_model.load_state_dict(model.state_dict())
    twin = Trainer(twin_model, tokenizer, TrainerConfig(lr=1e-2))
    twin.load_state_dict(copy.deepcopy(state))  # like torch's, the state holds the live optimizer tensors
    assert twin.steps_done == 1
    trainer.step(trajs)
    twin.step(trajs)
    for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)  # same Adam moments: the same next update


def shifted(traj: Trajectory, delta: float) -> Trajectory:
    """``traj`` as a rollout engine that gave every generated token ``delta`` more log-prob would report it."""
    turns = [t.model_copy(update={"logprobs": [x + delta for x in t.logprobs]}) for t in traj.turns]
    return traj.model_copy(update={"turns": turns})


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def logprob_gradient(model: torch.nn.Module, traj: Trajectory) -> torch.Tensor:
    """∇θ of the sum of log p(generated token) over the episode."""
    model.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for t in traj.turns:
        ids = torch.tensor([t.prompt_ids + t.completion_ids])
        logits = model(input_ids=ids).logits[0, len(t.prompt_ids) - 1 : -1].float()
        total = (
            total + torch.log_softmax(logits, -1).gather(-1, torch.tensor(t.completion_ids)[:, None]).sum()
        )
    total.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    ("delta", "weight"),
    [(2.0, math.exp(-2.0)), (-3.0, 2.0)],
    ids=["overconfident-rollout", "truncated-at-threshold"],
)
def test_truncated_importance_weights_change_the_update(
    make_model: MakeModel, sample: Sample, tokenizer: object, fused: bool, delta: float, weight: float
) -> None:
    """The TIS weights reach verl's policy loss and scale each token's gradient.

    The rollout engine reported the rewarded episode's tokens ``delta`` nats more likely than the trainer finds
    them, so each has the weight ``min(e^-delta, 2)``; the failed episode's log-probs are exact (weight 1). With
    plain SGD one update is ``-lr * gradient``, so the update without TIS minus the update with TIS is exactly
    the rewarded episode's share scaled by ``1 - weight``: ``lr * (1 - w) * A / N * ∇ log p(rewarded)``. If the
    weights stopped reaching the loss, both updates would be equal.
    """
    rewarded, failed = group(make_model(), sample, [1.0, 0.0], seed=60)
    trajs = [shifted(rewarded, delta), failed]
    lr = 1.0
    updates: dict[float | None, torch.Tensor] = {}
    for tis in (2.0, None):
        model = make_model()
        config = TrainerConfig(tis_threshold=tis, tis_level="token", max_grad_norm=None, micro_batch_size=1)
        trainer = Trainer(model, tokenizer, config)
        trainer.fuse_old_log_probs = fused
        trainer.optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # the update is exactly -lr * gradient
        before = flat_params(model)
        metrics = trainer.step(trajs)
        updates[tis] = flat_params(model) - before
        if tis is not None:
            tokens = rewarded.num_generated_tokens + failed.num_generated_tokens
            expected_mean = (weight * rewarded.num_generated_tokens + failed.num_generated_tokens) / tokens
            assert metrics["train/tis_ratio_mean"] == pytest.approx(expected_mean, rel=1e-4)

    difference = updates[None] - updates[2.0]
    assert float(difference.norm()) > 0, "the TIS weights did not change the update"
    grad = logprob_gradient(make_model(), rewarded)
    advantage = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO over rewards [1, 0]: (1 - 0.5) / std
    tokens = rewarded.num_generated_tokens + failed.num_generated_tokens  # token-mean over the batch
    expected = lr * (1.0 - weight) * advantage / tokens * grad
    # Direction: with weight < 1 TIS raises the rewarded tokens less than plain PPO would; with the truncated
    # weight 2 (not e^3 = 20), more.
    cosine = float(difference @ expected / (difference.norm() * expected.norm()))
    assert cosine > 0.999
    assert float(difference.norm()) == pytest.approx(float(expected.norm()), rel=1e-3)
