"""Injected latency: a long-tailed delay model for environments under test and in the schedule benchmarks."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["LatencyModel"]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Lognormal step latency with an occasional heavy tail.

    A draw is ``median_s * exp(sigma * N(0, 1))``, multiplied by ``tail_factor`` with probability ``tail_prob``
    (a slow page load, a cold sandbox, a retried request).
    """

    median_s: float = 2.0
    """Median of the lognormal body, seconds."""
    sigma: float = 0.5
    """Standard deviation of the body's logarithm."""
    tail_prob: float = 0.2
    """Chance that a step lands in the tail."""
    tail_factor: float = 10.0
    """How much slower a tail step is."""

    def __post_init__(self) -> None:
        if self.median_s < 0 or self.sigma < 0 or self.tail_factor < 1 or not 0 <= self.tail_prob <= 1:
            raise ValueError(f"invalid latency model {self}")

    def sample(self, rng: random.Random) -> float:
        """One latency in seconds."""
        if self.median_s == 0:
            return 0.0
        delay = self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        if self.tail_prob and rng.random() < self.tail_prob:
            delay *= self.tail_factor
        return delay

    @property
    def mean_s(self) -> float:
        """Expected latency in seconds."""
        body = self.median_s * math.exp(self.sigma**2 / 2)
        return body * (1 - self.tail_prob + self.tail_prob * self.tail_factor)
