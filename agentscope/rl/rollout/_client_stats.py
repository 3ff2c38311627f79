"""The rollout metrics an engine behind an HTTP server (vLLM, SGLang) measures from its side of the wire."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["ClientStats"]

_WINDOW_S = 10.0


class ClientStats:
    """Counts the requests an HTTP engine sends and the tokens its answers carry, and reports them under the
    metric names of :meth:`TorchEngine.stats <agentscope.rl.rollout.TorchEngine.stats>`.

    Args:
        max_batch: The server's most concurrent sequences, for ``rollout/batch_occupancy`` only.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.running = 0
        """Requests in flight from this engine."""
        self._window: deque[tuple[float, int]] = deque()
        self._counters = {"generated": 0, "prefilled": 0, "cached": 0, "requests": 0}

    def sent(self) -> None:
        """A request leaves (call :meth:`done` when its answer, or its failure, is back)."""
        self.running += 1
        self._counters["requests"] += 1

    def done(self) -> None:
        """A request's answer (or failure) is back."""
        self.running -= 1

    def count(self, prompt_len: int, generated: int, cached: int) -> None:
        """An answer: ``generated`` tokens for a prompt of ``prompt_len``, ``cached`` of them found in the
        server's prefix cache."""
        self._counters["generated"] += generated
        self._counters["prefilled"] += prompt_len - cached
        self._counters["cached"] += cached
        now = time.monotonic()
        window = self._window
        window.append((now, generated))
        while now - window[0][0] > _WINDOW_S:
            window.popleft()

    def stats(self, version: int) -> dict[str, float]:
        """``rollout/tokens_per_s`` (generated, answers of the last 10 s), ``rollout/requests_running`` (in flight
        from this engine; the server may queue some, ``rollout/requests_waiting`` is 0),
        ``rollout/batch_occupancy`` (in flight / ``max_batch``), ``rollout/generated_tokens``,
        ``rollout/prefill_tokens``, ``rollout/prefix_cache_hit_tokens``, ``rollout/decode_steps`` (0: not visible
        over HTTP), ``rollout/policy_version``."""
        window = list(self._window)
        span = window[-1][0] - window[0][0] if len(window) > 1 else 0.0
        return {
            "rollout/tokens_per_s": sum(w[1] for w in window[1:]) / span if span > 0 else 0.0,
            "rollout/batch_occupancy": self.running / self.max_batch,
            "rollout/requests_running": float(self.running),
            "rollout/requests_waiting": 0.0,
            "rollout/generated_tokens": float(self._counters["generated"]),
            "rollout/prefill_tokens": float(self._counters["prefilled"]),
            "rollout/prefix_cache_hit_tokens": float(self._counters["cached"]),
            "rollout/decode_steps": 0.0,
            "rollout/policy_version": float(version),
        }
