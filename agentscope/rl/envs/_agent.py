"""How the cluster builds agents: ``factory(model=..., toolkit=...) -> AgentBase``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from agentscope.agents import AgentBase, ReActAgent
from agentscope.models import ChatModel, ModelSettings
from agentscope.tools import Toolkit

__all__ = ["DEFAULT_SYS_PROMPT", "AgentFactory", "react_agent_factory"]

AgentFactory: TypeAlias = Callable[..., AgentBase | Awaitable[AgentBase]]
"""Builds the agent of one episode; called as ``factory(model=model, toolkit=toolkit)`` (sync or async).

``model`` is the policy being trained (a client of the rollout service) and ``toolkit`` holds the environment's
tools. The agent is the same class users deploy; it never knows it is being trained.
"""

DEFAULT_SYS_PROMPT = (
    "You are a helpful assistant. Use the tools when they help, then give a short final answer."
)
"""System prompt of :func:`react_agent_factory` unless one is given."""


def react_agent_factory(
    model: ChatModel,
    toolkit: Toolkit,
    *,
    sys_prompt: str = DEFAULT_SYS_PROMPT,
    max_iters: int = 4,
    model_settings: ModelSettings | None = None,
) -> ReActAgent:
    """A plain :class:`ReActAgent` (the default agent of ``agentscope rl train``).

    Args:
        model: The policy (a client of the rollout service while training).
        toolkit: The environment's tools.
        sys_prompt: Instructions sent first in every model call.
        max_iters: Reason-act iterations before the agent must answer.
        model_settings: Sampling settings for every model call (default: the rollout service's).
    """
    return ReActAgent(
        "agent",
        sys_prompt,
        model,
        toolkit=toolkit,
        max_iters=max_iters,
        model_settings=model_settings,
    )
