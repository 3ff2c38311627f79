"""The rollout engine's sampling: a generation request, its sequence's state while it runs (random generator, stop
conditions, the tokens and log-probabilities drawn so far), and :func:`sample`, which draws the next token of every
running sequence in one call."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import cast

import torch

from agentscope.rl.rollout._types import FinishReason, Generation, SamplingParams

__all__ = ["Request", "Sequence", "sample"]


@dataclass(eq=False, slots=True)
class Request:
    """A generation waiting for the engine thread (``cancelled`` once its caller stopped waiting)."""

    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future[Generation]
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False


@dataclass(eq=False, slots=True)
class Sequence:
    """A request while it runs: its random generator, how it stops, and the tokens sampled so far."""

    request: Request
    rng: random.Random
    max_new: int
    stop_ids: frozenset[int]
    stop_bytes: list[bytes]
    position: int = 0
    """Tokens in the cache."""
    next_token: int = 0
    completion: list[int] = field(default_factory=list[int])
    logprobs: list[float] = field(default_factory=list[float])
    text: bytearray = field(default_factory=bytearray)
    version_head: int = 0
    version_tail: int = 0
    finish: FinishReason | None = None


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], list[float]]:
    """One token per row and its log-probability under ``log_softmax(logits / temperature)``."""
    temps = [s.request.params.temperature for s in seqs]
    greedy = [t <= 0 for t in temps]
    device = logits.device
    if all(greedy):
        tokens = logits.argmax(dim=-1, keepdim=True)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, tokens)
        return _lists(tokens, logprobs)
    temperature = torch.tensor([1.0 if g else t for g, t in zip(greedy, temps, strict=True)], device=device)
    logp = torch.log_softmax(logits / temperature[:, None], dim=-1)
    probs = logp.exp()
    uniforms = torch.tensor([s.rng.random() for s in seqs], dtype=probs.dtype, device=device)
    top_ps = [s.request.params.top_p for s in seqs]
    if any(p < 1.0 for p, g in zip(top_ps, greedy, strict=True) if not g):
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        top_p = torch.tensor(top_ps, dtype=probs.dtype, device=device)
        outside = (sorted_probs.cumsum(dim=-1) - sorted_probs) > top_p[
            :, None
        ]  # the first token always stays
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        cdf = sorted_probs.cumsum(dim=-1)
        index = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True)
        tokens = order.gather(1, index.clamp(max=probs.shape[-1] - 1))
    else:
        cdf = probs.cumsum(dim=-1)
        index = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True)
        tokens = index.clamp(max=probs.shape[-1] - 1)
    if any(greedy):
        rows = torch.tensor(greedy, device=device)
        tokens = torch.where(rows[:, None], logits.argmax(dim=-1, keepdim=True), tokens)
    return _lists(tokens, logp.gather(1, tokens))


def _lists(tokens: torch.Tensor, logprobs: torch.Tensor) -> tuple[list[int], list[float]]:
    return cast("list[int]", tokens[:, 0].tolist()), cast("list[float]", logprobs[:, 0].tolist())
