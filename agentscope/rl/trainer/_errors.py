"""The trainer's run failures (light to import: no torch)."""

from __future__ import annotations

from agentscope.exceptions import AgentScopeError

__all__ = ["CheckpointError", "TrainerLostError"]


class CheckpointError(AgentScopeError):
    """A checkpoint could not be read, or there is none to resume from. The message names each checkpoint
    directory tried and why it was refused (a missing or truncated file, one that does not unpickle, ...)."""


class TrainerLostError(AgentScopeError):
    """The trainer's own process (``trainer.placement: ray``: its actor, or one of verl's ranks) died or cannot be
    reached: the run stops, and ``--resume`` continues it from its last checkpoint."""
