"""The trainer's run failure (light to import: no torch)."""

from __future__ import annotations

from agentscope.exceptions import AgentScopeError

__all__ = ["CheckpointError"]


class CheckpointError(AgentScopeError):
    """A checkpoint could not be read, or there is none to resume from. The message names each checkpoint
    directory tried and why it was refused (a missing or truncated file, one that does not unpickle, ...)."""
