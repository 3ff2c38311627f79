"""Pipelines: common ways of chaining agents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from agentscope.agents import AgentBase
from agentscope.message import Msg

__all__ = ["fanout_pipeline", "sequential_pipeline"]


async def sequential_pipeline(
    agents: Sequence[AgentBase], msg: Msg | None = None, **kwargs: Any
) -> Msg | None:
    """Pass ``msg`` to the first agent, its reply to the second, and so on; return the last reply."""
    for agent in agents:
        msg = await agent(msg, **kwargs)
    return msg


async def fanout_pipeline(
    agents: Sequence[AgentBase], msg: Msg | None = None, *, concurrent: bool = True, **kwargs: Any
) -> list[Msg]:
    """Give the same ``msg`` to every agent; return their replies in the agents' order.

    With ``concurrent=True`` (the default) the agents reply at the same time; each receives its own deep copy of
    ``msg``, so no agent sees another's changes.
    """
    if not concurrent:
        return [await agent(_copy(msg), **kwargs) for agent in agents]
    replies: list[Msg | None] = [None] * len(agents)

    async def run(index: int, agent: AgentBase) -> None:
        replies[index] = await agent(_copy(msg), **kwargs)

    async with anyio.create_task_group() as tg:
        for index, agent in enumerate(agents):
            tg.start_soon(run, index, agent)
    return [r for r in replies if r is not None]


def _copy(msg: Msg | None) -> Msg | None:
    return None if msg is None else msg.model_copy(deep=True)
