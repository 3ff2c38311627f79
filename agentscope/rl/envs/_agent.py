"""How the cluster builds agents: an agent factory (see :mod:`agentscope.agents`' agent spec) called with the
``model=`` (the policy) and ``toolkit=`` (the environment's tools) it declares."""

from __future__ import annotations

from agentscope.agents import AgentFactory, ReActAgent
from agentscope.models import ChatModel, ModelSettings
from agentscope.tools import Toolkit

__all__ = ["DEFAULT_SYS_PROMPT", "AgentFactory", "react_agent_factory"]

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
