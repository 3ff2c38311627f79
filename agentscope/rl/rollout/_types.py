"""The rollout engine seam: sampling parameters, a generation, and the engine protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["FinishReason", "Generation", "RolloutEngine", "SamplingParams"]

FinishReason: TypeAlias = Literal["stop", "length"]
"""``stop``: a stop token or stop string ended the generation; ``length``: ``max_tokens`` or the context ran out."""


@dataclass(slots=True)
class SamplingParams:
    """How one completion is sampled."""

    max_tokens: int = 256
    """Most tokens to generate (fewer when the context length runs out first)."""
    temperature: float = 1.0
    """Softmax temperature; ``0`` samples greedily (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: sample among the most likely tokens whose mass reaches ``top_p``."""
    stop_token_ids: list[int] = field(default_factory=list[int])
    """Token ids that end the generation; the stop token is the last completion token."""
    stop: list[str] = field(default_factory=list[str])
    """Strings that end the generation once the completion's text contains one; the completion keeps the
    token that completed it (the rollout service cuts the text at the string)."""
    seed: int | None = None
    """Per-request seed: the same prompt, parameters and seed sample the same tokens, whatever else runs in the
    batch (up to floating-point differences between batch shapes)."""


@dataclass(slots=True)
class Generation:
    """One completion, exactly as the policy produced it."""

    completion_ids: list[int]
    """Generated token ids (a closing stop token included)."""
    logprobs: list[float]
    """Log-probability of each generated token under the sampling distribution, ``log_softmax(logits /
    temperature)`` (``log_softmax(logits)`` for greedy), before top-p filtering: what verl's trainer
    recomputes."""
    finish_reason: FinishReason
    """Why generation ended."""
    version_head: int
    """Policy version that generated the first token."""
    version_tail: int
    """Policy version that generated the last token (greater when weights were updated mid-generation)."""
    prompt_len: int = 0
    """Number of prompt tokens."""


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates completions for token-id prompts; the weights can be replaced while it runs.

    Implementations: :class:`~agentscope.rl.rollout.TorchEngine` (in-process PyTorch, continuous batching),
    :class:`~agentscope.rl.rollout.VLLMEngine` and :class:`~agentscope.rl.rollout.SGLangEngine` (servers over HTTP,
    weights reloaded from files); ``rollout.engine`` picks one for ``rl train``.
    """

    version: int
    """Version of the weights now serving."""

    async def start(self) -> None:
        """Load the model and start serving."""
        ...

    async def stop(self) -> None:
        """Stop serving; pending generations fail."""
        ...

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Generate one completion."""
        ...

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the weights (all or some, by Hugging Face parameter name) between decode steps; running
        generations continue with the new weights. Returns once they serve."""
        ...

    def stats(self) -> dict[str, float]:
        """Throughput and occupancy under stable metric names (``rollout/tokens_per_s``...)."""
        ...
