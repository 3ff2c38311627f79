"""The rollout engine's KV-cache slot table: which slot holds which sequence, and the prefix cache."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentscope.rl.rollout._qwen2 import Qwen2Runner

__all__ = ["SlotTable"]


class SlotTable:
    """Which KV-cache slot holds what, and the prefix cache.

    Running sequences occupy slots ``0..B-1`` (packed, so that one decode pass reads a contiguous block). A
    finished sequence's cache is kept ("parked") in a slot above the running ones, keyed by the token ids it
    holds, until the slot is needed: a new prompt that begins with those ids (the next turn of the same
    conversation, token-in/token-out) takes the slot over and prefills only the rest. Least recently parked
    entries go first; a weight update drops them all.
    """

    MIN_PREFIX = 16
    """Shorter cached prefixes are not worth keeping."""

    def __init__(self, runner: Qwen2Runner, max_slots: int, *, enabled: bool) -> None:
        self.runner = runner
        self.max_slots = max_slots
        self.enabled = enabled
        self.parked: OrderedDict[int, tuple[int, ...]] = OrderedDict()

    def clear(self) -> None:
        self.parked.clear()

    def _free(self, lowest: int, avoid: int = -1) -> int | None:
        for slot in range(self.max_slots - 1, lowest - 1, -1):
            if slot not in self.parked and slot != avoid:
                return slot
        return None

    def _evict_oldest(self, avoid: int = -1) -> int | None:
        """Drop the least recently parked entry (not ``avoid``); returns its slot."""
        for slot in self.parked:
            if slot != avoid:
                del self.parked[slot]
                return slot
        return None

    def _vacate(self, slot: int, avoid: int = -1) -> None:
        """Make ``slot`` hold nothing, moving a parked entry there elsewhere (over the oldest one when full)."""
        ids = self.parked.pop(slot, None)
        if ids is None:
            return
        target = self._free(slot + 1, avoid)
        if target is None:
            target = self._evict_oldest(avoid)
        if target is not None:
            self.runner.move(slot, target, len(ids))
            self.parked[target] = ids

    def claim(self, slot: int, prompt: list[int]) -> int:
        """Prepare ``slot`` (the next running one) for ``prompt``; returns how many leading prompt tokens its
        cache already holds (0 without a prefix hit)."""
        best, best_len = -1, 0
        if self.enabled and self.parked:
            key = tuple(prompt)
            for parked_slot, ids in self.parked.items():
                n = len(ids)
                if best_len < n <= len(key) and key[n - 1] == ids[-1] and key[:n] == ids:
                    best, best_len = parked_slot, n
        if best < 0:
            self._vacate(slot)
            return 0
        if best != slot:
            self._vacate(slot, avoid=best)
            self.runner.move(best, slot, best_len)
        del self.parked[best]
        return min(best_len, len(prompt) - 1)  # at least one token is run, for the next-token logits

    def release(self, index: int, count: int, cached: list[int] | None, last_position: int) -> None:
        """Running sequence ``index`` (of ``count``) leaves; the last running one moves into its slot. When
        ``cached`` is given, the leaving sequence's cache is parked under those ids."""
        last = count - 1
        park = self.enabled and cached is not None and len(cached) >= self.MIN_PREFIX
        if park and index != last:
            target = self._free(count)
            if target is None:
                target = self._evict_oldest()
            if target is None:
                park = False
            else:
                assert cached is not None
                self.runner.move(index, target, len(cached))
                self.parked[target] = tuple(cached)
        elif park:
            assert cached is not None
            self.parked[last] = tuple(cached)
        if index != last:
            self.runner.move(last, index, last_position)
