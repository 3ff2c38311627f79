"""Human approval for tool calls: a tool asks with :func:`require_approval`, the agent grants it on resume."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Generator

from agentscope.exceptions import ApprovalRequired

__all__ = ["approved_calls", "require_approval"]

_approved: contextvars.ContextVar[bool] = contextvars.ContextVar("agentscope_call_approved", default=False)


def require_approval(reason: str = "this tool call needs human approval") -> None:
    """Call at the top of a tool that must not run without a human's approval.

    The first time, raises :class:`~agentscope.exceptions.ApprovalRequired`: the agent stops and lists the call in
    ``reply.metadata["approval_required"]``. When the human approves (``await agent(approve=[call_id])``), the agent
    runs the call again inside :func:`approved_calls`, and this function returns normally.
    """
    if not _approved.get():
        raise ApprovalRequired(reason)


@contextlib.contextmanager
def approved_calls() -> Generator[None]:
    """Mark the tool calls made inside this block as approved by a human."""
    token = _approved.set(True)
    try:
        yield
    finally:
        _approved.reset(token)
