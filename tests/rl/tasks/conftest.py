"""Playing task suites through the real environment cluster and ReActAgent, with a scripted policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest

from agentscope.rl import Task, Trajectory
from agentscope.rl.envs import EnvFactory, ScriptedPolicy, play_scripted

Play = Callable[..., Awaitable[list[Trajectory]]]


async def play(
    env_factory: EnvFactory, policy: ScriptedPolicy, tasks: Sequence[Task], *, slots: int = 4
) -> list[Trajectory]:
    """Play every task once with ``policy``, ``slots`` episodes at once; the trajectories in task order."""
    return await play_scripted(env_factory, policy, tasks, slots=slots)


@pytest.fixture
def play_episodes() -> Play:
    """:func:`play`: tasks played through ``EnvCluster`` and ``react_agent_factory`` by a scripted policy."""
    return play
