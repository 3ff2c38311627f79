"""Playing task suites through the real environment cluster and ReActAgent, with a scripted policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import pytest

from agentscope.rl import Task, Trajectory
from agentscope.rl.envs import EnvCluster, EnvFactory, ScriptedPolicy, ScriptedRollout, react_agent_factory

Play = Callable[..., Awaitable[list[Trajectory]]]


async def play(
    env_factory: EnvFactory, policy: ScriptedPolicy, tasks: Sequence[Task], *, slots: int = 4
) -> list[Trajectory]:
    """Play every task once with ``policy``, ``slots`` episodes at once; the trajectories in task order. With one
    slot the episodes run one after another, so a seeded random policy makes the same moves every run."""
    rollout = ScriptedRollout(policy)
    cluster = EnvCluster(
        env_factory, react_agent_factory, rollout, slots=slots, step_timeout_s=60, model_factory=rollout.model
    )
    done: dict[str, Trajectory] = {}

    async def one(task: Task) -> None:
        done[task.id] = await cluster.run_episode(task, task.id)

    try:
        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
    finally:
        await cluster.aclose()
    return [done[task.id] for task in tasks]


@pytest.fixture
def play_episodes() -> Play:
    """:func:`play`: tasks played through ``EnvCluster`` and ``react_agent_factory`` by a scripted policy."""
    return play
