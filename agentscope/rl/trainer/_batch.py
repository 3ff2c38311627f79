"""Trajectories → a padded batch in verl's layout (the keys verl's trainer and ``core_algos`` read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import numpy as np
import torch
from numpy.typing import NDArray

from agentscope.rl._types import Trajectory

__all__ = ["Batch", "TrainBatch", "build_batch"]


class Batch(TypedDict):
    """A batch in verl's layout, as :func:`build_batch` makes it: tensors keyed as in verl's ``DataProto.batch``
    (``[B, ...]``), and numpy arrays as in its ``non_tensor_batch``."""

    prompts: torch.Tensor
    """``[B, P]`` prompt ids, left-padded."""
    responses: torch.Tensor
    """``[B, R]`` response ids (generated and tool/environment tokens), right-padded."""
    response_mask: torch.Tensor
    """``[B, R]`` 1 on policy-generated tokens the loss covers; 0 on tool/environment tokens and padding."""
    input_ids: torch.Tensor
    """``[B, P + R]`` ``cat(prompts, responses)``."""
    attention_mask: torch.Tensor
    """``[B, P + R]`` 1 on real tokens."""
    position_ids: torch.Tensor
    """``[B, P + R]`` ``clip(cumsum(attention_mask) - 1, min=0)``, as verl computes them."""
    rollout_log_probs: torch.Tensor
    """``[B, R]`` log-probs the rollout engine reported (0 off the response mask)."""
    token_level_rewards: torch.Tensor
    """``[B, R]`` rewards on tokens: per-turn rewards at each turn's last token, else the episode reward at the
    sample's last response token."""
    uid: NDArray[np.object_]
    """``[B]`` group id per row: advantages are group-relative within a uid."""
    trajectory_index: NDArray[np.int64]
    """``[B]`` the row's trajectory (index into the list given to :func:`build_batch`)."""


class TrainBatch(Batch):
    """A :class:`Batch` with what needs the model, added by :meth:`Trainer.make_batch`."""

    old_log_probs: torch.Tensor
    """``[B, R]`` log-probs under the trainer's weights before this update."""
    advantages: torch.Tensor
    """``[B, R]`` from verl's advantage estimator."""
    returns: torch.Tensor
    """``[B, R]`` the estimator's returns."""
    ref_log_prob: NotRequired[torch.Tensor]
    """``[B, R]`` log-probs under the reference policy (when ``kl_coef > 0``)."""
    rollout_is_weights: NotRequired[torch.Tensor]
    """``[B, R]`` truncated importance weights from verl's rollout correction (when on)."""


def build_batch(
    trajectories: Sequence[Trajectory], pad_token_id: int, *, device: torch.device | str | None = None
) -> Batch:
    """Flatten ``trajectories`` (:meth:`Trajectory.flatten`) into one padded batch, one row per sample.

    Layout, as verl's: ``prompts`` ``[B, P]`` left-padded; ``responses`` ``[B, R]`` right-padded; ``input_ids =
    cat(prompts, responses)``, ``attention_mask`` (1 on real tokens) and ``position_ids`` (counting real tokens
    from 0) ``[B, P + R]``; ``response_mask`` ``[B, R]`` (1 on policy-generated tokens, 0 on tool/environment
    tokens and padding); ``rollout_log_probs`` ``[B, R]``; ``token_level_rewards`` ``[B, R]`` (the per-turn rewards
    that flatten() placed, else the episode reward on the sample's last response token); ``uid`` (the group id,
    numpy object array: advantages are computed per uid); ``trajectory_index`` (the row's trajectory in
    ``trajectories``). A trajectory whose history was rewritten becomes several rows sharing its uid and reward.

    ``old_log_probs``, ``advantages`` (and ``ref_log_prob``, ``rollout_is_weights``) need the model: the trainer
    adds them (:meth:`Trainer.make_batch`). Tensors are made on ``device`` (default: CPU).
    """
    rows: list[tuple[list[int], list[int], list[int], list[float], list[float]]] = []
    uids: list[str] = []
    index: list[int] = []
    for i, traj in enumerate(trajectories):
        for sample in traj.flatten():
            n = len(sample.response_ids)
            if sample.token_rewards is not None:
                rewards = list(sample.token_rewards)
            else:
                rewards = [0.0] * n
                if n:
                    rewards[-1] = traj.reward
            rows.append(
                (
                    sample.prompt_ids,
                    sample.response_ids,
                    sample.response_mask,
                    sample.response_logprobs,
                    rewards,
                )
            )
            uids.append(traj.group_id)
            index.append(i)
    if not rows:
        raise ValueError("build_batch needs at least one trajectory with turns")
    batch_size = len(rows)
    prompt_len = max(len(r[0]) for r in rows)
    response_len = max(1, max(len(r[1]) for r in rows))
    prompts = torch.full((batch_size, prompt_len), pad_token_id, dtype=torch.long)
    prompt_attention = torch.zeros((batch_size, prompt_len), dtype=torch.long)
    responses = torch.full((batch_size, response_len), pad_token_id, dtype=torch.long)
    response_attention = torch.zeros((batch_size, response_len), dtype=torch.long)
    response_mask = torch.zeros((batch_size, response_len), dtype=torch.long)
    rollout_log_probs = torch.zeros((batch_size, response_len), dtype=torch.float32)
    token_level_rewards = torch.zeros((batch_size, response_len), dtype=torch.float32)
    for b, (prompt, response, mask, logprobs, rewards) in enumerate(rows):
        n = len(response)
        if prompt:
            prompts[b, prompt_len - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            prompt_attention[b, prompt_len - len(prompt) :] = 1
        if n:
            responses[b, :n] = torch.tensor(response, dtype=torch.long)
            response_attention[b, :n] = 1
            response_mask[b, :n] = torch.tensor(mask, dtype=torch.long)
            rollout_log_probs[b, :n] = torch.tensor(logprobs, dtype=torch.float32)
            token_level_rewards[b, :n] = torch.tensor(rewards, dtype=torch.float32)
    attention_mask = torch.cat([prompt_attention, response_attention], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "prompts": prompts.to(device),
        "responses": responses.to(device),
        "response_mask": response_mask.to(device),
        "input_ids": torch.cat([prompts, responses], dim=1).to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": position_ids.to(device),
        "rollout_log_probs": rollout_log_probs.to(device),
        "token_level_rewards": token_level_rewards.to(device),
        "uid": np.array(uids, dtype=object),
        "trajectory_index": np.array(index, dtype=np.int64),
    }
